"""Reading the trail into chains: one pass per file, parsing only what must be parsed.

Each line is hashed as stored and its chain field read from its end with one regular
expression; only chain starts, checkpoints and lines that are not the writer's compact
form go through ``orjson``. Large trails are read one file per forked process.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import multiprocessing
import re
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Final

import orjson

from auditkeep.integrity import _format
from auditkeep.integrity._chains import HEX64, MAX_SEQ, Chain
from auditkeep.integrity._findings import MAX_LISTED, Problem, VerifyOptions
from auditkeep.query._reader import (
    PARALLEL_MIN_BYTES,
    TrailFile,
    available_cpus,
    file_line_blocks,
)

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
_MAX_ID_CHARS: Final = 128
UNCHAINED_KEPT: Final = 10 * MAX_LISTED
Unchained = tuple[Problem, Any, str | None]


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
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        return False
    if prev is None:
        return chain_id, seq, None
    if type(prev) is not str or not HEX64.fullmatch(prev):
        return False
    return chain_id, seq, bytes.fromhex(prev)


class Reader:
    """Reads every line of the inputs into chains."""

    def __init__(self, files: Sequence[TrailFile], options: VerifyOptions) -> None:
        self.files = files
        self.names = [str(trail_file.path) for trail_file in files]
        self.options = options
        self.chains: dict[str, Chain] = {}
        self.lines = 0
        self.problems: list[Problem] = []
        self.unchained = 0
        # Kept to be judged (a caller that raced close() is not a forgery): problem,
        # timestamp, service.
        self.unchained_listed: list[Unchained] = []
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
        by_raw_id: dict[bytes, Chain] = {}
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

    def _chain(self, chain_id: str, file_index: int) -> Chain:
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = Chain(chain_id)
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
                # A live file's last line may be half written: incomplete, not tampering.
                self.problem(
                    "torn",
                    "the file's last line is incomplete (being written, or cut)",
                    file_index,
                    line_no,
                )
            else:
                self.problem("malformed", "not a JSON object", file_index, line_no)
            return None
        chain = _chain_of(parsed)
        if chain is None:
            self.unchained += 1
            if len(self.unchained_listed) < UNCHAINED_KEPT:
                problem = Problem(
                    "unchained",
                    "an entry with no chain field: nothing vouches for it",
                    self.names[file_index],
                    line_no,
                )
                service = parsed.get("service")
                self.unchained_listed.append(
                    (problem, parsed.get("timestamp"), service if type(service) is str else None)
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
    dict[str, Chain], list[Problem], int, list[Unchained], dict[tuple[int, str], list[int]], int
]


def _read_part(files: Sequence[TrailFile], options: VerifyOptions, index: int) -> _Part:
    """One file, in a worker: what it found, without the options (keys do not pickle)."""
    reader = Reader(files, options)
    reader._read_file(index, files[index])
    return (
        reader.chains,
        reader.problems,
        reader.unchained,
        reader.unchained_listed,
        reader.reorders,
        reader.lines,
    )


def read_chains(files: Sequence[TrailFile], options: VerifyOptions, workers: int | None) -> Reader:
    """Read every file into chains: here, or one file per forked process when that pays.

    Files are the unit (line numbers need each file read from its start); the
    parent stitches each chain's pieces in reading order, checking the one
    link at every boundary.
    """
    reader = Reader(files, options)
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
            room = UNCHAINED_KEPT - len(reader.unchained_listed)
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
