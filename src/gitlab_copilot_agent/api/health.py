"""``GET /healthz`` and ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gitlab_copilot_agent.api.deps import ServicesDep

router = APIRouter()


@router.get("/healthz")
async def healthz(services: ServicesDep) -> dict[str, Any]:
    """Liveness, plus the audit pipeline's backlog per destination."""
    backlog = {
        p.destination: {"buffered": b, "spooled": s}
        for p in services.audit.pipelines
        for b, _bytes, s, _oldest in [p.gauge_snapshot()]
    }
    return {"status": "ok", "audit": backlog}


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics, including the audit pipeline's."""
    return Response(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)
