"""Protocols and small types shared by the pipeline and its sinks.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable


class SinkResult(enum.Enum):
    """What a sink says about one batch.

    ``RETRY`` means "try the same batch again later" (the destination is down,
    slow or throttling); ``FAILURE`` means it will never accept this batch as it
    is (for example an HTTP 400), so the pipeline dead-letters it.

    .. versionadded:: 0.1.0
    """

    SUCCESS = "success"
    RETRY = "retry"
    FAILURE = "failure"


@runtime_checkable
class Sink(Protocol):
    """A destination for encoded audit entries.

    Each item of a batch is one entry encoded as a UTF-8 JSON object, without a
    trailing newline, already redacted and free of raw control characters.
    Sinks own encoding for their transport and their I/O; they know nothing of
    queues, retries or the spool, and they report trouble by returning a
    ``SinkResult`` (an exception is treated as ``RETRY``).

    A sink that keeps a batch after ``write_batch`` returns must copy it.

    After returning ``RETRY`` a sink may set a ``retry_after_s`` attribute
    (for example from an HTTP ``Retry-After`` header); the pipeline then
    waits at least that long (at most 300 s) before the next attempt.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str]
    """Short destination name, used as the ``destination`` metric label."""

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult: ...

    def flush(self, timeout_s: float) -> bool: ...

    def close(self, timeout_s: float) -> None: ...
