"""What OpenTelemetry tracing costs the emit path: off, on outside a span, on inside one.

Each mode runs in a fresh interpreter (``--worker MODE``), so ``off`` never has
OpenTelemetry imported. A mode emits the benchmark entry (a GitLab call's
target, status and duration, in a correlation scope) to an in-memory sink in
rounds of 20,000 and reports the emitting thread's CPU time per call
(``time.thread_time_ns``: the delivery thread and other processes on a loaded
machine do not count), the best and the median round. ``call`` modes time an
``audited()`` block instead (with tracing on: one span per call). Modes run
interleaved, ``--rounds`` times. Prints one JSON object per measurement and a
summary of the minimum per mode.

    .venv/bin/python bench/bench_tracing.py [--rounds 3 | --quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("off", "on_no_span", "on_in_span", "call_off", "call_on")
CALLS = 20_000
ROUNDS_PER_WORKER = 9


def worker(mode: str) -> None:
    from prometheus_client import CollectorRegistry

    from auditkeep import Actor, correlation_scope
    from auditkeep.logger import AuditLogger
    from auditkeep.metrics import AuditMetrics
    from auditkeep.sinks.memory import InMemorySink

    if mode in ("on_no_span", "on_in_span", "call_on"):
        from opentelemetry.sdk.trace import TracerProvider

        from auditkeep.integrations import opentelemetry as otel

        provider = TracerProvider()  # no exporter: the cost of the ids and spans themselves
        otel.enable(tracer_provider=provider)
        if mode != "on_no_span":
            provider.get_tracer("bench").start_as_current_span("webhook").__enter__()
    logger = AuditLogger(
        InMemorySink(),
        service="bench",
        spool_dir=tempfile.mkdtemp(),
        metrics=AuditMetrics(CollectorRegistry()),
        max_buffer_events=10**6,
    )
    target = {"resource_type": "merge_request", "project_id": 42, "mr_iid": 7}

    def once() -> None:
        if mode.startswith("call"):
            with logger.audited("gitlab.api.get_mr_details", target=target) as call:
                call.http_status = 200
        else:
            logger.emit(
                "gitlab.api.get_mr_details", target=target, http_status=200, duration_ms=1.5
            )

    per_call = []
    with correlation_scope(Actor("webhook_event", "bench")):
        for _ in range(2000):
            once()
        for _ in range(ROUNDS_PER_WORKER):
            started = time.thread_time_ns()
            for _ in range(CALLS):
                once()
            per_call.append((time.thread_time_ns() - started) / CALLS / 1000)
            logger.flush(60)
    logger.close()
    loaded = any(m.split(".")[0] == "opentelemetry" for m in sys.modules)
    print(
        json.dumps(
            {
                "bench": "tracing",
                "mode": mode,
                "calls": CALLS * ROUNDS_PER_WORKER,
                "cpu_us_per_call_min": round(min(per_call), 3),
                "cpu_us_per_call_median": round(statistics.median(per_call), 3),
                "opentelemetry_loaded": loaded,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round (scripts/bench --quick)")
    parser.add_argument("--worker", choices=MODES)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    if args.worker:
        worker(args.worker)
        return
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", mode],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            ).stdout
            print(out.strip(), flush=True)
            found = json.loads(out)
            best[mode] = min(best.get(mode, float("inf")), found["cpu_us_per_call_min"])
    print(json.dumps({"bench": "tracing", "summary": "min cpu_us per call", **best}))


if __name__ == "__main__":
    main()
