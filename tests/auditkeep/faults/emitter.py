"""A child process for the fault suite, using only the public API and ``AUDIT_LOG_*``.

Usage: emitter.py REPLY_FD. Reads one command per line on stdin and answers
each with one JSON line on REPLY_FD (stdout is the logger's fallback, so the
parent points it at a file of its own):

    emit PHASE N  -> {"ids": [...], "slowest_emit_s": s}   N entries tagged details.phase = PHASE
    flush T       -> {"ok": bool, "elapsed": s}
    cpu S         -> {"cpu": s}         CPU time of the whole process while the main thread sleeps S
    metrics       -> {"dropped": n, "fallback": n, "spool_write_errors": n, "buffer": n, ...}
    close T       -> {"ok": bool}       and exit
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson
from prometheus_client import REGISTRY

from auditkeep.runtime import configure


def total(name: str) -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    )


def main(argv: list[str]) -> None:
    reply_fd = int(argv[1])
    logger = configure()

    def reply(message: dict[str, Any]) -> None:
        os.write(reply_fd, orjson.dumps(message) + b"\n")

    for raw in sys.stdin:  # ends when the parent closes stdin or kills us
        command, *args = raw.split()
        if command == "emit":
            phase, count = args[0], int(args[1])
            ids, slowest = [], 0.0
            for i in range(count):
                started = time.perf_counter()
                ids.append(
                    logger.emit(
                        "gitlab.api.push_branch",
                        target={
                            "resource_type": "branch",
                            "project_id": 7,
                            "branch": f"{phase}{i}",
                        },
                        details={"phase": phase, "pad": "x" * 200},
                    )
                )
                slowest = max(slowest, time.perf_counter() - started)
            reply({"ids": ids, "slowest_emit_s": slowest})
        elif command == "flush":
            started = time.monotonic()
            ok = logger.flush(float(args[0]))
            reply({"ok": ok, "elapsed": time.monotonic() - started})
        elif command == "cpu":
            started = time.process_time()
            time.sleep(float(args[0]))
            reply({"cpu": time.process_time() - started})
        elif command == "metrics":
            reply(
                {
                    "dropped": total("audit_log_dropped_entries_total"),
                    "fallback": total("audit_log_fallback_writes_total"),
                    "spool_write_errors": total("audit_log_spool_write_errors_total"),
                    "buffer": total("audit_log_buffer_depth"),
                    "corrupt": total("audit_log_spool_corrupt_records_total"),
                }
            )
        elif command == "close":
            reply({"ok": logger.close(float(args[0]))})
            return


if __name__ == "__main__":
    main(sys.argv)
