"""The integrity wire format, v1: constants and pure functions shared by writer and verifier.

One fact in one place: the logger (``auditkeep.integrity.chain``) and ``auditkeep
verify`` both import these, so the two sides cannot drift. The format is
described in docs/integrity.md; changing anything here changes the format.

Nothing here does I/O or holds state: every function maps bytes to bytes.
The hashing and tag construction are hand-written on purpose (a few lines of
hashlib/hmac); no library ships this exact format, and its being tiny is what
lets a third party re-implement the verifier from the docs.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Final

FORMAT_VERSION: Final = 1

ACTION_STARTED: Final = "auditkeep.chain.started"
ACTION_CHECKPOINT: Final = "auditkeep.chain.checkpoint"
ACTOR: Final = {"type": "system", "id": "auditkeep"}

CHAIN_FIELD: Final = "chain"
SEAL_NONE: Final = "none"
SEAL_FORWARD: Final = "forward"

DEFAULT_CHECKPOINT_EVERY: Final = 1000
DEFAULT_CHECKPOINT_INTERVAL_S: Final = 5.0
DEFAULT_SEAL_EPOCH_S: Final = 60
# How far a sealed checkpoint's timestamp may lie outside its epoch's window.
EPOCH_TOLERANCE_S: Final = 2.0

CHECKPOINT_MAGIC: Final = b"auditkeep-checkpoint/v1"
SEAL_KEY0_LABEL: Final = b"auditkeep-seal/v1 key0"
SEAL_EVOLVE_LABEL: Final = b"auditkeep-seal/v1 evolve"
SEAL_TAG_LABEL: Final = b"auditkeep-seal/v1\n"

HASH_HEX_CHARS: Final = 64
KEY_ID_CHARS: Final = 16
SEED_BYTES: Final = 32
FINGERPRINT_PREFIX: Final = "sha256:"
# The bytes the spliced chain field adds at most: ',"chain":{"id":"<32>","seq":<20>,"prev":"<64>"}'.
CHAIN_FIELD_MAX_BYTES: Final = len(b',"chain":{"id":"","seq":,"prev":""}') + 32 + 20 + 64


def line_hash(line: bytes) -> str:
    """SHA-256 (lowercase hex) of an entry's bytes as the logger encoded them (no newline)."""
    return hashlib.sha256(line).hexdigest()


def stored_line(stored: bytes) -> bytes:
    """A line as read from a file, without its one trailing ``\\n`` (and ``\\r``)."""
    if stored.endswith(b"\n"):
        stored = stored[:-1]
    if stored.endswith(b"\r"):
        stored = stored[:-1]
    return stored


def chain_template(chain_id: str) -> bytes:
    """``bytes %`` template of a chained line: (entry without its ``}``, seq, prev hex bytes).

    The writer's hot path formats it once per entry (one allocation); for seq 0,
    whose prev is null, use ``splice``.
    """
    return b'%b,"chain":{"id":"' + chain_id.encode("ascii") + b'","seq":%d,"prev":"%b"}}'


def chain_suffix(chain_id: str, seq: int, prev: str | None) -> bytes:
    """The bytes that replace an encoded entry's closing brace: the chain field, then ``}``."""
    if prev is None:
        return b',"chain":{"id":"%b","seq":%d,"prev":null}}' % (chain_id.encode("ascii"), seq)
    return chain_template(chain_id) % (b"", seq, prev.encode("ascii"))


def splice(raw: bytes, chain_id: str, seq: int, prev: str | None) -> bytes:
    """``raw`` (an encoded JSON object with at least one key) with the chain field as last key."""
    return raw[:-1] + chain_suffix(chain_id, seq, prev)


def checkpoint_message(
    chain_id: str, seq: int, head: str, prev_checkpoint: str | None, final: bool
) -> bytes:
    """The bytes an Ed25519 checkpoint signature and a seal tag cover (C2SP-style text lines)."""
    return b"%s\n%s\n%d\n%s\n%s\n%s\n" % (
        CHECKPOINT_MAGIC,
        chain_id.encode("ascii"),
        seq,
        head.encode("ascii"),
        (prev_checkpoint or "-").encode("ascii"),
        b"final" if final else b"open",
    )


def key_id(public_raw: bytes) -> str:
    """The 16-hex key id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_raw).hexdigest()[:KEY_ID_CHARS]


def fingerprint(public_raw: bytes) -> str:
    """``sha256:<64 hex>`` of a raw 32-byte Ed25519 public key."""
    return FINGERPRINT_PREFIX + hashlib.sha256(public_raw).hexdigest()


def seal_key0(seed: bytes | bytearray) -> bytes:
    """The epoch-0 sealing key from the off-host seed."""
    return hmac.new(seed, SEAL_KEY0_LABEL, hashlib.sha256).digest()


def seal_evolve(key: bytes | bytearray) -> bytes:
    """The next epoch's key: one-way (SHA-256), so the current key tells nothing of earlier ones."""
    return hashlib.sha256(SEAL_EVOLVE_LABEL + key).digest()


def seal_key_at(seed: bytes | bytearray, epoch: int) -> bytes:
    """Epoch ``epoch``'s key, derived from the seed (the verifier's side)."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    key = seal_key0(seed)
    for _ in range(epoch):
        key = seal_evolve(key)
    return key


def seal_epoch_of(t: float, t0: int, epoch_s: int) -> int:
    """The epoch a moment (unix seconds) falls in; never negative."""
    return max(0, math.floor((t - t0) / epoch_s))


def seal_tag(key: bytes | bytearray, epoch: int, message: bytes) -> str:
    """HMAC-SHA256 (hex) binding a checkpoint message to ITS epoch (CVE-2023-31439)."""
    return hmac.new(
        key, SEAL_TAG_LABEL + str(epoch).encode("ascii") + b"\n" + message, hashlib.sha256
    ).hexdigest()
