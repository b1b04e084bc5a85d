"""The wire format's pure functions: fixed vectors, so a format change fails here."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditkeep.integrity import _format as f


def test_line_hash_is_sha256_of_the_bytes() -> None:
    assert f.line_hash(b"{}") == hashlib.sha256(b"{}").hexdigest()
    assert len(f.line_hash(b"x")) == f.HASH_HEX_CHARS


def test_stored_line_strips_one_newline_and_cr() -> None:
    assert f.stored_line(b'{"a":1}\r\n') == b'{"a":1}'
    assert f.stored_line(b'{"a":1}\n') == b'{"a":1}'
    assert f.stored_line(b'{"a":1}\n\n') == b'{"a":1}\n'
    assert f.stored_line(b'{"a":1}') == b'{"a":1}'


@given(
    st.dictionaries(
        st.text(min_size=1), st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1
    ),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.none() | st.binary(min_size=32, max_size=32).map(lambda b: b.hex()),
)
def test_splice_is_valid_json_with_the_chain_last(
    entry: dict[str, int], seq: int, prev: str | None
) -> None:
    entry.pop("chain", None)
    if not entry:
        entry = {"a": 1}
    chain_id = "0" * 32
    line = f.splice(orjson.dumps(entry), chain_id, seq, prev)
    parsed = orjson.loads(line)
    assert list(parsed)[-1] == "chain"
    assert parsed["chain"] == {"id": chain_id, "seq": seq, "prev": prev}
    assert {k: v for k, v in parsed.items() if k != "chain"} == entry
    # The splice is what orjson itself would have written: a re-encode gives the same bytes.
    assert orjson.dumps(parsed) == line
    assert len(line) - len(orjson.dumps(entry)) <= f.CHAIN_FIELD_MAX_BYTES


def test_chain_field_max_bytes_is_the_longest_field() -> None:
    longest = f.chain_suffix("f" * 32, 2**64 - 1, "a" * 64)
    assert len(longest) - 1 == f.CHAIN_FIELD_MAX_BYTES  # minus the closing brace it replaces


def test_checkpoint_message_vector() -> None:
    msg = f.checkpoint_message("ab" * 16, 41, "cd" * 32, None, final=False)
    assert msg == (
        b"auditkeep-checkpoint/v1\n" + b"ab" * 16 + b"\n41\n" + b"cd" * 32 + b"\n-\nopen\n"
    )
    final = f.checkpoint_message("ab" * 16, 41, "cd" * 32, "ef" * 32, final=True)
    assert final.endswith(b"\n" + b"ef" * 32 + b"\nfinal\n")


def test_key_id_and_fingerprint() -> None:
    raw = bytes(range(32))
    digest = hashlib.sha256(raw).hexdigest()
    assert f.key_id(raw) == digest[:16]
    assert f.fingerprint(raw) == "sha256:" + digest


def test_seal_derivation_vector() -> None:
    seed = bytes(32)
    k0 = hmac.new(seed, b"auditkeep-seal/v1 key0", hashlib.sha256).digest()
    k1 = hashlib.sha256(b"auditkeep-seal/v1 evolve" + k0).digest()
    assert f.seal_key0(seed) == k0
    assert f.seal_evolve(k0) == k1
    assert f.seal_key_at(seed, 0) == k0
    assert f.seal_key_at(seed, 1) == k1
    assert f.seal_key_at(seed, 5) == f.seal_evolve(f.seal_key_at(seed, 4))
    with pytest.raises(ValueError, match="epoch"):
        f.seal_key_at(seed, -1)


def test_seal_tag_binds_the_epoch() -> None:
    key = f.seal_key0(bytes(32))
    msg = f.checkpoint_message("ab" * 16, 0, "cd" * 32, None, final=True)
    expected = hmac.new(key, b"auditkeep-seal/v1\n3\n" + msg, hashlib.sha256).hexdigest()
    assert f.seal_tag(key, 3, msg) == expected
    assert f.seal_tag(key, 4, msg) != expected


def test_seal_epoch_of() -> None:
    assert f.seal_epoch_of(1000.0, 1000, 60) == 0
    assert f.seal_epoch_of(1059.999, 1000, 60) == 0
    assert f.seal_epoch_of(1060.0, 1000, 60) == 1
    assert f.seal_epoch_of(900.0, 1000, 60) == 0
