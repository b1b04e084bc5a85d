"""Spool slots: one per live process under a shared spool base, and what dead ones leave.

Several processes of one service (the agent and the task processes it starts)
can share ``AUDIT_LOG_SPOOL_DIR``: each claims the first free ``slot-N`` (an
``flock`` held for the process's life) and keeps one ``Spool`` per destination
in it (``slot-N/<destination>``). A slot whose owner died is free again; its
backlog is moved into a live process's spool at that process's start and
every 30 s (``adopt_orphans``), so nothing spooled by a killed process is stranded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from auditkeep.delivery._files import LOCK_NAME, SEGMENT_SUFFIX, try_lock
from auditkeep.delivery.spool import Spool
from auditkeep.exceptions import SpoolLockedError

MAX_SLOTS: Final = 64


def slot_dirs(base: str | os.PathLike[str]) -> Iterator[Path]:
    """The ``slot-N`` directories under ``base``, in order; none if ``base`` is missing."""
    root = Path(base)
    if root.is_dir():
        yield from sorted(p for p in root.glob("slot-*") if p.is_dir())


def spool_base(spool_dir: Path) -> Path:
    """The spool base that holds a destination's spool directory (``<base>/slot-N/<name>``)."""
    return spool_dir.parent.parent


class SpoolClaim:
    """A spool directory slot this process holds the lock on.

    .. versionadded:: 0.1.0
    """

    def __init__(self, directory: Path, lock_fd: int) -> None:
        self.directory = directory
        self._lock_fd = lock_fd

    def spool_dir(self, destination: str) -> Path:
        """Where ``destination``'s spool lives in this slot."""
        return self.directory / destination

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def claim_spool_dir(base: str | os.PathLike[str]) -> SpoolClaim:
    """Claim the first free ``slot-N`` under ``base`` for this process.

    A slot left behind by a dead process is taken over, and replayed, by the
    next process that starts or by ``adopt_orphans``.

    Raises:
        SpoolLockedError: all slots are held by live processes.
    """
    root = Path(base)
    for n in range(MAX_SLOTS):
        directory = root / f"slot-{n}"
        fd = try_lock(directory / LOCK_NAME)
        if fd is not None:
            return SpoolClaim(directory, fd)
    raise SpoolLockedError(f"all {MAX_SLOTS} spool slots under {root} are in use")


def adopt_orphans(base: str | os.PathLike[str], into: Spool) -> int:
    """Move the pending records that dead processes left for ``into``'s destination.

    ``into`` lives in ``<base>/slot-K/<destination>``; the same destination's
    directory in every other slot whose lock is free (its owner died) is
    drained into ``into``. Returns how many records were moved. They are
    appended and fsynced before the orphan's files are deleted, so a crash
    in between duplicates rather than loses.
    """
    moved = 0
    own_slot, name = into.directory.parent, into.directory.name
    for slot in slot_dirs(base):
        directory = slot / name
        if slot == own_slot or not any(directory.glob(f"*{SEGMENT_SUFFIX}")):
            continue
        fd = try_lock(slot / LOCK_NAME)
        if fd is None:
            continue  # its owner is alive
        try:
            orphan = Spool(directory, into.consumers)
            for payloads in orphan.unacknowledged():
                into.append(payloads)
                moved += len(payloads)
            into.sync()
            orphan.remove()
        finally:
            os.close(fd)
    return moved
