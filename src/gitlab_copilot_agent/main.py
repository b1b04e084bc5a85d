"""``create_app()``: the ASGI app; its lifespan runs the composition root.

Nothing is built when the app is created: the lifespan builds every part
(``composition.compose``) when the server starts, yields them as typed
lifespan state (``api.deps.LifespanState``), and closes them in reverse when
it stops.

What the app answers besides its routes is set here from settings
(``ingress.operational``): the API docs are off unless ``API_DOCS_ENABLED``,
no path answers a slash redirect, and ``/metrics`` and ``/healthz`` are gated
by ``METRICS_TOKEN`` and/or ``METRICS_PORT``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from gitlab_copilot_agent import tracing
from gitlab_copilot_agent.api import health, webhooks
from gitlab_copilot_agent.api.deps import LifespanState
from gitlab_copilot_agent.composition import compose
from gitlab_copilot_agent.ingress.operational import fastapi_options, protect_operational_endpoints
from gitlab_copilot_agent.plugins import Plugin
from gitlab_copilot_agent.settings import Settings


def create_app(
    settings: Settings,
    *,
    audit: AuditLogger | None = None,
    registry: CollectorRegistry | None = None,
    plugins: Sequence[Plugin] | None = None,
) -> FastAPI:
    """Build the agent's ASGI app.

    Args:
        settings: validated service settings (``Settings.from_env()``).
        audit: an audit logger to use (tests); by default one is built from
            ``AUDIT_LOG_*`` at startup and closed at shutdown.
        registry: the Prometheus registry served on ``/metrics``.
        plugins: the workflows (default ``composition.DEFAULT_PLUGINS``); an
            empty list runs the ingress alone.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[LifespanState]:
        async with contextlib.AsyncExitStack() as stack:
            # Closed last: the spans of the shutdown too reach the collector before uvicorn
            # re-raises SIGTERM (no atexit hook runs after that).
            stack.push_async_callback(tracing.aflush)
            services = await compose(
                settings, stack, audit=audit, registry=registry, plugins=plugins
            )
            yield {"services": services}

    app = FastAPI(
        title="gitlab-copilot-agent",
        lifespan=lifespan,
        telemetry=tracing.FASTAPI_TELEMETRY_OFF,
        **fastapi_options(settings),
    )
    protect_operational_endpoints(app, settings)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    if tracing.active():  # OTEL_* turned tracing on (gitlab_copilot_agent.tracing)
        app.add_middleware(tracing.WebhookSpans)
    return app
