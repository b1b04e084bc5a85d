"""While the spool refuses writes (a full disk, its byte limit): the memory hold.

Entries the spool refused are held in memory, up to a bound, and the worker
tries the spool again with backoff (never a busy loop) or gives them straight
to the destination. Only entries beyond the bound, or still held when the
pipeline closes, are given up (written to the fallback, counted as dropped).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import deque
from collections.abc import Sequence

from auditkeep.delivery._report import Reporter
from auditkeep.delivery.backoff import Backoff
from auditkeep.exceptions import SpoolWriteError
from auditkeep.metrics import AuditMetrics

SPOOL_RETRY_MAX_S = 1.0
"""The longest pause between tries of a refusing spool: a local write is cheap to try."""


class MemoryHold:
    """Entries neither the spool nor the sink has taken yet, oldest first.

    Callers append on the right and only the worker takes from the left, so
    "the oldest ``copied`` entries are in the fallback" stays true. Entries the
    worker took out (``out``) and has not yet placed still count against the bound.
    """

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.entries: deque[bytes] = deque()
        self.copied = 0
        self.out = 0

    def __len__(self) -> int:
        return len(self.entries)

    def keep(self, lines: Sequence[bytes], *, closed: bool) -> Sequence[bytes]:
        """Hold what fits under the bound; return the rest (to be given up)."""
        room = 0 if closed else self.bound - len(self.entries) - self.out
        kept = max(0, min(room, len(lines)))
        if kept:
            self.entries.extend(lines[:kept])
        return lines[kept:]

    def take(self, n: int) -> tuple[list[bytes], int]:
        """Take up to ``n`` of the oldest entries; also how many of them are in the fallback."""
        lines: list[bytes] = []
        with contextlib.suppress(IndexError):
            for _ in range(min(n, len(self.entries))):
                lines.append(self.entries.popleft())
        copied = min(len(lines), self.copied)
        self.copied -= copied
        self.out = len(lines)
        return lines, copied

    def give_back(self, lines: Sequence[bytes], copied: int) -> None:
        """Put taken entries back at the front. Either all of them are copied or no
        held entry is, so the copied ones still form the oldest run."""
        self.entries.extendleft(reversed(lines))
        self.copied += copied
        self.out = 0

    def placed(self) -> None:
        """The entries taken last are in the spool, the sink or the fallback now."""
        self.out = 0

    def uncopied(self) -> list[bytes]:
        """The held entries not yet in the fallback, now counted as copied."""
        if self.copied >= len(self.entries):
            return []
        start = self.copied
        held = self.entries.copy()  # callers may append meanwhile; a copy is one C call
        self.copied = len(held)
        return list(itertools.islice(held, start, None))


class SpoolRefusal:
    """Whether the spool refuses writes now, why, and when to try it again."""

    def __init__(
        self,
        destination: str,
        *,
        initial_s: float,
        held_bound: int,
        metrics: AuditMetrics,
        reporter: Reporter,
    ) -> None:
        self.destination = destination
        self.reason: str | None = None
        """Why the spool refuses writes (``full`` or an errno name); None while it takes them."""
        self.backoff = Backoff(initial_s, SPOOL_RETRY_MAX_S, jitter=False)
        self._since = 0.0
        self._held_bound = held_bound
        self._errors = metrics.spool_write_errors
        self._reporter = reporter

    def refused(self, exc: BaseException) -> None:
        """Count a refused spool write, say so once, and schedule the next try."""
        reason = exc.reason if isinstance(exc, SpoolWriteError) else type(exc).__name__
        self._errors.labels(self.destination, reason).inc()
        if self.reason is None:
            self.reason, self._since = reason, time.monotonic()
            self.backoff.succeeded()  # a new episode starts from the first pause
            self._reporter.warn(
                f"the spool for {self.destination} refuses writes ({exc}); holding up"
                f" to {self._held_bound} entries in memory and retrying"
            )
        self.backoff.failed()

    def accepted(self) -> None:
        """The spool took a write: end the episode (and say so, if there was one)."""
        if self.reason is not None:
            since = time.monotonic() - self._since
            self._reporter.warn(
                f"the spool for {self.destination} takes writes again (refused for {since:.1f} s)"
            )
        self.reason = None
        self.backoff.succeeded()
