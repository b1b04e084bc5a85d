"""Child process for the integrity process tests: configure() from AUDIT_LOG_*, then emit.

Usage: chain_child.py COUNT PAUSE_S

Emits COUNT entries (forever when COUNT is 0), PAUSE_S apart, writing each
event_id to stdout once ``emit`` returned; then exits normally (atexit closes
the logger). SIGTERM ends it through the library's handler.
"""

from __future__ import annotations

import os
import sys
import time

import auditkeep


def main(argv: list[str]) -> None:
    count, pause = int(argv[1]), float(argv[2])
    logger = auditkeep.configure(service="child")
    out = sys.stdout.fileno()
    i = 0
    while count == 0 or i < count:
        event_id = logger.emit(
            "svc.child.work", target={"resource_type": "item", "n": i, "pid": os.getpid()}
        )
        os.write(out, event_id.encode() + b"\n")
        i += 1
        if pause:
            time.sleep(pause)


if __name__ == "__main__":
    main(sys.argv)
