"""Fixtures for the writer side of integrity: a strict reading of one chain.

``chain_of`` is not ``auditkeep verify`` (the verify helper's, with its own
tests): it checks only what the writer promises, in the order the writer
wrote — seq 0, 1, 2 ... in one destination, each ``prev`` the hash of the
line before, each checkpoint's head, link, signature and seal.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditkeep.integrity import _format
from auditkeep.testing import validate_entries


@dataclass
class Chain:
    lines: list[bytes]
    entries: list[dict[str, Any]]
    started: dict[str, Any]
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    @property
    def chain_id(self) -> str:
        return str(self.started["details"]["chain_id"])

    @property
    def final(self) -> dict[str, Any] | None:
        last = self.entries[-1]
        if last["action"] == _format.ACTION_CHECKPOINT and last["details"]["final"]:
            return last
        return None


def read_chain(
    lines: Sequence[bytes],
    *,
    public_key: Ed25519PublicKey | None = None,
    seed: bytes | None = None,
) -> Chain:
    """One chain, written in order; AssertionError on the first broken promise."""
    entries = validate_entries(lines)
    assert entries, "no entries"
    started = entries[0]
    assert started["action"] == _format.ACTION_STARTED
    chain = Chain(list(lines), entries, started)
    chain_id = chain.chain_id
    prev_checkpoint: str | None = None
    for i, (line, entry) in enumerate(zip(lines, entries, strict=True)):
        assert list(entry)[-1] == "chain", f"line {i}: chain is not the last key"
        # The splice wrote what orjson itself writes: no stray byte, nothing re-encoded.
        assert orjson.dumps(entry) == line, f"line {i}: not orjson's own encoding"
        link = entry["chain"]
        assert link["id"] == chain_id
        assert link["seq"] == i, f"line {i}: seq {link['seq']}"
        expected_prev = None if i == 0 else _format.line_hash(lines[i - 1])
        assert link["prev"] == expected_prev, f"line {i}: prev does not link"
        if entry["action"] != _format.ACTION_CHECKPOINT:
            continue
        d = entry["details"]
        assert i > 0
        assert d["chain_id"] == chain_id
        assert d["seq"] == i - 1
        assert d["head"] == _format.line_hash(lines[i - 1])
        assert d["prev_checkpoint"] == prev_checkpoint
        message = _format.checkpoint_message(
            chain_id, d["seq"], d["head"], prev_checkpoint, d["final"]
        )
        if public_key is not None:
            public_key.verify(base64.b64decode(d["signature"], validate=True), message)
            assert d["key_id"] == started["details"]["key_id"]
        if seed is not None:
            seal = d["seal"]
            key = _format.seal_key_at(seed, seal["epoch"])
            assert seal["tag"] == _format.seal_tag(key, seal["epoch"], message)
        prev_checkpoint = _format.line_hash(line)
        chain.checkpoints.append(entry)
    return chain


def in_seq_order(lines: Sequence[bytes]) -> list[bytes]:
    """One chain's lines sorted by seq, byte-identical duplicates dropped.

    Arrival order is not the writer's promise once the spool is involved (an
    overflowing buffer spills, the spool replays later; at-least-once
    delivery repeats): the bytes are. A conflicting duplicate is a failure.
    """
    by_seq: dict[int, bytes] = {}
    for line in lines:
        seq = orjson.loads(line)["chain"]["seq"]
        assert by_seq.setdefault(seq, line) == line, f"seq {seq}: two different lines"
    return [by_seq[seq] for seq in sorted(by_seq)]


@pytest.fixture
def chain_of() -> Callable[..., Chain]:
    return read_chain


@pytest.fixture
def seq_order() -> Callable[[Sequence[bytes]], list[bytes]]:
    return in_seq_order


def parsed(lines: Sequence[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]
