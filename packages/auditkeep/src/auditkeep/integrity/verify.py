"""``auditkeep verify``: check a trail's hash chains, checkpoint signatures and seals, offline.

The wire format is ``_format`` (docs/integrity.md). What is evidence:

* **The bytes of each line and its ``chain`` field.** Every entry commits to
  the SHA-256 of the previous entry of its chain (``prev``); a checkpoint signs
  the hash of the entry it covers (``head``) and names the previous checkpoint.
  Trust flows *backwards* from a checkpoint whose signature (or seal tag)
  verifies: a line is verified when the chain links from it, without a break,
  up to such a checkpoint. Links are checked forwards as lines are read (one
  pass, constant work per line); by collision resistance this is the same as
  walking back from the head.
* **The sequence number, not the arrival order.** The spool and at-least-once
  delivery reorder and repeat entries, so lines are grouped by chain and put in
  ``seq`` order wherever they were read. A byte-identical repeat is a
  duplicate (counted, fine); two different lines claiming one ``(chain, seq)``
  are tampering. A line whose ``seq`` goes backwards within one file is
  reported as a ``reordered`` *notice*: the library itself does that after an
  outage or an overflow, and the order is not signed, so it cannot be told
  from a moved line (``--strict-order`` makes it a problem, for trails known
  to have had no outage).
* **What cannot be decided from the trail alone** is reported as incomplete,
  never as verified (exit 3): entries after the last checkpoint (the unsealed
  tail), a chain that ends without its final checkpoint (a crash and a cut-off
  end look alike), a chain whose first entries are not in the inputs
  (retention deleted them, or someone did), and signatures when no
  ``--public-key`` was given.

Speed: each line is hashed as stored, and its chain field is read from the
line's end with one regular expression (the writer splices it in as the last
key); only checkpoints and chain starts (one line in a thousand) and lines
that are not compact (a SIEM copy re-encoded) are parsed with ``orjson``.

The chain logic is hand-written: it *is* the format; no library verifies it.
"""

from __future__ import annotations

import array
import base64
import binascii
import bisect
import functools
import hashlib
import hmac
import itertools
import math
import multiprocessing
import re
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson

from auditkeep.integrity import _format
from auditkeep.query._reader import (
    PARALLEL_MIN_BYTES,
    TrailFile,
    available_cpus,
    file_line_blocks,
)

# Exit codes (ISSUE14-FORMAT / docs/integrity-verify.md).
EXIT_VERIFIED: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_USAGE: Final = 2
EXIT_INCOMPLETE: Final = 3

MAX_LISTED: Final = 100
"""Problems (and notices) listed per chain and kind; the rest are counted."""
_DIGEST: Final = 32
_NULL_PREV: Final = bytes(_DIGEST)
_TAIL_NEEDLE: Final = b',"chain":{"id":"'
_TAIL: Final = re.compile(
    rb',"chain":\{"id":"([0-9a-f]{32})","seq":(0|[1-9][0-9]{0,17}),'
    rb'"prev":(?:"([0-9a-f]{64})"|null)\}\}'
)
# The logger writes "action" within the first ~150 bytes (schema_version,
# event_id, timestamp, event_type come first); a line that moved it further
# is not compact as written and takes the parsing path anyway.
_ACTION_NEEDLE: Final = b'"action":"auditkeep.chain.'
_ACTION_WINDOW: Final = 256
_META_ACTIONS: Final = (_format.ACTION_STARTED, _format.ACTION_CHECKPOINT)
_TS_NEEDLE: Final = b'"timestamp":"'
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_MAX_ID_CHARS: Final = 128
_MAX_SEQ: Final = 2**63 - 1
_MAX_EPOCH_AHEAD: Final = 2
"""Seal epochs claimed beyond the current one (clock differences) before they are refused."""

# Problem kinds that make the exit 1. Notices and "incomplete" findings do not.
PROBLEM_KINDS: Final = (
    "modified",
    "deleted",
    "inserted",
    "conflicting_duplicate",
    "forged",
    "bad_signature",
    "missing_signature",
    "unknown_key",
    "bad_seal",
    "seal_epoch_mismatch",
    "malformed",
    "unchained",
    "unreadable",
    "reordered",  # only with --strict-order
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding, at the line that shows it (1-based), when there is one."""

    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    chain_id: str | None = None
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "chain_id": self.chain_id,
            "seq": self.seq,
        }


@dataclass(slots=True)
class ChainReport:
    """What was found about one chain."""

    chain_id: str
    first_seq: int
    last_seq: int
    entries: int
    duplicates: int
    checkpoints: int
    verified_checkpoint_seq: int | None
    """``chain.seq`` of the last checkpoint up to which everything verified, if any."""
    verified_through_seq: int | None
    """The last entry ``seq`` that checkpoint covers."""
    unsealed_tail: int
    """Entries (not counting checkpoints) after the last verified checkpoint."""
    closed: bool
    started: bool
    """Seq 0 (``auditkeep.chain.started``) is in the inputs."""
    key_id: str | None
    seal: str | None
    pid: int | None
    status: str
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)
    omitted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "status": self.status,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "entries": self.entries,
            "duplicates": self.duplicates,
            "checkpoints": self.checkpoints,
            "verified_checkpoint_seq": self.verified_checkpoint_seq,
            "verified_through_seq": self.verified_through_seq,
            "unsealed_tail": self.unsealed_tail,
            "closed": self.closed,
            "started": self.started,
            "key_id": self.key_id,
            "seal": self.seal,
            "pid": self.pid,
            "problems": [problem.as_dict() for problem in self.problems],
            "notices": [notice.as_dict() for notice in self.notices],
            "omitted": self.omitted,
        }


@dataclass(slots=True)
class VerifyReport:
    """The whole verification: per chain, and what belongs to no chain."""

    files: list[str]
    lines: int = 0
    chains: list[ChainReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)
    omitted: int = 0
    signatures_checked: bool = False
    seal_checked: bool = False
    seconds: float = 0.0

    @property
    def all_problems(self) -> list[Problem]:
        found = list(self.problems)
        for chain in self.chains:
            found.extend(chain.problems)
        return found

    @property
    def exit_code(self) -> int:
        if self.problems or self.omitted or any(c.problems or c.omitted for c in self.chains):
            return EXIT_PROBLEM
        if not self.chains:
            return EXIT_PROBLEM
        if any(chain.status != "verified" for chain in self.chains):
            return EXIT_INCOMPLETE
        return EXIT_VERIFIED

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": {EXIT_VERIFIED: "verified", EXIT_PROBLEM: "problems"}.get(
                self.exit_code, "incomplete"
            ),
            "exit_code": self.exit_code,
            "files": self.files,
            "lines": self.lines,
            "signatures_checked": self.signatures_checked,
            "seal_checked": self.seal_checked,
            "seconds": round(self.seconds, 3),
            "chains": [chain.as_dict() for chain in self.chains],
            "problems": [problem.as_dict() for problem in self.problems],
            "notices": [notice.as_dict() for notice in self.notices],
            "omitted": self.omitted,
        }


@dataclass(frozen=True, slots=True)
class SealSeed:
    """The off-host seal seed (``keygen --seal OUT`` writes it to ``OUT.verify``)."""

    seed: bytes = field(repr=False)
    t0: int
    epoch_s: int

    def epoch_window(self, epoch: int) -> tuple[float, float]:
        start = self.t0 + epoch * self.epoch_s
        return float(start), float(start + self.epoch_s)


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    public_keys: dict[str, Any] = field(default_factory=dict)
    """key id -> ``Ed25519PublicKey``."""
    seal: SealSeed | None = None
    strict_order: bool = False
    allow_unchained: bool = False
    now: float | None = None
    """The verifier's clock (tests pin it); seal epochs beyond it are refused."""


# One entry as read: (seq, digest, prev digest or None, file index, line, parsed or None).
_Entry = tuple[int, bytes, bytes | None, int, int, dict[str, Any] | None]


class _Chain:
    """One chain as it is read: accepted entries in seq order, the rest waiting."""

    __slots__ = (
        "alternates",
        "base",
        "breaks",
        "digests",
        "duplicates",
        "early",
        "file_at",
        "file_back",
        "file_top",
        "files",
        "gaps",
        "id",
        "last",
        "last_line",
        "lines",
        "meta",
        "min_ts",
        "next",
        "pending",
        "prevs",
        "relinked",
        "run_index",
        "run_seq",
        "seg_min_ts",
        "unlinked",
    )

    def __init__(self, chain_id: str) -> None:
        self.id = chain_id
        self.base = -1
        self.next = -1
        self.last: bytes | None = None
        self.last_line: bytes | None = None
        self.digests = bytearray()
        self.prevs = bytearray()
        self.files = array.array("I")
        self.lines = array.array("Q")
        self.pending: dict[int, _Entry] = {}
        self.early: list[_Entry] = []
        self.alternates: dict[int, list[_Entry]] = {}
        self.breaks: set[int] = set()
        self.unlinked: set[int] = set()
        self.gaps: list[tuple[int, int]] = []
        self.meta: dict[int, dict[str, Any]] = {}
        self.duplicates = 0
        self.relinked = 0
        # Contiguous runs of accepted seqs (one unless there are gaps): first seq, array index.
        self.run_seq: list[int] = []
        self.run_index: list[int] = []
        # The file being read: its index, the highest seq of this chain in it, and
        # whether the last line of this chain went backwards (reordering notices).
        self.file_at = -1
        self.file_top = -1
        self.file_back = False
        # Seal mode: the earliest entry timestamp since the last checkpoint.
        self.seg_min_ts: str | None = None
        self.min_ts: dict[int, str | None] = {}

    # -- reading --------------------------------------------------------------

    def index(self, seq: int) -> int | None:
        """Where ``seq`` is in the arrays; None if it was never accepted (a gap)."""
        runs = self.run_seq
        if len(runs) == 1:
            i = seq - runs[0]
            return i if 0 <= i < len(self.files) else None
        k = bisect.bisect_right(runs, seq) - 1
        if k < 0:
            return None
        i = self.run_index[k] + seq - runs[k]
        end = self.run_index[k + 1] if k + 1 < len(runs) else len(self.files)
        return i if i < end else None

    def seqs(self) -> Iterator[int]:
        """Every accepted seq, ascending."""
        bounds = [*self.run_index[1:], len(self.files)]
        for first, start, end in zip(self.run_seq, self.run_index, bounds, strict=True):
            yield from range(first, first + end - start)

    def count_from(self, seq: int) -> int:
        """How many accepted entries have a seq >= ``seq``."""
        bounds = [*self.run_index[1:], len(self.files)]
        total = 0
        for first, start, end in zip(self.run_seq, self.run_index, bounds, strict=True):
            last = first + end - start - 1
            if last >= seq:
                total += last - max(first, seq) + 1
        return total

    def digest_at(self, seq: int) -> bytes:
        i = self.index(seq)
        assert i is not None
        return bytes(self.digests[i * _DIGEST : (i + 1) * _DIGEST])

    def prev_at(self, seq: int) -> bytes:
        i = self.index(seq)
        assert i is not None
        return bytes(self.prevs[i * _DIGEST : (i + 1) * _DIGEST])

    def where(self, seq: int) -> tuple[int, int]:
        i = self.index(seq)
        assert i is not None
        return self.files[i], self.lines[i]

    def has(self, seq: int) -> bool:
        return self.base <= seq < self.next and self.index(seq) is not None

    def add(self, entry: _Entry, line: bytes, ts: str | None) -> None:
        seq = entry[0]
        if seq == self.next:
            self._accept(entry, line, ts, linked=True)
            if self.pending:
                self.drain()
        elif self.base < 0:
            self._accept(entry, line, ts, linked=False)
        elif seq < self.base:
            self.early.append(entry)
        elif seq < self.next:
            i = self.index(seq)
            if i is None:
                self._alternate(entry)
            elif self.digests[i * _DIGEST : (i + 1) * _DIGEST] == entry[1]:
                self.duplicates += 1
            else:
                self._alternate(entry)
        else:
            waiting = self.pending.get(seq)
            if waiting is None:
                self.pending[seq] = entry
                if ts is not None:
                    self.min_ts[seq] = ts
            elif waiting[1] == entry[1]:
                self.duplicates += 1
            else:
                self._alternate(entry)

    def _alternate(self, entry: _Entry) -> None:
        variants = self.alternates.setdefault(entry[0], [])
        if all(variant[1] != entry[1] for variant in variants):
            variants.append(entry)
        else:
            self.duplicates += 1

    def _accept(self, entry: _Entry, line: bytes | None, ts: str | None, *, linked: bool) -> None:
        seq, digest, prev, file_index, line_no, parsed = entry
        if self.base < 0:
            self.base = seq
        if seq != self.next:
            self.run_seq.append(seq)
            self.run_index.append(len(self.files))
        if seq == 0:
            if prev is not None:
                self.breaks.add(0)
        elif linked:
            if prev != self.last:
                # Only if the stored bytes fail to link: the previous line re-encoded
                # compactly (a copy that changed only whitespace or escapes).
                fixed = _canonical_digest(self.last_line) if self.last_line else None
                if fixed is not None and fixed == prev:
                    self.digests[-_DIGEST:] = fixed
                    self.relinked += 1
                else:
                    self.breaks.add(seq)
        else:
            self.unlinked.add(seq)
        self.digests += digest
        self.prevs += prev if prev is not None else _NULL_PREV
        self.files.append(file_index)
        self.lines.append(line_no)
        if parsed is not None:
            self.meta[seq] = parsed
            if parsed.get("action") == _format.ACTION_CHECKPOINT:
                self.min_ts[seq] = self.seg_min_ts
                self.seg_min_ts = None
        elif ts is not None and (self.seg_min_ts is None or ts < self.seg_min_ts):
            self.seg_min_ts = ts
        self.last = digest
        self.last_line = line
        self.next = seq + 1

    def drain(self) -> None:
        while (entry := self.pending.pop(self.next, None)) is not None:
            self._accept(entry, None, self.min_ts.pop(entry[0], None), linked=True)

    def entries(self) -> Iterator[tuple[_Entry, str | None]]:
        """Everything this chain holds, accepted or not, with each entry's timestamp if kept."""
        for index, seq in enumerate(self.seqs()):
            i = index * _DIGEST
            prev = bytes(self.prevs[i : i + _DIGEST])
            yield (
                (
                    seq,
                    bytes(self.digests[i : i + _DIGEST]),
                    None if seq == 0 and prev == _NULL_PREV else prev,
                    self.files[index],
                    self.lines[index],
                    self.meta.get(seq),
                ),
                None,
            )
        for entry in self.pending.values():
            yield entry, self.min_ts.get(entry[0])
        for variants in self.alternates.values():
            for entry in variants:
                yield entry, None
        for entry in self.early:
            yield entry, None

    def absorb(self, other: _Chain) -> None:
        """Take in the same chain as read from the next file (by another process)."""
        if self.base < 0 or other.base != self.next or other.early or len(other.run_seq) != 1:
            # Not a continuation: replay its entries one by one (rare; in seq order).
            for entry, ts in sorted(other.entries(), key=lambda item: item[0][0]):
                self.add(entry, b"", ts)
            self.duplicates += other.duplicates
            return
        first = other.base
        if first != 0 and bytes(other.prevs[:_DIGEST]) != self.last:
            self.breaks.add(first)
        other.unlinked.discard(first)
        self.digests += other.digests
        self.prevs += other.prevs
        self.files.extend(other.files)
        self.lines.extend(other.lines)
        self.meta.update(other.meta)
        self.breaks |= other.breaks
        self.unlinked |= other.unlinked
        self.duplicates += other.duplicates
        self.relinked += other.relinked
        first_checkpoint = min(
            (s for s, m in other.meta.items() if m.get("action") == _format.ACTION_CHECKPOINT),
            default=None,
        )
        if first_checkpoint is None:
            self.seg_min_ts = _earliest(self.seg_min_ts, other.seg_min_ts)
        else:
            earliest = _earliest(self.seg_min_ts, other.min_ts.get(first_checkpoint))
            other.min_ts[first_checkpoint] = earliest
            self.seg_min_ts = other.seg_min_ts
        self.min_ts.update(other.min_ts)
        self.last = other.last
        self.last_line = None
        self.next = other.next
        for entry in other.pending.values():
            self.add(entry, b"", other.min_ts.get(entry[0]))
        for variants in other.alternates.values():
            for entry in variants:
                self.add(entry, b"", None)
        self.drain()

    def finish(self) -> None:
        """Take in what is still waiting, noting each gap in the sequence."""
        if self.early:
            self._rebuild()
        while self.pending:
            seq = min(self.pending)
            self.gaps.append((self.next, seq - 1))
            entry = self.pending.pop(seq)
            self._accept(entry, None, self.min_ts.pop(seq, None), linked=False)
            self.drain()
        self._resolve_alternates()

    def _rebuild(self) -> None:
        # Entries older than the first one read (files given newest first): start over in seq order.
        entries: list[_Entry] = list(self.early)
        for index, seq in enumerate(self.seqs()):
            i = index * _DIGEST
            prev = bytes(self.prevs[i : i + _DIGEST])
            entries.append(
                (
                    seq,
                    bytes(self.digests[i : i + _DIGEST]),
                    None if seq == 0 and prev == _NULL_PREV else prev,
                    self.files[index],
                    self.lines[index],
                    self.meta.get(seq),
                )
            )
        entries.extend(self.pending.values())
        for variants in self.alternates.values():
            entries.extend(variants)
        entries.sort(key=lambda entry: (entry[0], entry[3], entry[4]))
        duplicates = self.duplicates
        min_ts = self.min_ts
        self.__init__(self.id)  # type: ignore[misc]
        self.duplicates = duplicates
        self.min_ts = min_ts
        for entry in entries:
            self.add(entry, b"", None)

    def _resolve_alternates(self) -> None:
        # Of two different lines at one seq, the one the next entry commits to is the entry.
        for seq, variants in self.alternates.items():
            if not self.has(seq) or not self.has(seq + 1) or (seq + 1) not in self.breaks:
                continue
            want = self.prev_at(seq + 1)
            for k, variant in enumerate(variants):
                if variant[1] != want:
                    continue
                i = self.index(seq)
                assert i is not None
                displaced: _Entry = (
                    seq,
                    self.digest_at(seq),
                    self.prev_at(seq),
                    self.files[i],
                    self.lines[i],
                    self.meta.get(seq),
                )
                self.digests[i * _DIGEST : (i + 1) * _DIGEST] = variant[1]
                self.prevs[i * _DIGEST : (i + 1) * _DIGEST] = variant[2] or _NULL_PREV
                self.files[i] = variant[3]
                self.lines[i] = variant[4]
                if variant[5] is not None:
                    self.meta[seq] = variant[5]
                else:
                    self.meta.pop(seq, None)
                variants[k] = displaced
                self.breaks.discard(seq + 1)
                self.breaks.discard(seq)
                if seq == 0:
                    if variant[2] is not None:
                        self.breaks.add(0)
                elif (
                    self.has(seq - 1)
                    and seq not in self.unlinked
                    and variant[2] != self.digest_at(seq - 1)
                ):
                    self.breaks.add(seq)
                break


def _earliest(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    return a if b is None or a < b else b


def _canonical_digest(line: bytes) -> bytes | None:
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return hashlib.sha256(orjson.dumps(parsed)).digest()


def _chain_of(parsed: dict[str, Any]) -> tuple[str, int, bytes | None] | bool | None:
    """The chain field of a parsed entry: (id, seq, prev); None if absent; False if invalid."""
    chain = parsed.get(_format.CHAIN_FIELD)
    if chain is None:
        return None
    if type(chain) is not dict:
        return False
    chain_id, seq, prev = chain.get("id"), chain.get("seq"), chain.get("prev")
    if type(chain_id) is not str or not chain_id or len(chain_id) > _MAX_ID_CHARS:
        return False
    if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        return False
    if prev is None:
        return chain_id, seq, None
    if type(prev) is not str or not _HEX64.fullmatch(prev):
        return False
    return chain_id, seq, bytes.fromhex(prev)


class _Reader:
    """Reads every line of the inputs into chains."""

    def __init__(self, files: Sequence[TrailFile], options: VerifyOptions) -> None:
        self.files = files
        self.names = [str(trail_file.path) for trail_file in files]
        self.options = options
        self.chains: dict[str, _Chain] = {}
        self.lines = 0
        self.problems: list[Problem] = []
        self.unchained = 0
        self.unchained_listed: list[Problem] = []
        self.reorders: dict[tuple[int, str], list[int]] = {}

    def problem(self, kind: str, message: str, file_index: int, line: int) -> None:
        self.problems.append(Problem(kind, message, self.names[file_index], line))

    def read(self) -> None:
        for index, trail_file in enumerate(self.files):
            self._read_file(index, trail_file)
        for chain in self.chains.values():
            chain.finish()

    def _read_file(self, file_index: int, trail_file: TrailFile) -> None:
        line_no = 0
        seal = self.options.seal is not None
        by_raw_id: dict[bytes, _Chain] = {}
        sha256 = hashlib.sha256
        unhex = binascii.unhexlify
        tail_match = _TAIL.fullmatch
        pending_torn: tuple[int, bytes] | None = None
        try:
            for buf, start, end, _offset in file_line_blocks(trail_file):
                data = bytes(buf[start:end])
                pieces = data.split(b"\n")
                if data.endswith(b"\n"):
                    pieces.pop()
                    pending_torn = None
                else:
                    pending_torn = (line_no + len(pieces), pieces[-1])
                for line in pieces:
                    line_no += 1
                    if not line:
                        continue
                    if line[-1] == 0x0D:
                        line = line[:-1]
                    parsed: dict[str, Any] | None = None
                    pos = line.rfind(_TAIL_NEEDLE)
                    match = tail_match(line, pos) if pos > 0 else None
                    if match is not None:
                        digest = sha256(line).digest()
                        raw_id = match[1]
                        seq = int(match[2])
                        prev_hex = match[3]
                        prev = unhex(prev_hex) if prev_hex is not None else None
                        chain = by_raw_id.get(raw_id)
                        if chain is None:
                            chain = self._chain(raw_id.decode(), file_index)
                            by_raw_id[raw_id] = chain
                        if line.find(_ACTION_NEEDLE, 0, _ACTION_WINDOW) >= 0:
                            parsed = self._parse(line, file_index, line_no)
                            if parsed is None:
                                continue
                            if parsed.get("action") not in _META_ACTIONS:
                                parsed = None
                        elif (
                            seq == chain.next
                            and prev == chain.last
                            and not seal
                            and seq > chain.file_top
                        ):
                            # The common case, inlined: the next entry, linked, in order.
                            chain.digests += digest
                            chain.prevs += prev  # type: ignore[arg-type]
                            chain.files.append(file_index)
                            chain.lines.append(line_no)
                            chain.last = digest
                            chain.last_line = line
                            chain.next = seq + 1
                            chain.file_top = seq
                            chain.file_back = False
                            if chain.pending:
                                chain.drain()
                            continue
                    else:
                        slow = self._slow(line, file_index, line_no, pending_torn)
                        if slow is None:
                            continue
                        chain_id, seq, prev, digest, parsed = slow
                        chain = self._chain(chain_id, file_index)
                    if chain.file_at != file_index:
                        chain.file_at, chain.file_top, chain.file_back = file_index, -1, False
                    ts = _timestamp(line) if seal else None
                    before = chain.duplicates
                    chain.add((seq, digest, prev, file_index, line_no, parsed), line, ts)
                    if seq > chain.file_top:
                        chain.file_top = seq
                        chain.file_back = False
                    elif chain.duplicates == before:
                        if not chain.file_back:
                            self.reorders.setdefault((file_index, chain.id), []).append(line_no)
                        chain.file_back = True
        except (OSError, zlib.error, EOFError) as exc:
            self.problems.append(
                Problem(
                    "unreadable",
                    f"reading stopped after line {line_no}: {exc}",
                    self.names[file_index],
                    line_no + 1,
                )
            )
        self.lines += line_no

    def _chain(self, chain_id: str, file_index: int) -> _Chain:
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = _Chain(chain_id)
        if chain.file_at != file_index:
            chain.file_at, chain.file_top, chain.file_back = file_index, -1, False
        return chain

    def _parse(self, line: bytes, file_index: int, line_no: int) -> dict[str, Any] | None:
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is not dict:
            self.problem("malformed", "not a JSON object", file_index, line_no)
            return None
        return parsed

    def _slow(
        self,
        line: bytes,
        file_index: int,
        line_no: int,
        torn: tuple[int, bytes] | None,
    ) -> tuple[str, int, bytes | None, bytes, dict[str, Any] | None] | None:
        """A line whose end is not the writer's compact chain field: parse it."""
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is not dict:
            if torn is not None and torn[0] == line_no:
                message = "the file's last line is cut short (no newline, not JSON)"
            else:
                message = "not a JSON object"
            self.problem("malformed", message, file_index, line_no)
            return None
        chain = _chain_of(parsed)
        if chain is None:
            self.unchained += 1
            if len(self.unchained_listed) < MAX_LISTED:
                self.unchained_listed.append(
                    Problem(
                        "unchained",
                        "an entry with no chain field: nothing vouches for it",
                        self.names[file_index],
                        line_no,
                    )
                )
            return None
        if chain is False:
            self.problem("malformed", "the chain field is not {id, seq, prev}", file_index, line_no)
            return None
        assert chain is not True
        chain_id, seq, prev = chain
        # Whitespace or escapes changed by a copy: the compact re-encoding is what was hashed.
        digest = hashlib.sha256(orjson.dumps(parsed)).digest()
        action = parsed.get("action")
        keep = parsed if action in _META_ACTIONS else None
        return chain_id, seq, prev, digest, keep


def _timestamp(line: bytes) -> str | None:
    start = line.find(_TS_NEEDLE, 0, _ACTION_WINDOW)
    if start < 0:
        return None
    start += len(_TS_NEEDLE)
    end = line.find(b'"', start, start + 40)
    return line[start:end].decode("ascii", "replace") if end > 0 else None


def _unix(ts: Any) -> float | None:
    if type(ts) is not str or len(ts) > 40:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _Judge:
    """Turns one read chain into a report: links, checkpoints, signatures, seals."""

    def __init__(self, chain: _Chain, reader: _Reader, options: VerifyOptions) -> None:
        self.chain = chain
        self.names = reader.names
        self.options = options
        self.problems: list[Problem] = []
        self.notices: list[Problem] = []
        self.counts: dict[str, int] = {}
        self.omitted = 0
        self.bad_seqs: list[int] = []
        self.modified: set[int] = set()
        self.started: dict[str, Any] = {}

    def at(self, kind: str, message: str, seq: int | None, *, notice: bool = False) -> None:
        chain = self.chain
        file = line = None
        if seq is not None and chain.has(seq):
            file_index, line = chain.where(seq)
            file = self.names[file_index]
        self.entry(kind, message, file, line, seq, notice=notice)

    def entry(
        self,
        kind: str,
        message: str,
        file: str | None,
        line: int | None,
        seq: int | None,
        *,
        notice: bool = False,
    ) -> None:
        if not notice and seq is not None:
            self.bad_seqs.append(seq)
        target = self.notices if notice else self.problems
        count = self.counts.get(kind, 0)
        self.counts[kind] = count + 1
        if count >= MAX_LISTED:
            if not notice:
                self.omitted += 1
            return
        target.append(Problem(kind, message, file, line, self.chain.id, seq))

    def judge(self, reorders: dict[str, list[tuple[int, int]]]) -> ChainReport:
        chain = self.chain
        started = chain.meta.get(0) if chain.base == 0 else None
        if started is not None and started.get("action") != _format.ACTION_STARTED:
            started = None
        started_details = started.get("details") if started else None
        if not isinstance(started_details, dict):
            started_details = {}
        self.started = started_details
        self._links()
        self._duplicates()
        checkpoints = self._checkpoints(started_details)
        for file_index, line in reorders.get(chain.id, []):
            self.entry(
                "reordered",
                "this entry comes after a later one of its chain in this file "
                "(the spool and overflow do this; the order is not signed)",
                self.names[file_index],
                line,
                None,
                notice=not self.options.strict_order,
            )
        return self._report(started is not None, started_details, checkpoints)

    def _links(self) -> None:
        chain = self.chain
        for first, last in chain.gaps:
            count = last - first + 1
            what = f"seq {first}" if count == 1 else f"seq {first}-{last} ({count} entries)"
            self.at("deleted", f"{what} missing before this entry", last + 1)
            self.bad_seqs.append(first)
        breaks = sorted(chain.breaks)
        explained: set[int] = set()
        for b in breaks:
            if b in explained:
                continue
            if b == 0:
                self.at("modified", "seq 0 names a previous entry", 0)
                self.modified.add(0)
            elif b + 1 in chain.breaks:
                # Its own hash and its link both fail: this line was changed.
                self.at("modified", "this entry's bytes and link do not match its neighbours", b)
                self.modified.add(b)
                explained.add(b + 1)
            elif chain.has(b - 1):
                self.modified.add(b - 1)
                self.at(
                    "modified",
                    f"this entry's bytes are not what seq {b} commits to (hash differs)",
                    b - 1,
                )

    def _duplicates(self) -> None:
        chain = self.chain
        for seq, variants in sorted(chain.alternates.items()):
            linked = chain.has(seq + 1) and (seq + 1) not in chain.breaks
            for variant in variants:
                file, line = self.names[variant[3]], variant[4]
                if linked:
                    self.entry(
                        "inserted",
                        f"a different entry claims seq {seq} of this chain; the chain links "
                        "to the other one",
                        file,
                        line,
                        seq,
                    )
                else:
                    self.entry(
                        "conflicting_duplicate",
                        f"two different entries claim seq {seq} of this chain",
                        file,
                        line,
                        seq,
                    )

    def _checkpoints(self, started: dict[str, Any]) -> list[tuple[int, bool, dict[str, Any]]]:
        """Every checkpoint in seq order: (chain seq, trusted as an anchor, details)."""
        chain = self.chain
        options = self.options
        out: list[tuple[int, bool, dict[str, Any]]] = []
        previous: int | None = None
        last_epoch = -1
        started_key = started.get("key_id")
        for seq in sorted(chain.meta):
            parsed = chain.meta[seq]
            if parsed.get("action") != _format.ACTION_CHECKPOINT:
                if seq != 0:
                    self.at("forged", "a chain start in the middle of a chain", seq)
                continue
            before = len(self.bad_seqs)
            details = parsed.get("details")
            fields = _checkpoint_fields(details, chain.id)
            if fields is None or not isinstance(details, dict):
                self.at("forged", "a checkpoint whose details are not the v1 format", seq)
                out.append((seq, False, {}))
                previous = seq
                continue
            covered, head, prev_checkpoint, final = fields
            if covered != seq - 1:
                self.at("forged", f"a checkpoint at seq {seq} claiming to cover seq {covered}", seq)
            elif chain.prev_at(seq) != bytes.fromhex(head):
                self.at("forged", "the checkpoint's own link is not the head it signs", seq)
            if previous is not None:
                expected = chain.digest_at(previous).hex()
                if (
                    prev_checkpoint != expected
                    and previous not in self.modified
                    and not self._gap_between(previous, seq)
                ):
                    self.at(
                        "forged",
                        f"prev_checkpoint does not name the checkpoint at seq {previous}",
                        seq,
                    )
            elif prev_checkpoint is not None and chain.base == 0 and not chain.gaps:
                self.at("forged", "the first checkpoint names an earlier one", seq)
            message = _format.checkpoint_message(chain.id, covered, head, prev_checkpoint, final)
            signed = self._signature(seq, details, message, started_key)
            sealed = False
            if options.seal is not None:
                sealed, last_epoch = self._seal(seq, parsed, details, message, last_epoch)
            anchored = len(self.bad_seqs) == before and (
                (signed or not options.public_keys)
                and (sealed or options.seal is None)
                and (signed or sealed)
            )
            out.append((seq, anchored, details))
            previous = seq
        return out

    def _gap_between(self, low: int, high: int) -> bool:
        return any(low < last + 1 and first < high for first, last in self.chain.gaps)

    def _signature(
        self, seq: int, details: dict[str, Any], message: bytes, started_key: Any
    ) -> bool:
        keys = self.options.public_keys
        if not keys:
            return False
        signature = details.get("signature")
        key = details.get("key_id")
        if signature is None:
            self.at("missing_signature", "a checkpoint without a signature", seq)
            return False
        if type(key) is not str or key not in keys:
            self.at("unknown_key", f"signed by key {str(key)[:32]!r}, not a --public-key", seq)
            return False
        if started_key is not None and key != started_key:
            self.at(
                "unknown_key", f"signed by key {key}; the chain started with {started_key}", seq
            )
            return False
        try:
            raw = base64.b64decode(signature, validate=True) if type(signature) is str else b""
        except (binascii.Error, ValueError):
            raw = b""
        from cryptography.exceptions import InvalidSignature

        try:
            keys[key].verify(raw, message)
        except (InvalidSignature, ValueError):
            self.at("bad_signature", f"the signature does not verify with key {key}", seq)
            return False
        return True

    def _seal(
        self,
        seq: int,
        parsed: dict[str, Any],
        details: dict[str, Any],
        message: bytes,
        last_epoch: int,
    ) -> tuple[bool, int]:
        seed = self.options.seal
        assert seed is not None
        seal = details.get("seal")
        if not isinstance(seal, dict):
            self.at("bad_seal", "a checkpoint without a seal tag", seq)
            return False, last_epoch
        epoch, tag = seal.get("epoch"), seal.get("tag")
        now = self.options.now if self.options.now is not None else time.time()
        newest = _format.seal_epoch_of(now, seed.t0, seed.epoch_s) + _MAX_EPOCH_AHEAD
        if type(epoch) is not int or not 0 <= epoch <= newest or type(tag) is not str:
            self.at("bad_seal", f"seal epoch {str(epoch)[:24]!r} is not a valid epoch", seq)
            return False, last_epoch
        # The tag must be made with THIS epoch's key (CVE-2023-31439).
        want = _format.seal_tag(_seal_key(seed, epoch), epoch, message)
        if not hmac.compare_digest(want, tag):
            self.at("bad_seal", f"the seal tag is not epoch {epoch}'s", seq)
            return False, last_epoch
        ok = True
        start, end = seed.epoch_window(epoch)
        tol = _format.EPOCH_TOLERANCE_S
        stamp = _unix(parsed.get("timestamp"))
        if stamp is None or not start - tol <= stamp < end + tol:
            self.at("seal_epoch_mismatch", f"sealed in epoch {epoch}, stamped outside it", seq)
            ok = False
        if epoch < last_epoch:
            self.at("seal_epoch_mismatch", f"epoch {epoch} after epoch {last_epoch}", seq)
            ok = False
        earliest = _unix(self.chain.min_ts.get(seq))
        every = _number(self.started, "checkpoint_every_s", _format.DEFAULT_CHECKPOINT_INTERVAL_S)
        if earliest is not None and earliest < start - every - tol:
            self.at(
                "seal_epoch_mismatch",
                f"entries stamped before epoch {epoch} began are sealed by it "
                "(re-sealed with a later key?)",
                seq,
            )
            ok = False
        return ok, max(last_epoch, epoch)

    def _report(
        self,
        has_start: bool,
        started: dict[str, Any],
        checkpoints: list[tuple[int, bool, dict[str, Any]]],
    ) -> ChainReport:
        chain = self.chain
        first_bad = min(self.bad_seqs, default=None)
        verified_cp: int | None = None
        verified_through: int | None = None
        closed = False
        final_seq: int | None = None
        for seq, anchored, details in checkpoints:
            if first_bad is not None and seq >= first_bad:
                break
            if not anchored:
                continue
            verified_cp, verified_through = seq, seq - 1
            if details.get("final") is True:
                final_seq = seq
        checkpoint_seqs = {seq for seq, _, _ in checkpoints}
        if final_seq is not None:
            after = chain.count_from(final_seq + 1)
            listed = 0
            for seq in chain.seqs():
                if seq > final_seq and listed < MAX_LISTED:
                    self.at("inserted", "an entry after the chain's final checkpoint", seq)
                    listed += 1
            closed = not after
        if has_start:
            # A checkpoint is asked for every N entries, but made by a background thread
            # that a fast caller can outrun: a long run is worth a note, not evidence.
            every = _int(started, "checkpoint_every_entries", _format.DEFAULT_CHECKPOINT_EVERY)
            marks = sorted(checkpoint_seqs | {chain.base - 1, chain.next})
            for low, high in itertools.pairwise(marks):
                if high - low - 1 > 2 * every + 1 and not self._gap_between(low, high):
                    self.at(
                        "sparse_checkpoints",
                        f"{high - low - 1} entries without a checkpoint (one is asked for "
                        f"every {every})",
                        low + 1 if chain.has(low + 1) else None,
                        notice=True,
                    )
        tail_from = chain.base if verified_cp is None else verified_cp + 1
        tail = chain.count_from(tail_from) - sum(1 for seq in checkpoint_seqs if seq >= tail_from)
        status = "verified"
        if self.problems or self.omitted:
            status = "problems"
        elif not closed:
            status = "incomplete"
            where = (
                "before any checkpoint"
                if verified_cp is None
                else f"after the checkpoint at seq {verified_cp}"
            )
            if not self.options.public_keys and not self.options.seal:
                message = "no --public-key or --seal-key: links checked, nothing authenticated"
            elif final_seq is None:
                message = (
                    f"ended without close {where} (a crash, or its end was cut off); "
                    f"{tail} entries unsealed"
                )
            else:
                message = f"{tail} entries unsealed"
            self.entry("truncated", message, None, None, None, notice=True)
        if chain.base > 0:
            status = "problems" if status == "problems" else "incomplete"
            self.at(
                "starts_late",
                f"the chain's first {chain.base} entries are not in the inputs",
                chain.base,
                notice=True,
            )
        key_id = started.get("key_id")
        seal = started.get("seal")
        pid = started.get("pid")
        return ChainReport(
            chain_id=chain.id,
            first_seq=chain.base,
            last_seq=chain.next - 1,
            entries=len(chain.files),
            duplicates=chain.duplicates,
            checkpoints=len(checkpoints),
            verified_checkpoint_seq=verified_cp,
            verified_through_seq=verified_through,
            unsealed_tail=tail,
            closed=closed,
            started=has_start,
            key_id=key_id if type(key_id) is str else None,
            seal=seal if type(seal) is str else None,
            pid=pid if type(pid) is int else None,
            status=status,
            problems=self.problems,
            notices=self.notices,
            omitted=self.omitted,
        )


def _checkpoint_fields(details: Any, chain_id: str) -> tuple[int, str, str | None, bool] | None:
    if not isinstance(details, dict) or details.get("chain_id") != chain_id:
        return None
    covered, head = details.get("seq"), details.get("head")
    prev, final = details.get("prev_checkpoint"), details.get("final")
    if type(covered) is not int or not 0 <= covered <= _MAX_SEQ:
        return None
    if type(head) is not str or not _HEX64.fullmatch(head) or type(final) is not bool:
        return None
    if prev is not None and (type(prev) is not str or not _HEX64.fullmatch(prev)):
        return None
    return covered, head, prev, final


def _int(details: dict[str, Any], name: str, default: int) -> int:
    value = details.get(name)
    return value if type(value) is int and 0 < value <= 1 << 30 else default


def _number(details: dict[str, Any], name: str, default: float) -> float:
    value = details.get(name)
    if isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 86_400:
        return float(value)
    return default


_SEAL_KEYS: dict[tuple[bytes, int], bytes] = {}


def _seal_key(seed: SealSeed, epoch: int) -> bytes:
    """Epoch ``epoch``'s key, evolving from the nearest lower epoch already derived."""
    cached = _SEAL_KEYS.get((seed.seed, epoch))
    if cached is not None:
        return cached
    lower = [e for (s, e) in _SEAL_KEYS if s == seed.seed and e < epoch]
    start = max(lower, default=None)
    key = _format.seal_key0(seed.seed) if start is None else _SEAL_KEYS[(seed.seed, start)]
    for _ in range((0 if start is None else start), epoch):
        key = _format.seal_evolve(key)
    if len(_SEAL_KEYS) > 4096:
        _SEAL_KEYS.clear()
    _SEAL_KEYS[(seed.seed, epoch)] = key
    return key


_BACKUP: Final = re.compile(r"(.+)\.([1-9][0-9]*)(\.gz)?")


def reading_order(files: Sequence[TrailFile]) -> list[TrailFile]:
    """Rotations oldest first, then the live file (a directory lists them by name).

    Any order verifies (lines are put in seq order); this one lets a single
    pass link nearly every line as it is read, holding nothing back.
    """

    def key(trail_file: TrailFile) -> tuple[str, str, int]:
        path = trail_file.path
        match = _BACKUP.fullmatch(path.name)
        if match:
            return str(path.parent), match[1], -int(match[2])
        return str(path.parent), path.name, 0

    return sorted(files, key=key)


_Part = tuple[
    dict[str, _Chain], list[Problem], int, list[Problem], dict[tuple[int, str], list[int]], int
]


def _read_part(files: Sequence[TrailFile], options: VerifyOptions, index: int) -> _Part:
    """One file, in a worker: what it found, without the options (keys do not pickle)."""
    reader = _Reader(files, options)
    reader._read_file(index, files[index])
    return (
        reader.chains,
        reader.problems,
        reader.unchained,
        reader.unchained_listed,
        reader.reorders,
        reader.lines,
    )


def _read(files: Sequence[TrailFile], options: VerifyOptions, workers: int | None) -> _Reader:
    """Read every file into chains: here, or one file per forked process when that pays.

    Files are the unit (line numbers need each file read from its start); the
    parent stitches each chain's pieces in reading order, checking the one
    link at every boundary.
    """
    reader = _Reader(files, options)
    if workers is None:
        workers = available_cpus()
    total = sum(f.plain_size for f in files)
    if (
        workers < 2
        or len(files) < 2
        or total < PARALLEL_MIN_BYTES
        or "fork" not in multiprocessing.get_all_start_methods()
        or threading.active_count() > 1  # forking a threaded process can copy a held lock
    ):
        reader.read()
        return reader
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(workers, len(files)), mp_context=context) as pool:
        # Reading needs only to know whether timestamps matter (the seal), not the keys.
        reading = VerifyOptions(seal=options.seal)
        parts = pool.map(functools.partial(_read_part, files, reading), range(len(files)))
        for chains, problems, unchained, listed, reorders, lines in parts:
            reader.lines += lines
            reader.problems.extend(problems)
            reader.unchained += unchained
            room = MAX_LISTED - len(reader.unchained_listed)
            reader.unchained_listed.extend(listed[: max(0, room)])
            for key, numbers in reorders.items():
                reader.reorders.setdefault(key, []).extend(numbers)
            for chain_id, chain in chains.items():
                mine = reader.chains.get(chain_id)
                if mine is None:
                    reader.chains[chain_id] = chain
                else:
                    mine.absorb(chain)
    for chain in reader.chains.values():
        chain.finish()
    return reader


def verify(
    files: Sequence[TrailFile],
    options: VerifyOptions | None = None,
    *,
    workers: int | None = None,
) -> VerifyReport:
    """Verify every chain found in ``files`` (from ``discover_files``).

    ``workers``: processes reading files (None: one per CPU; 1: this process).
    """
    options = options or VerifyOptions()
    began = time.perf_counter()
    ordered = reading_order(files)
    reader = _read(ordered, options, workers)
    report = VerifyReport(
        files=reader.names,
        lines=reader.lines,
        signatures_checked=bool(options.public_keys),
        seal_checked=options.seal is not None,
    )
    reorders: dict[str, list[tuple[int, int]]] = {}
    for (file_index, chain_id), lines in reader.reorders.items():
        reorders.setdefault(chain_id, []).extend((file_index, line) for line in lines)
    for chain_id in sorted(reader.chains):
        judge = _Judge(reader.chains[chain_id], reader, options)
        report.chains.append(judge.judge(reorders))
    report.problems.extend(reader.problems)
    if reader.unchained:
        if not options.allow_unchained and reader.chains:
            report.problems.extend(reader.unchained_listed)
            report.omitted += reader.unchained - len(reader.unchained_listed)
        else:
            report.notices.append(
                Problem("unchained", f"{reader.unchained} entries carry no chain field")
            )
    if not reader.chains:
        report.problems.append(
            Problem("unchained", "no chained entry in the inputs (is AUDIT_LOG_INTEGRITY on?)")
        )
    report.seconds = time.perf_counter() - began
    return report


def iter_problems(report: VerifyReport) -> Iterator[Problem]:
    """Every listed problem, chain by chain, then those outside any chain."""
    for chain in report.chains:
        yield from chain.problems
    yield from report.problems


def load_public_key(path: Path) -> tuple[str, Any]:
    """A PEM public key (``keygen``'s ``.pub``, or ``openssl pkey -pubout``): (key id, key).

    Raises ``ValueError`` with a plain sentence (never the file's content).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path} holds a private key; give its public key (the .pub file)")
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # noqa: BLE001 - any parse failure, without its text
        raise ValueError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} holds a {type(key).__name__}; an Ed25519 key is needed")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _format.key_id(raw), key


def load_seal_seed(path: Path) -> SealSeed:
    """The seal's ``.verify`` file. Raises ``ValueError`` with a plain sentence."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > 4096:
        raise ValueError(f"{path} is not a seal verification file (too large)")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("format") != _format.FORMAT_VERSION:
        raise ValueError(f"{path} is not a seal verification file (format 1 JSON)")
    if "key" in parsed and "seed" not in parsed:
        raise ValueError(f"{path} is the host's seal state; give the .verify file (the seed)")
    seed, t0, epoch_s = parsed.get("seed"), parsed.get("t0"), parsed.get("epoch_s")
    if type(seed) is not str or not _HEX64.fullmatch(seed):
        raise ValueError(f"{path}: 'seed' must be 64 lowercase hex characters")
    if type(t0) is not int or not 0 <= t0 < 1 << 40:
        raise ValueError(f"{path}: 't0' must be unix seconds")
    if type(epoch_s) is not int or not 1 <= epoch_s <= 86_400 * 366:
        raise ValueError(f"{path}: 'epoch_s' must be seconds between 1 and a year")
    return SealSeed(bytes.fromhex(seed), t0, epoch_s)
