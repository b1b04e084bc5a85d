"""What the agent does with an accepted webhook."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from auditrail.logger import AuditLogger
from gitlab_copilot_agent.settings import Settings

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


def build_event_handler(
    settings: Settings, audit: AuditLogger
) -> tuple[EventHandler, Callable[[], Awaitable[None]]]:
    """Create the clients and return the event handler and a function that closes them.

    The handler runs inside the webhook's correlation scope (the dispatcher's
    task copies it), so every GitLab and LLM entry it causes shares that id.
    """
    from gitlab_copilot_agent.clients.gitlab import GitLabClient
    from gitlab_copilot_agent.llm.factory import build_provider
    from gitlab_copilot_agent.workflows.review import ReviewWorkflow

    gitlab = GitLabClient(
        settings.gitlab_url,
        settings.gitlab_token.get_secret_value(),
        audit,
        timeout_s=settings.gitlab_timeout_s,
        max_retries=settings.gitlab_max_retries,
    )
    llm = build_provider(settings, audit)
    review = ReviewWorkflow(gitlab, llm, audit)

    async def handle(event_type: str, payload: dict[str, Any]) -> None:
        await review.handle(event_type, payload)

    async def aclose() -> None:
        # Close both even if the first fails.
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(gitlab.aclose)
            stack.push_async_callback(llm.aclose)

    return handle, aclose
