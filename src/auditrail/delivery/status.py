"""Read-only status of a spool base directory, for ``auditrail spool status``."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from auditrail.delivery.spool import scan_segment


def _locked(slot: Path) -> bool:
    lock = slot / "lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def spool_status(base: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe every slot under ``base``: owner alive, bytes, pending records per consumer.

    Reads segments without taking any lock, so it is safe beside a running service.
    """
    root = Path(base)
    slots = []
    for slot in sorted(root.glob("slot-*")):
        destinations = {}
        for directory in sorted(p for p in slot.iterdir() if p.is_dir()):
            segments = sorted(directory.glob("*.seg"))
            acks = [int(p.read_text().strip() or 0) for p in directory.glob("*.ack")]
            floor = min(acks, default=0)
            pending = 0
            for seg in segments:
                records = scan_segment(seg.read_bytes())
                pending += sum(1 for _, r in records if r and r.id > floor)
            destinations[directory.name] = {
                "segments": len(segments),
                "bytes": sum(p.stat().st_size for p in segments),
                "acknowledged": floor,
                "pending": pending,
            }
        slots.append({"slot": slot.name, "locked": _locked(slot), "destinations": destinations})
    dead = root / "dead-letters"
    dead_letters = (
        {p.stem: sum(1 for _ in p.open("rb")) for p in sorted(dead.glob("*.jsonl"))}
        if dead.is_dir()
        else {}
    )
    return {"spool_dir": str(root), "slots": slots, "dead_letters": dead_letters}
