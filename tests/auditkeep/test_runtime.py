"""``auditkeep.configure()`` / ``auditkeep.get_logger()``: one process logger, thread-safe.

Threads released together by a barrier ask for the logger at once. Before the
fix, two of them could both build one, and the second ``configure`` closed the
logger the first had already handed out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditkeep
from auditkeep import AlreadyConfiguredError, AuditLogger, runtime
from auditkeep.testing import read_trail, validate_entries

THREADS = 8


@pytest.fixture
def environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """AUDIT_LOG_* for a file destination in tmp_path; no process logger before or after."""
    env = {
        "AUDIT_LOG_SERVICE_NAME": "test-runtime",
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(tmp_path / "audit.jsonl"),
        "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runtime, "_current", None)
    yield env
    current = runtime._current
    if current is not None:
        current.close(5.0)


def at_once(*calls: Callable[[], AuditLogger]) -> list[AuditLogger | BaseException]:
    """Run the calls on their own threads, released together; each one's result or error."""
    barrier = threading.Barrier(len(calls))
    results: list[AuditLogger | BaseException | None] = [None] * len(calls)

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 - the result of this thread
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return [r for r in results if r is not None]


def trail_ids(env: dict[str, str]) -> list[str]:
    entries = validate_entries(read_trail(env["AUDIT_LOG_FILE_PATH"]))
    return [entry["event_id"] for entry in entries]


class TestProcessLogger:
    def test_threads_asking_at_once_share_one_open_logger(self, environ: dict[str, str]) -> None:
        """get_logger() from 8 threads at once: one open logger; every entry reaches the file."""
        results = at_once(*[auditkeep.get_logger] * THREADS)
        assert all(isinstance(r, AuditLogger) for r in results), results
        assert len({id(r) for r in results}) == 1
        logger = results[0]
        assert isinstance(logger, AuditLogger)
        assert not logger.closed
        ids: list[str] = []
        emitters = [
            threading.Thread(target=lambda: ids.append(logger.emit("test.runtime.emitted")))
            for _ in range(THREADS)
        ]
        for emitter in emitters:
            emitter.start()
        for emitter in emitters:
            emitter.join(30)
        assert logger.close(5.0)
        assert len(set(ids)) == THREADS
        assert sorted(trail_ids(environ)) == sorted(ids)

    def test_configure_at_once_builds_one_and_refuses_the_rest(
        self, environ: dict[str, str]
    ) -> None:
        """configure() from 8 threads: one wins, the others get AlreadyConfiguredError."""

        def configure() -> AuditLogger:
            return auditkeep.configure(handle_sigterm=False)

        results = at_once(*[configure] * THREADS)
        built = [r for r in results if isinstance(r, AuditLogger)]
        refused = [r for r in results if isinstance(r, AlreadyConfiguredError)]
        assert (len(built), len(refused)) == (1, THREADS - 1)
        assert not built[0].closed
        assert auditkeep.get_logger() is built[0]
        assert "already configured" in str(refused[0])

    def test_configure_racing_get_logger_never_closes_a_logger_handed_out(
        self, environ: dict[str, str]
    ) -> None:
        """Half the threads configure, half ask: every logger anyone got is the one, open."""

        def configure() -> AuditLogger:
            return auditkeep.configure(handle_sigterm=False)

        calls: list[Callable[[], AuditLogger]] = [configure, auditkeep.get_logger] * (THREADS // 2)
        results = at_once(*calls)
        loggers = {id(r): r for r in results if isinstance(r, AuditLogger)}
        errors = [r for r in results if not isinstance(r, AuditLogger)]
        assert len(loggers) == 1
        assert all(isinstance(e, AlreadyConfiguredError) for e in errors)
        (logger,) = loggers.values()
        assert not logger.closed
        assert logger.emit("test.runtime.emitted")

    def test_after_close_configure_builds_the_next_logger(self, environ: dict[str, str]) -> None:
        """A closed process logger stays current (its emit raises) until configure() replaces it."""
        first = auditkeep.configure(handle_sigterm=False)
        first.close(5.0)
        assert auditkeep.get_logger() is first
        with pytest.raises(auditkeep.LoggerClosedError):
            first.emit("test.runtime.emitted")
        second = auditkeep.configure(handle_sigterm=False)
        assert second is not first
        assert not second.closed
        assert auditkeep.get_logger() is second
        event_id = second.emit("test.runtime.emitted")
        assert second.close(5.0)
        entries: list[dict[str, Any]] = [
            orjson.loads(line) for line in read_trail(environ["AUDIT_LOG_FILE_PATH"])
        ]
        assert [e["event_id"] for e in entries] == [event_id]

    def test_configure_reads_the_environment_it_is_given(self, environ: dict[str, str]) -> None:
        """configure(environ) reads that mapping, not os.environ; service= is only a default."""
        env = {**environ, "AUDIT_LOG_SERVICE_NAME": "from-mapping"}
        logger = auditkeep.configure(env, service="from-argument", handle_sigterm=False)
        assert logger.service == "from-mapping"
        logger.close(5.0)
        del env["AUDIT_LOG_SERVICE_NAME"]
        assert auditkeep.configure(env, service="from-argument", handle_sigterm=False).service == (
            "from-argument"
        )
