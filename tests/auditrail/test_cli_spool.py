"""``auditrail spool status`` and ``auditrail spool redeliver`` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from auditrail.logger import AuditLogger
from auditrail.metrics import AuditMetrics
from auditrail.sinks.memory import InMemorySink


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditrail.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class TestSpoolCommands:
    def test_redeliver_sends_dead_letters_to_the_configured_file(self, tmp_path: Path) -> None:
        """Dead letters of the file destination are appended to the file; none remain."""
        spool, trail = tmp_path / "spool", tmp_path / "audit.jsonl"
        dead = spool / "dead-letters" / "file.jsonl"
        dead.parent.mkdir(parents=True)
        lines = [orjson.dumps({"event_id": f"id-{i}"}) for i in range(5)]
        dead.write_bytes(b"".join(line + b"\n" for line in lines))
        env = {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(trail),
            "AUDIT_LOG_SPOOL_DIR": str(spool),
        }
        result = run_cli("spool", "redeliver", env=env)
        assert (result.returncode, result.stdout) == (
            0,
            "file: redelivered 5, still dead-lettered 0\n",
        )
        assert trail.read_bytes().splitlines() == lines
        assert not dead.exists()

    def test_status_reports_pending_entries_of_a_dead_process(self, tmp_path: Path) -> None:
        """Entries spooled by a logger that could not deliver show up as pending, slot free."""
        spool = tmp_path / "spool"

        class Down(InMemorySink):
            name = "file"

            def write_batch(self, lines):  # type: ignore[no-untyped-def]
                from auditrail.typing import SinkResult

                return SinkResult.RETRY

        logger = AuditLogger(
            Down(),
            service="svc",
            spool_dir=spool,
            metrics=AuditMetrics(CollectorRegistry()),
            fallback=InMemorySink(),
        )
        for _ in range(7):
            logger.emit("gitlab.api.get_mr_details")
        assert logger.close(0.2) is False
        result = run_cli(
            "spool", "status", "--format", "json", env={"AUDIT_LOG_SPOOL_DIR": str(spool)}
        )
        assert result.returncode == 0, result.stderr
        report = orjson.loads(result.stdout)
        assert [
            (s["slot"], s["locked"], s["destinations"]["file"]["pending"]) for s in report["slots"]
        ] == [("slot-0", False, 7)]
