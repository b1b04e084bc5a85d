"""Caller-side cost of each durability level (memory, spool, fsync), one process each.

Steady rate (bursts of 100 emits, 2 ms pause), 3,000 calls per level, the file sink
and the spool on the project's disk. Prints one JSON object per level, then a
summary with the ratios to ``memory``.

Run: ``.venv/bin/python bench/bench_durability.py``
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVELS = ("memory", "spool", "fsync")
CALLS = 3000


def worker(level: str, directory: str) -> dict[str, float | str]:
    from prometheus_client import CollectorRegistry

    from auditkeep import Actor, correlation_scope
    from auditkeep.logger import AuditLogger
    from auditkeep.metrics import AuditMetrics
    from auditkeep.sinks.file import FileSink

    root = Path(directory)
    logger = AuditLogger(
        FileSink(root / "audit.jsonl", max_bytes=0),
        service="bench",
        spool_dir=root / "spool",
        durability=level,
        metrics=AuditMetrics(CollectorRegistry()),
    )
    latencies: list[float] = []
    target = {"resource_type": "merge_request", "project_id": 1}
    with correlation_scope(Actor("webhook_event", "bench")):
        for i in range(CALLS):
            start = time.perf_counter_ns()
            logger.emit("gitlab.api.get_mr_details", target={**target, "mr_iid": i})
            latencies.append((time.perf_counter_ns() - start) / 1000)
            if i % 100 == 99:
                time.sleep(0.002)
    logger.close()
    latencies.sort()
    return {
        "bench": "durability",
        "level": level,
        "p50_us": round(latencies[len(latencies) // 2], 1),
        "p99_us": round(latencies[int(len(latencies) * 0.99)], 1),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3])))
        return
    # scripts/bench passes its arguments to every benchmark; this one has no options
    # (--quick and --rounds N are accepted and change nothing: it takes ~5 s).
    rows = []
    for level in LEVELS:
        with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as directory:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", level, directory],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
        row = json.loads(out.stdout)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]
    print(
        json.dumps(
            {
                "bench": "durability",
                "summary": True,
                "p50_vs_memory": {r["level"]: round(r["p50_us"] / base["p50_us"], 1) for r in rows},
                "p99_vs_memory": {r["level"]: round(r["p99_us"] / base["p99_us"], 1) for r in rows},
            }
        )
    )


if __name__ == "__main__":
    main()
