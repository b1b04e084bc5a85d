"""Child process for the http SIGTERM test: emits to an HttpSink until killed.

Usage: http_child_emitter.py ENDPOINT SPOOL_DIR [http|otlp]

Each event_id is written to stdout (one per line) only after ``emit`` returned, so the
parent knows a lower bound of what must survive. The fallback copies go to stderr.
"""

from __future__ import annotations

import os
import sys

from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.runtime import install_sigterm_handler
from auditkeep.sinks.http import HttpSink
from auditkeep.sinks.otlp import OtlpSink
from auditkeep.sinks.stdout import StderrSink


def main(argv: list[str]) -> None:
    endpoint, spool_dir = argv[1], argv[2]
    kind = OtlpSink if argv[3:] == ["otlp"] else HttpSink
    logger = AuditLogger(
        kind(endpoint, connect_timeout_s=0.5, read_timeout_s=1.0),
        service="child",
        spool_dir=spool_dir,
        max_buffer_events=1000,
        max_batch_events=200,
        retry_initial_s=0.05,
        retry_max_s=0.5,
        fallback=StderrSink(),
        metrics=AuditMetrics(CollectorRegistry()),
        shutdown_timeout_s=0.5,
    )
    assert install_sigterm_handler()
    out = sys.stdout.fileno()
    i = 0
    while True:  # ends by the parent's signal; the parent bounds the wait
        event_id = logger.emit(
            "siem.forward",
            target={"resource_type": "branch", "project_id": 1, "branch": f"b{i}"},
        )
        os.write(out, event_id.encode() + b"\n")
        i += 1


if __name__ == "__main__":
    main(sys.argv)
