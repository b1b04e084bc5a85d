"""Webhook authentication: GitLab's secret token and its Standard Webhooks HMAC signature.

Pure functions and a replay guard; the route in ``api/webhooks.py`` decides
what to answer and what to audit.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence


class Rejection(enum.StrEnum):
    """Why a webhook delivery was refused (the ``rejection_reason`` of its audit entry)."""

    MISSING_TOKEN = "missing_token"  # noqa: S105 - a reason, not a password
    INVALID_TOKEN = "invalid_token"  # noqa: S105
    MISSING_SIGNATURE = "missing_signature"
    INVALID_SIGNATURE = "invalid_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    REPLAYED = "replayed"
    BODY_TOO_LARGE = "body_too_large"
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
    ``tolerance_s`` of now in either direction.
    """
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not webhook_id or not timestamp or not signatures:
        return Rejection.MISSING_SIGNATURE
    try:
        sent_at = int(timestamp)
    except ValueError:
        return Rejection.INVALID_SIGNATURE
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        return Rejection.STALE_TIMESTAMP
    expected = expected_signature(key, webhook_id, timestamp, body).encode()
    matched = False
    for part in signatures.split():
        version, _, signature = part.partition(",")
        # Compare every candidate: no early exit that would time which one matched.
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            matched = True
    return None if matched else Rejection.INVALID_SIGNATURE


class ReplayGuard:
    """Remembers delivery ids for ``window_s`` and refuses a second sighting.

    Bounded: the oldest ids are forgotten first once ``max_ids`` is reached
    (an id older than the timestamp tolerance is refused by the timestamp
    check anyway for signed deliveries).
    """

    def __init__(self, window_s: float, max_ids: int = 100_000) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_sighting(self, delivery_id: str, now: float | None = None) -> bool:
        """Record ``delivery_id``; False if it was already seen within the window."""
        current = time.monotonic() if now is None else now
        with self._lock:
            while self._seen:
                oldest_id, seen_at = next(iter(self._seen.items()))
                if current - seen_at <= self.window_s and len(self._seen) < self.max_ids:
                    break
                del self._seen[oldest_id]
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = current
            return True


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address to audit: the peer, or, behind trusted proxies, the first untrusted hop.

    ``X-Forwarded-For`` is read right to left and believed only while each hop
    is a trusted proxy, so a client cannot forge its address by sending the
    header itself.
    """
    address = peer or "unknown"
    if not forwarded_for or not _is_trusted(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a garbled chain: keep the last address we could verify
        address = hop
        if not _is_trusted(hop, trusted):
            return hop
    return address


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
