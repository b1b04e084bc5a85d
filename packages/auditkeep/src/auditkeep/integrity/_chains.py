"""One chain as it is read: accepted entries in ``seq`` order, the rest waiting (no I/O).

Kept compact for a million entries: digests and links in ``bytearray``s, locations in
``array``s, everything else only for the few entries that need it.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import re
from collections.abc import Iterator
from typing import Any, Final

import orjson

from auditkeep.integrity import _format

DIGEST: Final = 32
NULL_PREV: Final = bytes(DIGEST)
HEX64: Final = re.compile(r"[0-9a-f]{64}")
MAX_SEQ: Final = 2**63 - 1

Entry = tuple[int, bytes, bytes | None, int, int, dict[str, Any] | None]


class Chain:
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
        self.pending: dict[int, Entry] = {}
        self.early: list[Entry] = []
        self.alternates: dict[int, list[Entry]] = {}
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
        return bytes(self.digests[i * DIGEST : (i + 1) * DIGEST])

    def prev_at(self, seq: int) -> bytes:
        i = self.index(seq)
        assert i is not None
        return bytes(self.prevs[i * DIGEST : (i + 1) * DIGEST])

    def where(self, seq: int) -> tuple[int, int]:
        i = self.index(seq)
        assert i is not None
        return self.files[i], self.lines[i]

    def has(self, seq: int) -> bool:
        return self.base <= seq < self.next and self.index(seq) is not None

    def add(self, entry: Entry, line: bytes, ts: str | None) -> None:
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
            elif self.digests[i * DIGEST : (i + 1) * DIGEST] == entry[1]:
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

    def _alternate(self, entry: Entry) -> None:
        variants = self.alternates.setdefault(entry[0], [])
        if all(variant[1] != entry[1] for variant in variants):
            variants.append(entry)
        else:
            self.duplicates += 1

    def _accept(self, entry: Entry, line: bytes | None, ts: str | None, *, linked: bool) -> None:
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
                fixed = canonical_digest(self.last_line) if self.last_line else None
                if fixed is not None and fixed == prev:
                    self.digests[-DIGEST:] = fixed
                    self.relinked += 1
                else:
                    self.breaks.add(seq)
        else:
            self.unlinked.add(seq)
        self.digests += digest
        self.prevs += prev if prev is not None else NULL_PREV
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

    def entries(self) -> Iterator[tuple[Entry, str | None]]:
        """Everything this chain holds, accepted or not, with each entry's timestamp if kept."""
        for index, seq in enumerate(self.seqs()):
            i = index * DIGEST
            prev = bytes(self.prevs[i : i + DIGEST])
            yield (
                (
                    seq,
                    bytes(self.digests[i : i + DIGEST]),
                    None if seq == 0 and prev == NULL_PREV else prev,
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

    def absorb(self, other: Chain) -> None:
        """Take in the same chain as read from the next file (by another process)."""
        if self.base < 0 or other.base != self.next or other.early or len(other.run_seq) != 1:
            # Not a continuation: replay its entries one by one (rare; in seq order).
            for entry, ts in sorted(other.entries(), key=lambda item: item[0][0]):
                self.add(entry, b"", ts)
            self.duplicates += other.duplicates
            return
        first = other.base
        if first != 0 and bytes(other.prevs[:DIGEST]) != self.last:
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
        entries: list[Entry] = list(self.early)
        for index, seq in enumerate(self.seqs()):
            i = index * DIGEST
            prev = bytes(self.prevs[i : i + DIGEST])
            entries.append(
                (
                    seq,
                    bytes(self.digests[i : i + DIGEST]),
                    None if seq == 0 and prev == NULL_PREV else prev,
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
                displaced: Entry = (
                    seq,
                    self.digest_at(seq),
                    self.prev_at(seq),
                    self.files[i],
                    self.lines[i],
                    self.meta.get(seq),
                )
                self.digests[i * DIGEST : (i + 1) * DIGEST] = variant[1]
                self.prevs[i * DIGEST : (i + 1) * DIGEST] = variant[2] or NULL_PREV
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


def canonical_digest(line: bytes) -> bytes | None:
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return hashlib.sha256(orjson.dumps(parsed)).digest()
