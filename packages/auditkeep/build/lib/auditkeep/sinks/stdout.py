"""JSON lines to a file descriptor (standard output by default)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import ClassVar

from auditkeep.typing import SinkResult


class StdoutSink:
    """Writes each batch as JSON lines to a file descriptor with one ``write`` loop.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "stdout"

    def __init__(self, fd: int | None = None) -> None:
        self._fd = sys.stdout.fileno() if fd is None else fd

    def __repr__(self) -> str:
        return f"StdoutSink(fd={self._fd})"

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if not lines:
            return SinkResult.SUCCESS
        data = memoryview(b"\n".join(lines) + b"\n")
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            # A pipe that closed or filled a disk: retry later from the spool.
            return SinkResult.retry(f"cannot write to {self!r}: {exc.strerror or exc}")
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        # The descriptor belongs to the process, not to the sink.
        return None


class StderrSink(StdoutSink):
    """The fallback used when the primary destination is standard output itself.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "stderr"

    def __init__(self) -> None:
        super().__init__(sys.stderr.fileno())
