"""Property: any single-byte change, line deletion, insertion or swap inside the sealed part
of a trail is detected by ``verify``.

The trail is built once (a signed chain of 227 lines, a checkpoint every 40
entries, closed) and each case mutates its bytes in memory and writes one
temporary file. "Sealed part": every line the final checkpoint's signature
covers, through the chain of hashes — all but the final checkpoint line
itself, whose envelope (event_id, timestamp) no signature can cover (its
signed details can: docs/integrity-verify.md).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditkeep.integrity.verify import EXIT_PROBLEM, EXIT_VERIFIED, VerifyReport

sys.path.insert(0, str(Path(__file__).parent))
from verifykit import FormatWriter, run_verify

KEY = Ed25519PrivateKey.generate()
_writer = FormatWriter(key=KEY, every=40)
_writer.entry(220)
LINES: tuple[bytes, ...] = tuple(_writer.close())
SEALED = len(LINES) - 1  # indexes 0 .. SEALED-1
_DIR = Path(tempfile.mkdtemp(prefix="verify-properties-"))
_FILE = _DIR / "audit.jsonl"
FAST = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


def check(lines: list[bytes] | tuple[bytes, ...], *, strict_order: bool = False) -> VerifyReport:
    _FILE.write_bytes(b"".join(line + b"\n" for line in lines))
    return run_verify([_FILE], keys=[KEY], strict_order=strict_order)


def test_the_untouched_trail_verifies() -> None:
    report = check(LINES)
    assert report.exit_code == EXIT_VERIFIED
    (chain,) = report.chains
    assert chain.closed
    assert chain.entries == len(LINES)


@settings(FAST, max_examples=1500)
@given(index=st.integers(0, SEALED - 1), position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_any_single_byte_change_is_a_problem(index: int, position: int, value: int) -> None:
    line = bytearray(LINES[index])
    position %= len(line)
    if line[position] == value:
        value = (value + 1) % 256
    line[position] = value
    lines = list(LINES)
    lines[index] = bytes(line)
    report = check(lines)
    if index == 0 and report.exit_code != EXIT_PROBLEM:
        # The chain's start changed out of it (its chain id or seq): what is left looks
        # like a chain whose start is not in the inputs. Never verified, always said.
        assert report.exit_code != EXIT_VERIFIED
        assert "starts_late" in {n.kind for c in report.chains for n in c.notices}
    else:
        assert report.exit_code == EXIT_PROBLEM, (index, position, value)


@settings(FAST, max_examples=300)
@given(index=st.integers(0, SEALED - 1))
def test_any_line_deletion_is_detected(index: int) -> None:
    lines = list(LINES)
    del lines[index]
    report = check(lines)
    if index == 0:
        # Without its first line the chain looks like one whose start was rotated away.
        assert report.exit_code != EXIT_VERIFIED
        assert [n.kind for n in report.chains[0].notices] == ["starts_late"]
    else:
        assert report.exit_code == EXIT_PROBLEM
        assert [p.kind for p in report.all_problems] == ["deleted"]
        assert report.all_problems[0].line == index + 1  # the line after the gap, 1-based


@settings(FAST, max_examples=600)
@given(
    source=st.integers(0, SEALED - 1),
    where=st.integers(0, SEALED),
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
)
def test_any_inserted_line_is_detected(source: int, where: int, position: int, value: int) -> None:
    """A new line (an existing one with a byte changed) anywhere inside the sealed part.

    An exact copy of an existing line is a byte-identical duplicate, which
    at-least-once delivery makes: that one verifies (tested elsewhere).
    """
    line = bytearray(LINES[source])
    position %= len(line)
    if line[position] == value:
        value = (value + 1) % 256
    line[position] = value
    if b"\n" in line:
        line = line.replace(b"\n", b" ")
    lines = list(LINES)
    lines.insert(where, bytes(line))
    report = check(lines)
    assert report.exit_code != EXIT_VERIFIED
    if report.exit_code != EXIT_PROBLEM:
        # The only way not to be a problem: the byte moved it to a chain of its own,
        # which then has nothing authenticated (no start, no checkpoint).
        assert len(report.chains) == 2
        (stray,) = [c for c in report.chains if c.entries == 1]
        assert stray.verified_checkpoint_seq is None
        assert stray.status == "incomplete"
    else:
        lines_named = {p.line for p in report.all_problems}
        assert where + 1 in lines_named or source + 1 in lines_named or lines_named


@settings(FAST, max_examples=300)
@given(first=st.integers(0, SEALED - 1), second=st.integers(0, SEALED - 1))
def test_any_swap_is_reported(first: int, second: int) -> None:
    """Arrival order is not evidence (the library reorders after an outage), so a swap is a
    ``reordered`` notice at a line between the two, and a problem with --strict-order."""
    if first == second:
        second = (second + 1) % SEALED
    low, high = sorted((first, second))
    lines = list(LINES)
    lines[low], lines[high] = lines[high], lines[low]
    report = check(lines)
    notices = [n for n in report.chains[0].notices if n.kind == "reordered"]
    assert notices
    assert low + 1 < notices[0].line <= high + 1  # type: ignore[operator]
    assert report.all_problems == []
    strict = check(lines, strict_order=True)
    assert strict.exit_code == EXIT_PROBLEM
