"""A sink that keeps entries in memory, for tests and for embedding."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from auditkeep.typing import SinkResult


class InMemorySink:
    """Collects every delivered line; thread-safe.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[bytes] = []
        self.closed = False

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        with self._lock:
            self._lines.extend(lines)
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        self.closed = True

    @property
    def lines(self) -> list[bytes]:
        with self._lock:
            return list(self._lines)

    def entries(self) -> list[dict[str, Any]]:
        """Every delivered entry, decoded, in delivery order."""
        return [orjson.loads(line) for line in self.lines]
