"""Webhook authentication: GitLab's secret token and its Standard Webhooks HMAC signature.

Pure functions; the route in ``api/webhooks.py`` decides what to answer and
what to audit, and ``gitlab_copilot_agent.ingress`` holds the replay guard,
the rate limiter and the header parsing.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Final

from gitlab_copilot_agent.ingress.fields import is_delivery_id

MAX_SIGNATURE_HEADER_CHARS: Final = 1024
"""A ``webhook-signature`` header longer than this is malformed (one ``v1`` signature is 47
characters; rotation sends a few)."""

_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix seconds, bounded before int()


class Rejection(enum.StrEnum):
    """Why a webhook delivery was refused (the ``rejection_reason`` of its audit entry)."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 - a reason, not a password
    INVALID_TOKEN = "invalid_token"  # noqa: S105
    MISSING_SIGNATURE = "missing_signature"
    INVALID_SIGNATURE = "invalid_signature"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    MALFORMED_HEADER = "malformed_header"
    HEADERS_TOO_LARGE = "headers_too_large"
    MISSING_DELIVERY_ID = "missing_delivery_id"
    REPLAYED = "replayed"
    RATE_LIMITED = "rate_limited"
    BODY_TOO_LARGE = "body_too_large"
    BODY_TIMEOUT = "body_timeout"
    CLIENT_DISCONNECTED = "client_disconnected"
    MALFORMED_PAYLOAD = "malformed_payload"
    MISSING_EVENT_HEADER = "missing_event_header"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"


def verify_token(presented: str | None, expected: str) -> Rejection | None:
    """Check ``X-Gitlab-Token`` in constant time."""
    if not presented:
        return Rejection.MISSING_TOKEN
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        return Rejection.INVALID_TOKEN
    return None


def signing_key(signing_token: str) -> bytes:
    """The HMAC key inside a ``whsec_<base64>`` signing token."""
    return base64.b64decode(signing_token.removeprefix("whsec_"))


def expected_signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1`` signature of a delivery: base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_signature(
    headers: Mapping[str, str],
    body: bytes,
    key: bytes,
    *,
    tolerance_s: int,
    now: float | None = None,
) -> Rejection | None:
    """Check Standard Webhooks headers over the exact raw body.

    Accepts the delivery if any space-separated ``v1,<sig>`` matches (several
    are sent while a key is rotated) and the timestamp is within
    ``tolerance_s`` of now in either direction. Every header is bounded in
    length before it is converted or hashed.
    """
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not webhook_id or not timestamp or not signatures:
        return Rejection.MISSING_SIGNATURE
    if not is_delivery_id(webhook_id) or len(signatures) > MAX_SIGNATURE_HEADER_CHARS:
        return Rejection.MALFORMED_HEADER
    if _TIMESTAMP.fullmatch(timestamp) is None:
        return Rejection.MALFORMED_TIMESTAMP
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return Rejection.STALE_TIMESTAMP
    expected = expected_signature(key, webhook_id, timestamp, body).encode()
    matched = False
    for part in signatures.split():
        version, _, signature = part.partition(",")
        # Compare every candidate: no early exit that would time which one matched.
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            matched = True
    return None if matched else Rejection.INVALID_SIGNATURE
