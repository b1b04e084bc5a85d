"""Time-ordered unique identifiers (UUIDv7, RFC 9562).

``new_event_id`` is on the emit hot path, so it avoids ``uuid.UUID`` and
``os.urandom`` per call. Layout: 48-bit Unix milliseconds, version 7, then 74
bits that hold a per-process random base plus a per-process counter (RFC 9562
section 6.2, "monotonic random"). Within a process ids are unique and
increase; across processes the random base (re-drawn after ``fork``) makes a
collision as unlikely as for ``uuid4``.
"""

from __future__ import annotations

import itertools
import os
import time

_MASK74 = (1 << 74) - 1
_state: tuple[int, itertools.count[int]] = (0, itertools.count())


def _reseed() -> None:
    global _state
    _state = (int.from_bytes(os.urandom(10), "big") & _MASK74, itertools.count())


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_event_id(now_ns: int | None = None) -> str:
    """Return a new UUIDv7 string, unique and time-ordered within the process."""
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    base, counter = _state
    rand = (base + next(counter)) & _MASK74
    rand_a = rand >> 62  # top 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_correlation_id() -> str:
    """Return a new correlation id (a UUIDv7, so scopes sort by start time)."""
    return new_event_id()
