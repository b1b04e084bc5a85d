"""``MemoryStore``: the state store in this process's memory, when ``REDIS_URL`` is not set.

Single process only: another agent replica (or this one after a restart)
does not see its pending approvals, locks or results; the agent says so at
start. Values are kept as encoded JSON (what is stored is what Redis would
hold), with expiry on the monotonic clock. One lock makes every operation
atomic, ``take`` included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson

from gitlab_copilot_agent.state.base import require_correlation

__all__ = ["MemoryStore"]


class MemoryStore:
    """A ``StateStore`` in a dict."""

    kind = "memory"

    def __init__(self) -> None:
        self._items: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> bytes | None:
        found = self._items.get(key)
        if found is None:
            return None
        if found[1] <= now:
            del self._items[key]
            return None
        return found[0]

    async def ping(self) -> None:
        return None

    async def put(
        self, key: str, value: Mapping[str, Any], *, ttl_s: float, only_if_absent: bool = False
    ) -> bool:
        require_correlation(value)
        encoded = orjson.dumps(dict(value))
        now = time.monotonic()
        with self._lock:
            if only_if_absent and self._live(key, now) is not None:
                return False
            self._items[key] = (encoded, now + ttl_s)
        return True

    async def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            raw = self._live(key, time.monotonic())
        return None if raw is None else dict(orjson.loads(raw))

    async def take(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            raw = self._live(key, time.monotonic())
            self._items.pop(key, None)
        return None if raw is None else dict(orjson.loads(raw))

    async def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    async def keys(self, prefix: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return sorted(
                k for k in list(self._items) if k.startswith(prefix) and self._live(k, now)
            )

    async def acquire_lock(
        self, key: str, value: Mapping[str, Any], *, ttl_s: float
    ) -> dict[str, Any] | None:
        require_correlation(value)
        now = time.monotonic()
        with self._lock:
            held = self._live(key, now)
            if held is not None:
                return dict(orjson.loads(held))
            self._items[key] = (orjson.dumps(dict(value)), now + ttl_s)
        return None

    async def update_lock(
        self, key: str, token: str, value: Mapping[str, Any], *, ttl_s: float
    ) -> bool:
        require_correlation(value)
        now = time.monotonic()
        with self._lock:
            held = self._live(key, now)
            if held is None or orjson.loads(held).get("token") != token:
                return False
            self._items[key] = (orjson.dumps(dict(value)), now + ttl_s)
        return True

    async def release_lock(self, key: str, token: str) -> bool:
        with self._lock:
            held = self._live(key, time.monotonic())
            if held is None or orjson.loads(held).get("token") != token:
                return False
            del self._items[key]
        return True

    async def aclose(self) -> None:
        return None

    def dump(self) -> dict[str, dict[str, Any]]:
        """Every live value (tests, the no-secret sweep)."""
        now = time.monotonic()
        with self._lock:
            live = {k: self._live(k, now) for k in list(self._items)}
        return {k: dict(orjson.loads(v)) for k, v in live.items() if v is not None}
