"""A progress line on stderr while a long scan runs, for a person watching a terminal.

Nothing is drawn for a scan that ends within ``DELAY_S`` (most queries take
well under a second), and nothing at all unless stderr is a terminal: a pipe
or a log file never receives a carriage return. The line is redrawn at most
every ``INTERVAL_S`` and erased when the scan ends, so the output that follows
starts on a clean line.

Hand-written (a dozen lines) rather than ``rich.progress``, which would add an
optional dependency that the command must run without anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TextIO

DELAY_S: Final = 0.5
INTERVAL_S: Final = 0.2
_ERASE: Final = "\r\x1b[K"


class Progress:
    """Called with (bytes scanned, bytes to scan) as a scan goes; draws on ``out``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        out: TextIO,
        *,
        delay_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._clock = clock
        self._start = clock()
        # Read at call time, so that tests can shorten the module's delay.
        self._delay_s = DELAY_S if delay_s is None else delay_s
        self._drawn_at: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if now - self._start < self._delay_s:
            return
        if self._drawn_at is not None and now - self._drawn_at < INTERVAL_S and done < total:
            return
        share = 100 * done // total if total else 100
        self._out.write(f"{_ERASE}auditkeep: scanned {_mb(done)} of {_mb(total)} MB ({share}%)")
        self._out.flush()
        self._drawn_at = now

    def close(self) -> None:
        """Erase the line, if one was drawn."""
        if self._drawn_at is not None:
            self._out.write(_ERASE)
            self._out.flush()
            self._drawn_at = None


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"
