"""What survives SIGTERM and SIGKILL at each durability level, after a restart on the spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries

CHILD = Path(__file__).with_name("child_emitter.py")


def run_child_until(
    path: Path, spool: Path, durability: str, sig: signal.Signals, count: int
) -> tuple[list[str], int]:
    """Start the emitter, await ``count`` returned ids, send ``sig``; return ids and exit code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(spool), durability, "0.02"],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    received = bytearray()
    deadline = time.monotonic() + 60
    while received.count(b"\n") < count and time.monotonic() < deadline:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        received += chunk
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    received += rest
    ids = [line.decode() for line in received.split(b"\n") if len(line) == 36]
    return ids, proc.returncode


def replay(path: Path, spool: Path) -> None:
    """A new process-lifetime on the same destination and spool delivers the backlog."""
    logger = AuditLogger(
        FileSink(path, max_bytes=0),
        service="child",
        spool_dir=spool,
        metrics=AuditMetrics(CollectorRegistry()),
    )
    assert logger.flush(60) is True
    assert logger.close() is True


class TestSigterm:
    @pytest.mark.parametrize("durability", ["memory", "spool"])
    def test_every_returned_entry_is_delivered_after_restart(
        self, tmp_path: Path, durability: str
    ) -> None:
        """SIGTERM mid-burst: every entry whose emit() returned reaches the file (after replay)."""
        path, spool = tmp_path / "audit.jsonl", tmp_path / "spool"
        ids, code = run_child_until(path, spool, durability, signal.SIGTERM, 20_000)
        assert code == 128 + signal.SIGTERM
        assert len(ids) >= 20_000
        replay(path, spool)
        lines = read_trail(path)
        delivered = {orjson.loads(line)["event_id"] for line in lines}
        assert set(ids) - delivered == set()
        validate_entries(lines[:: max(1, len(lines) // 500)])


class TestSigkill:
    def test_memory_level_loses_at_most_the_buffer(self, tmp_path: Path) -> None:
        """Default level, SIGKILL: only what was in memory (buffer + one batch) can be lost."""
        path, spool = tmp_path / "audit.jsonl", tmp_path / "spool"
        ids, code = run_child_until(path, spool, "memory", signal.SIGKILL, 20_000)
        assert code == -signal.SIGKILL
        replay(path, spool)
        delivered = {orjson.loads(line)["event_id"] for line in read_trail(path)}
        lost = set(ids) - delivered
        assert len(lost) <= 1000 + 100

    def test_spool_level_loses_nothing(self, tmp_path: Path) -> None:
        """Write-ahead level, SIGKILL: every entry whose emit() returned is delivered."""
        path, spool = tmp_path / "audit.jsonl", tmp_path / "spool"
        ids, code = run_child_until(path, spool, "spool", signal.SIGKILL, 20_000)
        assert code == -signal.SIGKILL
        replay(path, spool)
        delivered = {orjson.loads(line)["event_id"] for line in read_trail(path)}
        assert set(ids) - delivered == set()
