"""Integrity settings: ``IntegrityOptions`` and its reading from ``AUDIT_LOG_*``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from auditkeep._env import env_bool, env_int, env_seconds, shown
from auditkeep.exceptions import ConfigError
from auditkeep.integrity import _format
from auditkeep.integrity._private import SEAL_KEY_VARIABLE, SIGNING_KEY_VARIABLE
from auditkeep.integrity.remote import SIGNER_SOCKET_VARIABLE, RemoteSigner
from auditkeep.integrity.seal import Sealer

MAX_CHECKPOINT_EVERY: Final = 10_000_000
MAX_CHECKPOINT_INTERVAL_S: Final = 3600.0
VARIABLES: Final = (
    "AUDIT_LOG_INTEGRITY",
    SIGNING_KEY_VARIABLE,
    SIGNER_SOCKET_VARIABLE,
    "AUDIT_LOG_CHECKPOINT_EVERY",
    "AUDIT_LOG_CHECKPOINT_INTERVAL_S",
    "AUDIT_LOG_SEAL",
    SEAL_KEY_VARIABLE,
)


class Signer(Protocol):
    """What signs checkpoints: a key in this process (``SigningKey``) or a separate
    signer (``RemoteSigner``)."""

    @property
    def key_id(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def secret_texts(self) -> tuple[str, ...]: ...

    def sign(
        self, message: bytes, previous: bytes | None = None, timeout_s: float | None = None
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class IntegrityOptions:
    """How entries are chained and checkpoints made (see docs/integrity.md).

    Args:
        checkpoint_every: a checkpoint after at most this many entries.
        checkpoint_interval_s: and at least this often while entries arrive.
        signing_key: signs each checkpoint (Ed25519): a key in this process, or a
            separate signer; None chains without signatures.
        seal: the forward-secure seal's host state; None for no seal.

    .. versionadded:: 0.1.0
    """

    checkpoint_every: int = _format.DEFAULT_CHECKPOINT_EVERY
    checkpoint_interval_s: float = _format.DEFAULT_CHECKPOINT_INTERVAL_S
    signing_key: Signer | None = None
    seal: Sealer | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.checkpoint_every <= MAX_CHECKPOINT_EVERY:
            raise ValueError(f"checkpoint_every must be 1 to {MAX_CHECKPOINT_EVERY}")
        if not 0 < self.checkpoint_interval_s <= MAX_CHECKPOINT_INTERVAL_S:
            raise ValueError(f"checkpoint_interval_s must be in (0, {MAX_CHECKPOINT_INTERVAL_S}]")

    def secret_texts(self) -> tuple[str, ...]:
        """What the redactor must never let through: the private key's and seal key's spellings."""
        texts = self.signing_key.secret_texts if self.signing_key else ()
        return texts + ((self.seal.secret_text(),) if self.seal else ())

    def describe(self) -> str:
        """One line for ``auditkeep check-config``."""
        key = (
            f"signed (key id {self.signing_key.key_id})"
            if self.signing_key
            else "UNSIGNED (no AUDIT_LOG_SIGNING_KEY_FILE or AUDIT_LOG_SIGNER_SOCKET)"
        )
        if isinstance(self.signing_key, RemoteSigner):
            key += f" by the signer at {str(self.signing_key.path)!r}"
        seal = f", forward seal (epoch {self.seal.epoch_s} s)" if self.seal else ""
        return (
            f"chained, checkpoints every {self.checkpoint_every} entries or "
            f"{self.checkpoint_interval_s:g} s, {key}{seal}"
        )


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = (env.get(name) or "").strip()
    return Path(raw) if raw else None


def integrity_from_env(env: Mapping[str, str]) -> IntegrityOptions | None:
    """The integrity settings, or None when off. Loads (and checks) the key files.

    Raises:
        ConfigError: naming the first invalid variable.
    """
    key_path = _path(env, SIGNING_KEY_VARIABLE)
    signer_path = _path(env, SIGNER_SOCKET_VARIABLE)
    if key_path is not None and signer_path is not None:
        raise ConfigError(
            SIGNER_SOCKET_VARIABLE,
            f"set it or {SIGNING_KEY_VARIABLE}, not both (the separate signer holds the key)",
        )
    seal_path = _path(env, SEAL_KEY_VARIABLE)
    seal_mode = (env.get("AUDIT_LOG_SEAL") or "").strip().lower() or _format.SEAL_NONE
    if seal_mode not in (_format.SEAL_NONE, _format.SEAL_FORWARD):
        raise ConfigError("AUDIT_LOG_SEAL", f"unknown mode {shown(seal_mode)}; use none or forward")
    if seal_mode == _format.SEAL_FORWARD and seal_path is None:
        raise ConfigError(
            SEAL_KEY_VARIABLE,
            "required when AUDIT_LOG_SEAL=forward; make one with 'auditkeep keygen --seal FILE'",
        )
    if seal_mode == _format.SEAL_NONE and seal_path is not None:
        raise ConfigError("AUDIT_LOG_SEAL", f"set it to forward to use {SEAL_KEY_VARIABLE}")
    implied = key_path is not None or signer_path is not None or seal_path is not None
    raw_on = (env.get("AUDIT_LOG_INTEGRITY") or "").strip()
    on = env_bool(env, "AUDIT_LOG_INTEGRITY", implied)
    if raw_on and not on and implied:
        raise ConfigError(
            "AUDIT_LOG_INTEGRITY",
            "is off, but a signing key, a signer or a seal is set; remove one of them",
        )
    every = env_int(
        env,
        "AUDIT_LOG_CHECKPOINT_EVERY",
        _format.DEFAULT_CHECKPOINT_EVERY,
        minimum=1,
        maximum=MAX_CHECKPOINT_EVERY,
    )
    interval = env_seconds(
        env,
        "AUDIT_LOG_CHECKPOINT_INTERVAL_S",
        _format.DEFAULT_CHECKPOINT_INTERVAL_S,
        maximum=MAX_CHECKPOINT_INTERVAL_S,
    )
    if not on:
        return None
    signing_key: Signer | None = None
    if key_path is not None:
        signing_key = _load_key(key_path)
    elif signer_path is not None:
        signing_key = RemoteSigner(signer_path)
    seal = Sealer.load(seal_path) if seal_path is not None else None
    return IntegrityOptions(every, interval, signing_key, seal)


def _load_key(path: Path) -> Signer:
    try:
        from auditkeep.integrity.keys import load_signing_key
    except ImportError as exc:
        from auditkeep._optional import missing_dependency

        raise missing_dependency(
            exc, module="cryptography", extra="integrity", feature=SIGNING_KEY_VARIABLE
        ) from None
    return load_signing_key(path)
