"""Chaining at emit: one chain per logger, the same bytes to every destination and the spool."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from auditkeep import Actor, ErrorClass
from auditkeep.integrity import _format
from auditkeep.integrity.chain import Chainer
from auditkeep.integrity.options import IntegrityOptions
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.file import FileSink
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import read_trail
from auditkeep.typing import SinkResult

# Cadence far away unless a test asks: checkpoints come only from close().
QUIET = IntegrityOptions(checkpoint_every=1_000_000, checkpoint_interval_s=3600)


def _logger(
    sink: Any, tmp: Path, integrity: IntegrityOptions | None = QUIET, **kw: Any
) -> AuditLogger:
    return AuditLogger(
        sink,
        service="svc",
        spool_dir=tmp / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
        integrity=integrity,
        **kw,
    )


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    threads=st.integers(min_value=1, max_value=6),
    per_thread=st.integers(min_value=0, max_value=80),
    every=st.integers(min_value=1, max_value=50),
)
def test_chain_is_continuous_across_threads(
    tmp_path_factory: pytest.TempPathFactory,
    chain_of: Callable[..., Any],
    threads: int,
    per_thread: int,
    every: int,
) -> None:
    """Threads emitting at once still give one gap-free chain, in order, in the file;
    every returned event_id is in it exactly once; checkpoints interleave wherever they fall."""
    tmp = tmp_path_factory.mktemp("chain")
    path = tmp / "audit.jsonl"
    logger = _logger(
        FileSink(path, max_bytes=0),
        tmp,
        IntegrityOptions(checkpoint_every=every, checkpoint_interval_s=0.01),
    )
    ids: list[list[str]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            ids[k].append(logger.emit("svc.work.done", details={"thread": k, "i": i}))

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert logger.close(10)
    chain = chain_of(read_trail(path))
    emitted = {i for group in ids for i in group}
    found = [e["event_id"] for e in chain.entries if e["action"] == "svc.work.done"]
    assert len(found) == len(set(found)) == len(emitted) == threads * per_thread
    assert set(found) == emitted
    assert chain.final is not None
    # Per thread, emit order is chain order.
    for k in range(threads):
        mine = [e["details"]["i"] for e in chain.entries if e["details"].get("thread") == k]
        assert mine == list(range(per_thread))


def test_every_destination_gets_the_same_bytes(
    tmp_path: Path, chain_of: Callable[..., Any]
) -> None:
    first, second = InMemorySink(), _Named("second")
    logger = _logger([first, second], tmp_path)
    for i in range(50):
        logger.emit("svc.work.done", target={"resource_type": "item", "n": i})
    assert logger.close(10)
    assert first.lines == second.lines
    chain_of(first.lines)


class _Named(InMemorySink):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]


class _Refusing:
    """A destination that is down: every batch is to be retried."""

    name = "down"

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        return SinkResult.RETRY

    def flush(self, timeout_s: float) -> bool:
        return False

    def close(self, timeout_s: float) -> None:
        return None


def test_spool_round_trip_keeps_the_bytes(tmp_path: Path, chain_of: Callable[..., Any]) -> None:
    """Entries spooled while the destination is down are replayed later byte for byte:
    the chain written by the first logger still links after the round trip through disk."""
    logger = _logger(_Refusing(), tmp_path, durability="spool")
    ids = [logger.emit("svc.work.done", details={"i": i}) for i in range(200)]
    assert not logger.close(0.3)  # the destination is down: everything stays in the spool
    # A later logger on the same spool replays them (integrity off: only the replay is tested).
    out = _Named("down")  # the spool is per destination name: the same one, now up
    later = _logger(out, tmp_path, integrity=None)
    deadline = time.monotonic() + 10
    while len(out.lines) < len(ids) + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert later.close(10)
    replayed = [line for line in out.lines if orjson.loads(line).get("chain")]
    chain = chain_of(sorted(replayed, key=lambda line: orjson.loads(line)["chain"]["seq"]))
    assert [e["event_id"] for e in chain.entries[1:-1]] == ids
    assert chain.final is not None


def test_checkpoint_after_every_n_entries(tmp_path: Path, chain_of: Callable[..., Any]) -> None:
    sink = InMemorySink()
    logger = _logger(sink, tmp_path, IntegrityOptions(checkpoint_every=5, checkpoint_interval_s=60))
    try:
        for _ in range(4):  # with chain.started, 5 entries
            logger.emit("svc.work.done")
        _wait_for(lambda: len(sink.lines) == 6)
        last = orjson.loads(sink.lines[-1])
        assert last["action"] == _format.ACTION_CHECKPOINT
        assert last["details"]["seq"] == 4
        assert last["details"]["final"] is False
        time.sleep(0.2)
        assert len(sink.lines) == 6  # nothing new, no checkpoint
    finally:
        logger.close(10)
    chain = chain_of(sink.lines)
    assert [c["details"]["seq"] for c in chain.checkpoints] == [4, 5]


def test_checkpoint_every_t_seconds_only_while_entries_arrive(
    tmp_path: Path, chain_of: Callable[..., Any]
) -> None:
    sink = InMemorySink()
    logger = _logger(
        sink, tmp_path, IntegrityOptions(checkpoint_every=1000, checkpoint_interval_s=0.2)
    )
    try:
        _wait_for(lambda: len(sink.lines) == 2)  # chain.started, then its checkpoint
        logger.emit("svc.work.done")
        _wait_for(lambda: len(sink.lines) == 4)
        time.sleep(0.6)  # idle: no entries, no checkpoints
        assert len(sink.lines) == 4
    finally:
        logger.close(10)
    chain = chain_of(sink.lines)
    # the final one covers the checkpoint before it: close always ends the chain
    assert [c["details"]["seq"] for c in chain.checkpoints] == [0, 2, 3]
    assert [c["details"]["final"] for c in chain.checkpoints] == [False, False, True]


def test_close_ends_the_chain_with_a_final_checkpoint(
    tmp_path: Path, chain_of: Callable[..., Any]
) -> None:
    sink = InMemorySink()
    logger = _logger(sink, tmp_path)
    event_id = logger.emit("svc.work.done")
    logger.close(10)
    logger.close(10)  # idempotent: one final checkpoint
    chain = chain_of(sink.lines)
    assert [e["action"] for e in chain.entries] == [
        _format.ACTION_STARTED,
        "svc.work.done",
        _format.ACTION_CHECKPOINT,
    ]
    assert chain.entries[1]["event_id"] == event_id
    assert chain.final is not None
    assert chain.final["details"]["seq"] == 1
    assert chain.final["details"]["signature"] is None  # no key: unsigned, and says so
    started = chain.started["details"]
    assert started["key_id"] is None
    assert started["seal"] == "none"
    assert started["format"] == _format.FORMAT_VERSION


def test_an_empty_chain_still_starts_and_ends(tmp_path: Path, chain_of: Callable[..., Any]) -> None:
    sink = InMemorySink()
    _logger(sink, tmp_path).close(10)
    chain = chain_of(sink.lines)
    assert len(chain.entries) == 2
    assert chain.final is not None


def test_each_logger_has_its_own_chain(tmp_path: Path, chain_of: Callable[..., Any]) -> None:
    a, b = InMemorySink(), InMemorySink()
    la, lb = _logger(a, tmp_path / "a"), _logger(b, tmp_path / "b")
    la.emit("svc.work.done")
    lb.emit("svc.work.done")
    la.close(10)
    lb.close(10)
    assert chain_of(a.lines).chain_id != chain_of(b.lines).chain_id


def test_entry_size_limit_counts_the_chain(tmp_path: Path, chain_of: Callable[..., Any]) -> None:
    """The worst core entry, with its chain field, still fits the smallest limit (1,024)."""
    sink = InMemorySink()
    logger = AuditLogger(
        sink,
        service="s" * 64,
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
        max_entry_bytes=1024,
        integrity=QUIET,
    )
    logger.emit(
        "a" * 63 + "." + "b" * 64,
        outcome="failure",
        error=ErrorClass.VALIDATION_ERROR,
        actor=Actor("𝄞\udcff" * 500, '"\\𝄞' * 500),
        target={"resource_type": "𝄞" * 500, **{f"𝄞{i}": "𝄞" * 99 for i in range(99)}},
        error_message="\udcff" * 5000,
        details={"a": "𝄞" * 5000},
    )
    for size in (100, 900, 1000, 5000):
        logger.emit("svc.work.done", details={"blob": "x" * size})
    logger.close(10)
    assert all(len(line) <= 1024 for line in sink.lines)
    chain = chain_of(sink.lines)
    assert chain.entries[1]["truncated"] is True


def test_integrity_off_leaves_the_emit_path_alone(tmp_path: Path) -> None:
    sink = InMemorySink()
    logger = _logger(sink, tmp_path, integrity=None)
    assert logger._chain is None
    assert logger._fanout is not None
    assert logger._submit == logger._fanout.submit  # no extra call per entry
    logger.emit("svc.work.done")
    logger.close(10)
    [entry] = sink.entries()
    assert "chain" not in entry


def test_an_entry_after_the_end_is_delivered_unchained() -> None:
    """A caller that passed the logger's closed check just before close(): kept, not chained."""
    delivered: list[bytes] = []
    chainer = Chainer(QUIET, service="svc", submit=delivered.append, count=lambda a, o: None)
    chainer.start()
    chainer.close()
    chainer.submit(b'{"late":true}')
    assert delivered[-1] == b'{"late":true}'
    assert [orjson.loads(line)["chain"]["seq"] for line in delivered[:-1]] == [0, 1]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
