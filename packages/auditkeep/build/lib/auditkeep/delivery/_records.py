"""The spool's record format: encode, decode, scan and resynchronise (no I/O).

A record is a 28-byte little-endian header followed by the payload::

    magic b"\\xa7U" | flags u16 | length u32 | crc32 u32 | id u64 | appended_ms u64

The CRC covers the id, the time and the payload. A segment file is a run of
records, named by the id of its first one (``segment_name``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from auditkeep.delivery._files import SEGMENT_SUFFIX

HEADER: Final = struct.Struct("<2sHIIQQ")
MAGIC: Final = b"\xa7U"
HEADER_BYTES: Final = HEADER.size
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024
_CRC_FIELDS: Final = struct.Struct("<QQ")


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back from the spool."""

    id: int
    appended_ms: int
    payload: bytes


def segment_name(first_id: int) -> str:
    return f"{first_id:020d}{SEGMENT_SUFFIX}"


def encode(record_id: int, appended_ms: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_CRC_FIELDS.pack(record_id, appended_ms)))
    return HEADER.pack(MAGIC, 0, len(payload), crc, record_id, appended_ms) + payload


def decode_at(data: bytes | memoryview, offset: int) -> tuple[SpoolRecord, int] | None:
    """Decode the record at ``offset``; None if there is no valid record there."""
    end = offset + HEADER_BYTES
    if end > len(data):
        return None
    magic, _flags, length, crc, record_id, appended_ms = HEADER.unpack_from(data, offset)
    if magic != MAGIC or length > MAX_RECORD_BYTES or end + length > len(data):
        return None
    payload = bytes(data[end : end + length])
    if zlib.crc32(payload, zlib.crc32(_CRC_FIELDS.pack(record_id, appended_ms))) != crc:
        return None
    return SpoolRecord(record_id, appended_ms, payload), end + length


def scan_segment(data: bytes) -> Iterator[tuple[int, SpoolRecord | None]]:
    """Yield ``(offset, record)`` for each record, and ``(offset, None)`` per corrupt stretch.

    After a corrupt stretch the scan resumes at the next offset holding a valid record.
    """
    offset = 0
    while offset < len(data):
        decoded = decode_at(data, offset)
        if decoded is not None:
            record, nxt = decoded
            yield offset, record
            offset = nxt
            continue
        yield offset, None
        offset = resync(data, offset + 1)


def resync(data: bytes, start: int) -> int:
    """The next offset from ``start`` holding a valid record (the end if none)."""
    pos = data.find(MAGIC, start)
    while pos != -1:
        if decode_at(data, pos) is not None:
            return pos
        pos = data.find(MAGIC, pos + 1)
    return len(data)
