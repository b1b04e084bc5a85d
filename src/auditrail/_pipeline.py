"""The delivery pipeline: bounded buffer, background worker, spool, fallback.

Engine code, written once for every sink (OpenTelemetry's BatchProcessor split
and the Kubernetes buffered audit backend are the models). The guarantees:

* ``submit`` never waits on a sink. A full buffer spills the entry to the spool
  from the caller's thread (one local ``write(2)``), never to the floor.
* A batch the sink refuses goes to the spool and, once, to the fallback
  (stdout); the worker retries the sink from the spool with capped exponential
  backoff and full jitter until it recovers. ``SinkResult.FAILURE`` (a batch
  the destination will never accept) is dead-lettered instead of retried.
* Order: the worker alternates between the spool's backlog and the buffer,
  so entries may reach a sink out of order after an outage or an overflow.
  Every entry carries its timestamp and a time-ordered ``event_id``; readers
  order by those (the query tools do).
* ``close`` stops intake, delivers what it can before the deadline and leaves
  the rest in the spool, which the next start replays.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditrail.metrics import AuditMetrics
from auditrail.spool import Spool, SpoolRecord, adopt_orphans
from auditrail.typing import Sink, SinkResult

_MAX_RETRY_AFTER_S = 300.0


class Durability(enum.StrEnum):
    """How far an entry has gone when ``emit`` returns.

    ``MEMORY``: in the in-memory buffer (spilled to the spool on overflow, sink
    failure and shutdown). Survives SIGTERM; SIGKILL or a crash loses what is
    still buffered (at most the buffer size plus one batch).

    ``SPOOL``: written to the spool (``write(2)``, no fsync). Survives SIGKILL
    and crashes; a power loss can lose what the kernel had not yet flushed.

    ``FSYNC``: written to the spool and fsynced (group commit). Survives power loss.

    .. versionadded:: 0.1.0
    """

    MEMORY = "memory"
    SPOOL = "spool"
    FSYNC = "fsync"


class _State(enum.Enum):
    RUNNING = 1
    CLOSING = 2
    CLOSED = 3


class DeliveryPipeline:
    """Moves encoded entries from callers to one sink without ever losing one.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        *,
        fallback: Sink,
        metrics: AuditMetrics,
        durability: Durability = Durability.MEMORY,
        max_buffer_events: int = 1000,
        max_batch_events: int = 512,
        flush_interval_s: float = 0.2,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 30.0,
        fsync_interval_s: float = 1.0,
        orphan_base: Path | None = None,
        dead_letter_dir: Path | None = None,
    ) -> None:
        if max_buffer_events <= 0:
            raise ValueError("max_buffer_events must be positive")
        if not 0 < max_batch_events <= max(max_buffer_events, 1):
            raise ValueError("max_batch_events must be positive and at most max_buffer_events")
        if flush_interval_s <= 0 or retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("intervals must be positive and retry_max_s >= retry_initial_s")
        self.sink = sink
        self.destination = sink.name
        self.spool = spool
        self.fallback = fallback
        self.metrics = metrics
        self.durability = durability
        self.max_buffer_events = max_buffer_events
        self.max_batch_events = max_batch_events
        self.flush_interval_s = flush_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.fsync_interval_s = fsync_interval_s
        self.orphan_base = orphan_base
        self.dead_letter_dir = dead_letter_dir or spool.directory.parent.parent / "dead-letters"

        self._buffer: deque[bytes] = deque()
        self._wake_at = max(1, max_batch_events // 2)
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._close_lock = threading.Lock()
        self._state = _State.RUNNING
        self._deadline = float("inf")
        self._inflight: Sequence[bytes] | None = None
        self._retry_at = 0.0
        self._backoff = retry_initial_s
        # Spool id ranges already copied to the fallback, so each failed entry
        # reaches it once however often its redelivery fails. Sorted, disjoint.
        self._copied: list[tuple[int, int]] = []
        self._last_sync = time.monotonic()
        self._last_adopt = 0.0
        self._delivered_sink = self.metrics.delivered.labels(self.destination)
        self._sink_errors = self.metrics.sink_errors.labels(self.destination)
        self._retried = self.metrics.retried.labels(self.destination)
        self.in_flight = 0
        """Entries handed to the sink and not yet answered (a gauge)."""
        self._spooled_children: dict[str, Any] = {}
        self._spool_corrupt_seen = spool.corrupt_records
        metrics.gauges.track(self)
        self._worker = threading.Thread(
            target=self._run, name=f"auditrail-{self.destination}", daemon=True
        )
        self._worker.start()

    def __repr__(self) -> str:
        return f"DeliveryPipeline(buffered<spool<{self.sink!r}>>, durability={self.durability})"

    # -- caller side ----------------------------------------------------------

    def submit(self, line: bytes) -> None:
        """Hand one encoded entry to the pipeline; never blocks on a sink."""
        if self.durability is not Durability.MEMORY:
            self._spool_from_caller(line, "write_ahead", sync=self.durability is Durability.FSYNC)
        else:
            buf = self._buffer
            if len(buf) < self.max_buffer_events:
                buf.append(line)
                if self._state is not _State.RUNNING:
                    self._rescue_late()
            else:
                self._spool_from_caller(line, "overflow", sync=False)
        if len(self._buffer) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    def _spool_from_caller(self, line: bytes, reason: str, *, sync: bool) -> None:
        try:
            self.spool.append((line,), sync=sync)
        except Exception as exc:  # noqa: BLE001 - disk trouble must not reach the caller
            self._last_resort((line,), f"spool write failed: {exc.__class__.__name__}")
            return
        self._spooled_child(reason).inc()

    def _spooled_child(self, reason: str) -> Any:
        child = self._spooled_children.get(reason)
        if child is None:
            child = self._spooled_children[reason] = self.metrics.spooled.labels(reason)
        return child

    def _rescue_late(self) -> None:
        # An emit that passed the open check just before close() began: its
        # entry may have missed the final sweep, so sweep again ourselves.
        with self._close_lock:
            self._sweep_to_spool("shutdown")

    # -- worker side ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._next_wait())
            self._wake.clear()
            stopping = self._state is not _State.RUNNING
            try:
                self._deliver_spool(stopping)
                self._drain_buffer(stopping)
                self._housekeeping()
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                print(f"auditrail: delivery worker error: {exc!r}", file=sys.stderr)
            with self._idle:
                self._idle.notify_all()
            if stopping and not self._buffer and not self._keep_trying_before_deadline():
                return

    def _keep_trying_before_deadline(self) -> bool:
        # At shutdown, wait out a backoff if the retry still fits before the
        # deadline; otherwise leave the backlog in the spool for the next start.
        if not self.spool.pending(self.destination) or time.monotonic() >= self._deadline:
            return False
        if self._retry_at >= self._deadline:
            return False
        pause = self._retry_at - time.monotonic()
        if pause > 0:
            self._wake.wait(pause)
        return True

    def _next_wait(self) -> float:
        if self._state is not _State.RUNNING:
            return 0
        wait = self.flush_interval_s
        if self.spool.pending(self.destination):
            wait = min(wait, max(0.0, self._retry_at - time.monotonic()))
        return wait

    def _sink_available(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _write(self, lines: Sequence[bytes]) -> SinkResult:
        if self._retry_at > 0:
            self._retried.inc(len(lines))  # an attempt after a failure
        self.in_flight = len(lines)
        try:
            result = self.sink.write_batch(lines)
        except Exception:  # noqa: BLE001 - a sink bug is a retryable delivery failure
            result = SinkResult.RETRY
        finally:
            self.in_flight = 0
        if result is SinkResult.SUCCESS:
            self._delivered_sink.inc(len(lines))
            self._retry_at, self._backoff = 0.0, self.retry_initial_s
        else:
            self._sink_errors.inc()
            if result is SinkResult.RETRY:
                delay = max(random.uniform(0, self._backoff), self.retry_initial_s / 2)
                # A destination may ask for a pause (HTTP Retry-After); honour it,
                # bounded so a bad header cannot stall delivery for hours.
                hint = getattr(self.sink, "retry_after_s", None)
                if isinstance(hint, int | float) and hint > 0:
                    delay = max(delay, min(float(hint), _MAX_RETRY_AFTER_S))
                self._retry_at = time.monotonic() + delay
                self._backoff = min(self.retry_max_s, self._backoff * 2)
        return result

    def _drain_buffer(self, stopping: bool) -> None:
        buf = self._buffer
        while buf:
            n = min(len(buf), self.max_batch_events)
            batch = [buf.popleft() for _ in range(n)]
            self._inflight = batch
            if stopping and time.monotonic() >= self._deadline:
                self._spill(batch, "shutdown")
            elif not self._sink_available():
                self._spill(batch, "sink_failure")  # never hammer a sink that backs off
            else:
                result = self._write(batch)
                if result is SinkResult.FAILURE:
                    self._dead_letter(batch)
                elif result is SinkResult.RETRY:
                    self._spill(batch, "sink_failure")
            self._inflight = None

    def _spill(self, batch: Sequence[bytes], reason: str) -> None:
        try:
            last = self.spool.append(batch)
        except Exception as exc:  # noqa: BLE001 - fall back rather than lose
            self._last_resort(batch, f"spool write failed: {exc.__class__.__name__}")
            return
        self._spooled_child(reason).inc(len(batch))
        if reason == "sink_failure":
            self._copy_to_fallback(batch)
            self._mark_copied(last - len(batch) + 1, last)

    def _deliver_spool(self, stopping: bool) -> None:
        spool, dest = self.spool, self.destination
        while spool.pending(dest) and self._sink_available():
            if stopping and time.monotonic() >= self._deadline:
                return
            records = spool.read(dest, self.max_batch_events)
            if not records:
                return
            lines = [r.payload for r in records]
            result = self._write(lines)
            if result is SinkResult.RETRY:
                self._fallback_once(records)
                return
            if result is SinkResult.FAILURE:
                self._dead_letter(lines)
            spool.ack(dest, records)
            if self._copied:
                self._forget_copied_upto(records[-1].id)
            if len(self._buffer) >= self.max_buffer_events // 2:
                return  # let the caller-side buffer drain before it overflows

    def _fallback_once(self, records: Sequence[SpoolRecord]) -> None:
        fresh = [r for r in records if not self._is_copied(r.id)]
        if fresh:
            self._copy_to_fallback([r.payload for r in fresh])
            for record in fresh:
                self._mark_copied(record.id, record.id)

    def _mark_copied(self, first: int, last: int) -> None:
        ranges = self._copied
        index = bisect.bisect_left(ranges, (first, last))
        ranges.insert(index, (first, last))
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self._copied = merged

    def _is_copied(self, record_id: int) -> bool:
        index = bisect.bisect_right(self._copied, (record_id, float("inf"))) - 1
        return index >= 0 and self._copied[index][0] <= record_id <= self._copied[index][1]

    def _forget_copied_upto(self, record_id: int) -> None:
        self._copied = [(lo, hi) for lo, hi in self._copied if hi > record_id]

    def _copy_to_fallback(self, lines: Sequence[bytes]) -> None:
        try:
            result = self.fallback.write_batch(lines)
        except Exception:  # noqa: BLE001
            result = SinkResult.RETRY
        if result is SinkResult.SUCCESS:
            self.metrics.fallback_writes.labels(self.destination).inc(len(lines))

    def _dead_letter(self, lines: Sequence[bytes]) -> None:
        self.metrics.dead_letters.labels(self.destination).inc(len(lines))
        reason = getattr(self.sink, "last_error", None)
        print(
            f"auditrail: {self.destination} permanently refused {len(lines)} entries"
            + (f" ({reason})" if reason else "")
            + f"; kept in {self.dead_letter_dir} for `auditrail spool redeliver`",
            file=sys.stderr,
        )
        try:
            self.dead_letter_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.dead_letter_dir / f"{self.destination}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"".join(line + b"\n" for line in lines))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._last_resort(lines, f"dead-letter write failed: {exc.__class__.__name__}")
        self._copy_to_fallback(lines)

    def _last_resort(self, lines: Sequence[bytes], why: str) -> None:
        # Neither the sink nor the spool took these: write them to the
        # fallback loudly. They are visible, though no longer guaranteed to
        # reach the destination, so they are counted as dropped.
        print(f"auditrail: {why}; writing {len(lines)} entries to the fallback", file=sys.stderr)
        self._copy_to_fallback(lines)
        self.metrics.dropped.labels("spool_unavailable").inc(len(lines))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if (
            self.durability is not Durability.FSYNC
            and now - self._last_sync >= self.fsync_interval_s
        ):
            self._last_sync = now
            with contextlib.suppress(OSError):
                self.spool.sync()
        if self.orphan_base is not None and now - self._last_adopt >= 30.0:
            self._last_adopt = now
            with contextlib.suppress(Exception):
                adopt_orphans(self.orphan_base, self.spool)
        corrupt = self.spool.corrupt_records
        if corrupt > self._spool_corrupt_seen:
            self.metrics.spool_corrupt.inc(corrupt - self._spool_corrupt_seen)
            self._spool_corrupt_seen = corrupt

    # -- control ------------------------------------------------------------

    def _delivered_everything(self) -> bool:
        return (
            not self._buffer and self._inflight is None and not self.spool.pending(self.destination)
        )

    def flush(self, timeout_s: float) -> bool:
        """Wait until every accepted entry reached the sink; False at the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while not self._delivered_everything():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._worker.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, self.flush_interval_s))
        return self.sink.flush(max(0.0, deadline - time.monotonic()))

    def close(self, timeout_s: float) -> bool:
        """Stop intake, deliver until the deadline, spool the rest; idempotent.

        Returns True when everything reached the sink.
        """
        self.begin_close(time.monotonic() + timeout_s)
        return self.finish_close()

    def begin_close(self, deadline: float) -> None:
        """Stop intake and start the final delivery (lets several pipelines share one deadline)."""
        with self._close_lock:
            if self._state is not _State.RUNNING:
                return
            self._deadline = deadline
            self._state = _State.CLOSING
        self._wake.set()

    def hurry(self) -> None:
        """Cut a running close short: stop delivering now and hand the rest to the spool.

        A second SIGTERM during shutdown ends here (``auditrail.runtime``);
        calling it while running has no effect.
        """
        with self._close_lock:
            if self._state is not _State.CLOSING:
                return
            self._deadline = min(self._deadline, time.monotonic())
        self._wake.set()

    def finish_close(self) -> bool:
        """Wait for the final delivery until the deadline, spool the rest, close the sink.

        ``AuditLogger.close`` runs this off the main thread, where no Python
        signal handler can interrupt the hand-over to the spool.
        """
        # Join in slices: ``hurry()`` may move the deadline closer meanwhile.
        while self._worker.is_alive():
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            self._worker.join(min(remaining, 0.05))
        with self._close_lock:
            if self._state is _State.CLOSED:
                return self._delivered_everything()
            if self._worker.is_alive():
                # The sink hangs: keep the batch it holds too (it may also
                # arrive later, hence at-least-once) and everything queued.
                inflight = self._inflight
                if inflight:
                    self._spill(list(inflight), "shutdown")
            self._sweep_to_spool("shutdown")
            delivered = self._delivered_everything()
            with contextlib.suppress(OSError):
                self.spool.close()
            self._state = _State.CLOSED
        remaining = max(0.0, self._deadline - time.monotonic())
        with contextlib.suppress(Exception):
            self.sink.close(remaining)
        self.metrics.gauges.untrack(self)
        return delivered

    def _sweep_to_spool(self, reason: str) -> None:
        buf = self._buffer
        lines: list[bytes] = []
        while buf:
            try:
                lines.append(buf.popleft())
            except IndexError:
                break
        if lines:
            if self._state is _State.CLOSED:
                self._last_resort(lines, "entries arrived after the spool closed")
            else:
                self._spill(lines, reason)

    def gauge_snapshot(self) -> tuple[int, int, int, float | None]:
        stats = self.spool.stats()
        oldest_ms = stats.oldest_pending_ms.get(self.destination)
        return (
            len(self._buffer),
            stats.bytes,
            stats.pending_records.get(self.destination, 0),
            oldest_ms / 1000 if oldest_ms is not None else None,
        )
