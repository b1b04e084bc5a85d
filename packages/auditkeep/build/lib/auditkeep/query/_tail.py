"""Following the live file of the trail across rotations.

The follower keeps the file open and reads what was appended. It notices a
rotation when ``path`` names another file than the one it has open (a rename,
as the file sink and logrotate's ``create`` mode do) and a truncation when the
file shrinks (``copytruncate``). After a rotation the old file stays open for
``rotation_grace_s`` and is still read, because a writer that has not yet
noticed the rotation may append a last batch to it; meanwhile the new file is
read from its start. Nothing is read twice and, within that grace, nothing is
missed.

Only complete lines are returned: a line still being written waits for its
newline. A line that never gets one (the old file's end after the grace) is
returned as it is, so the caller counts it as truncated.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

READ_BYTES: Final = 1 << 20


@dataclass(slots=True)
class _Draining:
    handle: BinaryIO
    carry: bytes
    until: float


def _read_lines(handle: BinaryIO, carry: bytes) -> tuple[list[bytes], bytes]:
    pieces = [carry]
    while chunk := handle.read(READ_BYTES):
        pieces.append(chunk)
    data = b"".join(pieces)
    last = data.rfind(b"\n")
    if last == -1:
        return [], data
    return data[:last].split(b"\n"), data[last + 1 :]


class Follower:
    """Reads the lines appended to a file, across rotations, until stopped.

    Args:
        path: The live file.
        stop: Set it (from any thread) to end ``follow``.
        poll_interval_s: How long to wait for new data when there is none.
        rotation_grace_s: How long a rotated-away file is still read.
        clock: Monotonic seconds; injectable for tests.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stop: threading.Event | None = None,
        poll_interval_s: float = 0.25,
        rotation_grace_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self.path = Path(path)
        self.stop = stop or threading.Event()
        self.poll_interval_s = poll_interval_s
        self.rotation_grace_s = rotation_grace_s
        self._clock = clock
        self._handle: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None
        self._carry = b""
        self._draining: list[_Draining] = []
        self.rotations = 0

    def _open(self) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        stat = os.fstat(handle.fileno())
        self._handle = handle
        self._identity = (stat.st_dev, stat.st_ino)
        self._carry = b""
        return True

    def poll(self) -> list[bytes]:
        """Read every complete line appended since the last call (the whole file at first)."""
        lines: list[bytes] = []
        now = self._clock()
        for old in list(self._draining):
            new, old.carry = _read_lines(old.handle, old.carry)
            lines.extend(new)
            if now >= old.until:
                old.handle.close()
                self._draining.remove(old)
                if old.carry:
                    lines.append(old.carry)
        if self._handle is None and not self._open():
            return lines
        assert self._handle is not None
        new, self._carry = _read_lines(self._handle, self._carry)
        lines.extend(new)
        try:
            stat = os.stat(self.path)
            identity: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            stat = None
            identity = None
        if identity != self._identity:
            self.rotations += 1
            self._draining.append(_Draining(self._handle, self._carry, now + self.rotation_grace_s))
            self._handle = None
            if identity is not None and self._open():
                assert self._handle is not None
                new, self._carry = _read_lines(self._handle, self._carry)
                lines.extend(new)
        elif stat is not None and stat.st_size < self._handle.tell():
            # Truncated in place: start again from the top.
            self._handle.seek(0)
            self._carry = b""
        return lines

    def follow(self, *, duration_s: float | None = None) -> Iterator[bytes]:
        """Yield lines as they are appended until ``stop`` is set or ``duration_s`` passes.

        The first lines are those already in the file; call ``poll`` once before
        to skip or inspect them.
        """
        deadline = None if duration_s is None else self._clock() + duration_s
        try:
            while not self.stop.is_set():
                lines = self.poll()
                yield from lines
                if deadline is not None and self._clock() >= deadline:
                    return
                if not lines:
                    wait = self.poll_interval_s
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - self._clock()))
                    self.stop.wait(wait)
        finally:
            self.close()

    def close(self) -> None:
        """Close every file the follower holds open."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        for old in self._draining:
            old.handle.close()
        self._draining.clear()
