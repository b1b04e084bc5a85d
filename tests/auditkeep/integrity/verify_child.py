"""Child process for the verify tests: a real logger configured from AUDIT_LOG_*.

Usage: verify_child.py COUNT TAG [START_AT] [--hang] [--slow]

Emits COUNT entries through whatever AUDIT_LOG_* configure (the tests use the
file destination with rotation, gzip and a signing key), then closes the
logger (its final checkpoint) and exits. START_AT (unix seconds) lets two
children begin together, so that their lines interleave. With ``--hang`` it prints ``ready``
after the entries and waits to be killed instead of closing: a crash.
``--slow`` spreads the entries out (about a second per 250).
"""

from __future__ import annotations

import sys
import time

from prometheus_client import CollectorRegistry

from auditkeep.config import AuditConfig
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor


def main(argv: list[str]) -> None:
    count, tag = int(argv[1]), argv[2]
    start_at = float(argv[3]) if len(argv) > 3 and not argv[3].startswith("--") else 0.0
    logger = AuditConfig.from_env().build(
        metrics=AuditMetrics(CollectorRegistry()), redactor=SecretRedactor()
    )
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        logger.emit(
            "gitlab.api.push_branch",
            target={"resource_type": "branch", "project_id": 1, "branch": f"{tag}-{i}"},
            details={"i": i, "note": "padding " * 8},
        )
        if i % 5 == 4:
            time.sleep(
                0.02 if "--slow" in argv else 0.002
            )  # let the other process and the checkpoint thread in
    if "--hang" in argv:
        logger.flush(10)
        time.sleep(0.5)  # a checkpoint or two from the background thread
        print("ready", flush=True)
        time.sleep(60)
        return
    logger.close(10)


if __name__ == "__main__":
    main(sys.argv)
