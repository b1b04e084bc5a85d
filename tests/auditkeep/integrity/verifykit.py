"""Helpers for the verify tests: a format-level chain writer, key files, running verify.

``FormatWriter`` writes chained entries, checkpoints and seals straight from
``auditkeep.integrity._format`` (no logger): the property tests need thousands
of trails in memory, and the forward-seal tests need an attacker's key. The
end-to-end tests use the real logger (test_verify_tamper.py).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkeep.integrity import _format
from auditkeep.integrity.verify import (
    SealSeed,
    VerifyOptions,
    VerifyReport,
    load_public_key,
    verify,
)
from auditkeep.query import discover_files


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_public_key(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def write_seal_seed(seed: bytes, t0: int, epoch_s: int, path: Path) -> Path:
    path.write_bytes(orjson.dumps({"format": 1, "t0": t0, "epoch_s": epoch_s, "seed": seed.hex()}))
    return path


class FormatWriter:
    """One chain, written as the format says (the writer side, without the logger).

    ``seal_key`` is the CURRENT epoch key (what a host holds); ``seal_epoch``
    its epoch. ``clock`` gives each entry's time.
    """

    def __init__(
        self,
        *,
        key: Ed25519PrivateKey | None = None,
        seal_key: bytes | None = None,
        seal_epoch: int = 0,
        seal_t0: int = 0,
        seal_epoch_s: int = 60,
        every: int = 10,
        start: float | None = None,
        step: float = 0.001,
        chain_id: str | None = None,
        seal_hook: Callable[[int, bytes, bytes], tuple[int, str]] | None = None,
        checkpoint_clock: Callable[[float], float] | None = None,
    ) -> None:
        """``seal_hook(true_epoch, current_key, message)`` -> (claimed epoch, tag) replaces
        the genuine tag (an attacker's); ``checkpoint_clock`` restamps checkpoints."""
        self.id = chain_id or uuid.uuid4().hex
        self.key = key
        self.key_id = _format.key_id(public_raw(key)) if key else None
        self.seal_key = seal_key
        self.seal_epoch = seal_epoch
        self.seal_t0 = seal_t0
        self.seal_epoch_s = seal_epoch_s
        self.every = every
        self.t = start if start is not None else time.time()
        self.step = step
        self.seal_hook = seal_hook
        self.checkpoint_clock = checkpoint_clock
        self.seq = 0
        self.prev: str | None = None
        self.prev_checkpoint: str | None = None
        self.since_checkpoint = 0
        self.lines: list[bytes] = []
        self.checkpoint_lines: list[int] = []  # indexes into lines
        self._emit(
            _format.ACTION_STARTED,
            {
                "chain_id": self.id,
                "format": 1,
                "key_id": self.key_id,
                "public_key_fingerprint": _format.fingerprint(public_raw(key)) if key else None,
                "seal": "forward" if seal_key else "none",
                "seal_epoch": seal_epoch if seal_key else None,
                "checkpoint_every_entries": every,
                "checkpoint_every_s": 5,
                "pid": 4242,
            },
            system=True,
        )

    def _emit(
        self, action: str, details: dict[str, Any], *, system: bool = False, at: float | None = None
    ) -> bytes:
        self.t += self.step
        entry = {
            "schema_version": "1.0",
            "event_id": str(uuid.uuid4()),
            "timestamp": iso(self.t if at is None else at),
            "event_type": "audit",
            "action": action,
            "actor": {"type": "system", "id": "auditkeep"}
            if system
            else {"type": "user", "id": "u"},
            "target": {},
            "outcome": "success",
            "correlation_id": str(uuid.uuid4()),
            "service": "verifykit",
            "details": details,
        }
        line = _format.splice(orjson.dumps(entry), self.id, self.seq, self.prev)
        self.prev = _format.line_hash(line)
        self.seq += 1
        self.lines.append(line)
        return line

    def entry(self, n: int = 1, *, text: str = "x" * 40) -> None:
        for _ in range(n):
            self._emit("test.event", {"n": self.seq, "text": text})
            self.since_checkpoint += 1
            if self.since_checkpoint >= self.every:
                self.checkpoint()

    def checkpoint(self, *, final: bool = False) -> None:
        covered = self.seq - 1
        head = self.prev
        assert head is not None
        message = _format.checkpoint_message(self.id, covered, head, self.prev_checkpoint, final)
        signature = (
            base64.b64encode(self.key.sign(message)).decode() if self.key is not None else None
        )
        seal = None
        if self.seal_key is not None:
            epoch = _format.seal_epoch_of(self.t + self.step, self.seal_t0, self.seal_epoch_s)
            while self.seal_epoch < epoch:  # evolve forward, as the host does
                self.seal_key = _format.seal_evolve(self.seal_key)
                self.seal_epoch += 1
            if self.seal_hook is not None:
                claimed, tag = self.seal_hook(self.seal_epoch, self.seal_key, message)
            else:
                claimed = self.seal_epoch
                tag = _format.seal_tag(self.seal_key, self.seal_epoch, message)
            seal = {"epoch": claimed, "tag": tag}
        line = self._emit(
            _format.ACTION_CHECKPOINT,
            {
                "chain_id": self.id,
                "seq": covered,
                "head": head,
                "prev_checkpoint": self.prev_checkpoint,
                "final": final,
                "key_id": self.key_id,
                "signature": signature,
                "seal": seal,
            },
            system=True,
            at=self.checkpoint_clock(self.t + self.step) if self.checkpoint_clock else None,
        )
        self.prev_checkpoint = _format.line_hash(line)
        self.checkpoint_lines.append(len(self.lines) - 1)
        self.since_checkpoint = 0

    def close(self) -> list[bytes]:
        self.checkpoint(final=True)
        return self.lines


def write_lines(path: Path, lines: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def run_verify(
    paths: Sequence[Path],
    *,
    keys: Sequence[Ed25519PrivateKey] = (),
    seal: SealSeed | None = None,
    now: float | None = None,
    **options: Any,
) -> VerifyReport:
    public = {}
    for key in keys:
        public[_format.key_id(public_raw(key))] = key.public_key()
    files = discover_files(list(paths))
    return verify(files, VerifyOptions(public_keys=public, seal=seal, now=now, **options))


def kinds(report: VerifyReport) -> list[str]:
    return [problem.kind for problem in report.all_problems]


def where(report: VerifyReport) -> list[tuple[str, str | None, int | None]]:
    return [
        (problem.kind, Path(problem.file).name if problem.file else None, problem.line)
        for problem in report.all_problems
    ]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "auditkeep", "verify", *args],
        env={**inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


__all__ = [
    "FormatWriter",
    "cli",
    "iso",
    "kinds",
    "load_public_key",
    "run_verify",
    "where",
    "write_lines",
    "write_public_key",
    "write_seal_seed",
]
