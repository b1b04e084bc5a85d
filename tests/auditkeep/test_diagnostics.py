"""Library diagnostics go through ``logging``: loud on stderr by default, routable, silenceable.

Each case runs in a fresh interpreter (pytest's own log capture would hide the default),
with a destination that refuses its batch for good, which the pipeline must report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = r"""
import logging, sys

spool, mode = sys.argv[1], sys.argv[2]
if mode == "routed":
    logging.basicConfig(
        stream=sys.stdout, level=logging.WARNING, format="%(name)s|%(levelname)s|%(message)s"
    )
elif mode == "silenced":
    logging.getLogger("auditkeep").setLevel(logging.CRITICAL)

from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.memory import InMemorySink
from auditkeep.typing import SinkResult


class Refusing(InMemorySink):
    name = "siem"

    def write_batch(self, lines):
        return SinkResult.FAILURE


logger = AuditLogger(
    Refusing(),
    service="svc",
    spool_dir=spool,
    metrics=AuditMetrics(CollectorRegistry()),
    fallback=InMemorySink(),
)
logger.emit("test.diagnostics")
logger.flush(5)
logger.close(5)
handlers = [logging.getLogger(n).handlers for n in ("auditkeep", "auditkeep.delivery")]
print("handlers:", handlers)
"""


def run(tmp_path: Path, mode: str) -> tuple[str, str]:
    spool = tmp_path / "spool"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(spool), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout, proc.stderr


def refusal(tmp_path: Path) -> str:
    return (
        f"auditkeep: siem permanently refused 1 entries; kept in"
        f" {tmp_path / 'spool' / 'dead-letters'} for `auditkeep spool redeliver`"
    )


class TestDiagnostics:
    def test_with_no_logging_configured_a_warning_reaches_stderr(self, tmp_path: Path) -> None:
        """Nothing configured: Python's last-resort handler prints the warning on stderr.

        The library adds no handler of its own (not even a NullHandler)."""
        out, err = run(tmp_path, "default")
        assert (out, err) == ("handlers: [[], []]\n", refusal(tmp_path) + "\n")

    def test_an_application_routes_them_through_its_own_logging(self, tmp_path: Path) -> None:
        """logging.basicConfig(stream=stdout): the record arrives there, named and levelled."""
        out, err = run(tmp_path, "routed")
        assert err == ""
        assert out.splitlines() == [
            f"auditkeep.delivery|WARNING|{refusal(tmp_path)}",
            "handlers: [[], []]",
        ]

    def test_an_application_silences_them(self, tmp_path: Path) -> None:
        """logging.getLogger("auditkeep").setLevel(CRITICAL): nothing on stderr, entry kept."""
        out, err = run(tmp_path, "silenced")
        assert (out, err) == ("handlers: [[], []]\n", "")
        kept = tmp_path / "spool" / "dead-letters" / "siem.jsonl"
        assert len(kept.read_bytes().splitlines()) == 1  # silenced, not lost
