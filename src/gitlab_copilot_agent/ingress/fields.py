"""Webhook headers parsed defensively, and header-derived audit text kept short.

Every value is bounded in length before anything converts it, so no header can
raise past the route (a 500) or make an audit entry large. One pass over the
raw headers; a single-valued header sent twice is malformed (which of the two
would a proxy, GitLab or the agent believe?).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from auditkeep.redact import default_redactor

MAX_ID_CHARS: Final = 128
"""Delivery ids (``webhook-id``, ``Idempotency-Key``, ``X-Gitlab-Event-UUID``) longer than this
are malformed. GitLab sends 36-character UUIDs."""

MAX_AUDIT_TEXT_CHARS: Final = 128
"""A header-derived audit field is at most this many bytes (after scrubbing and escaping)."""

HEADERS_TOO_LARGE: Final = "headers too large"

_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_CHARS}}}")  # visible ASCII: no spaces, no controls
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")

# Printable ASCII except the characters JSON would escape and the escape itself:
# everything else is percent-encoded, so a field's byte length in the entry is its length here.
_AUDIT_SAFE: Final = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '%"\\')

_SINGLE_VALUED: Final = frozenset(
    {
        b"x-gitlab-token",
        b"x-gitlab-event",
        b"x-gitlab-event-uuid",
        b"idempotency-key",
        b"webhook-id",
        b"webhook-timestamp",
        b"webhook-signature",
        b"content-type",
        b"content-length",
    }
)


@dataclass(frozen=True, slots=True)
class WebhookHeaders:
    """The headers the ingress reads, as sent (latin-1 decoded), plus what was wrong with them.

    ``problem`` names the first malformed header (``None`` when all parsed);
    the other fields still hold what could be read, for the audit entry.
    """

    token: str | None = None
    event_type: str | None = None
    event_uuid: str | None = None
    idempotency_key: str | None = None
    webhook_id: str | None = None
    timestamp: str | None = None
    signature: str | None = None
    content_type: str | None = None
    content_length: int | None = None
    forwarded_for: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def delivery_id(self) -> str | None:
        """GitLab's id of this delivery (``webhook-id`` equals ``Idempotency-Key`` when signed)."""
        return self.webhook_id or self.idempotency_key

    def signature_headers(self) -> dict[str, str]:
        """The Standard Webhooks headers, as ``verify_signature`` reads them."""
        found = {
            "webhook-id": self.webhook_id,
            "webhook-timestamp": self.timestamp,
            "webhook-signature": self.signature,
        }
        return {k: v for k, v in found.items() if v}


def parse_headers(raw: Iterable[tuple[bytes, bytes]], max_bytes: int = 16_384) -> WebhookHeaders:
    """Read the webhook headers from ASGI's raw (lower-cased name, value) pairs.

    ``max_bytes`` bounds the header block: h11's own bound only applies while
    a request is incomplete, so a block that arrives in one read passes it.
    """
    seen: dict[bytes, str] = {}
    forwarded: list[str] = []
    problem: str | None = None
    size = 0
    for name, value in raw:
        size += len(name) + len(value) + 4  # "name: value\r\n"
        if size > max_bytes:
            problem = HEADERS_TOO_LARGE
            break
        if name == b"x-forwarded-for":
            forwarded.append(value.decode("latin-1"))
        elif name in _SINGLE_VALUED:
            if name in seen:
                problem = problem or f"duplicate {name.decode()}"
                continue
            seen[name] = value.decode("latin-1")
    ids: dict[bytes, str | None] = {}
    for header in (b"x-gitlab-event-uuid", b"idempotency-key", b"webhook-id"):
        text = seen.get(header) or None  # an empty header is an absent one
        if text is not None and _ID.fullmatch(text) is None:
            problem = problem or f"malformed {header.decode()}"
            text = None
        ids[header] = text
    length: int | None = None
    declared = seen.get(b"content-length")
    if declared is not None:
        if _CONTENT_LENGTH.fullmatch(declared) is None:
            problem = problem or "malformed content-length"
        else:
            length = int(declared)
    return WebhookHeaders(
        token=seen.get(b"x-gitlab-token"),
        event_type=seen.get(b"x-gitlab-event"),
        event_uuid=ids[b"x-gitlab-event-uuid"],
        idempotency_key=ids[b"idempotency-key"],
        webhook_id=ids[b"webhook-id"],
        timestamp=seen.get(b"webhook-timestamp"),
        signature=seen.get(b"webhook-signature"),
        content_type=seen.get(b"content-type"),
        content_length=length,
        forwarded_for=tuple(forwarded),
        problem=problem,
    )


def is_delivery_id(value: str) -> bool:
    """True for a value the replay guard may key on (visible ASCII, at most 128 characters)."""
    return _ID.fullmatch(value) is not None


def audit_text(value: str | None, limit: int = MAX_AUDIT_TEXT_CHARS) -> str | None:
    """A header value made safe and short for an unauthenticated entry.

    Scrubbed first (a secret cut in half would no longer match), then
    percent-encoded outside printable ASCII (so JSON escaping cannot grow it),
    then cut: at most ``limit`` bytes in the entry.
    """
    if value is None:
        return None
    text = urllib.parse.quote(default_redactor.redact(value), safe=_AUDIT_SAFE)
    return text if len(text) <= limit else text[: limit - 3] + "..."
