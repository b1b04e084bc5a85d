"""``RedisStore``: the state store in Redis (``REDIS_URL``), through redis-py's asyncio client.

Pending approvals, decisions, locks and results survive an agent restart and
are shared by replicas. Atomic steps use Redis's own: ``GETDEL`` (Redis
6.2+) consumes a pending approval, so of two concurrent approvals exactly one
gets it; ``SET NX PX`` takes a lock or a dedup key; a lock is renewed or
released by a Lua script that first compares the holder's token (a holder
whose lock expired cannot delete its successor's). Expiry runs on Redis's
clock.

Errors (connection refused, timeouts, an error reply) become
``StateStoreError`` with a scrubbed message; the URL's password never reaches
a message (it is registered with the redactor at start, and redis-py's
messages name only host and port).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gitlab_copilot_agent import tracing
from gitlab_copilot_agent.scrub import scrub_then_cut
from gitlab_copilot_agent.state.base import StateStoreError, require_correlation

__all__ = ["RedisStore"]

# KEYS[1] = the lock; ARGV[1] = the caller's token; ARGV[2] = the new value; ARGV[3] = PX.
_UPDATE_IF_HELD: Final = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, value = pcall(cjson.decode, held)
if not ok or value['token'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
_DELETE_IF_HELD: Final = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, value = pcall(cjson.decode, held)
if not ok or value['token'] ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def _decode(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = orjson.loads(raw)
    return dict(value) if isinstance(value, dict) else None


class RedisStore:
    """A ``StateStore`` in Redis.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://…`` or ``unix://…``.
        timeout_s: connect and read timeout of each call.
    """

    kind = "redis"

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        self._update = self._client.register_script(_UPDATE_IF_HELD)
        self._delete = self._client.register_script(_DELETE_IF_HELD)

    def __repr__(self) -> str:
        return "RedisStore()"

    async def _call(self, command: str, operation: Any) -> Any:
        # One span per command when tracing is on (the key is not recorded: it names a task).
        try:
            with tracing.span(
                f"redis {command}",
                {"db.system.name": "redis", "db.operation.name": command},
                client=True,
            ):
                return await operation
        except RedisTimeoutError as exc:
            raise StateStoreError(_message(exc), error_class="timeout") from None
        except (RedisError, OSError) as exc:
            raise StateStoreError(_message(exc)) from None

    async def ping(self) -> None:
        await self._call("PING", self._client.ping())

    async def put(
        self, key: str, value: Mapping[str, Any], *, ttl_s: float, only_if_absent: bool = False
    ) -> bool:
        require_correlation(value)
        done = await self._call(
            "SET",
            self._client.set(key, orjson.dumps(dict(value)), px=_ms(ttl_s), nx=only_if_absent),
        )
        return bool(done)

    async def get(self, key: str) -> dict[str, Any] | None:
        return _decode(await self._call("GET", self._client.get(key)))

    async def take(self, key: str) -> dict[str, Any] | None:
        return _decode(await self._call("GETDEL", self._client.getdel(key)))

    async def delete(self, key: str) -> None:
        await self._call("DEL", self._client.delete(key))

    async def keys(self, prefix: str) -> list[str]:
        async def scan() -> list[str]:
            found = [k async for k in self._client.scan_iter(match=f"{prefix}*", count=500)]
            return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in found)

        result: list[str] = await self._call("SCAN", scan())
        return result

    async def acquire_lock(
        self, key: str, value: Mapping[str, Any], *, ttl_s: float
    ) -> dict[str, Any] | None:
        require_correlation(value)
        taken = await self._call(
            "SET", self._client.set(key, orjson.dumps(dict(value)), px=_ms(ttl_s), nx=True)
        )
        if taken:
            return None
        return await self.get(key) or {}

    async def update_lock(
        self, key: str, token: str, value: Mapping[str, Any], *, ttl_s: float
    ) -> bool:
        require_correlation(value)
        done = await self._call(
            "EVALSHA",
            self._update(keys=[key], args=[token, orjson.dumps(dict(value)), _ms(ttl_s)]),
        )
        return bool(done)

    async def release_lock(self, key: str, token: str) -> bool:
        return bool(await self._call("EVALSHA", self._delete(keys=[key], args=[token])))

    # -- lists: the channel between the agent and a Kubernetes Job's pod (tasks.redis_channel) --

    async def push(self, key: str, value: Mapping[str, Any], *, ttl_s: float) -> None:
        """Append ``value`` to the list ``key`` and (re)set the list's expiry, in one step."""
        require_correlation(value)

        async def both() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, orjson.dumps(dict(value)))
                pipe.pexpire(key, _ms(ttl_s))
                await pipe.execute()

        await self._call("RPUSH", both())

    async def pop(self, key: str, *, wait_s: float) -> dict[str, Any] | None:
        """The first value of the list ``key``, waiting up to ``wait_s`` (``BLPOP``); None
        when nothing came. ``wait_s`` stays below ``REDIS_TIMEOUT_S`` (the socket's)."""
        found = await self._call("BLPOP", self._client.blpop([key], timeout=max(0.01, wait_s)))
        return None if found is None else _decode(found[1])

    async def aclose(self) -> None:
        await self._client.aclose()


def _message(exc: BaseException) -> str:
    return scrub_then_cut(f"redis: {type(exc).__name__}: {exc}", 300)
