"""Send dead letters again once the destination has been fixed (``auditkeep spool redeliver``).

Safety with a live writer: the pipeline of a running process may dead-letter more
entries at any moment, appending to the same file. So the file is first renamed to
``<destination>.jsonl.inflight`` (an atomic step; the pipeline's next append creates a
fresh file), and only the renamed file is read. Entries the destination still refuses,
and what is left unsent when it becomes unavailable, are appended back to the live file
(and fsynced) before the ``.inflight`` file is removed, so a crash at any point loses
nothing; at worst an entry is sent, or kept, twice (at-least-once). A ``.inflight``
file left by an interrupted run is taken up first. Two redeliveries of one destination
exclude each other with a lock file.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from auditkeep.delivery import dead_letters
from auditkeep.delivery._files import locked
from auditkeep.delivery.options import DEFAULTS
from auditkeep.typing import Sink, SinkResult, SinkStatus

__all__ = ["Redelivery", "redeliver_dead_letters"]


@dataclass(frozen=True, slots=True)
class Redelivery:
    """What one redelivery did, and why entries are left.

    .. versionadded:: 0.1.0
    """

    destination: str
    delivered: int
    """Entries the destination took."""
    remaining: int
    """Entries still dead-lettered afterwards."""
    refused: str | None = None
    """The destination's reason for the last batch it refused for good."""
    unavailable: str | None = None
    """Why the run stopped early: the destination asked to try later, or could not be reached."""

    @property
    def why(self) -> str | None:
        """Why entries remain, in a few words (None when none remain or no reason is known)."""
        if not self.remaining:
            return None
        parts = []
        if self.refused is not None:
            parts.append(f"refused: {self.refused}")
        if self.unavailable is not None:
            parts.append(f"unavailable, try again later: {self.unavailable}")
        return "; ".join(parts) or None


def redeliver_dead_letters(
    spool_base: str | os.PathLike[str],
    sink: Sink,
    *,
    max_batch_events: int = DEFAULTS.batch_events,
) -> Redelivery:
    """Send the dead letters of ``sink.name`` through ``sink``.

    Each batch gets one attempt. Delivered entries leave the file; refused ones
    (``FAILURE``) stay in it; at the first ``RETRY`` the rest of the file stays as it is.
    The file is removed when everything was delivered. The caller owns ``sink`` (it is
    not closed here). Creates nothing when there are no dead letters.

    Raises:
        ValueError: ``max_batch_events`` is not positive.
        OSError: the dead-letter directory cannot be read or written.

    .. versionadded:: 0.1.0
    """
    if max_batch_events <= 0:
        raise ValueError("max_batch_events must be positive")
    live = dead_letters.dead_letter_path(spool_base, sink.name)
    if not live.parent.is_dir():
        return Redelivery(sink.name, 0, 0)
    inflight = live.with_name(live.name + ".inflight")
    run = _Run(sink, live, max_batch_events)
    with locked(live.with_name(live.name + ".lock")):
        # A leftover from an interrupted run first, then the live file (once: what we put
        # back into it during this run is not taken up again).
        for take_live in (False, True):
            if take_live:
                try:
                    os.rename(live, inflight)
                except FileNotFoundError:
                    break
            elif not inflight.exists():
                continue
            run.send(inflight)
            if run.unavailable is not None:
                break
        remaining = dead_letters.count_entries(live)
    return Redelivery(sink.name, run.delivered, remaining, run.refused, run.unavailable)


class _Run:
    def __init__(self, sink: Sink, live: Path, max_batch_events: int) -> None:
        self.sink, self.live, self.batch = sink, live, max_batch_events
        self.delivered = 0
        self.refused: str | None = None
        self.unavailable: str | None = None

    def send(self, inflight: Path) -> None:
        lines = [line for line in inflight.read_bytes().split(b"\n") if line.strip()]
        keep: list[bytes] = []
        for start in range(0, len(lines), self.batch):
            batch = lines[start : start + self.batch]
            if self.unavailable is not None:
                keep += batch
                continue
            result = self._attempt(batch)
            if result.status is SinkStatus.SUCCESS:
                self.delivered += len(batch)
                continue
            keep += batch
            reason = result.reason or "no reason given"
            if result.status is SinkStatus.FAILURE:
                self.refused = reason
            else:
                self.unavailable = reason
        if keep:
            dead_letters.keep(self.live, keep)
        inflight.unlink()

    def _attempt(self, batch: list[bytes]) -> SinkResult:
        try:
            result = self.sink.write_batch(batch)
        except Exception as exc:  # noqa: BLE001 - treated like the pipeline does: try later
            return SinkResult.retry(f"{type(exc).__name__} in {self.sink.name}")
        if not isinstance(result, SinkResult):
            return SinkResult.retry(f"{self.sink.name} answered {type(result).__name__}")
        return result
