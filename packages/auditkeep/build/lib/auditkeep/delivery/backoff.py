"""When to try again after a failure: capped exponential backoff.

Two are used per destination: one for the sink (full jitter, so that many
processes do not retry in step, and the destination's own Retry-After), one
for the spool while it refuses writes (no jitter, capped at 1 s: a refused
local write is cheap to try again, and recovery should be prompt).
"""

from __future__ import annotations

import random
import time
from typing import Final

MAX_HINT_S: Final = 300.0
"""The longest pause a destination may ask for (a bad header cannot stall delivery for hours)."""


class Backoff:
    """The next retry time after consecutive failures; reset by a success."""

    __slots__ = ("_current", "hinted", "initial_s", "jitter", "max_s", "retry_at")

    def __init__(self, initial_s: float, max_s: float, *, jitter: bool) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self._current = initial_s
        self.retry_at = 0.0
        """``time.monotonic()`` before which no attempt is due (0: due now)."""
        self.hinted = False
        """The current pause is the destination's own (a ``Retry-After``)."""

    def failed(self, hint_s: float | None = None) -> float:
        """Schedule the next attempt after one more failure; return the pause chosen."""
        if self.jitter:
            delay = max(random.uniform(0, self._current), self.initial_s / 2)
        else:
            delay = self._current
        self.hinted = hint_s is not None and hint_s > 0
        if hint_s is not None and hint_s > 0:
            delay = max(delay, min(hint_s, MAX_HINT_S))
        self.retry_at = time.monotonic() + delay
        self._current = min(self.max_s, self._current * 2)
        return delay

    def succeeded(self) -> None:
        self.retry_at, self._current, self.hinted = 0.0, self.initial_s, False

    def due(self, now: float) -> bool:
        return now >= self.retry_at
