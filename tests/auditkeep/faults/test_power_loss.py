"""What each durability level promises on power loss, shown by when the spool is fsynced.

A power cut cannot be staged here; what survives one is exactly what was
fsynced. So these tests watch ``os.fsync`` and check, by inode, that the
segment holding an entry was fsynced: at ``fsync`` before ``emit`` returned,
at ``spool`` by the background sync within its interval (so a power loss
loses at most that interval), and never by the caller at ``spool`` (which is
what makes it fast). ``memory`` promises nothing beyond SIGKILL's column
(tests/auditkeep/test_shutdown.py::TestSigkill).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.memory import InMemorySink
from auditkeep.typing import SinkResult


class FsyncWatch:
    """Records (inode, thread, time) of every fsync the process makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []
        self._lock = threading.Lock()

    def synced_inodes(self, *, since: float = 0.0, thread: int | None = None) -> set[int]:
        with self._lock:
            return {
                ino
                for ino, tid, at in self.calls
                if at >= since and (thread is None or tid == thread)
            }


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> FsyncWatch:
    real_fsync = os.fsync
    recorder = FsyncWatch()

    def fsync(fd: int) -> None:
        ino = os.fstat(fd).st_ino
        real_fsync(fd)
        with recorder._lock:
            recorder.calls.append((ino, threading.get_ident(), time.monotonic()))

    monkeypatch.setattr(os, "fsync", fsync)
    return recorder


class StuckSink(InMemorySink):
    """Never accepts, so entries stay in the spool where the test can find them."""

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        return SinkResult.RETRY


def segment_inodes(spool: Path) -> set[int]:
    return {p.stat().st_ino for p in spool.rglob("*.seg")}


def make_logger(tmp_path: Path, durability: str) -> AuditLogger:
    return AuditLogger(
        StuckSink(),
        service="svc",
        spool_dir=tmp_path / "spool",
        durability=durability,
        metrics=AuditMetrics(CollectorRegistry()),
        fallback=InMemorySink(),
    )


def test_fsync_level_syncs_the_entrys_segment_before_emit_returns(
    tmp_path: Path, watch: FsyncWatch
) -> None:
    """``fsync``: power loss loses nothing that emit() returned."""
    logger = make_logger(tmp_path, "fsync")
    try:
        before = time.monotonic()
        logger.emit("gitlab.api.push_branch", target={"resource_type": "branch"})
        me = threading.get_ident()
        segments = segment_inodes(tmp_path / "spool")
        assert segments, "the entry is in a spool segment"
        assert segments & watch.synced_inodes(since=before, thread=me)
    finally:
        logger.close(1)


def test_spool_level_leaves_fsync_to_the_background_within_its_interval(
    tmp_path: Path, watch: FsyncWatch
) -> None:
    """``spool``: the caller never fsyncs; the worker does within ~1 s (the power-loss window)."""
    logger = make_logger(tmp_path, "spool")
    try:
        before = time.monotonic()
        logger.emit("gitlab.api.push_branch", target={"resource_type": "branch"})
        me = threading.get_ident()
        assert watch.synced_inodes(since=before, thread=me) == set()
        segments = segment_inodes(tmp_path / "spool")
        deadline = time.monotonic() + 5
        while not segments & watch.synced_inodes(since=before) and time.monotonic() < deadline:
            time.sleep(0.05)
        synced_at = min(at for ino, _tid, at in watch.calls if ino in segments and at >= before)
        assert synced_at - before < 1.0 + 0.5  # fsync interval (1 s) plus scheduling slack
    finally:
        logger.close(1)
