"""The Redis channel between the agent and a Job's pod (a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.redis_store import RedisStore
from gitlab_copilot_agent.tasks.redis_channel import RedisChannelClient, RedisParentChannel
from gitlab_copilot_agent.tasks.runner import ChannelAuthorization
from gitlab_copilot_agent.tasks.spec import TaskSpec

SPEC = TaskSpec("0123456789abcdef", "cid-1", 1, 2, "http://x/r.git", "b", "a" * 40, "do", "f" * 64)


def pair(url: str) -> tuple[RedisStore, RedisStore]:
    return RedisStore(url, timeout_s=5), RedisStore(url, timeout_s=5)


def test_verify_and_result_travel_through_redis_and_the_gate_decides(redis_url: str) -> None:
    """The pod asks; the agent's verifier (the gate) answers; a refusal reaches the pod as a
    PermissionError; the result reaches the agent; close removes every key."""

    async def main() -> None:
        agent_store, pod_store = pair(redis_url)
        asked: list[tuple[str, str, str]] = []

        async def verify(task_id: str, head: str, instruction: str) -> None:
            asked.append((task_id, head, instruction))
            if len(asked) > 1:
                raise PermissionError("the approval of task 0123456789abcdef was already used")

        parent = RedisParentChannel(
            agent_store, verify, task_id=SPEC.task_id, correlation_id="cid-1"
        )
        await parent.open(SPEC, ttl_s=60)
        served = asyncio.create_task(parent.serve(ttl_s=60))
        pod = RedisChannelClient(pod_store, task_id=SPEC.task_id, correlation_id="cid-1", ttl_s=60)
        assert await pod.spec() == SPEC
        auth = ChannelAuthorization(pod, SPEC)
        await asyncio.wait_for(auth.verify(), 10)
        with pytest.raises(PermissionError, match="already used"):
            await asyncio.wait_for(auth.verify(), 10)
        answer = await asyncio.wait_for(pod.request("result", result={"status": "pushed"}), 10)
        assert answer["ok"] is True
        assert parent.result == {"status": "pushed"}
        assert asked == [(SPEC.task_id, SPEC.head_sha, SPEC.instruction_sha256)] * 2
        await asyncio.wait_for(pod.aclose(), 10)
        await parent.stop()
        await asyncio.wait_for(served, 5)
        await parent.close()
        assert await agent_store.keys(f"copilot:job:{SPEC.task_id}") == []
        await agent_store.aclose()

    asyncio.run(main())


def test_the_pod_stops_waiting_when_the_agent_heartbeat_is_gone(redis_url: str) -> None:
    async def main() -> None:
        agent_store, pod_store = pair(redis_url)

        async def verify(task_id: str, head: str, instruction: str) -> None:
            return None

        parent = RedisParentChannel(agent_store, verify, task_id=SPEC.task_id, correlation_id="c")
        await parent.open(SPEC, ttl_s=60)  # nobody serves: the agent is gone
        await agent_store.delete(keys.job_agent(SPEC.task_id))
        pod = RedisChannelClient(pod_store, task_id=SPEC.task_id, correlation_id="c", ttl_s=60)
        with pytest.raises(PermissionError, match="agent is gone"):
            await asyncio.wait_for(ChannelAuthorization(pod, SPEC).verify(), 10)
        assert pod.closed.is_set()
        await asyncio.wait_for(pod.aclose(), 10)
        await parent.close()
        await agent_store.aclose()

    asyncio.run(main())
