"""The replay guard: a delivery is refused when any of its keys was seen within the window.

Keys (see ``replay_keys``): GitLab's delivery id (``webhook-id`` /
``Idempotency-Key``, the same value), its ``X-Gitlab-Event-UUID``, and a
digest of the exact body. Any one seen again means the same delivery, so a
replay cannot get through by stripping or changing one header, and a signed
delivery replayed on the token path (signature headers stripped) is caught
by the keys its signed sighting recorded.

Bounded in bytes: each key is stored as a 64-bit keyed digest (whatever the
id's length) with its time, at most ``max_keys`` of them; the oldest go first.
The measured cost is about 150 bytes per key (``test_replay_guard_bytes_are_bounded``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from typing import Final

BYTES_PER_KEY: Final = 200
"""Upper bound on what one remembered key costs (dict slot, node, int, float), measured."""

_DELIVERY, _EVENT, _BODY = b"d", b"e", b"b"


def replay_keys(
    *, delivery_ids: tuple[str | None, ...], event_uuid: str | None, body: bytes
) -> list[bytes]:
    """The keys one delivery is known by (namespaced, so an id never matches a digest)."""
    keys = [_DELIVERY + d.encode() for d in dict.fromkeys(delivery_ids) if d]
    if event_uuid:
        keys.append(_EVENT + event_uuid.encode())
    keys.append(_BODY + hashlib.blake2b(body, digest_size=16).digest())
    return keys


class ReplayGuard:
    """Remembers delivery keys for ``window_s`` and refuses a delivery with a key seen before.

    Only authenticated deliveries are recorded (the route's decision), so a
    forged delivery cannot poison the guard against the real one, nor push
    real keys out early.
    """

    def __init__(self, window_s: float, max_keys: int = 100_000) -> None:
        if window_s <= 0 or max_keys <= 0:
            raise ValueError("window_s and max_keys must be positive")
        self.window_s = window_s
        self.max_keys = max_keys
        self._seen: OrderedDict[int, float] = OrderedDict()
        self._lock = threading.Lock()
        # Keyed, so nobody can pick ids that collide with a given delivery's.
        self._salt = os.urandom(16)

    def __len__(self) -> int:
        return len(self._seen)

    def _digest(self, key: str | bytes) -> int:
        data = key.encode() if isinstance(key, str) else key
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._salt).digest())

    def first_sighting(self, *keys: str | bytes, now: float | None = None) -> bool:
        """Record ``keys``; False (and nothing recorded) if any was seen within the window."""
        current = time.monotonic() if now is None else now
        digests = [self._digest(k) for k in keys]
        with self._lock:
            seen = self._seen
            while seen:
                _oldest, seen_at = next(iter(seen.items()))
                if current - seen_at <= self.window_s and len(seen) + len(digests) <= self.max_keys:
                    break
                seen.popitem(last=False)
            if any(d in seen for d in digests):
                return False
            for d in digests:
                seen[d] = current
            return True
