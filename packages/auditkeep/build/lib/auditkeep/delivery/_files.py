"""The files the delivery package keeps, and the three ways it touches them.

Layout under a spool base directory (``AUDIT_LOG_SPOOL_DIR``)::

    slot-N/lock                                 flock()ed by the owning process for its life
    slot-N/<destination>/<first id>.seg         spool segments (``spool.py``)
    slot-N/<destination>/<destination>.ack      the last id the destination acknowledged
    dead-letters/<destination>.jsonl            entries the destination refused for good

Here, and only here (``tests/auditkeep/test_layering.py`` checks it): the one durable
append (dead letters, written by the pipeline and put back by ``redeliver``), the one lock
helper (slot claims, the status probe, redelivery's mutual exclusion, and the file sink's
multi-process lock), and the one reader and writer of ack files. The spool's own record
appends stay in ``spool.py``: they are all-or-nothing, which an append of lines is not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

SEGMENT_SUFFIX: Final = ".seg"
ACK_SUFFIX: Final = ".ack"
LOCK_NAME: Final = "lock"
DEAD_LETTERS: Final = "dead-letters"
_ACK_MAX_BYTES: Final = 32  # an id is at most 20 digits; anything longer is not an ack
_APPEND: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def open_append(path: Path, mode: int = 0o600) -> int:
    """A descriptor that appends to ``path``, created private if missing."""
    return os.open(path, _APPEND, mode)


def append_durably(path: Path, lines: Sequence[bytes]) -> None:
    """Append ``lines`` to ``path``, one per line, and fsync before returning.

    Raises:
        OSError: the file could not be opened, written or synced (some lines
            may have reached it: readers must accept a torn last line).
    """
    fd = open_append(path)
    try:
        data = memoryview(b"".join(line + b"\n" for line in lines))
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ack(path: Path) -> int:
    """The id an ack file holds; 0 (replay from the start) when missing or unreadable.

    A wrong ack can only replay delivered records (duplicates, never loss), so
    every doubt reads as 0. Other ``OSError`` (permissions, I/O) is raised.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_ACK_MAX_BYTES + 1)
    except FileNotFoundError:
        return 0
    text = raw.strip()
    if len(raw) > _ACK_MAX_BYTES or not text.isdigit():
        return 0
    return int(text)


def write_ack(path: Path, last_id: int) -> None:
    """Replace the ack file atomically (write aside, rename over).

    Raises:
        OSError: the disk refused the write; the old ack is still in place.
    """
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        tmp.write_text(str(last_id))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def try_lock(path: Path) -> int | None:
    """Take the exclusive lock on ``path`` (created if missing) without waiting.

    Returns the descriptor holding it (close it to release), or None when a
    live process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock on ``path``; creates nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the lock if the probe took it
    return False


@contextlib.contextmanager
def held(fd: int) -> Iterator[None]:
    """Hold the exclusive lock on an open descriptor for the block, waiting for it."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (created if missing) for the block, waiting for it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        with held(fd):
            yield
    finally:
        os.close(fd)
