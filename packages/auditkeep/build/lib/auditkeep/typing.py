"""The sink contract: what a destination is given and everything it answers.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable


class SinkStatus(enum.Enum):
    """What became of one batch.

    ``RETRY`` means "try the same batch again later" (the destination is down,
    slow or throttling); ``FAILURE`` means it will never accept this batch as it
    is (for example an HTTP 400), so the pipeline dead-letters it.

    .. versionadded:: 0.1.0
    """

    SUCCESS = "success"
    RETRY = "retry"
    FAILURE = "failure"


@dataclasses.dataclass(frozen=True, slots=True)
class SinkResult:
    """A sink's whole answer about one batch, in the return value.

    ``status`` says what became of it; for a refusal, ``reason`` says why in a
    few words, already scrubbed of credentials (it is logged, and shown by
    ``auditkeep spool redeliver``), and ``retry_after_s`` says how long the
    destination asked to be left alone (HTTP ``Retry-After``): the pipeline
    waits at least that long, at most 300 s, before the next attempt.

    ``SinkResult.SUCCESS``, ``SinkResult.RETRY`` and ``SinkResult.FAILURE`` are
    the answers without detail; ``SinkResult.retry(...)`` and
    ``SinkResult.failure(...)`` add it.

    Raises:
        ValueError: ``retry_after_s`` on an answer other than ``RETRY``, or
            not a finite number of seconds of at least 0.

    .. versionadded:: 0.1.0
    """

    status: SinkStatus
    reason: str | None = None
    retry_after_s: float | None = None

    SUCCESS: ClassVar[SinkResult]
    RETRY: ClassVar[SinkResult]
    FAILURE: ClassVar[SinkResult]

    def __post_init__(self) -> None:
        hint = self.retry_after_s
        if hint is None:
            return
        if self.status is not SinkStatus.RETRY:
            raise ValueError("retry_after_s belongs to a RETRY answer only")
        if not isinstance(hint, int | float) or not math.isfinite(hint) or hint < 0:
            raise ValueError(f"retry_after_s must be finite seconds >= 0, got {hint!r}")

    @classmethod
    def retry(cls, reason: str | None = None, *, after_s: float | None = None) -> SinkResult:
        """Try this batch again later (after at least ``after_s`` when given)."""
        return cls(SinkStatus.RETRY, reason, after_s)

    @classmethod
    def failure(cls, reason: str | None = None) -> SinkResult:
        """The destination will never take this batch as it is: dead-letter it."""
        return cls(SinkStatus.FAILURE, reason)

    @property
    def ok(self) -> bool:
        """The batch was delivered."""
        return self.status is SinkStatus.SUCCESS


SinkResult.SUCCESS = SinkResult(SinkStatus.SUCCESS)
SinkResult.RETRY = SinkResult(SinkStatus.RETRY)
SinkResult.FAILURE = SinkResult(SinkStatus.FAILURE)


@runtime_checkable
class Sink(Protocol):
    """A destination for encoded audit entries.

    Each item of a batch is one entry encoded as a UTF-8 JSON object, without a
    trailing newline, already redacted and free of raw control characters.
    Sinks own encoding for their transport and their I/O; they know nothing of
    queues, retries or the spool, and everything they have to say about a
    batch is in the ``SinkResult`` they return (an exception is treated as
    ``RETRY``). The pipeline reads nothing else from a sink.

    A sink that keeps a batch after ``write_batch`` returns must copy it.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str]
    """Short destination name, used as the ``destination`` metric label."""

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult: ...

    def flush(self, timeout_s: float) -> bool: ...

    def close(self, timeout_s: float) -> None: ...
