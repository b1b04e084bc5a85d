"""Benchmark of ``auditkeep verify`` over 1,000,000 chained entries, beside ``sha256sum``.

Run: ``.venv/bin/python bench/bench_verify.py`` (about a minute; ``--help`` for options).

The trail: ``--entries`` entries in the logger's wire form (~450 bytes each, the
chain field spliced in as the logger does, a signed checkpoint every 1000),
written through the real ``FileSink`` with size rotation and gzip, so the
trail is gzipped backups, plain backups and the live file, as on a host.
The floor is ``sha256sum`` over the very same files: it reads and hashes
every byte once and nothing more (on the gzipped files it hashes the
compressed bytes, so it does less work than any verifier of their content).

Each measurement is one JSON line on stdout, as the other bench scripts
print; ``ratio_to_sha256sum`` is what carries over to other machines. Every
verify run is a fresh process (interpreter start-up included) and must exit 0
with every chain verified.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkeep._ids import new_event_id_and_timestamp
from auditkeep.integrity import _format
from auditkeep.sinks.file import FileSink

SHA256SUM = shutil.which("sha256sum") or "/usr/bin/sha256sum"
EVERY = 1000


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def build(directory: Path, entries: int, chains: int) -> tuple[Path, Path]:
    """Write the trail (``chains`` interleaved writers) and the public key; return both."""
    key = Ed25519PrivateKey.generate()
    raw_public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key_id = _format.key_id(raw_public)
    public = directory / "signing.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    live = directory / "audit.jsonl"
    # Rotation every ~100 MB of a 450 MB trail: four backups (gzipped) and the live file.
    sink = FileSink(str(live), max_bytes=100 * 1024 * 1024, backups=50, compress=True)
    state: list[dict[str, Any]] = [
        {"id": uuid.uuid4().hex, "seq": 0, "prev": None, "cp": None, "since": 0}
        for _ in range(chains)
    ]

    def line(chain: dict[str, Any], action: str, details: dict[str, Any]) -> bytes:
        event_id, timestamp = new_event_id_and_timestamp()
        entry = {
            "schema_version": "1.0",
            "event_id": event_id,
            "timestamp": timestamp,
            "event_type": "audit",
            "action": action,
            "actor": {"type": "user", "id": "alice"},
            "target": {"resource_type": "merge_request", "project_id": 123, "mr_iid": 45},
            "outcome": "success",
            "correlation_id": event_id,
            "service": "gitlab-copilot-agent",
            "details": details,
        }
        out = _format.splice(orjson.dumps(entry), chain["id"], chain["seq"], chain["prev"])
        chain["prev"] = _format.line_hash(out)
        chain["seq"] += 1
        return out

    def checkpoint(chain: dict[str, Any], final: bool) -> bytes:
        message = _format.checkpoint_message(
            chain["id"], chain["seq"] - 1, chain["prev"], chain["cp"], final
        )
        out = line(
            chain,
            _format.ACTION_CHECKPOINT,
            {
                "chain_id": chain["id"],
                "seq": chain["seq"] - 1,
                "head": chain["prev"],
                "prev_checkpoint": chain["cp"],
                "final": final,
                "key_id": key_id,
                "signature": base64.b64encode(key.sign(message)).decode(),
                "seal": None,
            },
        )
        chain["cp"] = _format.line_hash(out)
        chain["since"] = 0
        return out

    batch: list[bytes] = []
    for chain in state:
        batch.append(
            line(
                chain,
                _format.ACTION_STARTED,
                {
                    "chain_id": chain["id"],
                    "format": 1,
                    "key_id": key_id,
                    "public_key_fingerprint": _format.fingerprint(raw_public),
                    "seal": "none",
                    "seal_epoch": None,
                    "checkpoint_every_entries": EVERY,
                    "checkpoint_every_s": 5.0,
                    "pid": 1000,
                },
            )
        )
    note = "review comment posted on the merge request after the model answered " * 2
    for i in range(entries):
        chain = state[i % chains]
        batch.append(line(chain, "gitlab.api.post_note", {"note_id": i, "summary": note}))
        chain["since"] += 1
        if chain["since"] >= EVERY:
            batch.append(checkpoint(chain, False))
        if len(batch) >= 2000:
            sink.write_batch(batch)
            batch = []
    batch.extend(checkpoint(chain, True) for chain in state)
    sink.write_batch(batch)
    sink.close(30)
    return live, public


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Wall seconds, CPU seconds (the command and its worker processes), the result."""
    cpu = _children_cpu()
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - began, _children_cpu() - cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--chains", type=int, default=2, help="writers interleaved in the trail")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the trail here and keep it")
    args = parser.parse_args(argv)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        began = time.perf_counter()
        live, public = build(workdir, args.entries, args.chains)
        files = sorted(
            p
            for p in workdir.iterdir()
            if p.name.startswith("audit.jsonl") and not p.name.endswith(".lock")
        )
        size = sum(p.stat().st_size for p in files)
        emit(
            {
                "bench": "verify_trail",
                "entries": args.entries,
                "chains": args.chains,
                "files": [p.name for p in files],
                "bytes_on_disk": size,
                "build_seconds": round(time.perf_counter() - began, 1),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            }
        )
        ours = [sys.executable, "-m", "auditkeep", "verify", "--json", "--public-key", str(public)]
        floor = [SHA256SUM, *map(str, files)]
        verify_times: list[float] = []
        verify_cpu: list[float] = []
        floor_times: list[float] = []
        floor_cpu: list[float] = []
        report: dict[str, Any] = {}
        for _ in range(args.rounds):
            elapsed, cpu, result = timed([*ours, str(live)])
            verify_times.append(elapsed)
            verify_cpu.append(cpu)
            report = orjson.loads(result.stdout)
            if result.returncode != 0:
                emit({"bench": "verify", "error": f"exit {result.returncode}", "report": report})
                return 1
            elapsed, cpu, result = timed(floor)
            floor_times.append(elapsed)
            floor_cpu.append(cpu)
            if result.returncode != 0:
                emit({"bench": "sha256sum", "error": result.stderr.decode()[:200]})
                return 1
        lines = report["lines"]
        best, floor_best = min(verify_times), min(floor_times)
        emit(
            {
                "bench": "verify_1m",
                "lines": lines,
                "chains_verified": sum(c["status"] == "verified" for c in report["chains"]),
                "verify_seconds_min": round(best, 3),
                "verify_seconds_median": round(statistics.median(verify_times), 3),
                "verify_in_process_seconds": report["seconds"],
                "lines_per_second": round(lines / best),
                "sha256sum_seconds_min": round(floor_best, 3),
                "sha256sum_seconds_median": round(statistics.median(floor_times), 3),
                "ratio_to_sha256sum": round(best / floor_best, 2),
                # CPU time is what a busy machine cannot distort; wall time on N idle
                # cores is about cpu / N for the parallel part.
                "verify_cpu_seconds_min": round(min(verify_cpu), 3),
                "sha256sum_cpu_seconds_min": round(min(floor_cpu), 3),
                "cpu_ratio_to_sha256sum": round(min(verify_cpu) / min(floor_cpu), 2),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
