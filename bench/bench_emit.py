"""The audit hot path, measured the way ``../shared/BENCH-METHOD.md`` says.

For auditkeep and its peers (stdlib ``logging`` with ``QueueHandler`` and a JSON
formatter; structlog with an orjson renderer writing to a file), on the same
inputs doing the same work (build the entry, serialise it, write it as one JSON
line to a local file):

* ``steady``: caller-side ``emit`` latency, bursts of 100 calls then a 2 ms sleep;
* ``tight``: caller-side latency in a saturating loop;
* ``throughput``: entries/s from the first emit until close/flush returned, then
  the lines in the file are counted (lost = emitted - distinct event ids);
* ``stall``: the sink blocks for 2 s (once) while 50,000 entries are emitted;
  caller p99/max, RSS growth and lost entries after a generous close.

Every contender runs in a fresh process per round (this file in ``--worker``
mode); rounds are interleaved and the contender order rotates per round.
Prints one JSON object per measurement, then one summary per scenario (min-max
over rounds, and ratios to auditkeep measured in the same round), then the
issue's targets with pass/fail.

Run it with ``scripts/bench`` (``--quick`` for a smoke run, ``--rounds N``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import logging
import math
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import orjson
from prometheus_client import CollectorRegistry

from auditkeep import Actor
from auditkeep.context import correlation_scope
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.typing import SinkResult

# -- what every contender is asked to record ----------------------------------

ACTION = "gitlab.api.get_mr_details"
SERVICE = "bench"
ACTOR_TYPE = "webhook_event"
ACTOR_ID = "delivery-4f1c9e2a"
BRANCHES = [f"feature/AUD-{k:04d}-fix" for k in range(1000)]
DURATIONS = [round(5.0 + (k * 37 % 1000) * 0.173, 3) for k in range(1000)]
# One call in a hundred is a failure (HTTP 404, error class not_found).
OUTCOMES = ["failure" if k % 100 == 99 else "success" for k in range(1000)]
STATUSES = [404 if k % 100 == 99 else 200 for k in range(1000)]

STALL_S = 2.0
STEADY_BURST = 100
STEADY_PAUSE_S = 0.002
TIGHT_BURST = 1000  # calls between two memory samples (taken outside the timed region)
FINISH_TIMEOUT_S = 60.0
WORKER_TIMEOUT_S = 300.0

# Targets of issue 2, default durability level.
TARGET_STEADY_P99_US = 15.0
TARGET_ENTRIES_PER_S = 200_000
TARGET_STALL_MAX_US = 1000.0
# "Memory stays bounded": 50,000 entries are ~23 MB of JSON; an in-memory
# backlog of them would show as tens of MB (stdlib's unbounded queue: +87 MB).
TARGET_STALL_RSS_MB = 10.0

SCENARIOS = ("steady", "tight", "throughput", "stall")
CONTENDERS: dict[str, tuple[str, ...]] = {
    "steady": ("auditkeep", "auditkeep-spool", "stdlib-queuehandler", "structlog"),
    "tight": ("auditkeep", "stdlib-queuehandler", "structlog"),
    "throughput": ("auditkeep", "auditkeep-spool", "stdlib-queuehandler", "structlog"),
    "stall": ("auditkeep", "stdlib-queuehandler", "stdlib-queuehandler-1000", "structlog"),
}
FULL_CALLS = {"steady": 200_000, "tight": 200_000, "throughput": 200_000, "stall": 50_000}
QUICK_CALLS = {"steady": 20_000, "tight": 20_000, "throughput": 50_000, "stall": 50_000}
WARMUP_CALLS = 1000  # steady/tight: emitted (and counted as lines) but not in the percentiles

_PAGE = os.sysconf("SC_PAGE_SIZE")


# -- contenders (worker side) ------------------------------------------------


@dataclass
class Contender:
    """One configured logger in this process."""

    emit_one: Callable[[int], None]
    finish: Callable[[float], bool]  # close/flush with a deadline; True if all delivered
    path: Path  # the file whose lines are counted
    probe: Callable[[], int] = lambda: 0  # spool bytes (auditkeep), sampled with RSS
    report: Callable[[], dict[str, Any]] = dict  # extra figures after finish
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


class _StallingSink:
    """A ``FileSink`` whose first ``write_batch`` blocks for ``stall_s``."""

    name: ClassVar[str] = "file"

    def __init__(self, inner: FileSink, stall_s: float) -> None:
        self._inner = inner
        self._stall_s = stall_s
        self._stalled = False
        self._release = threading.Event()

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if not self._stalled:
            self._stalled = True
            self._release.wait(self._stall_s)
        return self._inner.write_batch(lines)

    def flush(self, timeout_s: float) -> bool:
        return self._inner.flush(timeout_s)

    def close(self, timeout_s: float) -> None:
        self._inner.close(timeout_s)


def _auditkeep(tmp: Path, *, stall: bool, durability: str) -> Contender:
    path = tmp / "audit.jsonl"
    file_sink = FileSink(path, max_bytes=0)
    sink: FileSink | _StallingSink = _StallingSink(file_sink, STALL_S) if stall else file_sink
    registry = CollectorRegistry()
    logger = AuditLogger(
        sink,
        service=SERVICE,
        spool_dir=tmp / "spool",
        durability=durability,
        metrics=AuditMetrics(registry),
    )
    pipeline = logger.pipeline
    assert pipeline is not None
    spool = pipeline.spool
    cleanup = contextlib.ExitStack()
    cleanup.enter_context(correlation_scope(Actor(ACTOR_TYPE, ACTOR_ID)))
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
            outcome=OUTCOMES[k],
            duration_ms=DURATIONS[k],
            http_status=STATUSES[k],
        )

    def probe() -> int:
        try:
            return spool.total_bytes()
        except RuntimeError:  # the worker resized the dict mid-sum; skip this sample
            return 0

    def report() -> dict[str, Any]:
        def value(name: str, labels: dict[str, str] | None = None) -> int:
            return int(registry.get_sample_value(name, labels or {}) or 0)

        return {
            "spooled_overflow": value("audit_log_spooled_entries_total", {"reason": "overflow"}),
            "spooled_write_ahead": value(
                "audit_log_spooled_entries_total", {"reason": "write_ahead"}
            ),
            "dropped_metric": sum(
                int(s.value)
                for m in registry.collect()
                if m.name == "audit_log_dropped_entries"
                for s in m.samples
                if s.name.endswith("_total")
            ),
        }

    return Contender(emit_one, logger.close, path, probe, report, cleanup)


_cid_var: ContextVar[str] = ContextVar("bench_correlation_id")
_actor_var: ContextVar[tuple[str, str]] = ContextVar("bench_actor")


def _peer_fields(i: int) -> dict[str, Any]:
    """The entry auditkeep builds, minus ``action`` (each peer places that its own way).

    Peers get the same work: a random UUID, the current time (formatted by the
    encoder), the correlation id and actor read from context variables.
    """
    k = i % 1000
    actor = _actor_var.get()
    fields: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC),
        "event_type": "audit",
        "actor": {"type": actor[0], "id": actor[1]},
        "target": {
            "resource_type": "merge_request",
            "project_id": 123,
            "mr_iid": k,
            "branch": BRANCHES[(i * 7) % 1000],
        },
        "outcome": OUTCOMES[k],
        "correlation_id": _cid_var.get(),
        "service": SERVICE,
        "duration_ms": DURATIONS[k],
        "http_status": STATUSES[k],
    }
    if STATUSES[k] == 404:
        fields["error"] = "not_found"
    return fields


def _peer_scope() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    cid_token = _cid_var.set(str(uuid.uuid4()))
    actor_token = _actor_var.set((ACTOR_TYPE, ACTOR_ID))
    stack.callback(_cid_var.reset, cid_token)
    stack.callback(_actor_var.reset, actor_token)
    return stack


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(getattr(record, "audit"), default=_json_default)  # noqa: B009


class _StallingFileHandler(logging.FileHandler):
    """A ``FileHandler`` whose first write blocks for ``STALL_S``."""

    # (Handler already has acquire/release methods: keep clear of those names.)
    def __init__(self, path: Path, encoding: str) -> None:
        super().__init__(path, encoding=encoding)
        self._stall_done = False
        self._unblock = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if not self._stall_done:
            self._stall_done = True
            self._unblock.wait(STALL_S)
        super().emit(record)


class _CountingQueueHandler(QueueHandler):
    """``QueueHandler`` that drops (and counts) when its bounded queue is full.

    The stock handler would print a traceback per dropped record to stderr.
    """

    dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


def _stdlib(tmp: Path, *, stall: bool, maxsize: int) -> Contender:
    path = tmp / "audit.jsonl"
    q: queue.Queue[logging.LogRecord] | queue.SimpleQueue[logging.LogRecord] = (
        queue.Queue(maxsize) if maxsize else queue.SimpleQueue()
    )
    file_handler = (_StallingFileHandler if stall else logging.FileHandler)(path, encoding="utf-8")
    file_handler.setFormatter(_JsonFormatter())
    handler = _CountingQueueHandler(q)
    listener = QueueListener(q, file_handler)
    log = logging.getLogger(f"bench.audit.{uuid.uuid4().hex}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    listener.start()
    info = log.info

    def emit_one(i: int) -> None:
        fields = _peer_fields(i)
        fields["action"] = ACTION
        info(ACTION, extra={"audit": fields})

    def finish(timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        if isinstance(q, queue.Queue):
            # stop() enqueues a sentinel with put_nowait: wait for room first.
            while q.full() and time.monotonic() < deadline:
                time.sleep(0.01)
        listener.stop()
        file_handler.close()
        return True

    def report() -> dict[str, Any]:
        return {"dropped_at_enqueue": handler.dropped}

    return Contender(emit_one, finish, path, report=report, cleanup=_peer_scope())


class _StallingBytesLogger:
    """Wraps structlog's ``BytesLogger`` so that its first write blocks for ``STALL_S``."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._stalled = False
        self._release = threading.Event()

    def write(self, data: bytes) -> int:
        if not self._stalled:
            self._stalled = True
            self._release.wait(STALL_S)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


def _structlog(tmp: Path, *, stall: bool) -> Contender:
    import structlog

    path = tmp / "audit.jsonl"
    fh = open(path, "wb")  # noqa: SIM115 - closed by finish()
    bytes_logger = structlog.BytesLogger(fh)
    if stall:
        # BytesLogger binds file.write/flush at construction; route them through the staller.
        staller = _StallingBytesLogger(fh)
        bytes_logger = structlog.BytesLogger(staller)  # type: ignore[arg-type]
    structlog.configure(
        processors=[structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=lambda *args: bytes_logger,
        cache_logger_on_first_use=True,
    )
    info = structlog.get_logger().info

    def emit_one(i: int) -> None:
        info(ACTION, **_peer_fields(i))

    def finish(timeout_s: float) -> bool:
        fh.flush()
        fh.close()
        return True

    return Contender(emit_one, finish, path, cleanup=_peer_scope())


BUILDERS: dict[str, Callable[[Path, bool], Contender]] = {
    "auditkeep": lambda tmp, stall: _auditkeep(tmp, stall=stall, durability="memory"),
    "auditkeep-spool": lambda tmp, stall: _auditkeep(tmp, stall=stall, durability="spool"),
    "stdlib-queuehandler": lambda tmp, stall: _stdlib(tmp, stall=stall, maxsize=0),
    "stdlib-queuehandler-1000": lambda tmp, stall: _stdlib(tmp, stall=stall, maxsize=1000),
    "structlog": lambda tmp, stall: _structlog(tmp, stall=stall),
}


# -- measuring (worker side) ---------------------------------------------------


class _Sampler:
    """Peak RSS (from /proc/self/statm) and peak spool bytes, sampled between bursts."""

    def __init__(self, probe: Callable[[], int]) -> None:
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self._probe = probe
        self.base = self.rss()
        self.peak = self.base
        self.probe_peak = probe()

    def rss(self) -> int:
        return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE

    def __call__(self) -> None:
        rss = self.rss()
        if rss > self.peak:
            self.peak = rss
        probed = self._probe()
        if probed > self.probe_peak:
            self.probe_peak = probed

    def close(self) -> None:
        os.close(self._fd)


def _timed_loop(
    emit_one: Callable[[int], None],
    lat: array[int],
    n: int,
    burst: int,
    pause_s: float,
    sample: Callable[[], None],
) -> None:
    pc = time.perf_counter_ns
    sleep = time.sleep
    i = 0
    while i < n:
        end = min(i + burst, n)
        while i < end:
            t0 = pc()
            emit_one(i)
            lat[i] = pc() - t0
            i += 1
        sample()
        if pause_s:
            sleep(pause_s)


def _untimed_loop(emit_one: Callable[[int], None], n: int, sample: Callable[[], None]) -> None:
    i = 0
    while i < n:
        end = min(i + TIGHT_BURST, n)
        while i < end:
            emit_one(i)
            i += 1
        sample()


def _percentile(ordered: Sequence[int], q: float) -> float:
    # Nearest rank, in microseconds.
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1000.0


def _count_lines(path: Path) -> tuple[int, int, int]:
    """(lines, distinct event ids, lines that are not a JSON object with an event id)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, 0, 0
    lines = data.splitlines()
    ids: set[str] = set()
    bad = 0
    for line in lines:
        try:
            ids.add(orjson.loads(line)["event_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            bad += 1
    return len(lines), len(ids), bad


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    scenario: str = spec["scenario"]
    name: str = spec["contender"]
    n: int = spec["calls"]
    profile_path: str | None = spec.get("profile")
    with tempfile.TemporaryDirectory(prefix="bench-emit-") as tmp:
        contender = BUILDERS[name](Path(tmp), scenario == "stall")
        with contender.cleanup:
            lat = array("q", bytes(8 * n))  # preallocated: no allocation while timing
            warmup = min(WARMUP_CALLS, n // 10) if scenario in ("steady", "tight") else 0
            sampler = _Sampler(contender.probe)
            gc_before = [s["collections"] for s in gc.get_stats()]
            profiler = cProfile.Profile() if profile_path else None
            if profiler is not None:
                profiler.enable()
            started = time.perf_counter()
            if scenario == "throughput":
                _untimed_loop(contender.emit_one, n, sampler)
            elif scenario == "steady":
                _timed_loop(contender.emit_one, lat, n, STEADY_BURST, STEADY_PAUSE_S, sampler)
            else:
                _timed_loop(contender.emit_one, lat, n, TIGHT_BURST, 0.0, sampler)
            emitted_at = time.perf_counter()
            delivered = contender.finish(FINISH_TIMEOUT_S)
            finished_at = time.perf_counter()
            if profiler is not None and profile_path:
                profiler.disable()
                profiler.dump_stats(profile_path)
            sampler()
            sampler.close()
            gc_after = [s["collections"] for s in gc.get_stats()]
            extra = contender.report()
        lines, distinct, malformed = _count_lines(contender.path)

    result: dict[str, Any] = {
        "bench": "emit",
        "contender": name,
        "scenario": scenario,
        "round": spec["round"],
        "calls": n,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if scenario != "throughput":
        ordered = sorted(lat[warmup:n])
        result.update(
            p50_us=_percentile(ordered, 0.50),
            p99_us=_percentile(ordered, 0.99),
            p999_us=_percentile(ordered, 0.999),
            max_us=ordered[-1] / 1000.0 if ordered else float("nan"),
            calls_over_1ms=sum(1 for v in ordered if v > 1_000_000),
            warmup_calls=warmup,
            # Where the tail is: the five slowest calls as [call index, us].
            slowest=[
                [i, lat[i] / 1000.0]
                for i in sorted(range(warmup, n), key=lat.__getitem__, reverse=True)[:5]
            ],
        )
        if scenario == "steady":
            # The first call of each burst runs after a 2 ms sleep with cold caches;
            # it is 1 % of the calls, so it alone can set the p99.
            first = sorted(lat[i] for i in range(warmup, n, STEADY_BURST))
            rest = sorted(lat[i] for i in range(warmup, n) if i % STEADY_BURST)
            result.update(
                burst_first_p50_us=_percentile(first, 0.50),
                p99_us_without_burst_first=_percentile(rest, 0.99),
            )
    lost = max(0, n - distinct)
    result.update(
        entries_per_s=round(n / (finished_at - started)),
        emitted=n,
        lines=lines,
        distinct_event_ids=distinct,
        duplicates=lines - distinct - malformed,
        malformed=malformed,
        lost=lost,
        loss_pct=round(100.0 * lost / n, 2) if n else 0.0,
        close_ok=delivered,
        emit_s=round(emitted_at - started, 3),
        finish_s=round(finished_at - emitted_at, 3),
        rss_growth_mb=round((sampler.peak - sampler.base) / 2**20, 2),
        gc_collections=[b - a for a, b in zip(gc_before, gc_after, strict=True)],
        **extra,
    )
    if name.startswith("auditkeep"):
        result["spool_peak_bytes"] = sampler.probe_peak
    if profile_path:
        result["profiled"] = profile_path
    return result


# -- orchestration (parent side) -----------------------------------------------


def _run_one(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    base = {"bench": "emit", "contender": spec["contender"], "scenario": spec["scenario"]}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {**base, "round": spec["round"], "error": f"timed out after {WORKER_TIMEOUT_S} s"}
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {**base, "round": spec["round"], "error": f"exit {proc.returncode}: {tail[0]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _span(values: Sequence[float]) -> list[float] | None:
    clean = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    if not clean:
        return None
    return [round(min(clean), 3), round(max(clean), 3)]


SUMMARY_FIELDS = {
    "steady": (
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "lost",
        "burst_first_p50_us",
        "p99_us_without_burst_first",
    ),
    "tight": ("p50_us", "p99_us", "p999_us", "max_us", "lost"),
    "throughput": ("entries_per_s", "lost", "rss_growth_mb"),
    "stall": ("p99_us", "max_us", "calls_over_1ms", "lost", "loss_pct", "rss_growth_mb"),
}
RATIO_FIELDS = {
    "steady": ("p50_us", "p99_us"),
    "tight": ("p50_us", "p99_us"),
    "throughput": ("entries_per_s",),
    "stall": ("p99_us", "max_us"),
}


def _summaries(results: list[dict[str, Any]], calls: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for scenario in SCENARIOS:
        rows = [r for r in results if r["scenario"] == scenario and "error" not in r]
        if not rows:
            continue
        base = {r["round"]: r for r in rows if r["contender"] == "auditkeep"}
        contenders: dict[str, Any] = {}
        for name in CONTENDERS[scenario]:
            mine = [r for r in rows if r["contender"] == name]
            if not mine:
                continue
            entry: dict[str, Any] = {"rounds": len(mine)}
            for key in SUMMARY_FIELDS[scenario]:
                entry[key] = _span([r[key] for r in mine if key in r])
            if name.startswith("auditkeep") and scenario == "stall":
                entry["spool_peak_bytes"] = _span([r.get("spool_peak_bytes", 0) for r in mine])
            if name != "auditkeep":
                for key in RATIO_FIELDS[scenario]:
                    ratios = [
                        r[key] / base[r["round"]][key]
                        for r in mine
                        if r["round"] in base and base[r["round"]].get(key)
                    ]
                    entry[f"{key}_vs_auditkeep"] = _span(ratios)
            contenders[name] = entry
        out.append(
            {
                "bench": "emit",
                "summary": scenario,
                "calls": calls[scenario],
                "ratios": "contender / auditkeep in the same round "
                "(latency: >1 means slower than auditkeep; entries_per_s: <1 means slower)",
                "contenders": contenders,
            }
        )
    return out


def _targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    def rows(scenario: str) -> list[dict[str, Any]]:
        return [
            r
            for r in results
            if r["scenario"] == scenario and r["contender"] == "auditkeep" and "error" not in r
        ]

    steady, thr, stall = rows("steady"), rows("throughput"), rows("stall")
    targets: dict[str, Any] = {}
    if steady:
        targets["steady_p99_le_15us"] = {
            "pass": all(r["p99_us"] <= TARGET_STEADY_P99_US for r in steady),
            "p99_us": _span([r["p99_us"] for r in steady]),
            "target_us": TARGET_STEADY_P99_US,
        }
    if thr:
        targets["throughput_ge_200k_per_s_zero_loss"] = {
            "pass": all(
                r["entries_per_s"] >= TARGET_ENTRIES_PER_S and r["lost"] == 0 and r["close_ok"]
                for r in thr
            ),
            "entries_per_s": _span([r["entries_per_s"] for r in thr]),
            "lost": _span([r["lost"] for r in thr]),
            "target_entries_per_s": TARGET_ENTRIES_PER_S,
        }
    if stall:
        targets["stall_2s_max_wait_le_1ms_bounded_no_loss"] = {
            "pass": all(
                r["max_us"] <= TARGET_STALL_MAX_US
                and r["rss_growth_mb"] <= TARGET_STALL_RSS_MB
                and r["lost"] == 0
                for r in stall
            ),
            "max_us": _span([r["max_us"] for r in stall]),
            "rss_growth_mb": _span([r["rss_growth_mb"] for r in stall]),
            "lost": _span([r["lost"] for r in stall]),
            "limits": {"max_us": TARGET_STALL_MAX_US, "rss_growth_mb": TARGET_STALL_RSS_MB},
        }
    return {
        "bench": "emit",
        "targets": targets,
        "all_pass": bool(targets) and all(t["pass"] for t in targets.values()),
        # Other work on the machine inflates latencies and tails: judge with this.
        "loadavg_1m_during_runs": _span([r["loadavg_1m"] for r in results if "loadavg_1m" in r]),
    }


def _plan(
    rounds: int, scenarios: Sequence[str], only: set[str] | None
) -> Iterator[tuple[int, str, str]]:
    for rnd in range(1, rounds + 1):
        for scenario in scenarios:
            names = [c for c in CONTENDERS[scenario] if only is None or c in only]
            shift = (rnd - 1) % max(1, len(names))
            for name in names[shift:] + names[:shift]:
                yield rnd, scenario, name


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per contender (default 2; quick 1)")
    parser.add_argument(
        "--calls", type=int, help="calls for steady/tight/throughput (default 200,000)"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--contenders", help="comma-separated subset (default: all)")
    parser.add_argument("--profile", metavar="DIR", help="cProfile each worker's caller thread")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        _emit(run_worker(json.loads(args.worker)))
        return 0

    rounds = args.rounds or (1 if args.quick else 2)
    calls = dict(QUICK_CALLS if args.quick else FULL_CALLS)
    if args.calls:
        for key in ("steady", "tight", "throughput"):
            calls[key] = args.calls
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    only = set(args.contenders.split(",")) if args.contenders else None
    if only is not None and only - set(BUILDERS):
        parser.error(f"unknown contender(s): {', '.join(sorted(only - set(BUILDERS)))}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    load = os.getloadavg()[0]
    if load > 1.0:
        print(
            f"bench_emit: warning: load average {load:.1f} on {os.cpu_count()} CPUs; "
            "latencies and tails will be inflated (ratios stay comparable)",
            file=sys.stderr,
        )
    _emit(
        {
            "bench": "emit",
            "meta": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "rounds": rounds,
                "calls": calls,
                "reduced_calls": calls["steady"] < FULL_CALLS["steady"],
                "quick": args.quick,
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "method": "../shared/BENCH-METHOD.md; one fresh process per contender "
                "and round, rounds interleaved; latencies exclude the first "
                f"{WARMUP_CALLS} calls of steady/tight; entries_per_s counts from the "
                "first emit until close/flush returned",
            },
        }
    )
    plan = list(_plan(rounds, scenarios, only))
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for index, (rnd, scenario, name) in enumerate(plan, 1):
        spec: dict[str, Any] = {
            "contender": name,
            "scenario": scenario,
            "calls": calls[scenario],
            "round": rnd,
        }
        if args.profile:
            spec["profile"] = os.path.join(args.profile, f"{name}-{scenario}-r{rnd}.prof")
        began = time.monotonic()
        result = _run_one(spec)
        print(
            f"bench_emit: [{index}/{len(plan)}] round {rnd} {scenario} {name}: "
            f"{time.monotonic() - began:.1f} s",
            file=sys.stderr,
        )
        results.append(result)
        _emit(result)
    for summary in _summaries(results, calls):
        _emit(summary)
    _emit(_targets(results))
    print(f"bench_emit: done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
