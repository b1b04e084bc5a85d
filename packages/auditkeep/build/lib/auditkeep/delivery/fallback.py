"""The fallback: the operator's view of what a failing destination is missing.

The rule (docs/delivery.md, "The fallback"): from a failed attempt until the
next successful one the destination is *failing*, and every entry waiting for
it is copied to the fallback once per process; a dead-lettered entry is copied
once; an entry kept nowhere else is written there and counted as dropped.
Nothing else is copied.

"Once" needs a ledger for the spool, whose records are read again and again
until acknowledged: ids up to ``cursor`` are in the fallback or delivered, and
``_ranges`` lists the ids above it that are in the fallback too (records moved
into the spool after they were copied from memory). The buffer and the memory
hold keep their own count (``MemoryHold.copied``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from auditkeep.delivery._report import Reporter
from auditkeep.delivery.spool import Spool
from auditkeep.metrics import AuditMetrics
from auditkeep.typing import Sink, SinkResult


def default_fallback(sinks: Sequence[Sink]) -> Sink:
    """stdout, or stderr when a destination is stdout itself."""
    from auditkeep.sinks.stdout import StderrSink, StdoutSink

    return StderrSink() if any(isinstance(s, StdoutSink) for s in sinks) else StdoutSink()


class Fallback:
    """One destination's fallback sink and its copied-once ledger of spool records."""

    def __init__(
        self,
        sink: Sink,
        destination: str,
        *,
        metrics: AuditMetrics,
        reporter: Reporter,
        cursor: int,
    ) -> None:
        self.sink = sink
        self.cursor = cursor
        """Spool ids up to here are in the fallback or delivered."""
        self.copies = 0
        """Calls that copied something (counts as progress of a worker pass)."""
        self._ranges: list[tuple[int, int]] = []  # sorted, disjoint, all above cursor
        self._writes = metrics.fallback_writes.labels(destination)
        self._reporter = reporter

    def __repr__(self) -> str:
        return f"Fallback({self.sink!r})"

    def copy(self, lines: Sequence[bytes]) -> None:
        """Write ``lines`` to the fallback sink, counted; never raises."""
        if not lines:
            return
        self.copies += 1
        try:
            result = self.sink.write_batch(lines)
        except Exception:  # noqa: BLE001 - the fallback failing must not stop delivery
            result = SinkResult.RETRY
        if isinstance(result, SinkResult) and result.ok:
            self._writes.inc(len(lines))
        else:
            self._reporter.report(
                "fallback", f"the fallback {self.sink!r} refused {len(lines)} entries"
            )

    def copy_spool(
        self, spool: Spool, destination: str, batch: int, stop: Callable[[], bool]
    ) -> None:
        """Copy every spool record of ``destination`` not yet in the fallback, once."""
        cursor = max(self.cursor, spool.acknowledged(destination))
        while not stop():
            records = spool.read_after(destination, cursor, batch)
            if not records:
                break
            self.copy([r.payload for r in records if not self._in_ranges(r.id)])
            cursor = records[-1].id
        self.cursor = cursor
        if self._ranges and self._ranges[0][0] <= cursor:
            self._ranges = [(max(lo, cursor + 1), hi) for lo, hi in self._ranges if hi > cursor]

    def mark(self, first: int, last: int) -> None:
        """Spool ids ``first``..``last`` hold entries already copied (moved in from memory)."""
        ranges = self._ranges
        ranges.insert(bisect.bisect_left(ranges, (first, last)), (first, last))
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self._ranges = merged

    def is_copied(self, record_id: int) -> bool:
        return record_id <= self.cursor or self._in_ranges(record_id)

    def _in_ranges(self, record_id: int) -> bool:
        index = bisect.bisect_right(self._ranges, (record_id, float("inf"))) - 1
        return index >= 0 and self._ranges[index][0] <= record_id <= self._ranges[index][1]
