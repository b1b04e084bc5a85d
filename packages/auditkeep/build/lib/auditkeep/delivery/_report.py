"""What delivery tells the operator: ``logging`` records under ``auditkeep.delivery``.

No handler is added here (nor a ``NullHandler``): an application that configured
logging routes, formats or silences these records like any other
(``logging.getLogger("auditkeep").setLevel(logging.ERROR)``), and one that
configured nothing still sees every warning on stderr, through Python's
``logging.lastResort`` handler. The ``auditkeep:`` prefix keeps such a bare line
recognisable in ``kubectl logs``.
"""

from __future__ import annotations

import logging
import time
from typing import Final

log: Final = logging.getLogger("auditkeep.delivery")

REPORT_EVERY_S: Final = 10.0
"""The same kind of trouble is logged at most this often; the rest is tallied."""


class Reporter:
    """Warnings for one destination, repeated ones rate-limited with a tally."""

    def __init__(self) -> None:
        self._reported: dict[str, tuple[float, int]] = {}

    @staticmethod
    def warn(message: str) -> None:
        """Log ``message`` now (a change of state: each is worth a line)."""
        log.warning("auditkeep: %s", message)

    def report(self, key: str, message: str, count: int = 1) -> None:
        """Log ``message`` unless ``key`` was logged in the last ``REPORT_EVERY_S``."""
        now = time.monotonic()
        last, untold = self._reported.get(key, (-REPORT_EVERY_S, 0))
        if now - last < REPORT_EVERY_S:
            self._reported[key] = (last, untold + count)
            return
        self._reported[key] = (now, 0)
        more = f" (and {untold} more since the last report)" if untold else ""
        log.warning("auditkeep: %s%s", message, more)
