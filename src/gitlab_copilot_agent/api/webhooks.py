"""``POST /webhook``: rate limit, header parsing, body limits, authentication, replay guard,
parsing, dispatch.

Every request that reaches the route, accepted or not, leaves exactly one audit
entry, and no input gets a 5xx. What an unauthenticated sender can make the
agent write is bounded: header-derived fields are scrubbed, escaped and cut to
128 bytes each (``ingress.fields``), every ``webhook.auth.*`` entry is under
1 KiB, and a source whose refusals exhaust its bucket gets a 429 with an
entry of about 0.5 KiB before any body is read (``ingress.ratelimit``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from auditkeep import Actor, ErrorClass, Outcome, correlation_scope
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.api.deps import ServicesDep
from gitlab_copilot_agent.ingress.body import read_body
from gitlab_copilot_agent.ingress.fields import (
    HEADERS_TOO_LARGE,
    WebhookHeaders,
    audit_text,
    parse_headers,
)
from gitlab_copilot_agent.ingress.forwarded import Network, client_ip, rate_limit_key
from gitlab_copilot_agent.ingress.ratelimit import SourceRateLimiter
from gitlab_copilot_agent.ingress.replay import ReplayGuard, replay_keys
from gitlab_copilot_agent.payloads import project_id as payload_project_id
from gitlab_copilot_agent.settings import WebhookSettings
from gitlab_copilot_agent.webhook_auth import (
    Rejection,
    signing_key,
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
    Rejection.MALFORMED_TIMESTAMP: 400,
    Rejection.STALE_TIMESTAMP: 401,
    Rejection.MALFORMED_HEADER: 400,
    Rejection.HEADERS_TOO_LARGE: 431,
    Rejection.MISSING_DELIVERY_ID: 400,
    Rejection.REPLAYED: 409,
    Rejection.RATE_LIMITED: 429,
    Rejection.BODY_TOO_LARGE: 413,
    Rejection.BODY_TIMEOUT: 408,
    # nginx's "client closed request": nothing reaches the client, the entry says why.
    Rejection.CLIENT_DISCONNECTED: 499,
    Rejection.MALFORMED_PAYLOAD: 400,
    Rejection.MISSING_EVENT_HEADER: 400,
    Rejection.UNKNOWN_EVENT_TYPE: 400,
    Rejection.UNSUPPORTED_MEDIA_TYPE: 415,
}
_CUT_OFF = frozenset({Rejection.BODY_TIMEOUT, Rejection.CLIENT_DISCONNECTED})
_ERROR_CLASS = {
    Rejection.MALFORMED_TIMESTAMP: ErrorClass.VALIDATION_ERROR,
    Rejection.MALFORMED_HEADER: ErrorClass.VALIDATION_ERROR,
    Rejection.HEADERS_TOO_LARGE: ErrorClass.VALIDATION_ERROR,
    Rejection.MISSING_DELIVERY_ID: ErrorClass.VALIDATION_ERROR,
    Rejection.RATE_LIMITED: ErrorClass.RATE_LIMIT,
    Rejection.BODY_TOO_LARGE: ErrorClass.VALIDATION_ERROR,
    Rejection.BODY_TIMEOUT: ErrorClass.TIMEOUT,
    Rejection.CLIENT_DISCONNECTED: ErrorClass.NETWORK_ERROR,
    Rejection.MALFORMED_PAYLOAD: ErrorClass.VALIDATION_ERROR,
    Rejection.MISSING_EVENT_HEADER: ErrorClass.VALIDATION_ERROR,
    Rejection.UNKNOWN_EVENT_TYPE: ErrorClass.VALIDATION_ERROR,
    Rejection.UNSUPPORTED_MEDIA_TYPE: ErrorClass.VALIDATION_ERROR,
}


@dataclass
class WebhookConfig:
    """What the route needs to authenticate deliveries, and the state it keeps between them."""

    secret: str | None
    signing_key: bytes | None
    max_body_bytes: int
    tolerance_s: int
    trusted_proxies: list[Network]
    replay_guard: ReplayGuard
    allow_unsigned: bool = False
    body_timeout_s: float = 10.0
    rate_limiter: SourceRateLimiter | None = None
    max_header_bytes: int = 16_384

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> WebhookConfig:
        """The route's configuration and fresh state (replay guard, rate limiter)."""
        secret = settings.secret
        signing = settings.signing_token
        return cls(
            secret=secret.get_secret_value() if secret else None,
            signing_key=signing_key(signing.get_secret_value()) if signing else None,
            max_body_bytes=settings.max_body_bytes,
            tolerance_s=settings.timestamp_tolerance_s,
            trusted_proxies=list(settings.trusted_proxies),
            replay_guard=ReplayGuard(
                window_s=settings.replay_keep_s, max_keys=settings.replay_max_ids
            ),
            allow_unsigned=settings.allow_unsigned,
            body_timeout_s=settings.body_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            rate_limiter=SourceRateLimiter(
                burst=settings.rate_limit_burst,
                per_s=settings.rate_limit_per_s,
                max_sources=settings.rate_limit_sources,
            ),
        )


@dataclass
class _Verdict:
    rejection: Rejection | None = None
    method: str = "none"
    payload: Any = None
    detail: str | None = None


def _actor_id(headers: WebhookHeaders) -> str:
    # GitLab's event UUID names the event; without it, the delivery id. Only
    # UUIDs are taken, so a sender cannot write free text into the actor.
    for value in (headers.event_uuid, headers.webhook_id, headers.idempotency_key):
        if value is not None:
            try:
                return str(uuid.UUID(value))
            except ValueError:
                continue
    return "unknown"


@router.post("/webhook", status_code=202)
@router.post("/webhook/", status_code=202, include_in_schema=False)
async def receive_webhook(request: Request, services: ServicesDep) -> Response:
    """Receive a GitLab webhook: authenticate it, audit it, and queue its work."""
    config = services.webhook
    audit = services.audit
    headers = parse_headers(request.scope["headers"], max_bytes=config.max_header_bytes)
    peer = request.client.host if request.client else None
    source_ip = client_ip(peer, headers.forwarded_for, config.trusted_proxies)
    limiter = config.rate_limiter
    source = rate_limit_key(source_ip)

    with correlation_scope(Actor("webhook_event", _actor_id(headers))) as correlation_id:
        if limiter is not None and not limiter.acquire(source):
            return _rate_limited(audit, limiter, source, source_ip, correlation_id)
        try:
            verdict = await _ingest(request, headers, config)
        except Exception:  # noqa: BLE001 - a bug must still leave its one entry
            return _internal_error(audit, source_ip, correlation_id)
        payload = verdict.payload
        target: dict[str, Any] = {
            "resource_type": "webhook",
            "project_id": payload_project_id(payload),
        }
        details: dict[str, Any] = {
            "event_type": audit_text(headers.event_type),
            "source_ip": source_ip,
            "auth_method": verdict.method,
            "delivery_id": audit_text(headers.delivery_id),
        }
        rejection = verdict.rejection
        if rejection is not None:
            if verdict.detail is not None:
                details["malformed"] = verdict.detail
            status = _STATUS[rejection]
            audit.emit(
                "webhook.auth.rejected",
                outcome=Outcome.FAILURE,
                target=target,
                error=_ERROR_CLASS.get(rejection, ErrorClass.AUTH_FAILURE),
                error_message=f"webhook rejected: {rejection.value}",
                http_status=status,
                details={**details, "rejection_reason": rejection.value},
            )
            # A sender cut off mid-body cannot reuse the connection. A body refused
            # unread is discarded by the server under the same deadline (server_options).
            close = {"connection": "close"} if rejection in _CUT_OFF else {}
            return JSONResponse(
                {"error": rejection.value, "correlation_id": correlation_id},
                status_code=status,
                headers=close,
            )

        if limiter is not None:
            limiter.release(source)  # accepted deliveries do not drain the bucket
        event_type = headers.event_type
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


def _rate_limited(
    audit: AuditLogger,
    limiter: SourceRateLimiter,
    source: str,
    source_ip: str,
    correlation_id: str,
) -> Response:
    # Before any work, and the smallest entry that still says who and why: a
    # flood from one source costs one ~0.5 KiB entry per request and no body
    # read, no authentication, no parsing.
    reason = Rejection.RATE_LIMITED
    audit.emit(
        "webhook.auth.rejected",
        outcome=Outcome.FAILURE,
        target={"resource_type": "webhook"},
        error=ErrorClass.RATE_LIMIT,
        error_message=f"webhook rejected: {reason.value}",
        http_status=429,
        details={"source_ip": source_ip, "rejection_reason": reason.value},
    )
    return JSONResponse(
        {"error": reason.value, "correlation_id": correlation_id},
        status_code=429,
        headers={"retry-after": str(limiter.retry_after_s(source))},
    )


def _internal_error(audit: AuditLogger, source_ip: str, correlation_id: str) -> Response:
    # Not a rejection: the agent failed. No exception text (it may quote the input).
    audit.emit(
        "webhook.error",
        outcome=Outcome.FAILURE,
        target={"resource_type": "webhook"},
        error=ErrorClass.INTERNAL_ERROR,
        error_message="webhook handling failed inside the agent",
        http_status=500,
        details={"source_ip": source_ip},
    )
    return JSONResponse(
        {"error": "internal_error", "correlation_id": correlation_id},
        status_code=500,
        headers={"connection": "close"},
    )


async def _ingest(request: Request, headers: WebhookHeaders, config: WebhookConfig) -> _Verdict:
    """Everything between the rate limit and the answer; never raises for bad input."""
    if headers.problem is not None:
        reason = (
            Rejection.HEADERS_TOO_LARGE
            if headers.problem == HEADERS_TOO_LARGE
            else Rejection.MALFORMED_HEADER
        )
        return _Verdict(reason, detail=headers.problem)
    body = await read_body(
        request,
        limit=config.max_body_bytes,
        declared=headers.content_length,
        timeout_s=config.body_timeout_s,
    )
    if isinstance(body, Rejection):
        return _Verdict(body)
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    rejection, method = _authenticate(headers, body, config)
    verdict = _Verdict(rejection, method, payload)
    if rejection is not None:
        return verdict
    if method == "token" and not (headers.event_uuid or headers.delivery_id):
        # Without an id a replay could only be told apart by its body; GitLab
        # always sends X-Gitlab-Event-UUID, so a delivery without one is refused.
        verdict.rejection = Rejection.MISSING_DELIVERY_ID
        return verdict
    # Only authenticated deliveries are remembered: forged ones cannot poison
    # the guard against the real one.
    keys = replay_keys(
        delivery_ids=(headers.webhook_id, headers.idempotency_key),
        event_uuid=headers.event_uuid,
        body=body,
    )
    if not config.replay_guard.first_sighting(*keys):
        verdict.rejection = Rejection.REPLAYED
        return verdict
    verdict.rejection = _check_payload(headers, payload)
    return verdict


def _authenticate(
    headers: WebhookHeaders, body: bytes, config: WebhookConfig
) -> tuple[Rejection | None, str]:
    if config.signing_key is not None:
        if headers.signature is not None or config.secret is None:
            result = verify_signature(
                headers.signature_headers(),
                body,
                config.signing_key,
                tolerance_s=config.tolerance_s,
            )
            return result, "signature"
        if not config.allow_unsigned:
            # A signing token is configured: an unsigned delivery is a downgrade
            # (a captured delivery with its signature stripped), not a token delivery.
            return Rejection.MISSING_SIGNATURE, "signature"
    assert config.secret is not None
    return verify_token(headers.token, config.secret), "token"


def _check_payload(headers: WebhookHeaders, payload: Any) -> Rejection | None:
    content_type = headers.content_type or ""
    if content_type and not content_type.split(";")[0].strip().endswith("json"):
        return Rejection.UNSUPPORTED_MEDIA_TYPE
    event_type = headers.event_type
    if not event_type:
        return Rejection.MISSING_EVENT_HEADER
    if event_type not in KNOWN_EVENTS:
        return Rejection.UNKNOWN_EVENT_TYPE
    if not isinstance(payload, dict) or not isinstance(payload.get("object_kind"), str):
        return Rejection.MALFORMED_PAYLOAD
    return None
