"""The channel between the agent and a Kubernetes Job's pod, through the Redis state store.

A pod inherits no descriptor from the agent (``tasks.channel``'s socketpair),
so the same JSON messages travel through Redis lists instead (keys in
``state.keys``):

- ``copilot:job:<task>:spec``: the task spec, written by the agent before it
  creates the Job (the Job itself carries only the task id, so the
  instruction, the MR's text, is not in the Job object);
- ``copilot:job:<task>:to_agent``: the pod's requests (``verify_push``,
  ``result``), ``RPUSH``-ed and taken by the agent with ``BLPOP``;
- ``copilot:job:<task>:to_task``: the agent's answers, by request id;
- ``copilot:job:<task>:agent``: renewed by the agent every second while it
  waits for the pod (15 s expiry). When it is gone the pod stops, as a local
  task stops when its socket closes: an orphan must not go on, and it could
  not push anyway (nobody answers ``verify_push``).

The agent's approval gate stays the authority: the pod *asks* whether it may
push and the agent answers with ``ChannelAnswers`` (the same code that answers
a local task) over ``ApprovalGate.verify_push`` — one implementation of the
rule. Redis is the carrier, not the judge: a pod that writes a decision into
Redis itself gets nothing from it, because the agent answers from its own
reading of the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

import orjson

from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.base import StateStoreError
from gitlab_copilot_agent.state.redis_store import RedisStore
from gitlab_copilot_agent.tasks.channel import CHANNEL_ENV, TASK_ID_ENV, ChannelAnswers, Verifier
from gitlab_copilot_agent.tasks.spec import TaskSpec

__all__ = ["CHANNEL_ENV", "TASK_ID_ENV", "RedisChannelClient", "RedisParentChannel"]

WAIT_S: Final = 1.0
"""One ``BLPOP`` wait; the heartbeat is renewed (agent) or checked (pod) between two.
Both loops stop at a flag rather than by cancellation (a ``BLPOP`` cancelled
mid-flight can leave redis-py's connection pool unable to close: seen as a pod
that never exits); whoever sets the flag also pushes a ``_wake`` message onto
the list the loop waits on, so it ends at once."""
WAKE: Final = "_wake"


class RedisParentChannel:
    """The agent's end for one Job: answers the pod's requests and keeps its ``result``."""

    def __init__(
        self, store: RedisStore, verifier: Verifier, *, task_id: str, correlation_id: str
    ) -> None:
        self.answers = ChannelAnswers(verifier, task_id=task_id)
        self._store = store
        self._task_id = task_id
        self._cid = correlation_id
        self._stopping = False

    @property
    def result(self) -> dict[str, Any] | None:
        return self.answers.result

    def _value(self, **fields: Any) -> dict[str, Any]:
        return {"correlation_id": self._cid, "task_id": self._task_id, **fields}

    async def open(self, spec: TaskSpec, *, ttl_s: float) -> None:
        """Store the spec and the first heartbeat, before the Job exists."""
        await self._store.put(
            keys.job_spec(self._task_id),
            self._value(spec=orjson.loads(spec.to_json())),
            ttl_s=ttl_s,
        )
        await self._beat()

    async def _beat(self) -> None:
        await self._store.put(
            keys.job_agent(self._task_id), self._value(), ttl_s=keys.AGENT_HEARTBEAT_TTL_S
        )

    async def stop(self) -> None:
        """End ``serve`` (woken at once; at the latest after its current wait)."""
        self._stopping = True
        with contextlib.suppress(StateStoreError):
            await self._store.push(keys.job_to_agent(self._task_id), self._value(op=WAKE), ttl_s=60)

    async def serve(self, *, ttl_s: float) -> None:
        """Answer the pod until ``stop()``; a store error is retried on the next turn."""
        while not self._stopping:
            try:
                await self._beat()
                await self.answer_one(WAIT_S, ttl_s=ttl_s)
            except StateStoreError:
                await asyncio.sleep(WAIT_S)

    async def answer_one(self, wait_s: float, *, ttl_s: float) -> bool:
        """Answer one waiting request (True), or None came within ``wait_s`` (False)."""
        message = await self._store.pop(keys.job_to_agent(self._task_id), wait_s=wait_s)
        if message is None:
            return False
        if message.get("op") == WAKE:
            return True
        message.pop("correlation_id", None)
        answer = await self.answers.answer(orjson.dumps(message))
        await self._store.push(keys.job_to_task(self._task_id), self._value(**answer), ttl_s=ttl_s)
        return True

    async def drain(self, *, ttl_s: float) -> None:
        """Take what the pod sent before it ended (its result), without waiting."""
        with contextlib.suppress(StateStoreError):
            while await self.answer_one(0.01, ttl_s=ttl_s):
                pass

    async def close(self) -> None:
        """Delete the Job's keys (the pod, if still running, then stops: no heartbeat)."""
        for key in (
            keys.job_agent(self._task_id),
            keys.job_spec(self._task_id),
            keys.job_to_agent(self._task_id),
            keys.job_to_task(self._task_id),
        ):
            with contextlib.suppress(StateStoreError):
                await self._store.delete(key)


class RedisChannelClient:
    """The pod's end (``TaskChannel``): requests on ``to_agent``, answers from ``to_task``.

    ``closed`` is set when the agent's heartbeat is gone; every waiting request
    then fails with ``ConnectionError``, as with the socket channel.
    """

    def __init__(self, store: RedisStore, *, task_id: str, correlation_id: str, ttl_s: float):
        self._store = store
        self._task_id = task_id
        self._cid = correlation_id
        self._ttl_s = ttl_s
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self.closed = asyncio.Event()

    async def spec(self) -> TaskSpec:
        """The task spec the agent stored for this Job.

        Raises:
            ValueError: no spec (the agent is gone or it expired) or not a valid one.
            StateStoreError: Redis cannot be reached.
        """
        record = await self._store.get(keys.job_spec(self._task_id))
        if record is None or not isinstance(record.get("spec"), dict):
            raise ValueError(f"no task spec in Redis for task {self._task_id}")
        spec = TaskSpec.from_json(orjson.dumps(record["spec"]))
        if spec.task_id != self._task_id:
            raise ValueError("the stored task spec is another task's")
        return spec

    async def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def _alive(self) -> bool:
        try:
            return await self._store.get(keys.job_agent(self._task_id)) is not None
        except StateStoreError:
            return True  # cannot tell; a request fails on its own if Redis stays away

    async def _read(self) -> None:
        checked = 0.0
        try:
            while not self._stopping:
                if time.monotonic() - checked >= 2 * WAIT_S:
                    checked = time.monotonic()
                    if not await self._alive():
                        return
                try:
                    answer = await self._store.pop(keys.job_to_task(self._task_id), wait_s=WAIT_S)
                except StateStoreError:
                    await asyncio.sleep(WAIT_S)
                    continue
                if answer is not None:
                    waiter = self._waiting.pop(answer.get("id", -1), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(answer)
        finally:
            self.closed.set()
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("the agent is gone (no heartbeat)"))
            self._waiting.clear()

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request, return the agent's answer.

        Raises:
            ConnectionError: the agent is gone, or Redis cannot be reached.
        """
        await self.start()
        if self.closed.is_set():
            raise ConnectionError("the agent is gone (no heartbeat)")
        self._ids += 1
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = waiter
        message = {"correlation_id": self._cid, "id": self._ids, "op": op, **fields}
        try:
            await self._store.push(keys.job_to_agent(self._task_id), message, ttl_s=self._ttl_s)
        except StateStoreError as exc:
            self._waiting.pop(self._ids, None)
            raise ConnectionError(str(exc)) from None
        return await waiter

    async def aclose(self) -> None:
        self._stopping = True
        if self._reader is not None and not self._reader.done():
            with contextlib.suppress(StateStoreError):
                wake = {"correlation_id": self._cid, "id": None, "op": WAKE}
                await self._store.push(keys.job_to_task(self._task_id), wake, ttl_s=60)
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 3 * WAIT_S)
            except TimeoutError:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        await self._store.aclose()
