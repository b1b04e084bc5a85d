"""Prometheus metrics of the audit pipeline.

Counters are updated where things happen; gauges (buffer depth, spool size,
delivery lag, free disk space) are computed at scrape time from the live
pipelines and watched directories, so they cost nothing on the emit path.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auditkeep._disk import DiskReading, DiskWatch


class PipelineGauges(Protocol):
    """What a pipeline reports to the scrape-time collector."""

    destination: str
    in_flight: int

    def gauge_snapshot(self) -> tuple[int, int, int, float | None]:
        """(buffer depth, spool bytes, spool pending records, oldest pending unix seconds)."""
        ...


class _PipelineCollector(Collector):
    def __init__(self) -> None:
        self._pipelines: weakref.WeakSet[PipelineGauges] = weakref.WeakSet()

    def track(self, pipeline: PipelineGauges) -> None:
        self._pipelines.add(pipeline)

    def untrack(self, pipeline: PipelineGauges) -> None:
        self._pipelines.discard(pipeline)

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "audit_log_buffer_depth",
            "Entries waiting in memory for delivery (the buffer, and entries held while "
            "the spool refuses writes).",
            labels=["destination"],
        )
        spool_bytes = GaugeMetricFamily(
            "audit_log_spool_bytes", "Bytes in the durable spool.", labels=["destination"]
        )
        spool_records = GaugeMetricFamily(
            "audit_log_spool_records",
            "Entries in the spool not yet delivered to the destination.",
            labels=["destination"],
        )
        lag = GaugeMetricFamily(
            "audit_log_oldest_undelivered_age_seconds",
            "Age of the oldest entry not yet delivered (0 when caught up).",
            labels=["destination"],
        )
        in_flight = GaugeMetricFamily(
            "audit_log_in_flight_entries",
            "Entries handed to the destination and not yet answered.",
            labels=["destination"],
        )
        now = time.time()
        for pipeline in list(self._pipelines):
            buffered, nbytes, pending, oldest = pipeline.gauge_snapshot()
            label = [pipeline.destination]
            depth.add_metric(label, buffered)
            spool_bytes.add_metric(label, nbytes)
            spool_records.add_metric(label, pending)
            lag.add_metric(label, max(0.0, now - oldest) if oldest is not None else 0.0)
            in_flight.add_metric(label, pipeline.in_flight)
        yield from (depth, spool_bytes, spool_records, lag, in_flight)

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _DiskCollector(Collector):
    def __init__(self, watch: DiskWatch) -> None:
        self._watch = watch

    def collect(self) -> Iterator[Metric]:
        free = GaugeMetricFamily(
            "audit_log_disk_free_bytes",
            "Free bytes (for unprivileged writers) on the filesystem holding the path.",
            labels=["path"],
        )
        size = GaugeMetricFamily(
            "audit_log_disk_size_bytes",
            "Size in bytes of the filesystem holding the path.",
            labels=["path"],
        )
        low = GaugeMetricFamily(
            "audit_log_disk_space_low",
            "1 while free space is below AUDIT_LOG_DISK_WARN_FREE, else 0.",
            labels=["path"],
        )
        # Several loggers may watch the same label in different directories:
        # report the one with the least room, which is the one to act on.
        worst: dict[str, DiskReading] = {}
        any_low: dict[str, bool] = {}
        for reading in self._watch.check():
            known = worst.get(reading.label)
            if known is None or reading.free_bytes < known.free_bytes:
                worst[reading.label] = reading
            any_low[reading.label] = any_low.get(reading.label, False) or reading.low
        for label, reading in sorted(worst.items()):
            free.add_metric([label], reading.free_bytes)
            size.add_metric([label], reading.total_bytes)
            low.add_metric([label], 1 if any_low[label] else 0)
        yield from (free, size, low)

    def describe(self) -> Iterator[Metric]:
        return iter(())


class AuditMetrics:
    """The audit metrics registered on one Prometheus registry.

    Use ``AuditMetrics.for_registry`` so that several loggers in one process
    share one set of metrics per registry.

    .. versionadded:: 0.1.0
    """

    _instances: dict[int, AuditMetrics] = {}  # noqa: RUF012 - a process-wide cache
    _instances_lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        # audit_log_entries_total is counted on the emit path with plain
        # itertools counters (next() is atomic under the GIL and costs ~50 ns,
        # a prometheus_client child ~500 ns with its lock) and exported at scrape.
        self._entry_counts: dict[tuple[str, str], itertools.count[int]] = {}
        reg.register(_EntryCounter(self._entry_counts))
        self.sink_errors = Counter(
            "audit_log_sink_errors",
            "Failed deliveries of a batch to a destination.",
            ["destination"],
            registry=reg,
        )
        self.delivered = Counter(
            "audit_log_delivered_entries",
            "Entries delivered to a destination.",
            ["destination"],
            registry=reg,
        )
        self.retried = Counter(
            "audit_log_retried_entries",
            "Entries sent again to a destination after a failed attempt.",
            ["destination"],
            registry=reg,
        )
        self.spooled = Counter(
            "audit_log_spooled_entries",
            "Entries written to the durable spool, by reason.",
            ["reason"],
            registry=reg,
        )
        self.fallback_writes = Counter(
            "audit_log_fallback_writes",
            "Entries copied to the fallback (stdout) while a destination failed, once each.",
            ["destination"],
            registry=reg,
        )
        self.dead_letters = Counter(
            "audit_log_dead_letters",
            "Entries a destination refused permanently, kept in the dead-letter file.",
            ["destination"],
            registry=reg,
        )
        self.dropped = Counter(
            "audit_log_dropped_entries",
            "Entries that exist nowhere but the fallback (given up on); must stay at zero. "
            "The reason says why.",
            ["reason"],
            registry=reg,
        )
        self.emit_after_close = Counter(
            "audit_log_emit_after_close",
            "emit() calls refused because the logger was closed.",
            registry=reg,
        )
        self.spool_corrupt = Counter(
            "audit_log_spool_corrupt_records",
            "Corrupt records skipped while reading the spool.",
            registry=reg,
        )
        self.spool_write_errors = Counter(
            "audit_log_spool_write_errors",
            "Appends the spool refused (reason: full = its byte limit, else the errno, "
            "e.g. ENOSPC); the entries are held in memory and retried.",
            ["destination", "reason"],
            registry=reg,
        )
        self.rotation_deleted_files = Counter(
            "audit_log_rotation_deleted_files",
            "Rotated files deleted by AUDIT_LOG_FILE_RETENTION=delete (each one also an entry).",
            registry=reg,
        )
        self.rotation_deleted_entries = Counter(
            "audit_log_rotation_deleted_entries",
            "Entries in the rotated files that AUDIT_LOG_FILE_RETENTION=delete deleted.",
            registry=reg,
        )
        self.gauges = _PipelineCollector()
        reg.register(self.gauges)
        self.disk = DiskWatch()
        """The directories whose free space is reported (``audit_log_disk_*``)."""
        reg.register(_DiskCollector(self.disk))

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> AuditMetrics:
        """Return the metrics registered on ``registry`` (creating them once)."""
        reg = REGISTRY if registry is None else registry
        with cls._instances_lock:
            found = cls._instances.get(id(reg))
            if found is None or found.registry is not reg:
                found = cls(reg)
                cls._instances[id(reg)] = found
            return found

    def count_entry(self, action: str, outcome: str) -> None:
        """Count one accepted entry (the emit path's only metrics work)."""
        counter = self._entry_counts.get((action, outcome))
        if counter is None:
            counter = self._entry_counts.setdefault((action, outcome), itertools.count(1))
        next(counter)

    def entries_counted(self, action: str, outcome: str) -> int:
        """How many entries were counted for (action, outcome)."""
        counter = self._entry_counts.get((action, outcome))
        return _current(counter) if counter is not None else 0


def _current(counter: itertools.count[int]) -> int:
    # An itertools.count exposes its next value only through repr: "count(N)".
    # Started at 1, the next value N means N - 1 increments.
    return int(repr(counter)[6:-1]) - 1


class _EntryCounter(Collector):
    def __init__(self, counts: dict[tuple[str, str], itertools.count[int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "audit_log_entries", "Audit entries accepted.", labels=["action", "outcome"]
        )
        for (action, outcome), counter in list(self._counts.items()):
            family.add_metric([action, outcome], _current(counter))
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
