"""``POST /webhook``: size limit, authentication, replay guard, parsing, dispatch.

Every request, accepted or not, leaves exactly one audit entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from auditrail import Actor, ErrorClass, Outcome, correlation_scope
from gitlab_copilot_agent.api.deps import ServicesDep
from gitlab_copilot_agent.payloads import project_id as payload_project_id
from gitlab_copilot_agent.webhook_auth import (
    Rejection,
    ReplayGuard,
    client_ip,
    verify_signature,
    verify_token,
)

router = APIRouter()

KNOWN_EVENTS = frozenset({"Merge Request Hook", "Note Hook"}) | frozenset(
    {
        "Push Hook", "Tag Push Hook", "Issue Hook", "Confidential Issue Hook",
        "Confidential Note Hook", "Pipeline Hook", "Job Hook", "Deployment Hook",
        "Wiki Page Hook", "Release Hook", "Emoji Hook", "Resource Access Token Hook",
        "Member Hook", "Subgroup Hook", "Feature Flag Hook", "Milestone Hook",
        "Vulnerability Hook", "Project Hook", "System Hook",
    }
)  # fmt: skip
"""GitLab events that are accepted; those no workflow handles (``EventRouter.handles``)
are answered "ignored", so GitLab does not disable the hook."""

_STATUS = {
    Rejection.MISSING_TOKEN: 401,
    Rejection.INVALID_TOKEN: 401,
    Rejection.MISSING_SIGNATURE: 401,
    Rejection.INVALID_SIGNATURE: 401,
    Rejection.STALE_TIMESTAMP: 401,
    Rejection.REPLAYED: 409,
    Rejection.BODY_TOO_LARGE: 413,
    Rejection.MALFORMED_PAYLOAD: 400,
    Rejection.MISSING_EVENT_HEADER: 400,
    Rejection.UNKNOWN_EVENT_TYPE: 400,
    Rejection.UNSUPPORTED_MEDIA_TYPE: 415,
}
_ERROR_CLASS = {
    Rejection.BODY_TOO_LARGE: ErrorClass.VALIDATION_ERROR,
    Rejection.MALFORMED_PAYLOAD: ErrorClass.VALIDATION_ERROR,
    Rejection.MISSING_EVENT_HEADER: ErrorClass.VALIDATION_ERROR,
    Rejection.UNKNOWN_EVENT_TYPE: ErrorClass.VALIDATION_ERROR,
    Rejection.UNSUPPORTED_MEDIA_TYPE: ErrorClass.VALIDATION_ERROR,
}


@dataclass
class WebhookConfig:
    """What the route needs to authenticate deliveries."""

    secret: str | None
    signing_key: bytes | None
    max_body_bytes: int
    tolerance_s: int
    trusted_proxies: list[Any]
    replay_guard: ReplayGuard


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The raw body, or None once it exceeds ``limit`` (never buffers more than limit + chunk)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _actor_id(request: Request) -> str:
    # GitLab's event UUID names the event; without it, the delivery id. Only
    # UUIDs are taken, so a sender cannot write free text into the actor.
    for header in ("x-gitlab-event-uuid", "webhook-id", "idempotency-key"):
        try:
            return str(uuid.UUID(request.headers.get(header, "")))
        except ValueError:
            continue
    return "unknown"


@router.post("/webhook", status_code=202)
async def receive_webhook(request: Request, services: ServicesDep) -> Response:
    """Receive a GitLab webhook: authenticate it, audit it, and queue its work."""
    config = services.webhook
    audit = services.audit
    peer = request.client.host if request.client else None
    source_ip = client_ip(peer, request.headers.get("x-forwarded-for"), config.trusted_proxies)
    event_type = request.headers.get("x-gitlab-event")
    delivery_id = request.headers.get("webhook-id") or request.headers.get("idempotency-key")

    with correlation_scope(Actor("webhook_event", _actor_id(request))) as correlation_id:
        payload: Any = None
        body = await _read_limited(request, config.max_body_bytes)
        rejection: Rejection | None = None
        method = "none"
        if body is None:
            rejection = Rejection.BODY_TOO_LARGE
        else:
            try:
                payload = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                payload = None
            rejection, method = _authenticate(request, body, config)
            # Only authenticated ids are remembered: forged deliveries cannot
            # poison the guard against the real one.
            if (
                rejection is None
                and delivery_id is not None
                and not config.replay_guard.first_sighting(delivery_id)
            ):
                rejection = Rejection.REPLAYED
            if rejection is None:
                rejection = _check_payload(request, event_type, payload)

        project_id = payload_project_id(payload)
        target: dict[str, Any] = {"resource_type": "webhook", "project_id": project_id}
        details: dict[str, Any] = {
            "event_type": event_type,
            "source_ip": source_ip,
            "auth_method": method,
            "delivery_id": delivery_id,
        }
        if rejection is not None:
            audit.emit(
                "webhook.auth.rejected",
                outcome=Outcome.FAILURE,
                target=target,
                error=_ERROR_CLASS.get(rejection, ErrorClass.AUTH_FAILURE),
                error_message=f"webhook rejected: {rejection.value}",
                http_status=_STATUS[rejection],
                details={**details, "rejection_reason": rejection.value},
            )
            return JSONResponse(
                {"error": rejection.value, "correlation_id": correlation_id},
                status_code=_STATUS[rejection],
            )

        handled = services.events.handles(event_type)
        audit.emit(
            "webhook.auth.validated",
            target=target,
            http_status=202,
            details={**details, "decision": "queued" if handled else "ignored"},
        )
        if handled:
            assert event_type is not None  # handled implies a kind
            services.dispatcher.submit(event_type, payload)
        return JSONResponse(
            {"status": "queued" if handled else "ignored", "correlation_id": correlation_id},
            status_code=202,
        )


def _authenticate(
    request: Request, body: bytes, config: WebhookConfig
) -> tuple[Rejection | None, str]:
    headers = request.headers
    if config.signing_key is not None and ("webhook-signature" in headers or config.secret is None):
        result = verify_signature(headers, body, config.signing_key, tolerance_s=config.tolerance_s)
        return result, "signature"
    assert config.secret is not None
    return verify_token(headers.get("x-gitlab-token"), config.secret), "token"


def _check_payload(request: Request, event_type: str | None, payload: Any) -> Rejection | None:
    content_type = request.headers.get("content-type", "")
    if content_type and not content_type.split(";")[0].strip().endswith("json"):
        return Rejection.UNSUPPORTED_MEDIA_TYPE
    if not event_type:
        return Rejection.MISSING_EVENT_HEADER
    if event_type not in KNOWN_EVENTS:
        return Rejection.UNKNOWN_EVENT_TYPE
    if not isinstance(payload, dict) or not isinstance(payload.get("object_kind"), str):
        return Rejection.MALFORMED_PAYLOAD
    return None
