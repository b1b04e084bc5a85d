"""``create_app()``: wiring and lifespan only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from auditrail.config import AuditConfig
from auditrail.logger import AuditLogger
from auditrail.redact import register_secret
from gitlab_copilot_agent.api.webhooks import WebhookConfig
from gitlab_copilot_agent.api.webhooks import router as webhook_router
from gitlab_copilot_agent.dispatcher import Dispatcher
from gitlab_copilot_agent.ingress.operational import fastapi_options, protect_operational_endpoints
from gitlab_copilot_agent.settings import SERVICE_NAME, Settings


async def _nothing_to_close() -> None:
    return None


def create_app(
    settings: Settings,
    *,
    audit: AuditLogger | None = None,
    registry: CollectorRegistry | None = None,
    event_handler: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
) -> FastAPI:
    """Build the agent's ASGI app.

    Args:
        settings: validated service settings.
        audit: an audit logger to use (tests); by default one is built from
            ``AUDIT_LOG_*`` at startup and closed at shutdown.
        registry: the Prometheus registry served on ``/metrics``.
        event_handler: replaces the workflows (tests that only exercise ingress).
    """
    metrics_registry = registry if registry is not None else REGISTRY

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        register_secret(*settings.secrets())
        own_logger = audit is None
        logger = audit if audit is not None else AuditConfig.from_env(service=SERVICE_NAME).build()
        from gitlab_copilot_agent.workflows import build_event_handler

        handler, aclose_clients = build_event_handler(settings, logger)
        if event_handler is not None:
            await aclose_clients()
            handler, aclose_clients = event_handler, _nothing_to_close
        app.state.audit = logger
        app.state.dispatcher = Dispatcher(handler)
        app.state.webhook_config = WebhookConfig.from_settings(settings)
        try:
            yield
        finally:
            await app.state.dispatcher.drain(timeout_s=30)
            await aclose_clients()
            if own_logger:
                await logger.aclose(logger.exit_timeout_s)
            else:
                await logger.aflush()

    app = FastAPI(title="gitlab-copilot-agent", lifespan=lifespan, **fastapi_options(settings))
    protect_operational_endpoints(app, settings)
    app.include_router(webhook_router)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness, plus the audit pipeline's backlog per destination."""
        logger: AuditLogger = app.state.audit
        backlog = {
            p.destination: {"buffered": b, "spooled": s}
            for p in logger.pipelines
            for b, _bytes, s, _oldest in [p.gauge_snapshot()]
        }
        return {"status": "ok", "audit": backlog}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics, including the audit pipeline's."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
