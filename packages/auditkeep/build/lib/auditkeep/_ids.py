"""Time-ordered unique identifiers (UUIDv7, RFC 9562).

``new_event_id_and_timestamp`` is on the emit hot path, so it avoids ``uuid.UUID``, big
integers and ``os.urandom`` per call. Layout::

    unix_ts_ms (48) | ver=7 | counter (26 bits, across rand_a and rand_b) | var=0b10 | node (48)

The 26-bit counter starts at a random value below 2**25 and increases per id
(on overflow it carries into the timestamp, so ids never go backwards); ``node`` is
48 random bits drawn per process (and again after ``fork``), like the node of
a UUIDv1 without the MAC address. Within a process ids are unique and
increase within a millisecond; across processes they collide only if two
processes draw the same node (a 1 in 2**48 chance per pair).
"""

from __future__ import annotations

import itertools
import os
import time

_COUNTER_MASK = (1 << 26) - 1
_state: tuple[str, itertools.count[int]] = ("", itertools.count())


def _reseed() -> None:
    global _state
    node = os.urandom(6).hex()
    start = int.from_bytes(os.urandom(4), "big") & (_COUNTER_MASK >> 1)
    _state = (node, itertools.count(start))


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_event_id(now_ns: int | None = None) -> str:
    """Return a new UUIDv7 string, unique and time-ordered within the process."""
    return new_event_id_and_timestamp(now_ns)[0]


def _carried(ms: int, node: str, c: int) -> str:
    h = f"{ms & 0xFFFFFFFFFFFF:012x}"
    return f"{h[:8]}-{h[8:]}-7{c >> 14:03x}-{0x8000 | (c & 0x3FFF):04x}-{node}"


_stamp_cache: tuple[int, str, str] = (-1, "", "")


def new_event_id_and_timestamp(now_ns: int | None = None) -> tuple[str, str]:
    """A new event id and the ISO 8601 UTC timestamp (microseconds) of the same instant.

    One clock read for both, and the per-millisecond parts of both strings are
    built once per millisecond (the emit hot path calls this).
    """
    global _stamp_cache
    if now_ns is None:
        now_ns = time.time_ns()
    ms, ns_rest = divmod(now_ns, 1_000_000)
    cached_ms, id_prefix, ts_prefix = _stamp_cache
    if cached_ms != ms:
        h = f"{ms & 0xFFFFFFFFFFFF:012x}"
        id_prefix = f"{h[:8]}-{h[8:]}-7"
        seconds, millis = divmod(ms, 1000)
        ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}"
        _stamp_cache = (ms, id_prefix, ts_prefix)
    node, counter = _state
    n = next(counter)
    timestamp = f"{ts_prefix}{ns_rest // 1000:03d}Z"
    if n > _COUNTER_MASK:
        return _carried(ms + (n >> 26), node, n & _COUNTER_MASK), timestamp
    return f"{id_prefix}{n >> 14:03x}-{0x8000 | (n & 0x3FFF):04x}-{node}", timestamp


def new_correlation_id() -> str:
    """Return a new correlation id (a UUIDv7, so scopes sort by start time)."""
    return new_event_id()
