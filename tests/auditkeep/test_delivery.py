"""The delivery pipeline loses nothing: concurrency, failing sinks, hanging sinks, dead letters."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep import Actor, correlation_scope
from auditkeep.exceptions import LoggerClosedError
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import read_trail, validate_entries
from auditkeep.typing import SinkResult

MR = {"resource_type": "merge_request", "project_id": 123, "mr_iid": 45}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


class FlakySink:
    """Answers RETRY to its first ``failures`` batches, then keeps everything."""

    name: ClassVar[str] = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.failed_batches: list[list[bytes]] = []
        self.delivered: list[bytes] = []

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if len(self.failed_batches) < self.failures:
            self.failed_batches.append(list(lines))
            return SinkResult.RETRY
        self.delivered.extend(lines)
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        return None


class HangingSink:
    """Blocks inside its first write until released, then keeps everything."""

    name: ClassVar[str] = "hanging"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.delivered: list[bytes] = []

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if not self.release.is_set():
            self.entered.set()
            self.release.wait(60)
        self.delivered.extend(lines)
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        self.release.set()


class RefusingSink:
    """Refuses batches holding a poisoned entry for good (like HTTP 400)."""

    name: ClassVar[str] = "refusing"

    def __init__(self) -> None:
        self.delivered: list[bytes] = []

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if any(b"poison" in line for line in lines):
            return SinkResult.FAILURE
        self.delivered.extend(lines)
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        return None


def ids_of(lines: Sequence[bytes]) -> list[str]:
    return [orjson.loads(line)["event_id"] for line in lines]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


class TestConcurrentEmitters:
    def test_threads_and_tasks_reach_the_file_once_each_with_their_scope(
        self, tmp_path: Path, spool_dir: Path, metrics: AuditMetrics, registry: CollectorRegistry
    ) -> None:
        """100,000 entries from 8 threads and 200 tasks land exactly once, each in its scope."""
        path = tmp_path / "audit.jsonl"
        logger = AuditLogger(
            FileSink(path, max_bytes=8 * 1024 * 1024, backups=50),
            service="svc",
            spool_dir=spool_dir,
            metrics=metrics,
        )
        per_thread, per_task = 6_250, 250
        returned: dict[str, list[str]] = {}
        scopes: dict[str, str] = {}
        lock = threading.Lock()

        def thread_body(n: int) -> None:
            name = f"thread-{n}"
            with correlation_scope(Actor("poll_cycle", name)) as cid:
                ids = [
                    logger.emit("gitlab.api.get_mr_details", target=MR, details={"who": name})
                    for _ in range(per_thread)
                ]
            with lock:
                returned[name], scopes[name] = ids, cid

        async def task_body(n: int) -> None:
            name = f"task-{n}"
            with correlation_scope(Actor("webhook_event", name)) as cid:
                ids = []
                for i in range(per_task):
                    ids.append(logger.emit("jira.api.get_issue", details={"who": name}))
                    if i % 50 == 0:
                        await asyncio.sleep(0)  # interleave the tasks
            returned[name], scopes[name] = ids, cid

        async def all_tasks() -> None:
            await asyncio.gather(*(task_body(n) for n in range(200)))

        threads = [threading.Thread(target=thread_body, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        asyncio.run(all_tasks())
        for thread in threads:
            thread.join()
        assert logger.close(30) is True

        lines = read_trail(path)
        entries = [orjson.loads(line) for line in lines]
        validate_entries(lines[::97])  # full-schema check on a spread sample; all parsed above
        emitted = {eid for ids in returned.values() for eid in ids}
        assert len(emitted) == 100_000
        assert sorted(e["event_id"] for e in entries) == sorted(emitted)
        by_scope: dict[str, set[str]] = {}
        for entry in entries:
            by_scope.setdefault(entry["details"]["who"], set()).add(entry["correlation_id"])
        assert by_scope == {name: {cid} for name, cid in scopes.items()}
        assert len(set(scopes.values())) == 208
        assert sample(registry, "audit_log_dropped_entries_total", reason="spool_unavailable") == 0


class TestFailingSink:
    def test_recovers_and_delivers_everything_after_failures(
        self, spool_dir: Path, metrics: AuditMetrics, registry: CollectorRegistry
    ) -> None:
        """A sink failing 5 batches gets every entry once it recovers; the fallback saw them."""
        sink, fallback = FlakySink(failures=5), InMemorySink()
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=spool_dir,
            metrics=metrics,
            fallback=fallback,
            max_batch_events=100,
            retry_initial_s=0.01,
            flush_interval_s=0.01,
        )
        emitted = [logger.emit("gitlab.api.post_mr_note", target=MR) for _ in range(5_000)]
        assert logger.flush(30) is True
        logger.close()

        assert sorted(set(ids_of(sink.delivered))) == sorted(emitted)
        failed = {line for batch in sink.failed_batches for line in batch}
        assert len(sink.failed_batches) == 5
        assert failed <= set(fallback.lines)
        assert sample(registry, "audit_log_sink_errors_total", destination="flaky") == 5
        assert sample(registry, "audit_log_retried_entries_total", destination="flaky") >= 100
        assert sample(registry, "audit_log_fallback_writes_total", destination="flaky") == len(
            fallback.lines
        )
        assert sample(registry, "audit_log_dropped_entries_total", reason="spool_unavailable") == 0


class TestHangingSink:
    def test_emit_stays_prompt_and_overflow_goes_to_the_spool(
        self, spool_dir: Path, metrics: AuditMetrics, registry: CollectorRegistry
    ) -> None:
        """A hung sink: emit stays prompt, memory bounded, the spool takes the overflow."""
        sink = HangingSink()
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=spool_dir,
            metrics=metrics,
            max_buffer_events=1000,
            max_batch_events=100,
            flush_interval_s=0.01,
        )
        pipeline = logger.pipeline
        assert pipeline is not None
        emitted = [logger.emit("gitlab.api.get_mr_diff", target=MR) for _ in range(200)]
        assert sink.entered.wait(10)
        worst_ns, max_depth = 0, 0
        for i in range(50_000):
            start = time.perf_counter_ns()
            emitted.append(logger.emit("gitlab.api.get_mr_diff", target=MR))
            worst_ns = max(worst_ns, time.perf_counter_ns() - start)
            if i % 100 == 0:
                max_depth = max(max_depth, len(pipeline._buffer))
        spooled = sample(registry, "audit_log_spooled_entries_total", reason="overflow")
        spool_bytes = sample(registry, "audit_log_spool_bytes", destination="hanging")
        in_flight = sample(registry, "audit_log_in_flight_entries", destination="hanging")

        # A generous bound against scheduler noise; bench/ measures the real figure.
        assert worst_ns < 250_000_000
        assert max_depth <= 1000
        assert spooled >= 49_000
        assert spool_bytes > 0
        assert in_flight == 100  # the batch the sink is holding

        sink.release.set()
        assert logger.flush(60) is True
        logger.close()
        assert sorted(set(ids_of(sink.delivered))) == sorted(emitted)


class TestDeadLetters:
    def test_permanently_refused_batches_are_kept_and_counted(
        self, spool_dir: Path, metrics: AuditMetrics, registry: CollectorRegistry
    ) -> None:
        """A batch the sink never accepts is dead-lettered and counted, not retried."""
        sink, fallback = RefusingSink(), InMemorySink()
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=spool_dir,
            metrics=metrics,
            fallback=fallback,
            max_batch_events=1,
            flush_interval_s=0.01,
        )
        good = logger.emit("gitlab.api.get_mr_details", target=MR)
        assert logger.flush(10)
        bad = logger.emit("gitlab.api.get_mr_details", target=MR, details={"note": "poison"})
        assert logger.flush(10)
        logger.close()

        dead = (spool_dir / "dead-letters" / "refusing.jsonl").read_bytes().splitlines()
        assert ids_of(dead) == [bad]
        assert ids_of(sink.delivered) == [good]
        assert ids_of(fallback.lines) == [bad]
        assert sample(registry, "audit_log_dead_letters_total", destination="refusing") == 1


class TestLifecycle:
    @pytest.fixture
    def logger(self, spool_dir: Path, metrics: AuditMetrics) -> Iterator[AuditLogger]:
        logger = AuditLogger(InMemorySink(), service="svc", spool_dir=spool_dir, metrics=metrics)
        yield logger
        logger.close()

    def test_emit_after_close_raises_and_is_counted(
        self, logger: AuditLogger, registry: CollectorRegistry
    ) -> None:
        """emit() after close() raises LoggerClosedError and increments the counter."""
        assert logger.close() is True
        assert logger.close() is True  # idempotent
        with pytest.raises(LoggerClosedError):
            logger.emit("gitlab.api.get_mr_details")
        assert sample(registry, "audit_log_emit_after_close_total") == 1

    def test_flush_returns_false_at_the_deadline_when_the_sink_is_down(
        self, spool_dir: Path, metrics: AuditMetrics
    ) -> None:
        """flush() honours its deadline; what it could not deliver stays spooled."""
        sink = FlakySink(failures=10**9)
        logger = AuditLogger(
            sink, service="svc", spool_dir=spool_dir, metrics=metrics, fallback=InMemorySink()
        )
        logger.emit("gitlab.api.get_mr_details")
        started = time.monotonic()
        assert logger.flush(0.5) is False
        assert time.monotonic() - started < 5
        assert logger.close(0.2) is False
        assert logger.close(0.2) is False

    def test_disabled_logger_writes_nothing(self, tmp_path: Path, metrics: AuditMetrics) -> None:
        """AUDIT_LOG_ENABLED=false: emit returns "" and no spool or file is touched."""
        sink = InMemorySink()
        logger = AuditLogger(
            sink, service="svc", spool_dir=tmp_path / "spool", metrics=metrics, enabled=False
        )
        assert logger.emit("gitlab.api.get_mr_details") == ""
        assert logger.close() is True
        assert sink.lines == []
        assert not (tmp_path / "spool").exists()


class TestRestart:
    def test_spooled_entries_are_replayed_by_the_next_logger(
        self, spool_dir: Path, registry: CollectorRegistry
    ) -> None:
        """What a down sink could not take at close is delivered by the next start on the spool."""
        down = FlakySink(failures=10**9)
        first = AuditLogger(
            down,
            service="svc",
            spool_dir=spool_dir,
            metrics=AuditMetrics(registry),
            fallback=InMemorySink(),
        )
        emitted = [first.emit("gitlab.api.push_branch") for _ in range(3_000)]
        assert first.close(0.3) is False

        up = FlakySink(failures=0)  # the same destination name, now healthy
        second = AuditLogger(
            up, service="svc", spool_dir=spool_dir, metrics=AuditMetrics(CollectorRegistry())
        )
        assert second.flush(30) is True
        second.close()
        assert down.delivered == []
        assert sorted(set(ids_of(up.delivered))) == sorted(emitted)


class TestFanOut:
    def test_a_dead_destination_never_holds_back_the_others(
        self, tmp_path: Path, spool_dir: Path, metrics: AuditMetrics
    ) -> None:
        """file + a dead destination: the file gets everything at once, once; the rest waits."""
        path = tmp_path / "audit.jsonl"
        dead = FlakySink(failures=10**9)
        logger = AuditLogger(
            [FileSink(path, max_bytes=0), dead],
            service="svc",
            spool_dir=spool_dir,
            metrics=metrics,
            fallback=InMemorySink(),
            flush_interval_s=0.01,
        )
        emitted = [logger.emit("gitlab.api.get_mr_details", target=MR) for _ in range(5_000)]
        file_pipeline, dead_pipeline = logger.pipelines
        assert file_pipeline.flush(30) is True
        assert sorted(ids_of(read_trail(path))) == sorted(emitted)
        assert dead_pipeline.flush(0.2) is False
        assert logger.close(0.5) is False
        assert sorted(ids_of(read_trail(path))) == sorted(emitted)

        revived = FlakySink(failures=0)
        second = AuditLogger(
            [FileSink(path, max_bytes=0), revived],
            service="svc",
            spool_dir=spool_dir,
            metrics=AuditMetrics(CollectorRegistry()),
        )
        assert second.flush(30) is True
        second.close()
        assert sorted(set(ids_of(revived.delivered))) == sorted(emitted)
        assert sorted(ids_of(read_trail(path))) == sorted(emitted)  # no duplicates in the file

    def test_sink_names_must_be_distinct(self, spool_dir: Path, metrics: AuditMetrics) -> None:
        """Two destinations of one name would share a spool: refused at construction."""
        with pytest.raises(ValueError, match="distinct names"):
            AuditLogger(
                [InMemorySink(), InMemorySink()], service="s", spool_dir=spool_dir, metrics=metrics
            )
