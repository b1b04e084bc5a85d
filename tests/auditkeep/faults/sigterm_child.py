"""Child for the repeated-SIGTERM tests: a service configured only through AUDIT_LOG_*.

Emits until signalled and writes each event_id to stdout after ``emit``
returned, so the parent knows what must survive. ``auditkeep.runtime.configure``
installs the library's SIGTERM handler, as a service using the library would;
with ``CHILD_OWN_SIGTERM_HANDLER=1`` the application has its own instead.
"""

from __future__ import annotations

import os
import signal
import sys

from auditkeep.runtime import configure


def _own_handler(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    if os.environ.get("CHILD_OWN_SIGTERM_HANDLER") == "1":
        # An application with a handler of its own that raises on every
        # SIGTERM: the library leaves it in place and must survive it.
        signal.signal(signal.SIGTERM, _own_handler)
    logger = configure(service="sigterm-child")
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
    main()
