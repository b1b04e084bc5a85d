"""What a delivery worker does on the side, at the end of each pass.

* fsync the spool every ``fsync_interval_s`` (the ``spool`` level's power-loss
  window), which also writes an ack the disk refused before;
* every ``ADOPT_EVERY_S``, move into this spool what dead processes left in
  other slots (``slots.adopt_orphans``);
* count corrupt records the spool's readers met.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Final

from auditkeep.delivery.slots import adopt_orphans
from auditkeep.delivery.spool import Spool
from auditkeep.metrics import AuditMetrics

ADOPT_EVERY_S: Final = 30.0


class Housekeeping:
    """One destination's periodic spool chores; ``run`` is cheap when nothing is due."""

    def __init__(
        self,
        spool: Spool,
        metrics: AuditMetrics,
        *,
        fsync_interval_s: float,
        orphan_base: Path | None,
    ) -> None:
        self.spool = spool
        self.fsync_interval_s = fsync_interval_s
        self.orphan_base = orphan_base
        self._corrupt = metrics.spool_corrupt
        self._corrupt_seen = spool.corrupt_records
        self._last_sync = time.monotonic()
        self._last_adopt = 0.0

    def run(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            self._last_sync = now
            with contextlib.suppress(OSError):
                self.spool.sync()
        if self.orphan_base is not None and now - self._last_adopt >= ADOPT_EVERY_S:
            self._last_adopt = now
            with contextlib.suppress(Exception):
                adopt_orphans(self.orphan_base, self.spool)
        corrupt = self.spool.corrupt_records
        if corrupt > self._corrupt_seen:
            self._corrupt.inc(corrupt - self._corrupt_seen)
            self._corrupt_seen = corrupt
