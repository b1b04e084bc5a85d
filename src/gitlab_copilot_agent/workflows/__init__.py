"""What the agent does with an accepted webhook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from auditrail.logger import AuditLogger
from gitlab_copilot_agent.settings import Settings

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


def build_event_handler(
    settings: Settings, audit: AuditLogger
) -> tuple[EventHandler, Callable[[], Awaitable[None]]]:
    """Create the clients and return the event handler and a function that closes them."""

    async def handle(event_type: str, payload: dict[str, Any]) -> None:
        return None

    async def aclose() -> None:
        return None

    return handle, aclose
