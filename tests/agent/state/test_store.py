"""The state store, both kinds (Redis through a real redis-server, and memory): values carry
their correlation id, expiry, the atomic take, token-guarded locks, and Redis down."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from redisproc import RedisServer, free_port

from gitlab_copilot_agent.settings import RedisSettings
from gitlab_copilot_agent.state import StateStoreError, build_store
from gitlab_copilot_agent.state.base import StateStore
from gitlab_copilot_agent.state.memory import MemoryStore
from gitlab_copilot_agent.state.redis_store import RedisStore

CID = "01a22038-3e19-7ee7-9410-213bd4b57056"
V = {"correlation_id": CID, "task_id": "t1"}
T = TypeVar("T")


def run(make: Callable[[], StateStore], body: Callable[[StateStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = make()
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(go())


@pytest.fixture(params=["redis", "memory"])
def make(request: pytest.FixtureRequest) -> Callable[[], StateStore]:
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url, timeout_s=2)


class TestValues:
    def test_put_get_and_the_correlation_id_rule(self, make: Callable[[], StateStore]) -> None:
        """A value comes back as stored; one without a correlation id is refused."""

        async def body(store: StateStore) -> Any:
            assert await store.put("copilot:result:t1", V, ttl_s=60)
            with pytest.raises(ValueError, match="correlation_id"):
                await store.put("copilot:result:t2", {"task_id": "t2"}, ttl_s=60)
            return await store.get("copilot:result:t1"), await store.get("copilot:result:t2")

        assert run(make, body) == (V, None)

    def test_values_expire_on_the_store_clock(self, make: Callable[[], StateStore]) -> None:
        async def body(store: StateStore) -> Any:
            await store.put("k", V, ttl_s=0.2)
            before = await store.get("k")
            await asyncio.sleep(0.35)
            return before, await store.get("k"), await store.keys("k")

        assert run(make, body) == (V, None, [])

    def test_only_if_absent_is_a_dedup_key(self, make: Callable[[], StateStore]) -> None:
        async def body(store: StateStore) -> Any:
            first = await store.put("d", V, ttl_s=60, only_if_absent=True)
            second = await store.put("d", {**V, "task_id": "t9"}, ttl_s=60, only_if_absent=True)
            return first, second, await store.get("d")

        assert run(make, body) == (True, False, V)

    def test_keys_by_prefix(self, make: Callable[[], StateStore]) -> None:
        async def body(store: StateStore) -> Any:
            for key in ("copilot:approval:a", "copilot:approval:b", "copilot:result:a"):
                await store.put(key, V, ttl_s=60)
            return await store.keys("copilot:approval:")

        assert run(make, body) == ["copilot:approval:a", "copilot:approval:b"]


class TestTake:
    def test_of_many_concurrent_takes_exactly_one_gets_the_value(
        self, make: Callable[[], StateStore]
    ) -> None:
        """50 takes at once (Redis: over a pool of connections): one value, 49 None, key gone."""

        async def body(store: StateStore) -> Any:
            await store.put("copilot:approval:t1", V, ttl_s=60)
            got = await asyncio.gather(*(store.take("copilot:approval:t1") for _ in range(50)))
            return [g for g in got if g is not None], await store.get("copilot:approval:t1")

        won, left = run(make, body)
        assert (won, left) == ([V], None)

    def test_two_agents_sharing_redis_take_once(self, redis_url: str) -> None:
        """Two stores (two agent processes) racing on one pending approval: one wins."""

        async def go() -> list[Any]:
            a, b = RedisStore(redis_url), RedisStore(redis_url)
            await a.put("copilot:approval:t1", V, ttl_s=60)
            got = await asyncio.gather(
                *(s.take("copilot:approval:t1") for s in (a, b) for _ in range(20))
            )
            await a.aclose()
            await b.aclose()
            return [g for g in got if g is not None]

        assert asyncio.run(go()) == [V]


class TestLocks:
    def test_one_holder_and_only_the_holder_renews_or_releases(
        self, make: Callable[[], StateStore]
    ) -> None:
        async def body(store: StateStore) -> Any:
            mine = {**V, "token": "tok-a"}
            theirs = {**V, "token": "tok-b", "task_id": "t2"}
            took = await store.acquire_lock("l", mine, ttl_s=60)
            busy = await store.acquire_lock("l", theirs, ttl_s=60)
            wrong_renew = await store.update_lock("l", "tok-b", theirs, ttl_s=60)
            wrong_release = await store.release_lock("l", "tok-b")
            renewed = await store.update_lock("l", "tok-a", {**mine, "state": "running"}, ttl_s=60)
            now = await store.get("l")
            released = await store.release_lock("l", "tok-a")
            again = await store.acquire_lock("l", theirs, ttl_s=60)
            return took, busy, wrong_renew, wrong_release, renewed, now, released, again

        took, busy, wrong_renew, wrong_release, renewed, now, released, again = run(make, body)
        assert took is None
        assert busy == {**V, "token": "tok-a"}
        assert (wrong_renew, wrong_release, renewed, released) == (False, False, True, True)
        assert now == {**V, "token": "tok-a", "state": "running"}
        assert again is None

    def test_an_expired_holder_cannot_release_its_successor(
        self, make: Callable[[], StateStore]
    ) -> None:
        async def body(store: StateStore) -> Any:
            await store.acquire_lock("l", {**V, "token": "old"}, ttl_s=0.15)
            await asyncio.sleep(0.3)
            took = await store.acquire_lock("l", {**V, "token": "new"}, ttl_s=60)
            return took, await store.release_lock("l", "old"), await store.get("l")

        took, released, held = run(make, body)
        assert (took, released, held["token"]) == (None, False, "new")


class TestRedis:
    def test_values_survive_an_agent_restart(self, redis_url: str) -> None:
        """What one store wrote, the next one (a restarted agent) reads."""

        async def write() -> None:
            store = RedisStore(redis_url)
            await store.put("copilot:approval:t1", V, ttl_s=60)
            await store.aclose()

        async def read() -> Any:
            store = RedisStore(redis_url)
            try:
                return await store.take("copilot:approval:t1")
            finally:
                await store.aclose()

        asyncio.run(write())
        assert asyncio.run(read()) == V

    def test_values_survive_a_redis_restart_with_persistence(self, tmp_path: Path) -> None:
        """With an append-only file, a restarted redis-server still has the pending approval."""
        data = tmp_path / "data"
        data.mkdir()
        port = free_port()

        async def write(url: str) -> None:
            store = RedisStore(url)
            await store.put("copilot:approval:t1", V, ttl_s=600)
            await store.aclose()

        async def read(url: str) -> Any:
            store = RedisStore(url)
            try:
                return await store.get("copilot:approval:t1")
            finally:
                await store.aclose()

        with RedisServer(tmp_path, data_dir=data, port=port) as server:
            asyncio.run(write(server.url))
        with RedisServer(tmp_path, data_dir=data, port=port) as server:
            assert asyncio.run(read(server.url)) == V

    def test_redis_down_is_a_store_error_without_the_password(self) -> None:
        """Connection refused → StateStoreError(network_error), quickly, no password in it."""
        url = f"redis://:pw-redis-secret-0123@127.0.0.1:{free_port()}/0"
        started = time.monotonic()

        async def go() -> StateStoreError:
            store = RedisStore(url, timeout_s=1)
            try:
                with pytest.raises(StateStoreError) as raised:
                    await store.put("k", V, ttl_s=1)
                with pytest.raises(StateStoreError):
                    await store.take("k")
                return raised.value
            finally:
                await store.aclose()

        error = asyncio.run(go())
        assert error.audit_error_class == "network_error"
        assert "pw-redis-secret" not in f"{error} {error!r}"
        assert time.monotonic() - started < 5

    def test_build_store_picks_redis_only_with_a_url(self, redis_url: str) -> None:
        assert build_store(RedisSettings()).kind == "memory"
        store = build_store(RedisSettings(url=redis_url))
        assert store.kind == "redis"
        asyncio.run(store.aclose())
