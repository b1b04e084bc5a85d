"""Typed lifespan state and the FastAPI dependency that hands it to routes.

The lifespan (``main.create_app``) yields ``LifespanState``; Starlette copies
it into each request's ``request.state``. Routes never read ``app.state``:
they declare ``services: ServicesDep`` and get the typed ``Services``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, TypedDict

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.dispatcher import Dispatcher
from gitlab_copilot_agent.events import EventRouter

if TYPE_CHECKING:
    from gitlab_copilot_agent.api.webhooks import WebhookConfig


@dataclass(frozen=True, slots=True)
class Services:
    """What the routes use, built by ``composition.compose``."""

    audit: AuditLogger
    dispatcher: Dispatcher
    events: EventRouter
    webhook: WebhookConfig
    registry: CollectorRegistry


class LifespanState(TypedDict):
    """The state the lifespan yields (Starlette's lifespan state)."""

    services: Services


def get_services(request: Request) -> Services:
    """The running app's services (the lifespan has started)."""
    services = getattr(request.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("the app has no services: it was not started through its lifespan")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
