"""The delivery settings, their defaults and their rules, in one frozen object.

``DeliveryOptions`` is the one place a delivery default is written. ``AuditLogger``
takes it (``delivery=``, or the same names as keywords), ``auditkeep.config`` builds
it from ``AUDIT_LOG_*`` (translating only: the checks are here), and the pipeline
reads it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
from typing import Final, TypedDict

from auditkeep.exceptions import InvalidOptionError

_BATCH: Final = 512  # the default batch, unless the buffer is smaller


class Durability(enum.StrEnum):
    """How far an entry has gone when ``emit`` returns.

    ``MEMORY``: in the in-memory buffer (spilled to the spool on overflow, sink
    failure and shutdown). Survives SIGTERM; SIGKILL or a crash loses what is
    still buffered (at most the buffer size plus one batch).

    ``SPOOL``: written to the spool (``write(2)``, no fsync). Survives SIGKILL
    and crashes; a power loss can lose what the kernel had not yet flushed.

    ``FSYNC``: written to the spool and fsynced (group commit). Survives power loss.

    While the spool refuses writes (a full disk) every level holds the entries
    it could not spool in memory (``max_held_events``), as ``MEMORY`` does.

    .. versionadded:: 0.1.0
    """

    MEMORY = "memory"
    SPOOL = "spool"
    FSYNC = "fsync"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOptions:
    """How entries travel from ``emit`` to each destination.

    Raises:
        InvalidOptionError: a value out of range (also a ``ValueError``), naming it.

    .. versionadded:: 0.1.0
    """

    durability: Durability = Durability.MEMORY
    """See ``Durability``; a plain string (``"spool"``) is accepted too."""
    max_buffer_events: int = 1000
    """Entries held in memory per destination before the caller spills to the spool."""
    max_batch_events: int | None = None
    """The largest batch handed to a sink, at most ``max_buffer_events`` (None: the
    smaller of 512 and ``max_buffer_events``; ``batch_events`` is the value in force)."""
    max_held_events: int | None = None
    """Entries kept in memory while the spool refuses writes (None: ``max_buffer_events``);
    beyond it they go to the fallback and are counted as dropped."""
    flush_interval_s: float = 0.2
    """How long a quiet worker waits before delivering what is buffered."""
    retry_initial_s: float = 0.05
    """The first pause after a failed attempt (doubling, with full jitter)."""
    retry_max_s: float = 30.0
    """The longest pause between attempts (a destination's Retry-After may ask more, to 300 s)."""
    fsync_interval_s: float = 1.0
    """How often the spool is fsynced in the background (``spool`` level: the power-loss window)."""
    shutdown_timeout_s: float = 5.0
    """How long ``close()`` (and so exit and SIGTERM) delivers before spooling the rest."""
    spool_max_bytes: int = 1 << 30
    """The spool's size limit per destination; beyond it appends are refused (``full``)."""
    spool_segment_bytes: int = 16 << 20
    """The size at which the spool starts a new segment file."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "durability", parse_durability(self.durability))
        _positive("max_buffer_events", self.max_buffer_events)
        if self.max_batch_events is not None:
            _positive("max_batch_events", self.max_batch_events)
            if self.max_batch_events > self.max_buffer_events:
                raise InvalidOptionError(
                    "max_batch_events",
                    f"{self.max_batch_events} is larger than max_buffer_events"
                    f" ({self.max_buffer_events}); lower it",
                )
        if self.max_held_events is not None:
            _count("max_held_events", self.max_held_events, minimum=0)
        for name in ("flush_interval_s", "retry_initial_s", "fsync_interval_s"):
            _seconds(name, getattr(self, name))
        _seconds("retry_max_s", self.retry_max_s)
        if self.retry_max_s < self.retry_initial_s:
            raise InvalidOptionError("retry_max_s", "must be at least retry_initial_s")
        _seconds("shutdown_timeout_s", self.shutdown_timeout_s, zero=True)
        _positive("spool_segment_bytes", self.spool_segment_bytes)
        _positive("spool_max_bytes", self.spool_max_bytes)

    @property
    def batch_events(self) -> int:
        """``max_batch_events``, resolved."""
        batch = self.max_batch_events
        return min(_BATCH, self.max_buffer_events) if batch is None else batch

    @property
    def held_bound(self) -> int:
        """``max_held_events``, resolved."""
        held = self.max_held_events
        return self.max_buffer_events if held is None else held


def parse_durability(value: object) -> Durability:
    """A ``Durability`` from itself or its name (any letter case, spaces around).

    Raises:
        InvalidOptionError: no such level.
    """
    if isinstance(value, Durability):
        return value
    with contextlib.suppress(ValueError):
        if isinstance(value, str):
            return Durability(value.strip().lower())
    raise InvalidOptionError(
        "durability",
        f"unknown level {value!r}; use one of: " + ", ".join(d.value for d in Durability),
    )


class DeliverySettings(TypedDict, total=False):
    """``DeliveryOptions``'s fields as keyword arguments (``AuditLogger(..., max_buffer_events=)``).

    Names and types only: the defaults are on ``DeliveryOptions``, and
    ``tests/auditkeep/test_options.py`` checks that both list the same fields.
    """

    durability: Durability | str
    max_buffer_events: int
    max_batch_events: int | None
    max_held_events: int | None
    flush_interval_s: float
    retry_initial_s: float
    retry_max_s: float
    fsync_interval_s: float
    shutdown_timeout_s: float
    spool_max_bytes: int
    spool_segment_bytes: int


def resolve(options: DeliveryOptions | None, settings: DeliverySettings) -> DeliveryOptions:
    """``options`` (default ``DEFAULTS``) with the keyword ``settings`` applied over it."""
    base = DEFAULTS if options is None else options
    return dataclasses.replace(base, **settings) if settings else base  # type: ignore[arg-type]


def _count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOptionError(name, f"must be an integer of at least {minimum}, got {value!r}")


def _positive(name: str, value: object) -> None:
    _count(name, value, minimum=1)


def _seconds(name: str, value: object, *, zero: bool = False) -> None:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        least = "0 or more" if zero else "more than 0"
        raise InvalidOptionError(
            name, f"must be a finite number of seconds, {least}; got {value!r}"
        )


DEFAULTS: Final = DeliveryOptions()
"""Every default, for code that needs one value (``DEFAULTS.shutdown_timeout_s``)."""
