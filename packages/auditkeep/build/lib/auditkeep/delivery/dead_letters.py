"""Dead letters: the entries a destination refused for good, kept for ``spool redeliver``.

A batch the destination will never take as it is (``SinkResult.failure``: an
HTTP 400, 401, 403 or 413, a datagram too large) is appended to
``<spool base>/dead-letters/<destination>.jsonl``, one entry per line, and
fsynced. ``auditkeep spool redeliver`` sends the file again once the cause is
fixed (``redeliver.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from auditkeep.delivery._files import DEAD_LETTERS, append_durably
from auditkeep.delivery._report import Reporter
from auditkeep.metrics import AuditMetrics


def dead_letter_path(spool_base: str | os.PathLike[str], destination: str) -> Path:
    """Where the entries ``destination`` refused for good are kept.

    .. versionadded:: 0.1.0
    """
    return Path(spool_base) / DEAD_LETTERS / f"{destination}.jsonl"


def dead_letter_dir(spool_base: str | os.PathLike[str]) -> Path:
    """The folder holding every destination's dead letters."""
    return Path(spool_base) / DEAD_LETTERS


def count_entries(path: Path) -> int:
    """How many entries a dead-letter file holds (0 when there is none)."""
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def keep(path: Path, lines: Sequence[bytes]) -> None:
    """Append ``lines`` to the dead-letter file ``path`` (creating its folder), durably.

    Raises:
        OSError: the folder or the file could not be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    append_durably(path, lines)


class DeadLetters:
    """One destination's dead-letter file, as the pipeline writes it."""

    def __init__(
        self, path: Path, destination: str, *, metrics: AuditMetrics, reporter: Reporter
    ) -> None:
        self.path = path
        self.destination = destination
        self._count = metrics.dead_letters.labels(destination)
        self._reporter = reporter

    def __repr__(self) -> str:
        return f"DeadLetters({str(self.path)!r})"

    def keep(self, lines: Sequence[bytes], reason: str | None) -> None:
        """Count, say why, and keep a batch the destination refused for good.

        Raises:
            OSError: the file could not be written (the caller gives the batch up).
        """
        self._count.inc(len(lines))
        self._reporter.warn(
            f"{self.destination} permanently refused {len(lines)} entries"
            + (f" ({reason})" if reason else "")
            + f"; kept in {self.path.parent} for `auditkeep spool redeliver`"
        )
        keep(self.path, lines)
