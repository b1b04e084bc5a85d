"""The http sink, measured the way ``../shared/BENCH-METHOD.md`` says.

* ``throughput``: entries/s from the first emit until ``flush`` returned, every entry
  POSTed (batched NDJSON, optionally gzip) to a local receiver running in its own
  process; the receiver counts distinct event ids, so lost = emitted - distinct.
* ``otlp-throughput`` (and ``-gzip``): the same load through the otlp sink (OTLP/HTTP
  protobuf log records), to a receiver that decodes every request with the official
  ``ExportLogsServiceRequest`` message, as a Collector does; the summary gives the
  otlp/http throughput ratio per round (the same run, the same rounds).
* ``steady-healthy``: caller-side ``emit`` latency (bursts of 100 calls, then a 2 ms
  sleep) while the HTTP sink delivers to the receiver.
* ``steady-down``: the same while the HTTP sink is down (its endpoint refuses
  connections): the pipeline retries with backoff, spools and writes the fallback copy
  (to /dev/null here). Target of issue 3: caller p99 within 2x of ``steady-healthy``
  measured in the same round.

Every run is a fresh process (this file in ``--worker`` mode), with a fresh receiver
process; rounds are interleaved and the scenario order rotates per round. Prints one
JSON object per run, then a summary (min-max over rounds; the down/healthy p99 ratio per
round, printed beside the healthy figure), then the target with pass/fail.

Run: ``.venv/bin/python bench/bench_http.py`` (``--quick`` for a smoke run, ``--rounds N``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from auditkeep import Actor
from auditkeep.context import correlation_scope
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.http import HttpSink
from auditkeep.sinks.otlp import OtlpSink
from auditkeep.sinks.stdout import StdoutSink

ACTION = "gitlab.api.get_mr_details"
BRANCHES = [f"feature/AUD-{k:04d}-fix" for k in range(1000)]
DURATIONS = [round(5.0 + (k * 37 % 1000) * 0.173, 3) for k in range(1000)]
STEADY_BURST = 100
STEADY_PAUSE_S = 0.002
WARMUP_CALLS = 1000
FINISH_TIMEOUT_S = 120.0
WORKER_TIMEOUT_S = 300.0
TARGET_DOWN_P99_RATIO = 2.0

SCENARIOS = (
    "throughput",
    "throughput-gzip",
    "otlp-throughput",
    "otlp-throughput-gzip",
    "steady-healthy",
    "steady-down",
)
THROUGHPUT = ("throughput", "throughput-gzip", "otlp-throughput", "otlp-throughput-gzip")
FULL_CALLS = {"throughput": 200_000, "steady": 200_000}
QUICK_CALLS = {"throughput": 30_000, "steady": 20_000}

_EVENT_ID = re.compile(rb'"event_id":"([0-9a-f-]{36})"')


# -- the receiver (its own process) ------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: set[bytes] = set()
        self.lines = 0
        self.requests = 0
        self.wire_bytes = 0


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    counter: _Counter

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        if self.headers.get("Content-Type") == "application/x-protobuf":
            from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp

            export = otlp.ExportLogsServiceRequest.FromString(body)
            texts = [
                record.body.string_value.encode()
                for resource in export.resource_logs
                for scope in resource.scope_logs
                for record in scope.log_records
            ]
            ids = [_EVENT_ID.search(text)[1] for text in texts]  # type: ignore[index]
            lines = len(texts)
            answer = otlp.ExportLogsServiceResponse().SerializeToString()
        else:
            ids = _EVENT_ID.findall(body)
            lines = body.count(b"\n")
            answer = b'{"accepted":true}'
        counter = self.counter
        with counter.lock:
            counter.ids.update(ids)
            counter.lines += lines
            counter.requests += 1
            counter.wire_bytes += len(raw)
        self._answer(200, answer)

    def do_GET(self) -> None:
        counter = self.counter
        with counter.lock:
            stats = {
                "distinct": len(counter.ids),
                "lines": counter.lines,
                "requests": counter.requests,
                "wire_bytes": counter.wire_bytes,
            }
        self._answer(200, json.dumps(stats).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_receiver() -> None:
    _ReceiverHandler.counter = _Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReceiverHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


class _ReceiverProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--receiver"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/ingest"

    def stats(self) -> dict[str, int]:
        import httpx

        result: dict[str, int] = httpx.get(f"http://127.0.0.1:{self.port}/stats").json()
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _refusing_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ingest"  # nothing listens there: connection refused


# -- one run (worker process) ---------------------------------------------------------------


def _percentile(ordered: Sequence[int], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] / 1000.0


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    scenario: str = spec["scenario"]
    n: int = spec["calls"]
    down = scenario == "steady-down"
    receiver = None if down else _ReceiverProcess()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
            url = _refusing_url() if receiver is None else receiver.url
            kind = OtlpSink if scenario.startswith("otlp") else HttpSink
            sink = kind(url, gzip=scenario.endswith("-gzip"), connect_timeout_s=1.0)
            registry = CollectorRegistry()
            logger = AuditLogger(
                sink,
                service="bench",
                spool_dir=Path(tmp) / "spool",
                metrics=AuditMetrics(registry),
                fallback=StdoutSink(devnull),
            )
            emit = logger.emit

            def emit_one(i: int) -> None:
                k = i % 1000
                emit(
                    ACTION,
                    target={
                        "resource_type": "merge_request",
                        "project_id": 123,
                        "mr_iid": k,
                        "branch": BRANCHES[(i * 7) % 1000],
                    },
                    duration_ms=DURATIONS[k],
                    http_status=200,
                )

            lat = array("q", bytes(8 * n))
            pc = time.perf_counter_ns
            with correlation_scope(Actor("webhook_event", "delivery-4f1c9e2a")):
                started = time.perf_counter()
                if scenario in THROUGHPUT:
                    for i in range(n):
                        emit_one(i)
                else:
                    i = 0
                    while i < n:
                        end = min(i + STEADY_BURST, n)
                        while i < end:
                            t0 = pc()
                            emit_one(i)
                            lat[i] = pc() - t0
                            i += 1
                        time.sleep(STEADY_PAUSE_S)
                emitted_at = time.perf_counter()
                delivered = logger.flush(0.0 if down else FINISH_TIMEOUT_S)
                finished_at = time.perf_counter()

            def value(name: str, **labels: str) -> int:
                return int(registry.get_sample_value(name, labels) or 0)

            spooled = value("audit_log_spool_records", destination=sink.name)
            sink_errors = value("audit_log_sink_errors_total", destination=sink.name)
            logger.close(0.5 if down else 10.0)
    finally:
        os.close(devnull)
        stats = receiver.stats() if receiver is not None else {}
        if receiver is not None:
            receiver.stop()

    result: dict[str, Any] = {
        "bench": "http",
        "scenario": scenario,
        "round": spec["round"],
        "calls": n,
    }
    if scenario.startswith("steady"):
        ordered = sorted(lat[WARMUP_CALLS:n])
        result.update(
            p50_us=_percentile(ordered, 0.50),
            p99_us=_percentile(ordered, 0.99),
            p999_us=_percentile(ordered, 0.999),
            max_us=ordered[-1] / 1000.0,
            warmup_calls=WARMUP_CALLS,
        )
    if down:
        result.update(spooled_when_done=spooled, sink_errors=sink_errors)
    else:
        if scenario in THROUGHPUT:
            result["entries_per_s"] = round(n / (finished_at - started))
        result.update(
            distinct_event_ids=stats.get("distinct", 0),
            lost=max(0, n - stats.get("distinct", 0)),
            duplicates=stats.get("lines", 0) - stats.get("distinct", 0),
            requests=stats.get("requests", 0),
            wire_bytes=stats.get("wire_bytes", 0),
            flush_ok=delivered,
        )
    result.update(
        emit_s=round(emitted_at - started, 3), finish_s=round(finished_at - emitted_at, 3)
    )
    return result


# -- orchestration ----------------------------------------------------------------------------


def _run_one(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    base = {"bench": "http", "scenario": spec["scenario"], "round": spec["round"]}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {WORKER_TIMEOUT_S} s"}
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"bench"')]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {**base, "error": f"exit {proc.returncode}: {tail[0]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _span(values: Sequence[float]) -> list[float] | None:
    clean = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return [round(min(clean), 3), round(max(clean), 3)] if clean else None


def _summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = [r for r in results if "error" not in r]
    out: list[dict[str, Any]] = []
    for scenario in THROUGHPUT:
        rows = [r for r in ok if r["scenario"] == scenario]
        if rows:
            out.append(
                {
                    "bench": "http",
                    "summary": scenario,
                    "rounds": len(rows),
                    "entries_per_s": _span([r["entries_per_s"] for r in rows]),
                    "lost": _span([r["lost"] for r in rows]),
                    "duplicates": _span([r["duplicates"] for r in rows]),
                    "requests": _span([r["requests"] for r in rows]),
                    "wire_bytes": _span([r["wire_bytes"] for r in rows]),
                }
            )
    for http_name in ("throughput", "throughput-gzip"):
        http_rows = {r["round"]: r for r in ok if r["scenario"] == http_name}
        otlp_rows = {r["round"]: r for r in ok if r["scenario"] == f"otlp-{http_name}"}
        paired = sorted(set(http_rows) & set(otlp_rows))
        if paired:
            out.append(
                {
                    "bench": "http",
                    "summary": f"otlp vs http sink, {http_name} (same round)",
                    "per_round": [
                        {
                            "round": rnd,
                            "http_entries_per_s": http_rows[rnd]["entries_per_s"],
                            "otlp_entries_per_s": otlp_rows[rnd]["entries_per_s"],
                            "otlp_over_http": round(
                                otlp_rows[rnd]["entries_per_s"] / http_rows[rnd]["entries_per_s"],
                                2,
                            ),
                            "http_wire_bytes": http_rows[rnd]["wire_bytes"],
                            "otlp_wire_bytes": otlp_rows[rnd]["wire_bytes"],
                        }
                        for rnd in paired
                    ],
                }
            )
    healthy = {r["round"]: r for r in ok if r["scenario"] == "steady-healthy"}
    down = {r["round"]: r for r in ok if r["scenario"] == "steady-down"}
    rounds = sorted(set(healthy) & set(down))
    if rounds:
        out.append(
            {
                "bench": "http",
                "summary": "emit latency, sink healthy vs down (same round)",
                "per_round": [
                    {
                        "round": rnd,
                        "healthy_p99_us": healthy[rnd]["p99_us"],
                        "down_p99_us": down[rnd]["p99_us"],
                        "ratio": round(down[rnd]["p99_us"] / healthy[rnd]["p99_us"], 2),
                        "healthy_p50_us": healthy[rnd]["p50_us"],
                        "down_p50_us": down[rnd]["p50_us"],
                        "healthy_max_us": healthy[rnd]["max_us"],
                        "down_max_us": down[rnd]["max_us"],
                    }
                    for rnd in rounds
                ],
            }
        )
    return out


def _targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]
    healthy = {r["round"]: r for r in ok if r["scenario"] == "steady-healthy"}
    down = {r["round"]: r for r in ok if r["scenario"] == "steady-down"}
    ratios = [down[k]["p99_us"] / healthy[k]["p99_us"] for k in sorted(set(healthy) & set(down))]
    throughput = [r for r in ok if r["scenario"] in THROUGHPUT]
    targets: dict[str, dict[str, Any]] = {
        "down_emit_p99_within_2x_healthy": {
            "pass": bool(ratios) and all(x <= TARGET_DOWN_P99_RATIO for x in ratios),
            "ratio": _span(ratios),
            "limit": TARGET_DOWN_P99_RATIO,
        },
        "throughput_zero_loss": {
            "pass": bool(throughput) and all(r["lost"] == 0 and r["flush_ok"] for r in throughput),
            "lost": _span([r["lost"] for r in throughput]),
        },
    }
    return {
        "bench": "http",
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets.values()),
    }


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds (default 2; quick 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        run_receiver()
        return 0
    if args.worker:
        _emit(run_worker(json.loads(args.worker)))
        return 0

    rounds = args.rounds or (1 if args.quick else 2)
    calls = QUICK_CALLS if args.quick else FULL_CALLS
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    _emit(
        {
            "bench": "http",
            "meta": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "rounds": rounds,
                "calls": calls,
                "quick": args.quick,
                "method": "../shared/BENCH-METHOD.md; one fresh process per run (plus one "
                "receiver process), rounds interleaved, order rotated; steady latencies "
                f"exclude the first {WARMUP_CALLS} calls; logger defaults (buffer 1000, "
                "batches of 512, 1 MiB bodies)",
            },
        }
    )
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for rnd in range(1, rounds + 1):
        shift = (rnd - 1) % len(scenarios)
        for scenario in scenarios[shift:] + scenarios[:shift]:
            kind = "throughput" if scenario in THROUGHPUT else "steady"
            spec = {"scenario": scenario, "calls": calls[kind], "round": rnd}
            began = time.monotonic()
            result = _run_one(spec)
            print(
                f"bench_http: round {rnd} {scenario}: {time.monotonic() - began:.1f} s",
                file=sys.stderr,
            )
            results.append(result)
            _emit(result)
    for summary in _summary(results):
        _emit(summary)
    _emit(_targets(results))
    print(f"bench_http: done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
