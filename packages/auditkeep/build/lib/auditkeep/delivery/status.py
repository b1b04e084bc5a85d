"""What a spool base holds, read-only, for ``auditkeep spool status``.

Reads segments and acks without taking any lock (safe beside a running
service) and creates nothing: no folder, no lock file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkeep.delivery import dead_letters
from auditkeep.delivery._files import ACK_SUFFIX, LOCK_NAME, SEGMENT_SUFFIX, is_locked, read_ack
from auditkeep.delivery._records import scan_segment
from auditkeep.delivery.slots import slot_dirs


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """One destination's spool in one slot."""

    name: str
    pending: int
    acknowledged: int
    bytes: int
    segments: int
    oldest_pending_ms: int | None
    """When the oldest pending entry was spooled (unix milliseconds)."""
    corrupt: int
    """Unreadable stretches (skipped, never delivered)."""


@dataclass(frozen=True, slots=True)
class SlotStatus:
    slot: str
    locked: bool
    """A live process owns the slot; a free slot is replayed by the next start."""
    destinations: tuple[DestinationStatus, ...]


@dataclass(frozen=True, slots=True)
class DeadLetterStatus:
    destination: str
    entries: int
    path: str


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """Everything under one spool base.

    .. versionadded:: 0.1.0
    """

    spool_dir: str
    exists: bool
    slots: tuple[SlotStatus, ...]
    dead_letters: tuple[DeadLetterStatus, ...]

    @property
    def pending(self) -> int:
        return sum(d.pending for s in self.slots for d in s.destinations)

    def to_json(self) -> dict[str, Any]:
        return {
            "spool_dir": self.spool_dir,
            "exists": self.exists,
            "pending": self.pending,
            "slots": [
                {
                    "slot": s.slot,
                    "locked": s.locked,
                    "destinations": {
                        d.name: {
                            "pending": d.pending,
                            "acknowledged": d.acknowledged,
                            "bytes": d.bytes,
                            "segments": d.segments,
                            "oldest_pending_ms": d.oldest_pending_ms,
                            "corrupt_records": d.corrupt,
                        }
                        for d in s.destinations
                    },
                }
                for s in self.slots
            ],
            "dead_letters": {
                d.destination: {"entries": d.entries, "path": d.path} for d in self.dead_letters
            },
        }


def spool_status(base: str | os.PathLike[str]) -> SpoolStatus:
    """Describe every slot under ``base``: owner alive, bytes, pending records per destination.

    .. versionadded:: 0.1.0
    """
    root = Path(base)
    slots = tuple(
        SlotStatus(
            slot.name,
            is_locked(slot / LOCK_NAME),
            tuple(_destination(d) for d in sorted(slot.iterdir()) if d.is_dir()),
        )
        for slot in slot_dirs(root)
    )
    folder = dead_letters.dead_letter_dir(root)
    found = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return SpoolStatus(
        spool_dir=str(root),
        exists=root.is_dir(),
        slots=slots,
        dead_letters=tuple(
            DeadLetterStatus(p.stem, dead_letters.count_entries(p), str(p)) for p in found
        ),
    )


def _destination(directory: Path) -> DestinationStatus:
    segments = sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))
    floor = min((read_ack(p) for p in directory.glob(f"*{ACK_SUFFIX}")), default=0)
    pending = corrupt = size = 0
    oldest: int | None = None
    for segment in segments:
        try:
            data = segment.read_bytes()
        except FileNotFoundError:
            continue  # delivered and deleted while we looked
        size += len(data)
        for _, record in scan_segment(data):
            if record is None:
                corrupt += 1
            elif record.id > floor:
                pending += 1
                if oldest is None:
                    oldest = record.appended_ms
    return DestinationStatus(directory.name, pending, floor, size, len(segments), oldest, corrupt)
