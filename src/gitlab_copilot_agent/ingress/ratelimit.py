"""A token bucket per source for requests the ingress refuses, with its state bounded.

Each request takes a token from its source's bucket before any work (body,
HMAC, JSON); an accepted delivery gives it back. So only refused requests
drain a bucket, concurrent requests cannot overshoot it, and a source with an
empty bucket is answered 429 at once: its requests then cost no body read, no
authentication and a tiny audit entry each. Buckets refill at ``per_s``
tokens a second up to ``burst``.

Bounded: at most ``max_sources`` buckets, least recently used evicted first;
a bucket that is full again is dropped, so well-behaved sources hold no
state. About 300 bytes a bucket (``test_limiter_state_is_bounded``).
Hand-written (about 60 lines): the bucket must be refunded when a delivery
is accepted and the in-process state bounded in sources; ``limits`` (behind
slowapi) only counts hits per window, with no refund, and its memory store
expires keys by time with no bound on their number.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

BYTES_PER_SOURCE: Final = 400
"""Upper bound on what one bucket costs (key, two floats, dict slot and node), measured."""


class SourceRateLimiter:
    """Per-source token buckets; ``burst=0`` turns the limiter off."""

    def __init__(
        self,
        *,
        burst: int,
        per_s: float,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 0 or per_s <= 0 or max_sources <= 0:
            raise ValueError("burst must be >= 0, per_s and max_sources > 0")
        self.burst = burst
        self.per_s = per_s
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.burst > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, source: str, now: float) -> float:
        found = self._buckets.get(source)
        if found is None:
            return float(self.burst)
        tokens, at = found
        return min(float(self.burst), tokens + (now - at) * self.per_s)

    def acquire(self, source: str) -> bool:
        """Take one token for a request from ``source``; False when its bucket is empty."""
        if not self.enabled:
            return True
        with self._lock:
            now = self._clock()
            tokens = self._level(source, now)
            if tokens < 1.0:
                self._store(source, tokens, now)
                return False
            self._store(source, tokens - 1.0, now)
            return True

    def release(self, source: str) -> None:
        """Give the token back: the request was accepted."""
        if not self.enabled:
            return
        with self._lock:
            now = self._clock()
            self._store(source, min(float(self.burst), self._level(source, now) + 1.0), now)

    def retry_after_s(self, source: str) -> int:
        """Whole seconds until ``source`` has a token again (at least 1)."""
        with self._lock:
            missing = 1.0 - self._level(source, self._clock())
        return max(1, math.ceil(missing / self.per_s))

    def _store(self, source: str, tokens: float, now: float) -> None:
        buckets = self._buckets
        if tokens >= self.burst:
            buckets.pop(source, None)  # full: indistinguishable from never seen
            return
        buckets[source] = (tokens, now)
        buckets.move_to_end(source)
        while len(buckets) > self.max_sources:
            buckets.popitem(last=False)
