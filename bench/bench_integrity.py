"""What tamper evidence costs on the emit path, and what a checkpoint costs to sign.

In the same run:

* ``emit``: caller-side ``emit`` latency (bursts of 100 calls then a 2 ms sleep,
  as bench_emit's ``steady``) through a real ``FileSink``, integrity ``off``, ``on``
  (chained, Ed25519-signed checkpoints at the defaults: every 1,000 entries /
  5 s) and ``sealed`` (also the forward seal). One fresh process per variant and
  round, rounds interleaved, variant order rotated per round; each result is
  checked afterwards (every line present; when on, the chain links and the
  final checkpoint is there).
* ``costs``: microseconds per operation, median of repeated timings: one
  Ed25519 signature of a checkpoint message, one seal tag, the SHA-256 of a
  typical line, ``Chainer.submit`` alone (splice + hash, delivery a no-op), a
  whole ``Chainer.checkpoint`` (sign + encode + chain + deliver), and one
  signature by a separate signer over its unix socket.

Prints one JSON object per measurement, then a summary (min-max over rounds),
then the issue's target (chaining adds at most 25 % at p50) with pass/fail.
Run it with ``scripts/bench`` (``--quick`` for a smoke run, ``--rounds N``).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from auditkeep import Actor
from auditkeep.context import correlation_scope
from auditkeep.integrity import _format
from auditkeep.integrity.chain import Chainer
from auditkeep.integrity.keys import generate, load_signing_key
from auditkeep.integrity.options import IntegrityOptions
from auditkeep.integrity.remote import RemoteSigner
from auditkeep.integrity.seal import Sealer, generate_seal
from auditkeep.integrity.signer import SignerServer
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink

VARIANTS = ("off", "on", "sealed")
ACTION = "gitlab.api.get_mr_details"
BRANCHES = [f"feature/AUD-{k:04d}-fix" for k in range(1000)]
DURATIONS = [round(5.0 + (k * 37 % 1000) * 0.173, 3) for k in range(1000)]
BURST = 100
PAUSE_S = 0.002
WARMUP = 2000
FULL_CALLS = 100_000
QUICK_CALLS = 20_000
TARGET_P50_RATIO = 1.25
WORKER_TIMEOUT_S = 300.0


def _percentile(ordered: Sequence[int], q: float) -> float:
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1000.0


def _integrity(variant: str, tmp: Path) -> IntegrityOptions | None:
    if variant == "off":
        return None
    generate(tmp / "signing.pem")
    seal = None
    if variant == "sealed":
        generate_seal(tmp / "seal")
        seal = Sealer.load(tmp / "seal")
    return IntegrityOptions(signing_key=load_signing_key(tmp / "signing.pem"), seal=seal)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    variant: str = spec["variant"]
    n: int = spec["calls"]
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "audit.jsonl"
        logger = AuditLogger(
            FileSink(path, max_bytes=0),
            service="bench",
            spool_dir=tmp / "spool",
            metrics=AuditMetrics(CollectorRegistry()),
            integrity=_integrity(variant, tmp),
        )
        emit = logger.emit
        lat = array("q", bytes(8 * n))
        pc = time.perf_counter_ns
        with correlation_scope(Actor("webhook_event", "delivery-4f1c9e2a")):
            i = 0
            while i < n:
                end = min(i + BURST, n)
                while i < end:
                    k = i % 1000
                    t0 = pc()
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
                    lat[i] = pc() - t0
                    i += 1
                time.sleep(PAUSE_S)
        close_ok = logger.close(60)
        lines = path.read_bytes().splitlines()
    entries = [orjson.loads(line) for line in lines]
    emitted = len({e["event_id"] for e in entries if e["action"] == ACTION})
    checkpoints = [e for e in entries if e["action"] == _format.ACTION_CHECKPOINT]
    chain_ok = True
    out_of_order = 0
    if variant != "off":
        # A buffer that overflowed spilled to the spool, replayed later: arrival order
        # differs from seq order then, the bytes do not (duplicates must be identical).
        by_seq: dict[int, bytes] = {}
        for k, (line, entry) in enumerate(zip(lines, entries, strict=True)):
            seq = entry["chain"]["seq"]
            chain_ok &= by_seq.setdefault(seq, line) == line
            out_of_order += k > 0 and seq < entries[k - 1]["chain"]["seq"]
        ordered_lines = [by_seq[seq] for seq in sorted(by_seq)]
        chain_ok &= sorted(by_seq) == list(range(len(by_seq)))
        for k, line in enumerate(ordered_lines[1:], 1):
            chain_ok &= orjson.loads(line)["chain"]["prev"] == _format.line_hash(
                ordered_lines[k - 1]
            )
        last = orjson.loads(ordered_lines[-1])
        chain_ok &= last["action"] == _format.ACTION_CHECKPOINT and last["details"]["final"]
    ordered = sorted(lat[WARMUP:])
    return {
        "bench": "integrity",
        "scenario": "emit",
        "variant": variant,
        "round": spec["round"],
        "calls": n,
        "p50_us": _percentile(ordered, 0.50),
        "p99_us": _percentile(ordered, 0.99),
        "p999_us": _percentile(ordered, 0.999),
        "max_us": ordered[-1] / 1000.0,
        "lost": n - emitted,
        "checkpoints": len(checkpoints),
        "chain_ok": chain_ok,
        "lines_out_of_seq_order": out_of_order,
        "close_ok": close_ok,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _median_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(min(repeat, 200)):
        fn()
    samples = []
    pc = time.perf_counter_ns
    for _ in range(repeat):
        t0 = pc()
        fn()
        samples.append(pc() - t0)
    return round(statistics.median(samples) / 1000.0, 3)


def run_costs(repeat: int) -> dict[str, Any]:
    logging.getLogger("auditkeep.integrity").setLevel(logging.ERROR)  # the unsigned warning
    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp_name:
        tmp = Path(tmp_name)
        generate(tmp / "signing.pem")
        key = load_signing_key(tmp / "signing.pem")
        generate_seal(tmp / "seal")
        sealer = Sealer.load(tmp / "seal")
        message = _format.checkpoint_message("ab" * 16, 123_456, "cd" * 32, "ef" * 32, False)
        line = b'{"x":"' + b"y" * 440 + b'"}'
        options = IntegrityOptions(checkpoint_every=10**7, checkpoint_interval_s=3600)
        sink: list[bytes] = []
        chainer = Chainer(options, service="bench", submit=sink.append, count=lambda a, o: None)
        chainer.start()
        raw = orjson.dumps({"schema_version": 1, "action": ACTION, "pad": "z" * 400})
        submit_us = _median_us(lambda: chainer.submit(raw), repeat * 10)
        signed = Chainer(
            IntegrityOptions(checkpoint_every=10**7, checkpoint_interval_s=3600, signing_key=key),
            service="bench",
            submit=sink.append,
            count=lambda a, o: None,
        )
        signed.start()

        def one_checkpoint() -> None:
            signed.submit(raw)
            signed.checkpoint(final=False)

        checkpoint_us = _median_us(one_checkpoint, repeat)
        # A separate signer (its server on a thread here, so the figure includes this
        # process's GIL): one round trip per signature.
        server = SignerServer(key, tmp / "signer.sock")
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        remote = RemoteSigner(tmp / "signer.sock")
        first = _format.checkpoint_message("ab" * 16, 0, "cd" * 32, None, False)
        remote_us = _median_us(lambda: remote.sign(first), repeat)
        remote.close()
        server.shutdown()
        server.server_close()
        result = {
            "bench": "integrity",
            "scenario": "costs",
            "ed25519_sign_us": _median_us(lambda: key.sign(message), repeat),
            "seal_tag_us": _median_us(lambda: sealer.tag(message), repeat),
            "sha256_450_bytes_us": _median_us(
                lambda: hashlib.sha256(line).hexdigest(), repeat * 10
            ),
            "chainer_submit_us": submit_us,
            "checkpoint_with_one_entry_us": round(checkpoint_us - submit_us, 3),
            "remote_signer_sign_us": remote_us,
            "signature_b64_chars": len(base64.b64encode(key.private.sign(message))),
        }
        chainer.close()
        signed.close()
        sealer.erase()
        return result


def _run_one(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {**spec, "error": "timeout"}
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default 3; quick 1)")
    parser.add_argument("--calls", type=int, help=f"emit calls per worker (default {FULL_CALLS})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)  # scripts/bench passes every bench the same flags
    if args.worker:
        gc.collect()
        _emit(run_worker(json.loads(args.worker)))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    calls = args.calls or (QUICK_CALLS if args.quick else FULL_CALLS)
    _emit(
        {
            "bench": "integrity",
            "meta": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "rounds": rounds,
                "calls": calls,
                "quick": args.quick,
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "method": "one fresh process per variant and round, rounds interleaved, "
                f"order rotated; latencies exclude the first {WARMUP} calls; bursts of "
                f"{BURST} calls, {PAUSE_S * 1000:g} ms apart; FileSink, memory durability",
            },
        }
    )
    results: list[dict[str, Any]] = []
    for rnd in range(rounds):
        order = VARIANTS[rnd % 3 :] + VARIANTS[: rnd % 3]
        for variant in order:
            result = _run_one({"variant": variant, "calls": calls, "round": rnd})
            print(f"bench_integrity: round {rnd} {variant}: {result.get('p50_us')} us p50",
                  file=sys.stderr)  # fmt: skip
            results.append(result)
            _emit(result)
    _emit(run_costs(500 if args.quick else 2000))
    failed = [r for r in results if "error" in r or not r["chain_ok"] or r["lost"]]
    summary: dict[str, Any] = {"bench": "integrity", "summary": "emit"}
    for variant in VARIANTS:
        mine = [r for r in results if r["variant"] == variant and "error" not in r]
        for key in ("p50_us", "p99_us", "p999_us"):
            values = [r[key] for r in mine]
            summary[f"{variant}_{key}"] = [min(values), max(values)] if values else None
    ratios = []
    for rnd in range(rounds):
        by = {r["variant"]: r for r in results if r["round"] == rnd and "error" not in r}
        if "off" in by and "on" in by:
            ratios.append(round(by["on"]["p50_us"] / by["off"]["p50_us"], 3))
    summary["on_over_off_p50_per_round"] = ratios
    _emit(summary)
    worst = max(ratios) if ratios else math.inf
    _emit(
        {
            "bench": "integrity",
            "targets": {
                "chaining_p50_overhead": {
                    "target": f"<= {TARGET_P50_RATIO}x off at p50",
                    "measured_median_ratio": statistics.median(ratios) if ratios else None,
                    "worst_round": worst,
                    "pass": bool(ratios) and statistics.median(ratios) <= TARGET_P50_RATIO,
                },
                "every_entry_present_and_chained": not failed,
            },
        }
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
