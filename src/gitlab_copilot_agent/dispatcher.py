"""Runs webhook work in the background so ``/webhook`` answers within GitLab's timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gitlab_copilot_agent import tracing
from gitlab_copilot_agent.logs import get_logger

Handler = Callable[[str, Mapping[str, Any]], Awaitable[object]]

_log = get_logger(__name__)


class Dispatcher:
    """Schedules one task per accepted delivery; each task keeps the delivery's correlation scope.

    ``asyncio.create_task`` copies the current context, so every entry the
    work emits (GitLab, LLM, git) shares the webhook's ``correlation_id``.
    The handler is normally ``EventRouter.dispatch``.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, kind: str, payload: Mapping[str, Any]) -> None:
        task = asyncio.create_task(self._run(kind, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, kind: str, payload: Mapping[str, Any]) -> None:
        try:
            with tracing.span("webhook.handle", {"gitlab.event": kind[:64]}):
                await self._handler(kind, payload)
        except Exception:  # noqa: BLE001 - one bad delivery must not stop the others
            # Scrubbed like every log event; the failing call emitted its audit entry.
            _log.exception("event handling failed", event_kind=kind)

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
        if pending:
            _log.warning("work still running at shutdown was cancelled", tasks=len(pending))
        return not pending
