"""Finding the trail's files and scanning them fast.

Speed comes from not looking at most lines. A file is read in large blocks
(gzip ones through one ``zlib`` stream); in each block the most selective
needle (see ``_filters``) is searched for with ``bytes.find``, which runs at
several GB/s, and only the lines around a hit are split out, tested for the
other needles and parsed with ``orjson``. Lines that hold a JSON escape are
always parsed, since an escape could hide a needle. With no needle (a filter on
time only, or a report) every line is parsed.

Whole files are skipped when their modification time shows they were last
written before anything that could match (``--since``, or the creation time in a
UUIDv7 correlation id), with ``PRUNE_SLACK`` to spare for clock differences.
The mtime is used rather than the first or last line because entries replayed
from the spool after an outage can be written long after they were stamped;
they are never older than the write, so the mtime stays a true upper bound.

Only lines that are parsed can be found malformed, so the count of malformed
lines covers the lines a query had to examine (all of them without needles).

Results are sorted by (timestamp, event_id): files of several processes
interleave, and a spool replay can put old entries late in a file.
"""

from __future__ import annotations

import functools
import glob
import io
import multiprocessing
import os
import signal
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import orjson

from auditkeep._rotation import rotation_family, without_compressing_twins
from auditkeep.exceptions import InputError
from auditkeep.query._filters import EntryFilter, Matcher, NeedleGroup, has_escape
from auditkeep.query._timeparse import timestamp_key

BLOCK_BYTES: Final = 16 << 20
"""How much of a file is searched at once (decompressed size for gzip files)."""
PRUNE_SLACK: Final = timedelta(minutes=10)
"""Clock difference tolerated between the writers of a file and the entries' clocks."""
MAX_REPORTED_OFFSETS: Final = 5
PARALLEL_MIN_BYTES: Final = 64 << 20
"""Below this much work (plain bytes; five per byte inflated) a scan stays in one process."""
MIN_PIECE_BYTES: Final = 16 << 20
_GZIP_MAGIC: Final = b"\x1f\x8b"
_NOT_TRAIL: Final = (".lock", ".tmp")  # the sink's lock file; a backup being compressed
_SAMPLE_BYTES: Final = 1 << 20
_ESCAPE_LETTERS: Final = (0x75, 0x2F)  # "u" and "/"
_NEWLINE: Final = 0x0A

Buffer = bytes | bytearray
Progress = Callable[[int, int], None]
"""Told (bytes read, bytes to read) as a scan goes."""
OnMatch = Callable[[Buffer, dict[str, Any]], None]
"""Called with the stored line (copy it with ``bytes``) and its parsed entry for every match."""
Match = tuple[str, str, bytes]
"""(canonical timestamp, event_id, stored line): sorts into time order."""


@dataclass(frozen=True, slots=True)
class TrailFile:
    """One file of the trail.

    .. versionadded:: 0.1.0
    """

    path: Path
    compressed: bool
    mtime: float
    size: int
    plain_size: int
    """The size once decompressed: gzip's own record of it (modulo 4 GiB), or ``size``."""

    @classmethod
    def open_stat(cls, path: Path) -> TrailFile:
        """Describe an existing file, recognising gzip by its magic bytes."""
        with path.open("rb") as handle:
            compressed = handle.read(2) == _GZIP_MAGIC
            stat = os.fstat(handle.fileno())
            plain_size = stat.st_size
            if compressed and stat.st_size >= 18:
                # The last four bytes of a gzip member are its uncompressed size.
                handle.seek(-4, os.SEEK_END)
                plain_size = max(int.from_bytes(handle.read(4), "little"), stat.st_size)
        return cls(path, compressed, stat.st_mtime, stat.st_size, plain_size)


@dataclass(slots=True)
class ScanStats:
    """What a scan met besides matches: malformed lines, unreadable and skipped files.

    .. versionadded:: 0.1.0
    """

    malformed: dict[str, int] = field(default_factory=dict)
    malformed_offsets: dict[str, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)

    def note_read(self, path: str) -> None:
        """Record that a file was read (once, however many pieces it was read in)."""
        if path not in self.files_read:
            self.files_read.append(path)

    def merge(self, other: ScanStats) -> None:
        """Add the findings of another scan (a piece scanned in parallel)."""
        for path, count in other.malformed.items():
            self.malformed[path] = self.malformed.get(path, 0) + count
            offsets = sorted(
                self.malformed_offsets.get(path, []) + other.malformed_offsets.get(path, [])
            )
            self.malformed_offsets[path] = offsets[:MAX_REPORTED_OFFSETS]
        self.errors.extend(error for error in other.errors if error not in self.errors)
        for path in other.files_read:
            self.note_read(path)
        self.files_skipped.extend(other.files_skipped)

    @property
    def malformed_total(self) -> int:
        """How many malformed lines were met in all files."""
        return sum(self.malformed.values())

    def add_malformed(self, path: str, offset: int | None) -> None:
        """Count one malformed line, keeping the first few byte offsets per file."""
        self.malformed[path] = self.malformed.get(path, 0) + 1
        offsets = self.malformed_offsets.setdefault(path, [])
        if offset is not None and len(offsets) < MAX_REPORTED_OFFSETS:
            offsets.append(offset)

    def describe_malformed(self) -> str:
        """One line for stderr, naming each file and the first byte offsets."""
        parts = []
        for path, count in self.malformed.items():
            offsets = self.malformed_offsets.get(path, [])
            where = ""
            if offsets:
                more = ", ..." if count > len(offsets) else ""
                where = f" (at byte {', '.join(str(offset) for offset in offsets)}{more})"
            parts.append(f"{path}: {count}{where}")
        total = self.malformed_total
        noun = "line" if total == 1 else "lines"
        return f"skipped {total} malformed or truncated {noun}: " + "; ".join(parts)


def discover_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    default: str | None = None,
    rotations: bool = True,
) -> list[TrailFile]:
    """Resolve the command line's inputs into the files to read.

    Args:
        paths: Files, directories (every non-hidden file in them) and globs. A
            file brings its rotated backups along unless ``rotations`` is False.
            Directories and globs leave out ``*.lock`` (the sink's lock file)
            and ``*.tmp`` (a backup being compressed).
        default: Used when ``paths`` is empty: normally ``AUDIT_LOG_FILE_PATH``,
            taken with its backups unless ``rotations`` is False.
        rotations: Add the backups of each file named directly (and of ``default``).

    Raises:
        InputError: Nothing to read, or a named input does not exist.

    .. versionadded:: 0.1.0
    """
    found: list[Path] = []
    if not paths:
        if not default:
            raise InputError("no input: give a file, directory or glob, or set AUDIT_LOG_FILE_PATH")
        live = Path(default)
        found = rotation_family(live) if rotations else [live] if live.is_file() else []
        if not found:
            raise InputError(f"no audit trail at AUDIT_LOG_FILE_PATH={default}")
    for raw in paths:
        text = os.fspath(raw)
        path = Path(text)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise InputError(f"no file matches {text}")
            for match in matches:
                if not match.endswith(_NOT_TRAIL):
                    found.extend(_expand(Path(match), rotations=False))
        elif path.is_dir() or path.is_file():
            found.extend(_expand(path, rotations=rotations))
        else:
            family = rotation_family(path) if rotations else []
            if not family:
                raise InputError(f"no such file: {text}")
            found.extend(family)
    return _unique(found)


def _expand(path: Path, *, rotations: bool) -> list[Path]:
    if path.is_dir():
        return sorted(
            child
            for child in path.iterdir()
            if child.is_file()
            and not child.name.startswith(".")
            and not child.name.endswith(_NOT_TRAIL)
        )
    return rotation_family(path) if rotations else [path]


def _unique(paths: list[Path]) -> list[TrailFile]:
    seen: set[tuple[int, int]] = set()
    files: list[TrailFile] = []
    # A backup caught mid-compression is listed twice by a directory or a glob.
    for path in without_compressing_twins(paths):
        try:
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            files.append(TrailFile.open_stat(path))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return files


def should_skip(trail_file: TrailFile, matcher: Matcher) -> bool:
    """Tell whether the file was last written before any matching entry existed."""
    earliest = matcher.entry_filter.earliest_write()
    if earliest is None:
        return False
    return trail_file.mtime < (earliest - PRUNE_SLACK).timestamp()


@dataclass(frozen=True, slots=True)
class _Piece:
    """The lines of a file that start in ``[begin, end)``; ``end=None``: to the file's end."""

    file: TrailFile
    begin: int = 0
    end: int | None = None


def _first_line_start(handle: io.FileIO, begin: int) -> int:
    # Lines belong to the piece their first byte is in: skip the one cut at `begin`.
    if begin == 0:
        return 0
    handle.seek(begin - 1)
    position = begin - 1
    while chunk := handle.read(1 << 16):
        newline = chunk.find(b"\n")
        if newline != -1:
            return position + newline + 1
        position += len(chunk)
    return position


def _plain_blocks(handle: io.FileIO, start: int, end: int | None) -> Iterator[tuple[Buffer, int]]:
    # One buffer, refilled in place: a fresh 16 MiB object per read costs page faults.
    handle.seek(start)
    remaining = None if end is None else end - start
    expected = os.fstat(handle.fileno()).st_size - start if remaining is None else remaining
    buf = bytearray(max(1, min(BLOCK_BYTES, expected)))
    view = memoryview(buf)
    last_byte = _NEWLINE
    while remaining is None or remaining > 0:
        got = handle.readinto(view if remaining is None else view[: min(len(buf), remaining)])
        if not got:
            return
        if remaining is not None:
            remaining -= got
        last_byte = buf[got - 1]
        yield buf, got
    if last_byte == _NEWLINE:
        return
    # The piece's last line runs past `end`: finish it.
    while chunk := handle.read(1 << 16):
        newline = chunk.find(b"\n")
        if newline != -1:
            yield chunk, newline + 1
            return
        yield chunk, len(chunk)


def _gzip_blocks(handle: io.FileIO) -> Iterator[tuple[Buffer, int]]:
    inflater = zlib.decompressobj(wbits=31)
    fed = False
    # Compressed input is read in pieces of an eighth of a block: JSON lines
    # compress about tenfold, and max_length caps each output block anyway.
    while raw := handle.read(BLOCK_BYTES // 8):
        while raw:
            fed = True
            out = inflater.decompress(raw, BLOCK_BYTES)
            if out:
                yield out, len(out)
            if inflater.eof:
                # Another gzip member may follow (concatenated files); zero padding may too.
                raw = inflater.unused_data
                inflater = zlib.decompressobj(wbits=31)
                fed = False
                if not raw.strip(b"\x00"):
                    raw = b""
            else:
                raw = inflater.unconsumed_tail
    if fed and not inflater.eof:
        raise EOFError("compressed file is truncated")


def line_ranges(
    blocks: Iterable[tuple[Buffer, int]], offset: int = 0
) -> Iterator[tuple[Buffer, int, int, int]]:
    """Regroup blocks so that each piece holds whole lines.

    ``blocks`` yields ``(buffer, length)``: the block is ``buffer[:length]``,
    and the buffer may be refilled once the next block is asked for. Yields
    ``(buffer, start, end, buffer_offset)``: ``buffer[start:end]`` is whole
    lines, each ending in a newline, except that the last piece may lack one (a
    line being written, or a truncated one). ``buffer_offset`` is the position
    of ``buffer[0]`` in the file, given that the first block starts at
    ``offset``. Blocks are not copied; only a line cut by a block boundary is.
    """
    carry = b""
    carry_offset = 0
    for block, length in blocks:
        last = block.rfind(b"\n", 0, length)
        if last == -1:
            if not carry:
                carry_offset = offset
            carry += block[:length]
            offset += length
            continue
        start = 0
        if carry:
            first = block.find(b"\n", 0, length)
            piece = carry + block[: first + 1]
            yield piece, 0, len(piece), carry_offset
            start = first + 1
        if start <= last:
            yield block, start, last + 1, offset
        carry = bytes(block[last + 1 : length])
        carry_offset = offset + last + 1
        offset += length
    if carry:
        yield carry, 0, len(carry), carry_offset


def file_line_blocks(trail_file: TrailFile) -> Iterator[tuple[Buffer, int, int, int]]:
    """The whole file as ``line_ranges`` pieces (gzip inflated): the reader ``verify`` shares.

    Raises ``OSError``, ``zlib.error`` or ``EOFError`` (a truncated gzip file)
    as they happen; the pieces before the failure have been yielded.
    """
    with trail_file.path.open("rb", buffering=0) as handle:
        blocks = _gzip_blocks(handle) if trail_file.compressed else _plain_blocks(handle, 0, None)
        yield from line_ranges(blocks, 0)


def _escape_spans(buf: Buffer, start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    find = buf.find
    pos = find(b"\\", start, end)
    while pos != -1:
        if pos + 1 < end and buf[pos + 1] in _ESCAPE_LETTERS:
            line_start = buf.rfind(b"\n", start, pos) + 1 or start
            line_end = find(b"\n", pos, end)
            if line_end == -1:
                line_end = end
            spans.append((line_start, line_end))
            pos = find(b"\\", line_end, end)
        else:
            pos = find(b"\\", pos + 2, end)
    return spans


def _needle_spans(buf: Buffer, needle: bytes, start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    find = buf.find
    rfind = buf.rfind
    pos = find(needle, start, end)
    while pos != -1:
        line_start = rfind(b"\n", start, pos) + 1 or start
        line_end = find(b"\n", pos, end)
        if line_end == -1:
            line_end = end
        spans.append((line_start, line_end))
        pos = find(needle, line_end, end)
    return spans


def choose_primary(sample: Buffer, groups: Sequence[NeedleGroup]) -> int:
    """Return the index of the needle group with the fewest hits in a sample."""
    counts = [sum(sample.count(needle) for needle in group) for group in groups]
    return counts.index(min(counts))


def _scan_piece(
    piece: _Piece,
    matcher: Matcher,
    on_match: OnMatch,
    stats: ScanStats,
    on_read: Callable[[int], None] | None = None,
) -> None:
    trail_file = piece.file
    name = str(trail_file.path)
    stats.note_read(name)
    groups = matcher.needle_groups
    primary: NeedleGroup | None = None
    others: tuple[NeedleGroup, ...] = ()
    try:
        with trail_file.path.open("rb", buffering=0) as handle:
            if trail_file.compressed:
                start = 0
                blocks = _gzip_blocks(handle)
            else:
                start = _first_line_start(handle, piece.begin)
                blocks = _plain_blocks(handle, start, piece.end)
            for buf, begin, end, offset in line_ranges(blocks, start):
                if on_read is not None:
                    on_read(handle.tell())
                if not groups:
                    _scan_all(buf, begin, end, offset, matcher, on_match, stats, name)
                    continue
                if primary is None:
                    index = choose_primary(buf[begin : begin + _SAMPLE_BYTES], groups)
                    primary = groups[index]
                    others = groups[:index] + groups[index + 1 :]
                _scan_needles(
                    buf, begin, end, offset, primary, others, matcher, on_match, stats, name
                )
    except (OSError, zlib.error, EOFError) as exc:
        stats.errors.append(f"cannot read {name}: {exc}")


def scan_file(trail_file: TrailFile, matcher: Matcher, on_match: OnMatch, stats: ScanStats) -> None:
    """Call ``on_match`` for every entry of one file that the matcher selects, in file order.

    Malformed lines are counted in ``stats``; a file that cannot be read is
    recorded in ``stats.errors`` and the scan goes on with what was read.

    .. versionadded:: 0.1.0
    """
    _scan_piece(_Piece(trail_file), matcher, on_match, stats)


def _scan_all(
    buf: Buffer,
    start: int,
    end: int,
    offset: int,
    matcher: Matcher,
    on_match: OnMatch,
    stats: ScanStats,
    name: str,
) -> None:
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    matches = matcher.matches
    everything = matcher.selects_all
    position = offset + start
    for line in buf[start:end].split(b"\n"):
        if line:
            try:
                entry = loads(line)
            except decode_error:
                stats.add_malformed(name, position)
            else:
                if type(entry) is not dict:
                    stats.add_malformed(name, position)
                elif everything or matches(entry):
                    on_match(line, entry)
        position += len(line) + 1


def _scan_needles(
    buf: Buffer,
    start: int,
    end: int,
    offset: int,
    primary: NeedleGroup,
    others: tuple[NeedleGroup, ...],
    matcher: Matcher,
    on_match: OnMatch,
    stats: ScanStats,
    name: str,
) -> None:
    spans = _needle_spans(buf, primary[0], start, end)
    for needle in primary[1:]:
        spans.extend(_needle_spans(buf, needle, start, end))
    escaped = _escape_spans(buf, start, end)
    if escaped or len(primary) > 1:
        spans = sorted(set(spans + escaped))
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    matches = matcher.matches
    for line_start, line_end in spans:
        line = buf[line_start:line_end]
        for group in others:
            for needle in group:
                if needle in line:
                    break
            else:
                # No needle of this group: only an escape could be hiding one.
                if not escaped or not has_escape(line):
                    break
        else:
            try:
                entry = loads(line)
            except decode_error:
                stats.add_malformed(name, offset + line_start)
                continue
            if type(entry) is not dict:
                stats.add_malformed(name, offset + line_start)
            elif matches(entry):
                on_match(line, entry)


class Collector(Protocol):
    """Receives the matches of a scan; collectors of parallel pieces are merged."""

    def collect(self, line: Buffer, entry: dict[str, Any], /) -> None: ...

    def merge(self, other: Any, /) -> None: ...


C = TypeVar("C", bound=Collector)


class MatchCollector:
    """Keeps each match as a ``Match`` tuple, ready to sort into time order.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self.found: list[Match] = []

    def collect(self, line: Buffer, entry: dict[str, Any]) -> None:
        """Keep one match."""
        event_id = entry.get("event_id")
        self.found.append(
            (
                timestamp_key(entry.get("timestamp")) or "",
                event_id if type(event_id) is str else "",
                bytes(line),
            )
        )

    def merge(self, other: MatchCollector) -> None:
        """Take over the matches of another collector."""
        self.found.extend(other.found)


def available_cpus() -> int:
    """How many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cost(trail_file: TrailFile) -> int:
    # Inflating a byte costs about as much as reading and searching five plain ones.
    return trail_file.plain_size * 5 if trail_file.compressed else trail_file.size


def _piece_bytes(piece: _Piece) -> int:
    if piece.file.compressed or piece.end is None:
        return piece.file.size - piece.begin
    return piece.end - piece.begin


def _report_read(progress: Progress, before: int, size: int, total: int, position: int) -> None:
    # `position` may run a little past the file's size as it grows: never past its share.
    progress(before + min(position, size), total)


def _piece_cost(piece: _Piece) -> int:
    if piece.file.compressed:
        return _cost(piece.file)
    return (piece.file.size if piece.end is None else piece.end) - piece.begin


def _plan(files: Sequence[TrailFile], workers: int) -> list[_Piece]:
    """Cut the work into pieces for a pool; an empty list means: scan here, file by file."""
    total = sum(_cost(trail_file) for trail_file in files)
    if workers < 2 or total < PARALLEL_MIN_BYTES:
        return []
    # About three pieces per worker, so that a slow gzip file does not leave one idle.
    target = max(MIN_PIECE_BYTES, total // (workers * 3))
    pieces: list[_Piece] = []
    for trail_file in files:
        count = 1 if trail_file.compressed else max(1, round(trail_file.size / target))
        bounds = [trail_file.size * i // count for i in range(count)]
        ends: list[int | None] = [*bounds[1:], None]
        pieces.extend(
            _Piece(trail_file, begin, end) for begin, end in zip(bounds, ends, strict=True)
        )
    # Longest first, so that the pool ends with short pieces.
    pieces.sort(key=lambda piece: -_piece_cost(piece))
    return pieces


def _quiet_worker() -> None:
    # The parent decides what an interrupt means; a worker finishes its piece and exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_piece(
    piece: _Piece, entry_filter: EntryFilter, factory: Callable[[], C]
) -> tuple[C, ScanStats]:
    collector = factory()
    stats = ScanStats()
    _scan_piece(piece, entry_filter.compile(), collector.collect, stats)
    return collector, stats


def scan(
    files: Sequence[TrailFile],
    entry_filter: EntryFilter,
    factory: Callable[[], C],
    stats: ScanStats,
    *,
    prune: bool = True,
    workers: int | None = None,
    progress: Progress | None = None,
) -> C:
    """Feed every matching entry of the files to a collector made by ``factory``.

    Large inputs are split into pieces scanned by a pool of forked processes,
    one per CPU, and their collectors are merged; small ones are scanned here,
    and so is everything when this process runs other threads (forking then is
    unsafe) or cannot fork.

    Args:
        files: What ``discover_files`` returned.
        entry_filter: The conditions; compiled once per process.
        factory: Makes an empty collector; must pickle (a class or a
            ``functools.partial``) when the scan runs in parallel.
        stats: Receives malformed lines, read errors and skipped files.
        prune: Skip files last written before any entry could match.
        workers: Processes to use; None for one per CPU, 1 to stay in this process.
        progress: Called now and then with (bytes read, bytes to read), on-disk
            sizes of the files not skipped; last with both equal.

    .. versionadded:: 0.1.0
    """
    matcher = entry_filter.compile()
    todo = []
    for trail_file in files:
        if prune and should_skip(trail_file, matcher):
            stats.files_skipped.append(str(trail_file.path))
        else:
            todo.append(trail_file)
    if workers is None:
        workers = available_cpus()
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        # Forking a process that runs other threads can copy a lock some thread holds.
        workers = 1
    pieces = _plan(todo, workers)
    result = factory()
    total = sum(trail_file.size for trail_file in todo)
    if len(pieces) < 2:
        done = 0
        for trail_file in todo:
            on_read = None
            if progress is not None:
                progress(done, total)
                on_read = functools.partial(_report_read, progress, done, trail_file.size, total)
            _scan_piece(_Piece(trail_file), matcher, result.collect, stats, on_read)
            done += trail_file.size
        if progress is not None:
            progress(total, total)
        return result
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(pieces)), mp_context=context, initializer=_quiet_worker
    )
    try:
        futures = [pool.submit(_run_piece, piece, entry_filter, factory) for piece in pieces]
        if progress is not None:
            # Workers cannot draw on this terminal: each finished piece moves the count on.
            done = 0
            progress(done, total)
            pairs = zip(futures, pieces, strict=True)
            sizes = {future: _piece_bytes(piece) for future, piece in pairs}
            for future in as_completed(futures):
                done += sizes[future]
                progress(min(done, total), total)
        for future in futures:
            collector, piece_stats = future.result()
            result.merge(collector)
            stats.merge(piece_stats)
    except BaseException:
        # Ctrl-C reaches only this process (workers ignore it): drop the queued pieces.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    # Report files in input order, not in the order the pool finished them.
    order = {str(trail_file.path): index for index, trail_file in enumerate(files)}
    stats.files_read.sort(key=lambda name: order.get(name, len(order)))
    return result


def search(
    files: Sequence[TrailFile],
    entry_filter: EntryFilter,
    stats: ScanStats,
    *,
    prune: bool = True,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[Match]:
    """Return every matching entry of the files as ``Match`` tuples, in time order.

    See ``scan`` for the arguments.

    .. versionadded:: 0.1.0
    """
    found = scan(
        files, entry_filter, MatchCollector, stats, prune=prune, workers=workers, progress=progress
    ).found
    # Timsort merges the already sorted runs (one per file and writer) in near-linear time.
    found.sort()
    return found
