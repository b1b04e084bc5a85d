"""Runs webhook work in the background so ``/webhook`` answers within GitLab's timeout."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


class Dispatcher:
    """Schedules one task per accepted delivery; each task keeps the delivery's correlation scope.

    ``asyncio.create_task`` copies the current context, so every entry the
    work emits (GitLab, LLM, git) shares the webhook's ``correlation_id``.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, event_type: str, payload: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run(event_type, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, event_type: str, payload: dict[str, Any]) -> None:
        try:
            await self._handler(event_type, payload)
        except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the others
            # The failing call already emitted its audit entry; this is for operators.
            print(f"gitlab-copilot-agent: {event_type} handling failed: {exc!r}", file=sys.stderr)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float) -> bool:
        """Wait for the work in flight (at shutdown); True if it all finished."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        return not pending
