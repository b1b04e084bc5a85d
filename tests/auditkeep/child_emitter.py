"""Child process for the shutdown tests: emits until killed, reporting each returned id.

Usage: child_emitter.py AUDIT_FILE SPOOL_DIR DURABILITY SINK_DELAY_S

Each event_id is written to stdout (one per line) only after ``emit`` returned,
so the parent knows a lower bound of what must survive.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import ClassVar

from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.runtime import install_sigterm_handler
from auditkeep.sinks.file import FileSink
from auditkeep.typing import SinkResult


class SlowFileSink(FileSink):
    """A file destination that takes ``delay_s`` per batch, so a backlog builds up."""

    name: ClassVar[str] = "file"

    def __init__(self, path: str, delay_s: float) -> None:
        super().__init__(path, max_bytes=0)
        self.delay_s = delay_s

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        time.sleep(self.delay_s)
        return super().write_batch(lines)


def main(argv: list[str]) -> None:
    path, spool_dir, durability, delay = argv[1], argv[2], argv[3], float(argv[4])
    logger = AuditLogger(
        SlowFileSink(path, delay),
        service="child",
        spool_dir=spool_dir,
        durability=durability,
        max_buffer_events=1000,
        max_batch_events=100,
        metrics=AuditMetrics(CollectorRegistry()),
        shutdown_timeout_s=0.5,
    )
    assert install_sigterm_handler()
    out = sys.stdout.fileno()
    i = 0
    while True:  # ends by the parent's signal; the parent bounds the wait
        event_id = logger.emit(
            "gitlab.api.push_branch",
            target={"resource_type": "branch", "project_id": 1, "branch": f"b{i}"},
        )
        os.write(out, event_id.encode() + b"\n")
        i += 1


if __name__ == "__main__":
    main(sys.argv)
