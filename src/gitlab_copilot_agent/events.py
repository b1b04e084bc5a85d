"""The event router: an event kind (``"Merge Request Hook"``) → the workflow handlers for it.

Workflows plug in with ``events.on(kind, handler)``; the ingress asks
``handles(kind)`` to answer "queued" or "ignored", and the dispatcher runs
``dispatch`` in the delivery's correlation scope. Sources other than the
webhook (the pollers) dispatch their own kinds the same way.

Several handlers may take one kind (the review and the coding workflow both
want merge request events); they run in the order they were registered, and
one that fails does not stop the others. A failure the GitLab client or an
LLM provider raised (``GitLabError``, ``LLMError``: they carry
``audit_error_class`` and their call is already on the trail) is logged as a
warning with its scrubbed message; anything else with its traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from auditkeep import classify_exception
from gitlab_copilot_agent.logs import get_logger

__all__ = ["Event", "EventHandler", "EventRouter"]

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: its kind and its (untrusted, already authenticated) payload."""

    kind: str
    payload: Mapping[str, Any]


EventHandler = Callable[[Event], Awaitable[object]]


class EventRouter:
    """Maps event kinds to handlers; the seam every workflow plugs into."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}

    def on(self, kind: str, handler: EventHandler) -> None:
        """Run ``handler`` for every event of ``kind`` (after those registered before it)."""
        if not kind:
            raise ValueError("an event kind is required")
        self._handlers.setdefault(kind, []).append(handler)

    def handles(self, kind: str | None) -> bool:
        """Whether any handler takes ``kind`` (the ingress answers "ignored" otherwise)."""
        return kind is not None and kind in self._handlers

    @property
    def kinds(self) -> list[str]:
        """The kinds with a handler, sorted."""
        return sorted(self._handlers)

    async def dispatch(self, kind: str, payload: Mapping[str, Any]) -> list[object]:
        """Run the handlers of ``kind``; return what each returned (None for one that failed)."""
        event = Event(kind, payload)
        results: list[object] = []
        for handler in list(self._handlers.get(kind, ())):
            try:
                results.append(await handler(event))
            except Exception as exc:  # noqa: BLE001 - one workflow's failure must not stop another
                _log_failure(kind, handler, exc)
                results.append(None)
        return results


def _log_failure(kind: str, handler: EventHandler, exc: Exception) -> None:
    name = getattr(handler, "__qualname__", repr(handler))
    if hasattr(exc, "audit_error_class"):
        # The failing call left its audit entry; operators get the scrubbed message.
        _log.warning(
            "workflow failed",
            event_kind=kind,
            handler=name,
            error_class=str(classify_exception(exc)),
            error=f"{type(exc).__name__}: {exc}",
        )
    else:
        _log.error("workflow failed", event_kind=kind, handler=name, exc_info=exc)
