"""The pipe between the agent and one task process (a ``socketpair``, one end inherited).

Why a private channel: the push step must ask the approval gate whether an
``approve`` was recorded for its task, and with the in-memory store only the
agent's process can answer. The task process's end is an inherited file
descriptor (``COPILOT_TASK_CHANNEL_FD``); nothing listens on a port or a path,
so no other process can talk to it. Messages are JSON lines:

- task → agent ``{"id": 1, "op": "verify_push", "task_id", "head_sha",
  "instruction_sha256"}`` → ``{"id": 1, "ok": true}`` or ``{"ok": false, "error": …}``;
- task → agent ``{"id": 2, "op": "result", "result": {…}}`` → ``{"id": 2, "ok": true}``.

When the agent goes away (the channel closes), the task process stops: an
orphan must not go on, and it could not push anyway (no one can verify).

A Kubernetes Job's pod inherits no descriptor: ``tasks.redis_channel`` carries
the same messages through Redis lists, answered by the same ``ChannelAnswers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import orjson

__all__ = [
    "CHANNEL_ENV",
    "CHANNEL_FD_ENV",
    "TASK_ID_ENV",
    "ChannelAnswers",
    "ChannelClient",
    "ParentChannel",
    "TaskChannel",
]

CHANNEL_FD_ENV: Final = "COPILOT_TASK_CHANNEL_FD"
# A Job's pod (tasks.redis_channel). Here, not there: run-task reads them before it knows
# which channel it has, and the Redis module would import redis-py (and OpenTelemetry) for all.
CHANNEL_ENV: Final = "COPILOT_TASK_CHANNEL"
"""``redis`` in a Job's pod: ``run-task`` talks to its agent through Redis."""
TASK_ID_ENV: Final = "COPILOT_TASK_ID"
MAX_MESSAGE_BYTES: Final = 1_048_576

Verifier = Callable[[str, str, str], Awaitable[None]]


class ChannelAnswers:
    """The agent's answers to a task process's messages, whatever carries them.

    One implementation for both carriers (the socketpair here, Redis lists for
    a Kubernetes Job: ``tasks.redis_channel``): ``verify_push`` is answered by
    the verifier (the approval gate's ``verify_push``, the one place the rule
    lives) and ``result`` is kept.
    """

    def __init__(self, verifier: Verifier, *, task_id: str) -> None:
        self._verifier = verifier
        self._task_id = task_id
        self.result: dict[str, Any] | None = None
        self.verified = 0

    async def answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            return {"ok": False, "error": "not JSON"}
        if not isinstance(message, dict):
            return {"ok": False, "error": "not an object"}
        reply: dict[str, Any] = {"id": message.get("id")}
        op = message.get("op")
        if op == "verify_push":
            task_id = message.get("task_id")
            head, instruction = message.get("head_sha"), message.get("instruction_sha256")
            if task_id != self._task_id or not isinstance(head, str):
                return {**reply, "ok": False, "error": "not this channel's task"}
            try:
                await self._verifier(task_id, head, str(instruction))
            except PermissionError as exc:
                return {**reply, "ok": False, "error": str(exc)}
            self.verified += 1
            return {**reply, "ok": True}
        if op == "result" and isinstance(message.get("result"), dict):
            self.result = message["result"]
            return {**reply, "ok": True}
        return {**reply, "ok": False, "error": f"unknown op {str(op)[:32]!r}"}


class ParentChannel:
    """The agent's end: answers ``verify_push`` with ``verifier`` and keeps the ``result``."""

    def __init__(self, verifier: Verifier, *, task_id: str) -> None:
        self.answers = ChannelAnswers(verifier, task_id=task_id)
        self._mine, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    @property
    def result(self) -> dict[str, Any] | None:
        return self.answers.result

    @property
    def verified(self) -> int:
        return self.answers.verified

    @property
    def child_fd(self) -> int:
        """The descriptor the task process inherits (``pass_fds``)."""
        return self._theirs.fileno()

    def child_started(self) -> None:
        """Close the agent's copy of the child's end (so EOF means the child is gone)."""
        self._theirs.close()

    async def serve(self) -> None:
        """Answer requests until the task process closes its end (or exits)."""
        reader, writer = await asyncio.open_unix_connection(
            sock=self._mine, limit=MAX_MESSAGE_BYTES
        )
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):
                    return  # an over-long line or a reset: the child is not talking sense
                if not line:
                    return
                writer.write(orjson.dumps(await self.answers.answer(line)) + b"\n")
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def close(self) -> None:
        for sock in (self._mine, self._theirs):
            with contextlib.suppress(OSError):
                sock.close()


class TaskChannel(Protocol):
    """What the task process's side of a channel offers (``ChannelClient``,
    ``redis_channel.RedisChannelClient``)."""

    closed: asyncio.Event

    async def start(self) -> None: ...

    async def request(self, op: str, **fields: Any) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class ChannelClient:
    """The task process's end (from ``COPILOT_TASK_CHANNEL_FD``).

    One reader task takes every answer off the socket and hands it to the
    request that waits for it; when the agent's end closes, every waiting
    request fails with ``ConnectionError`` and ``closed`` is set.
    """

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0
        self.closed = asyncio.Event()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ChannelClient | None:
        raw = (os.environ if environ is None else environ).get(CHANNEL_FD_ENV, "")
        return cls(int(raw)) if raw.isdigit() and len(raw) < 8 else None

    async def start(self) -> None:
        """Connect the stream and start reading answers (idempotent)."""
        if self._writer is not None:
            return
        reader, self._writer = await asyncio.open_unix_connection(
            sock=self._sock, limit=MAX_MESSAGE_BYTES
        )
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                answer = orjson.loads(line)
                if isinstance(answer, dict):
                    waiter = self._waiting.pop(answer.get("id", -1), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(answer)
        except (ValueError, ConnectionError, OSError):
            return
        finally:
            self.closed.set()
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("the agent closed the task channel"))
            self._waiting.clear()

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request, return the agent's answer.

        Raises:
            ConnectionError: the agent is gone.
        """
        await self.start()
        assert self._writer is not None
        if self.closed.is_set():
            raise ConnectionError("the agent closed the task channel")
        self._ids += 1
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = waiter
        self._writer.write(orjson.dumps({"id": self._ids, "op": op, **fields}) + b"\n")
        await self._writer.drain()
        return await waiter

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        else:
            self._sock.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
