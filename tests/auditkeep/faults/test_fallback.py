"""The fallback rule, exactly: which entries the fallback (stdout) copy holds, and how often.

The rule (docs/delivery.md, "The fallback"): from a failed attempt until the
next successful one the destination is *failing*; every entry waiting for it
then — in the spool however it got there, held in memory, or in the failed
batch itself — is copied to the fallback once, and dropped entries are copied
there too. Entries delivered while the destination works are never copied.

The destination is a real ``FileSink`` behind a switch that makes attempts
fail slowly, like a destination timing out (a fault injector, not a mock).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from auditkeep.delivery import DeliveryPipeline, Durability, Spool
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import read_trail, validate_entries
from auditkeep.typing import SinkResult


class SwitchableFile:
    """A real file destination; while ``down``, each attempt fails after ``delay_s``."""

    name: ClassVar[str] = "file"

    def __init__(self, path: Path, delay_s: float) -> None:
        self.inner = FileSink(path, max_bytes=0)
        self.down = False
        self.delay_s = delay_s
        self.failed_attempts: list[float] = []  # when each failed attempt started

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if self.down:
            started = time.monotonic()
            time.sleep(self.delay_s)
            self.failed_attempts.append(started)
            return SinkResult.RETRY
        return self.inner.write_batch(lines)

    def flush(self, timeout_s: float) -> bool:
        return self.inner.flush(timeout_s)

    def close(self, timeout_s: float) -> None:
        self.inner.close(timeout_s)


def ids(lines: Sequence[bytes]) -> list[str]:
    return [orjson.loads(line)["event_id"] for line in lines if line]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class TestFallbackRule:
    @pytest.mark.parametrize("durability", ["memory", "spool"])
    def test_the_fallback_holds_exactly_the_outage_once(
        self, tmp_path: Path, durability: str
    ) -> None:
        """Up, down, up: the fallback holds each entry emitted during the outage once, no other."""
        registry = CollectorRegistry()
        sink = SwitchableFile(tmp_path / "audit.jsonl", delay_s=0.05)
        fallback_path = tmp_path / "fallback.jsonl"
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=tmp_path / "spool",
            durability=durability,
            metrics=AuditMetrics(registry),
            fallback=FileSink(fallback_path, max_bytes=0),
            max_buffer_events=200,
            max_batch_events=50,
            flush_interval_s=0.02,
            retry_initial_s=0.01,
            retry_max_s=0.05,
        )
        emit = logger.emit
        before = [emit("gitlab.api.get_mr_details", details={"n": i}) for i in range(500)]
        assert logger.flush(10)

        sink.down = True
        outage = [emit("gitlab.api.get_mr_details", details={"n": i}) for i in range(3000)]
        emitted_by = time.monotonic()
        # One attempt that started after the last emit has failed: everything was waiting then.
        wait_for(lambda: any(t > emitted_by for t in sink.failed_attempts))
        sink.down = False
        assert logger.flush(10)
        after = [emit("gitlab.api.get_mr_details", details={"n": i}) for i in range(500)]
        assert logger.flush(10)
        assert logger.close()

        fallback = ids(fallback_path.read_bytes().splitlines())
        delivered = ids(read_trail(tmp_path / "audit.jsonl"))
        assert len(fallback) == len(set(fallback)) == len(outage)  # once each
        assert set(fallback) == set(outage)  # and no entry delivered while the file worked
        assert set(delivered) == set(before) | set(outage) | set(after)
        assert sample(registry, "audit_log_fallback_writes_total", destination="file") == 3000
        assert sample(registry, "audit_log_dropped_entries_total", reason="spool_unavailable") == 0
        if durability == "memory":
            # The case the fallback used to miss: entries the caller spooled on overflow.
            assert sample(registry, "audit_log_spooled_entries_total", reason="overflow") > 0
        validate_entries(fallback_path.read_bytes().splitlines()[::100])


class TestSpoolAtItsLimit:
    def test_a_full_spool_holds_then_drops_exactly_what_it_counts(self, tmp_path: Path) -> None:
        """The spool at its byte limit, the destination down: held, then fallback and counted."""
        registry = CollectorRegistry()
        metrics = AuditMetrics(registry)
        sink = SwitchableFile(tmp_path / "audit.jsonl", delay_s=0.0)
        sink.down = True
        fallback = InMemorySink()
        spool = Spool(tmp_path / "spool" / "slot-0" / "file", ["file"], max_bytes=64 * 1024)
        pipeline = DeliveryPipeline(
            sink,
            spool,
            fallback=fallback,
            metrics=metrics,
            max_buffer_events=100,
            max_batch_events=20,
            max_held_events=150,
            flush_interval_s=0.02,
            retry_initial_s=0.01,
            retry_max_s=0.05,
        )
        lines = [
            orjson.dumps({"event_id": f"e{i:05d}", "pad": "x" * 250}) for i in range(2000)
        ]  # about 600 KB: ten times what the spool may hold
        for line in lines:
            pipeline.submit(line)
        wait_for(lambda: not pipeline._buffer)
        errors = sample(
            registry, "audit_log_spool_write_errors_total", destination="file", reason="full"
        )
        depth = sample(registry, "audit_log_buffer_depth", destination="file")
        held = len(pipeline._held)

        sink.down = False
        assert pipeline.flush(10)
        assert pipeline.close(5)

        emitted = set(ids(lines))
        delivered = set(ids(read_trail(tmp_path / "audit.jsonl")))
        copied = ids(fallback.lines)
        dropped = sample(registry, "audit_log_dropped_entries_total", reason="spool_unavailable")
        missing = emitted - delivered
        assert errors > 0
        assert 0 < held <= 150
        assert depth == held  # the gauge shows what is held in memory
        assert missing <= set(copied)
        assert len(missing) == dropped > 0
        # Everything waited while the destination failed: all of it is in the fallback, once.
        assert sorted(copied) == sorted(emitted)
        assert spool.total_bytes() == 0

    def test_entries_still_held_at_close_go_to_the_fallback_counted(self, tmp_path: Path) -> None:
        """Closing while the spool refuses: held entries are given up loudly, never silently."""
        registry = CollectorRegistry()
        sink = SwitchableFile(tmp_path / "audit.jsonl", delay_s=0.0)
        sink.down = True
        fallback = InMemorySink()
        directory = tmp_path / "spool" / "slot-0" / "file"
        spool = Spool(directory, ["file"], max_bytes=16 * 1024)
        pipeline = DeliveryPipeline(
            sink,
            spool,
            fallback=fallback,
            metrics=AuditMetrics(registry),
            max_buffer_events=100,
            max_batch_events=20,
            flush_interval_s=0.02,
            retry_initial_s=0.01,
            retry_max_s=0.05,
        )
        lines = [orjson.dumps({"event_id": f"e{i:05d}", "pad": "x" * 250}) for i in range(500)]
        for line in lines:
            pipeline.submit(line)
        wait_for(lambda: not pipeline._buffer)
        held_before_close = len(pipeline._held)
        assert pipeline.close(0.2) is False

        kept = Spool(directory, ["file"])  # what the next start would replay
        spooled: list[bytes] = []
        while records := kept.read("file", 100):
            spooled += [r.payload for r in records]
            kept.ack("file", records)
        kept.close()
        dropped = sample(registry, "audit_log_dropped_entries_total", reason="spool_unavailable")
        copied = ids(fallback.lines)
        not_spooled = set(ids(lines)) - set(ids(spooled))
        assert held_before_close > 0
        assert not_spooled <= set(copied)
        assert len(not_spooled) == dropped >= held_before_close
        assert len(copied) == len(set(copied)) == len(lines)  # all waited while failing, once


class FullDisk:
    """Writes to the spool's segment files run out of space after ``budget`` bytes while on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.budget: int | None = None
        real_write = os.write

        def write(fd: int, data: bytes | memoryview) -> int:
            if self.budget is None or not os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
                return real_write(fd, data)
            if self.budget <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = min(len(data), self.budget)
            self.budget -= n
            return real_write(fd, bytes(data[:n]))

        monkeypatch.setattr(os, "write", write)


class TestPipelineProperty:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        before=st.integers(0, 300),
        during=st.integers(1, 800),
        after=st.integers(0, 300),
        room=st.integers(0, 4000),
        destination_down=st.booleans(),
        durability=st.sampled_from(["memory", "spool"]),
        held=st.integers(0, 120),
    )
    def test_every_entry_is_delivered_or_dropped_into_the_fallback_exactly(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch,
        before: int,
        during: int,
        after: int,
        room: int,
        destination_down: bool,
        durability: str,
        held: int,
    ) -> None:
        """Property: whatever the outage, missing = in the fallback = counted, each once."""
        disk = FullDisk(monkeypatch)
        tmp = tmp_path_factory.mktemp("p")
        registry = CollectorRegistry()
        sink = SwitchableFile(tmp / "audit.jsonl", delay_s=0.0)
        fallback = InMemorySink()
        pipeline = DeliveryPipeline(
            sink,
            Spool(tmp / "spool" / "slot-0" / "file", ["file"]),
            fallback=fallback,
            metrics=AuditMetrics(registry),
            durability=Durability(durability),
            max_buffer_events=50,
            max_batch_events=10,
            max_held_events=held,
            flush_interval_s=0.01,
            retry_initial_s=0.005,
            retry_max_s=0.02,
        )
        counter = iter(range(10**6))

        def submit(n: int) -> list[bytes]:
            lines = [orjson.dumps({"event_id": f"e{next(counter):06d}"}) for _ in range(n)]
            for line in lines:
                pipeline.submit(line)
            return lines

        emitted = submit(before)
        assert pipeline.flush(10)
        disk.budget, sink.down = room, destination_down
        emitted += submit(during)
        time.sleep(0.02)
        disk.budget, sink.down = None, False
        emitted += submit(after)
        assert pipeline.flush(10)
        assert pipeline.close(5)

        delivered = set(ids(read_trail(tmp / "audit.jsonl")))
        copied = ids(fallback.lines)
        dropped = sum(
            sample(registry, "audit_log_dropped_entries_total", reason=reason)
            for reason in ("spool_unavailable", "spool_closed", "dead_letter_unavailable")
        )
        missing = set(ids(emitted)) - delivered
        assert delivered <= set(ids(emitted))
        assert missing <= set(copied)
        assert len(missing) == dropped
        assert len(copied) == len(set(copied))
        if not destination_down:
            assert set(copied) == missing  # the destination never failed: only the dropped
