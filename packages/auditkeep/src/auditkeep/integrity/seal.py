"""Forward-secure sealing (``AUDIT_LOG_SEAL=forward``): an HMAC key that only moves forward.

The host holds a state file with the current epoch's key; at each epoch
boundary the key is replaced by a one-way function of itself
(``_format.seal_evolve``) and the file is rewritten atomically, so whoever
steals the host's key later cannot tag an earlier epoch. The seed that
derives every epoch's key (``OUT.verify`` from ``auditkeep keygen --seal``)
belongs off the host, with the verifier.

Processes sharing one state file take a lock beside it (``OUT.lock``) to
advance it; the file never moves backwards, and a process that finds the
file ahead of it adopts the newer key.

Erasure is best effort, as Python allows: the key is held in one
``bytearray`` overwritten in place; the short-lived ``bytes`` a hash returns
are freed at once but not zeroed, and the replaced file's old blocks stay on
disk until reused (docs/integrity.md says so).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from auditkeep.delivery._files import locked
from auditkeep.exceptions import ConfigError
from auditkeep.integrity import _format
from auditkeep.integrity._private import (
    SEAL_KEY_VARIABLE,
    read_private,
    replace_atomically,
    write_new,
)

_log: Final = logging.getLogger("auditkeep.integrity")
MAX_EPOCH_S: Final = 86_400 * 366
MAX_EPOCH: Final = 1 << 40


@dataclass(frozen=True, slots=True)
class _State:
    t0: int
    epoch_s: int
    epoch: int
    key: bytes


def _bounded_int(value: Any, low: int, high: int) -> int | None:
    return value if type(value) is int and low <= value <= high else None


def _parse_state(data: bytes, path: Path, variable: str) -> _State:
    problem = (
        f"{str(path)!r} is not an auditkeep seal state file "
        "(make one with 'auditkeep keygen --seal FILE')"
    )
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ConfigError(variable, problem) from None
    if not isinstance(obj, dict) or obj.get("format") != _format.FORMAT_VERSION:
        raise ConfigError(variable, problem)
    if "seed" in obj:
        raise ConfigError(
            variable,
            f"{str(path)!r} is the seal's verify file (the seed); the host needs the state file "
            "written beside it, and the seed belongs off the host",
        )
    t0 = _bounded_int(obj.get("t0"), 0, 1 << 40)
    epoch_s = _bounded_int(obj.get("epoch_s"), 1, MAX_EPOCH_S)
    epoch = _bounded_int(obj.get("epoch"), 0, MAX_EPOCH)
    key_hex = obj.get("key")
    if t0 is None or epoch_s is None or epoch is None or not isinstance(key_hex, str):
        raise ConfigError(variable, problem)
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ConfigError(variable, problem) from None
    if len(key) != 32:
        raise ConfigError(variable, problem)
    return _State(t0, epoch_s, epoch, key)


def _state_bytes(t0: int, epoch_s: int, epoch: int, key: bytes | bytearray) -> bytes:
    return (
        orjson.dumps(
            {
                "format": _format.FORMAT_VERSION,
                "t0": t0,
                "epoch_s": epoch_s,
                "epoch": epoch,
                "key": bytes(key).hex(),
            }
        )
        + b"\n"
    )


class Sealer:
    """The host side of the seal: the current epoch's key, advanced forward only."""

    def __init__(self, path: Path, state: _State, variable: str = SEAL_KEY_VARIABLE) -> None:
        self.path = path
        self.variable = variable
        self.t0 = state.t0
        self.epoch_s = state.epoch_s
        self._epoch = state.epoch
        self._key = bytearray(state.key)
        self._lock = threading.Lock()
        self._erased = False

    def __repr__(self) -> str:
        return f"Sealer(path={str(self.path)!r}, epoch={self._epoch})"

    @classmethod
    def load(cls, path: Path, variable: str = SEAL_KEY_VARIABLE) -> Sealer:
        """Read and check the state file (owner-only, well-formed); does not advance it."""
        return cls(path, _parse_state(read_private(path, variable), path, variable), variable)

    def fresh(self) -> Sealer:
        """A new sealer on the same state file, read again: each logger holds and erases its own."""
        return Sealer.load(self.path, self.variable)

    @property
    def epoch(self) -> int:
        return self._epoch

    def secret_text(self) -> str:
        """The current key as the state file spells it, for the redactor."""
        with self._lock:
            return bytes(self._key).hex()

    def epoch_at(self, now: float) -> int:
        return _format.seal_epoch_of(now, self.t0, self.epoch_s)

    def seconds_to_next_epoch(self, now: float) -> float:
        start_next = self.t0 + (self.epoch_at(now) + 1) * self.epoch_s
        return max(0.0, start_next - now)

    def advance(self, now: float | None = None) -> int:
        """Move to the epoch of ``now`` (never backwards), rewriting the state file; the epoch."""
        target = self.epoch_at(time.time() if now is None else now)
        with self._lock:
            if self._erased:
                raise RuntimeError("the sealer was erased (its logger closed)")
            if target <= self._epoch:
                return self._epoch
            try:
                self._advance_file(target)
            except (OSError, ConfigError) as exc:
                # The key moves forward in memory anyway (the derivation is the same
                # wherever it starts), so tags stay right; the file keeps an older key,
                # which is what an attacker reading it would get: say so loudly.
                _log.error(
                    "auditkeep: cannot advance the seal state file %s (%s); the key "
                    "evolved in memory only",
                    str(self.path),
                    exc.strerror if isinstance(exc, OSError) else exc,
                )
                if target > self._epoch:
                    self._replace(self._evolved(target), target)
            return self._epoch

    def _evolved(self, target: int) -> bytes:
        key = bytes(self._key)
        for _ in range(target - self._epoch):
            key = _format.seal_evolve(key)
        return key

    def _advance_file(self, target: int) -> None:
        """Under the lock beside the state file: adopt a newer file, or write ``target``."""
        with locked(self.path.with_name(self.path.name + ".lock")):
            on_file = _parse_state(read_private(self.path, self.variable), self.path, self.variable)
            if (on_file.t0, on_file.epoch_s) != (self.t0, self.epoch_s):
                raise ConfigError(self.variable, f"{str(self.path)!r} was replaced by another seal")
            if on_file.epoch >= target:
                # Another process is there already (or ahead): adopt its key.
                self._replace(on_file.key, on_file.epoch)
                return
            if on_file.epoch > self._epoch:
                self._replace(on_file.key, on_file.epoch)
            key = self._evolved(target)
            replace_atomically(self.path, _state_bytes(self.t0, self.epoch_s, target, key))
            self._replace(key, target)

    def _replace(self, key: bytes, epoch: int) -> None:
        self._key[:] = key  # overwrite in place: the old key's bytes are gone from this buffer
        self._epoch = epoch

    def tag(self, message: bytes) -> dict[str, Any]:
        """``{"epoch", "tag"}`` of a checkpoint message, with the current epoch's key."""
        with self._lock:
            if self._erased:
                raise RuntimeError("the sealer was erased (its logger closed)")
            return {"epoch": self._epoch, "tag": _format.seal_tag(self._key, self._epoch, message)}

    def erase(self) -> None:
        """Zero the held key (at close); the sealer is unusable afterwards."""
        with self._lock:
            self._key[:] = bytes(len(self._key))
            self._erased = True


def generate_seal(out: Path, *, epoch_s: int = _format.DEFAULT_SEAL_EPOCH_S) -> Path:
    """Write a new seal: ``out`` (host state, 0600) and ``out.verify`` (the seed, 0600).

    Returns the verify file's path. Refuses to replace either.
    """
    if not 1 <= epoch_s <= MAX_EPOCH_S:
        raise ValueError(f"epoch seconds must be 1 to {MAX_EPOCH_S}")
    verify = out.with_name(out.name + ".verify")
    if verify.exists():
        raise FileExistsError(str(verify))
    seed = bytearray(os.urandom(_format.SEED_BYTES))
    t0 = math.floor(time.time())
    key0 = _format.seal_key0(seed)
    write_new(out, _state_bytes(t0, epoch_s, 0, key0), 0o600)
    write_new(
        verify,
        orjson.dumps(
            {"format": _format.FORMAT_VERSION, "t0": t0, "epoch_s": epoch_s, "seed": seed.hex()}
        )
        + b"\n",
        0o600,
    )
    seed[:] = bytes(len(seed))
    return verify
