"""The durable local spool: a write-ahead log of encoded audit entries.

The spool takes what cannot go to a sink right now (overflow of a full buffer,
batches a sink refused, what is left at shutdown, and, at the ``spool`` and
``fsync`` durability levels, every entry before ``emit`` returns) and gives it
back in order until each consumer (destination) has acknowledged it.

A ``Spool`` is one directory of segment files (the record format is in
``_records.py``, the layout of slots and destinations in ``_files.py`` and
``slots.py``): each process claims a slot, and each destination has its own
``Spool`` in it, so a dead destination never holds back, or duplicates into,
another.

Invariants:

* Record ids increase by one per record, across segments, for the life of the
  directory; the next id after a restart is one past the highest valid id found.
* A record is pending for a consumer while ``id > ack[consumer]``. Readers
  always start at the acknowledged position, so a batch that was read but not
  acknowledged (sink failure, crash) is read again: delivery is at-least-once.
* A segment is deleted only when every consumer has acknowledged its last
  record, and never while it is the segment being written.
* Each process start opens a fresh segment, so a torn tail left by a crash is
  never appended to. Readers detect torn or corrupt records (bad magic, length
  or checksum), count them, and resynchronise on the next valid header.
* Appends are one ``write(2)`` loop under a lock; readers only read up to the
  committed size, so they never see a half-written record of this process.
  Without fsync a record survives the death of the process (it is in the page
  cache) but not a power loss; ``sync()`` and the ``fsync`` durability level
  close that gap.
* An append is all or nothing. A short or failed write (ENOSPC, EIO) is cut
  back with ``ftruncate`` to the committed size, so the segment is exactly as
  it was and ``SpoolWriteError`` says nothing was kept. Only if that truncate
  fails too are the complete records that reached the file committed (size
  and next id advanced for each, ``SpoolWriteError.committed`` says how many)
  and the torn rest left behind a fresh segment: nothing is ever appended
  behind bytes that are not committed, so an id is never given to two records.
* The ack path frees space before it needs any: delivered segments are deleted
  first, then the ack file is rewritten. If that write fails (a full disk) the
  ack is kept in memory and written again on the next ack, ``sync()`` or
  ``close()``; an ack left stale on disk replays delivered records after a
  restart (duplicates, never loss).
* ``pending()`` counts ids, so ids that can no longer be read (a corrupt record
  at the very end) are skipped once a reader reaches the end of the spool:
  ``pending()`` then drops to zero instead of promising records that will
  never come.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditkeep.delivery._files import ACK_SUFFIX, SEGMENT_SUFFIX, open_append, read_ack, write_ack
from auditkeep.delivery._records import (
    HEADER,
    HEADER_BYTES,
    MAGIC,
    MAX_RECORD_BYTES,
    SpoolRecord,
    decode_at,
    encode,
    resync,
    scan_segment,
    segment_name,
)
from auditkeep.delivery.options import DEFAULTS
from auditkeep.exceptions import SpoolError, SpoolFullError, SpoolSyncError, SpoolWriteError

__all__ = [
    "HEADER_BYTES",
    "MAX_RECORD_BYTES",
    "Spool",
    "SpoolFullError",
    "SpoolRecord",
    "SpoolStats",
    "SpoolSyncError",
    "SpoolWriteError",
    "scan_segment",
]


def _reason(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "OSError")


@dataclass(slots=True)
class _Position:
    segment: int  # first id of the segment (its file name)
    offset: int
    last_id: int  # id of the last record before this position (the ack)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot for metrics and ``auditkeep spool status``."""

    bytes: int
    segments: int
    pending_records: dict[str, int]
    oldest_pending_ms: dict[str, int | None]
    corrupt_records: int


class Spool:
    """A write-ahead log in one directory, shared by several named consumers.

    Thread-safe. ``append`` may be called from any thread; ``read``/``read_after``/
    ``ack`` for one consumer must come from one thread at a time (the delivery worker).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        consumers: Sequence[str],
        *,
        max_segment_bytes: int = DEFAULTS.spool_segment_bytes,
        max_bytes: int = DEFAULTS.spool_max_bytes,
    ) -> None:
        if not consumers:
            raise ValueError("a spool needs at least one consumer")
        if max_segment_bytes <= HEADER_BYTES:
            raise ValueError("max_segment_bytes is too small")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.consumers = tuple(consumers)
        self.max_segment_bytes = max_segment_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._ack_lock = threading.Lock()
        self.corrupt_records = 0
        self._corrupt_seen: set[tuple[int, int]] = set()
        self._retired: list[int] = []  # rolled-over segment descriptors awaiting fsync
        self._read_end: dict[str, tuple[int, int, int | None]] = {}
        self._cursors: dict[str, _Position] = {}  # read_after's place, per consumer
        self._unwritten_acks: dict[str, int] = {}  # acks the disk refused, to write again
        self._torn = False  # the active segment's file may end in uncommitted bytes
        self._closed = False

        self._sizes: dict[int, int] = {}
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            with contextlib.suppress(ValueError):
                self._sizes[int(path.stem)] = path.stat().st_size
        self._next_id = self._recover_next_id()
        self._positions = {c: self._position_after(self._read_ack(c)) for c in self.consumers}
        self._active = self._next_id
        self._fd = self._open_segment(self._active)
        self._synced_id = self._next_id - 1
        self._delete_delivered()

    # -- recovery -----------------------------------------------------------

    def _segment_path(self, first_id: int) -> Path:
        return self.directory / segment_name(first_id)

    def _recover_next_id(self) -> int:
        highest = 0
        for first in sorted(self._sizes, reverse=True):
            data = self._segment_path(first).read_bytes()
            ids = [r.id for _, r in scan_segment(data) if r is not None]
            if ids:
                highest = max(ids)
                break
            highest = max(highest, first - 1)
        acks = [self._read_ack(c) for c in self.consumers]
        return max([highest, *acks]) + 1

    def _ack_path(self, consumer: str) -> Path:
        return self.directory / f"{consumer}{ACK_SUFFIX}"

    def _read_ack(self, consumer: str) -> int:
        return read_ack(self._ack_path(consumer))

    def _position_after(self, acked_id: int) -> _Position:
        candidates = [s for s in sorted(self._sizes) if s <= acked_id + 1]
        if not candidates:
            first = min(self._sizes, default=acked_id + 1)
            return _Position(first, 0, acked_id)
        segment = candidates[-1]
        data = self._segment_path(segment).read_bytes()
        offset = 0
        for off, record in scan_segment(data):
            if record is not None and record.id > acked_id:
                offset = off
                break
            offset = len(data)
        return _Position(segment, offset, acked_id)

    def _open_segment(self, first_id: int) -> int:
        fd = open_append(self._segment_path(first_id))
        self._sizes[first_id] = os.fstat(fd).st_size
        return fd

    # -- writing ------------------------------------------------------------

    def append(self, payloads: Sequence[bytes], *, sync: bool = False) -> int:
        """Append payloads as records, all or nothing; return the id of the last one.

        Args:
            payloads: encoded entries.
            sync: fsync before returning (group commit: one fsync may cover
                concurrent appends of other threads).

        Raises:
            SpoolFullError: the spool would exceed ``max_bytes``; nothing written.
            SpoolWriteError: the disk refused the write (for example ENOSPC).
                Nothing was kept unless ``committed`` says otherwise.
            SpoolSyncError: appended, but the fsync asked for failed.
            SpoolError: the spool is closed.
        """
        if not payloads:
            return self._next_id - 1
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if self._closed:
                raise SpoolError("spool is closed")
            incoming = sum(len(p) for p in payloads) + HEADER_BYTES * len(payloads)
            if self.total_bytes() + incoming > self.max_bytes:
                raise SpoolFullError(f"spool {self.directory} would exceed {self.max_bytes} bytes")
            try:
                if self._torn:
                    self._repair_tail()
                if self._sizes[self._active] >= self.max_segment_bytes:
                    self._roll()
            except OSError as exc:
                raise SpoolWriteError(
                    f"spool {self.directory}: {exc.strerror or exc}", reason=_reason(exc)
                ) from exc
            first = self._next_id
            records = [encode(first + i, now_ms, payload) for i, payload in enumerate(payloads)]
            blob = b"".join(records)
            view, done = memoryview(blob), 0
            try:
                while done < len(blob):
                    done += os.write(self._fd, view[done:])
            except OSError as exc:
                kept = self._undo_partial(done, records)
                raise SpoolWriteError(
                    f"spool {self.directory}: {exc.strerror or exc}",
                    committed=kept,
                    last_id=first + kept - 1,
                    reason=_reason(exc),
                ) from exc
            self._sizes[self._active] += len(blob)
            self._next_id = first + len(payloads)
            last = self._next_id - 1
        if sync:
            try:
                self._sync_through(last)
            except OSError as exc:
                raise SpoolSyncError(f"spool {self.directory}: fsync: {exc}", last_id=last) from exc
        return last

    def _undo_partial(self, done: int, records: Sequence[bytes]) -> int:
        """Put the segment back as it was after a write that stopped at ``done`` bytes.

        Returns how many records are kept (committed). Called under the lock.
        """
        committed = self._sizes[self._active]
        if done == 0:
            return 0
        try:
            os.ftruncate(self._fd, committed)
            return 0
        except OSError:
            pass
        # The bytes cannot be taken back: commit every complete record among
        # them (they are valid and get delivered; the caller is told so) and
        # never write behind the torn remainder.
        kept = kept_bytes = 0
        for record in records:
            if kept_bytes + len(record) > done:
                break
            kept, kept_bytes = kept + 1, kept_bytes + len(record)
        self._sizes[self._active] = committed + kept_bytes
        self._next_id += kept
        self._torn = True
        with contextlib.suppress(OSError):
            self._repair_tail()
        return kept

    def _repair_tail(self) -> None:
        # Called under the lock while the active file may hold uncommitted bytes
        # at its end: cut them, or else start a fresh segment. Raises if neither works.
        try:
            os.ftruncate(self._fd, self._sizes[self._active])
        except OSError:
            self._roll()  # the torn tail stays in the old segment, beyond its committed size
        self._torn = False

    def _roll(self, *, keep: bool = True) -> None:
        # Never fsync here: _roll runs under the lock, often in a caller's
        # thread (measured: a 14 ms stall of emit). A kept segment's
        # descriptor waits for the next sync(); a discarded one just closes.
        # The new segment is opened first, so a failure (a full disk) changes nothing.
        first = self._next_id
        if first == self._active:
            # No record in the active segment (only torn bytes), so a fresh one would
            # get its name: skip one id, never written, to get a new file.
            first += 1
        old_fd = self._fd
        new_fd = open_append(self._segment_path(first))
        self._next_id = self._active = first
        self._fd = new_fd
        self._sizes[self._active] = 0
        self._torn = False
        if keep:
            self._retired.append(old_fd)
        else:
            os.close(old_fd)

    def _sync_through(self, record_id: int) -> None:
        with self._sync_lock:
            if self._synced_id >= record_id:
                return  # another thread's fsync already covered this record
            with self._lock:
                target, fd = self._next_id - 1, self._fd
                retired, self._retired = self._retired, []
            failure = _fsync_and_close(retired)
            os.fsync(fd)
            if failure is not None:
                raise failure
            self._synced_id = target

    def sync(self) -> None:
        """fsync everything appended so far; write an ack the disk refused before."""
        with self._lock:
            last = self._next_id - 1
        self._write_acks()
        self._sync_through(last)

    # -- reading ------------------------------------------------------------

    def read(
        self, consumer: str, max_records: int, max_bytes: int = 4 * 1024 * 1024
    ) -> list[SpoolRecord]:
        """Read up to ``max_records`` pending records for ``consumer``, oldest first.

        Reading does not consume: the same records come back until ``ack``.
        """
        pos = self._positions[consumer]
        records, segment, offset, tail_id = self._read_from(pos, max_records, max_bytes)
        if not records and tail_id is not None and tail_id > pos.last_id:
            # The end is reached and the ids up to tail_id were never readable
            # (corrupt, already counted): stop counting them as pending.
            self._positions[consumer] = _Position(segment, offset, tail_id)
            self._read_end.pop(consumer, None)
            with contextlib.suppress(OSError):
                self._delete_delivered()
            return []
        self._read_end[consumer] = (segment, offset, records[-1].id if records else None)
        return records

    def read_after(
        self, consumer: str, after_id: int, max_records: int, max_bytes: int = 4 * 1024 * 1024
    ) -> list[SpoolRecord]:
        """Read up to ``max_records`` pending records with ids above ``after_id``.

        A look further ahead than ``read`` (the pipeline uses it to copy a
        failing destination's backlog to the fallback); it moves no position.
        Successive calls that pass the last id returned continue where the
        previous one stopped.
        """
        pos = self._positions[consumer]
        if after_id <= pos.last_id:
            start = pos
        else:
            cached = self._cursors.get(consumer)
            if cached is not None and cached.last_id == after_id:
                start = cached
            else:
                start = self._position_after(after_id)
        records, segment, offset, _tail = self._read_from(start, max_records, max_bytes)
        self._cursors[consumer] = _Position(
            segment, offset, records[-1].id if records else start.last_id
        )
        return records

    def acknowledged(self, consumer: str) -> int:
        """The last id ``consumer`` acknowledged (everything up to it is delivered)."""
        return self._positions[consumer].last_id

    def _read_from(
        self, start: _Position, max_records: int, max_bytes: int
    ) -> tuple[list[SpoolRecord], int, int, int | None]:
        """Records after ``start``; with the segment and offset reached, and the last id
        written when the read reached the end of the spool (else None)."""
        records: list[SpoolRecord] = []
        segment, offset, budget = start.segment, start.offset, max_bytes
        tail_id: int | None = None
        while len(records) < max_records and budget > 0:
            with self._lock:
                committed = self._sizes.get(segment)
                later = sorted(s for s in self._sizes if s > segment)
                active = self._active
                if (committed is None or offset >= committed) and (segment == active or not later):
                    tail_id = self._next_id - 1
            if committed is None or offset >= committed:
                if segment == active or not later:
                    break
                segment, offset = later[0], 0
                continue
            try:
                data = self._read_window(segment, offset, committed, budget)
            except FileNotFoundError:
                # Deleted meanwhile (delivered) or by hand: move on, never spin on it.
                if segment == active or not later:
                    break
                segment, offset = later[0], 0
                continue
            off = 0
            while off < len(data) and len(records) < max_records and budget > 0:
                decoded = decode_at(data, off)
                if decoded is None:
                    self._count_corrupt(segment, offset + off)
                    off = resync(data, off + 1)
                    continue
                record, off = decoded
                if record.id > start.last_id:
                    records.append(record)
                    budget -= len(record.payload) + HEADER_BYTES
            offset += off
        return records, segment, offset, tail_id

    def _read_window(self, segment: int, offset: int, committed: int, budget: int) -> bytes:
        # Return whole records only, so that a record cut by the window is
        # never mistaken for corruption.
        with open(self._segment_path(segment), "rb") as fh:
            fh.seek(offset)
            available = committed - offset
            data = fh.read(min(available, max(budget, 64 * 1024)))
            whole = pos = 0
            while pos + HEADER_BYTES <= len(data):
                magic, _f, length, _c, _i, _t = HEADER.unpack_from(data, pos)
                if magic != MAGIC or length > MAX_RECORD_BYTES:
                    # Corrupt: give the resync scan the rest of the segment.
                    return data + fh.read(available - len(data))
                pos += HEADER_BYTES + length
                if pos <= len(data):
                    whole = pos
            if len(data) == available:
                return data  # at the committed end a torn tail is real corruption
            if whole > 0:
                return data[:whole]
            # The first record is larger than the window: read all of it.
            return data + fh.read(min(pos, available) - len(data))

    def _count_corrupt(self, segment: int, offset: int) -> None:
        key = (segment, offset)
        if key not in self._corrupt_seen:
            self._corrupt_seen.add(key)
            self.corrupt_records += 1

    def ack(self, consumer: str, records: Sequence[SpoolRecord]) -> None:
        """Acknowledge delivery of ``records``, the batch the last ``read`` returned.

        Never raises for a full disk: delivered segments are deleted first (which
        frees space), and an ack file the disk refuses is written again later.
        """
        if not records:
            return
        last_id = records[-1].id
        segment, offset, read_last = self._read_end.get(consumer, (0, 0, None))
        if read_last == last_id:
            self._positions[consumer] = _Position(segment, offset, last_id)
        else:
            self._positions[consumer] = self._position_after(last_id)
        with self._ack_lock:
            self._unwritten_acks[consumer] = last_id
        self._delete_delivered()
        self._write_acks()

    def _write_acks(self) -> bool:
        """Write the acks not yet on disk; False if the disk refused one (kept for later)."""
        with self._ack_lock:
            for consumer, last_id in list(self._unwritten_acks.items()):
                try:
                    write_ack(self._ack_path(consumer), last_id)
                except OSError:
                    return False
                del self._unwritten_acks[consumer]
        return True

    def _delete_delivered(self) -> None:
        floor = min(p.last_id for p in self._positions.values())
        with self._lock:
            ordered = sorted(self._sizes)
            for i, first in enumerate(ordered):
                if first == self._active:
                    if self._next_id - 1 <= floor and self._sizes[first] > 0 and not self._closed:
                        self._empty_active(first)
                    break
                next_first = ordered[i + 1] if i + 1 < len(ordered) else self._next_id
                if next_first - 1 <= floor:
                    self._unlink(first)

    def _empty_active(self, first: int) -> None:
        # Everything is delivered: start an empty segment so the spool shrinks
        # to nothing (no fsync for a file being deleted). A segment holding no
        # record at all (only torn bytes left by a crash) is cut to zero in place.
        # On a disk too full for a new file, keep this one for now.
        try:
            if first == self._next_id:
                os.ftruncate(self._fd, 0)
                self._sizes[first] = 0
                for pos in (*self._positions.values(), *self._cursors.values()):
                    if pos.segment == first:
                        pos.offset = 0  # the next record is written at the start
                self._read_end.clear()
                return
            self._roll(keep=False)
        except OSError:
            return
        self._unlink(first)

    def _unlink(self, first: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._segment_path(first).unlink()
        self._sizes.pop(first, None)
        for pos in self._positions.values():
            if pos.segment == first:
                later = [s for s in self._sizes if s > first]
                pos.segment, pos.offset = (min(later) if later else self._active), 0

    # -- state --------------------------------------------------------------

    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    def pending(self, consumer: str) -> int:
        """How many records ``consumer`` has not acknowledged yet."""
        return max(0, self._next_id - 1 - self._positions[consumer].last_id)

    def last_id(self) -> int:
        """The id of the last record appended (0 if none ever was)."""
        return self._next_id - 1

    def stats(self) -> SpoolStats:
        pending = {c: self.pending(c) for c in self.consumers}
        oldest: dict[str, int | None] = {}
        for consumer in self.consumers:
            oldest[consumer] = None
            if pending[consumer]:
                first = self._peek(consumer)
                oldest[consumer] = first.appended_ms if first else None
        return SpoolStats(
            bytes=self.total_bytes(),
            segments=len(self._sizes),
            pending_records=pending,
            oldest_pending_ms=oldest,
            corrupt_records=self.corrupt_records,
        )

    def _peek(self, consumer: str) -> SpoolRecord | None:
        pos = self._positions[consumer]
        try:
            with open(self._segment_path(pos.segment), "rb") as fh:
                fh.seek(pos.offset)
                head = fh.read(HEADER_BYTES)
        except FileNotFoundError:
            return None
        if len(head) < HEADER_BYTES:
            return None
        magic, _f, _len, _crc, record_id, appended_ms = HEADER.unpack(head)
        return SpoolRecord(record_id, appended_ms, b"") if magic == MAGIC else None

    def unacknowledged(self, batch: int = 1024) -> Iterator[list[bytes]]:
        """Every payload some consumer has not acknowledged, oldest first, in batches.

        For moving a dead process's backlog into a live spool (``slots.adopt_orphans``).
        """
        floor = min(p.last_id for p in self._positions.values())
        for first in sorted(self._sizes):
            data = self._segment_path(first).read_bytes()
            payloads = [r.payload for _, r in scan_segment(data) if r and r.id > floor]
            for start in range(0, len(payloads), batch):
                yield payloads[start : start + batch]

    def remove(self) -> None:
        """Close the spool and delete its segments and acks (its records live on elsewhere)."""
        self.close()
        for path in self.directory.glob(f"*{SEGMENT_SUFFIX}"):
            path.unlink()
        for path in self.directory.glob(f"*{ACK_SUFFIX}"):
            path.unlink()

    def close(self) -> None:
        """fsync and close; idempotent. Raises the first fsync error, after closing everything."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fd = self._fd
            retired, self._retired = self._retired, []
        failure = _fsync_and_close([*retired, fd])
        self._write_acks()
        if self._sizes.get(self._active) == 0:
            self._unlink(self._active)
        if failure is not None:
            raise failure


def _fsync_and_close(descriptors: Sequence[int]) -> OSError | None:
    """fsync and close each descriptor, all of them; the first fsync error, if any."""
    failure: OSError | None = None
    for descriptor in descriptors:
        try:
            os.fsync(descriptor)
        except OSError as exc:
            failure = failure or exc
        finally:
            os.close(descriptor)
    return failure
