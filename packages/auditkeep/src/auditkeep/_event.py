"""The audit entry: its parts, its vocabulary and its published JSON Schema.

The wire form is one JSON object per entry (see ``schema/audit-event.schema.json``).
``AuditLogger.emit`` builds that object directly for speed; ``AuditEvent`` is the
typed, immutable view used by readers (query tools, tests).
"""

from __future__ import annotations

import contextlib
import enum
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import orjson

SCHEMA_VERSION: Final = 1
EVENT_TYPE: Final = "audit"
ACTION_PATTERN: Final = r"^[a-z0-9_]+(\.[a-z0-9_]+)+$"
"""What an action name must match (the schema's ``action.pattern``): dotted, lower case."""
ACTION_MAX_CHARS: Final = 128
"""The longest action name (the schema's ``action.maxLength``)."""

TargetValue = str | int | float | bool | None
"""A value allowed in ``target``: scalars only, so targets stay filterable."""


class Outcome(enum.StrEnum):
    """Whether the audited action worked.

    .. versionadded:: 0.1.0
    """

    SUCCESS = "success"
    FAILURE = "failure"


class ErrorClass(enum.StrEnum):
    """The class of a failure, stable across providers so it can be filtered on.

    .. versionadded:: 0.1.0
    """

    AUTH_FAILURE = "auth_failure"
    NOT_FOUND = "not_found"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    VALIDATION_ERROR = "validation_error"
    GIT_ERROR = "git_error"
    NON_FAST_FORWARD = "non_fast_forward"
    PROTECTED_BRANCH = "protected_branch"
    INTERNAL_ERROR = "internal_error"


OUTCOMES: Final[dict[str, Outcome]] = {o.value: o for o in Outcome}
"""Each outcome by its value (StrEnum members hash like their values: both spellings map)."""
ERROR_CLASSES: Final[dict[str, ErrorClass]] = {e.value: e for e in ErrorClass}
"""Each error class by its value."""
E = TypeVar("E", Outcome, ErrorClass)


def lookup(table: Mapping[str, E], value: object) -> E | None:
    """``table[value]``, trying a str subclass as plain text; None when absent or unusable."""
    with contextlib.suppress(Exception):  # KeyError, or TypeError when unhashable
        return table[value]  # type: ignore[index]
    try:
        return table.get(str.__str__(value)) if isinstance(value, str) else None
    except Exception:  # noqa: BLE001 - even isinstance() runs the caller's __class__
        return None


class ActorType(enum.StrEnum):
    """Who or what caused an action (SPEC.md).

    .. versionadded:: 0.1.0
    """

    WEBHOOK_EVENT = "webhook_event"
    POLL_CYCLE = "poll_cycle"
    ADMIN_ACTION = "admin_action"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    """The principal on whose behalf an action runs.

    .. versionadded:: 0.1.0
    """

    type: str
    id: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}


SYSTEM_ACTOR: Final = Actor(ActorType.SYSTEM, "unscoped")
"""The actor recorded for entries emitted outside any correlation scope."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit entry as read back from a sink.

    ``target`` always has ``resource_type``; the other keys depend on it
    (``project_id``, ``mr_iid``, ``issue_key``, ``branch``, ``commit_sha``, ...).
    ``truncated`` says something was cut to fit a limit, ``coerced`` that a
    value could not be recorded as given and was replaced (see the schema).

    .. versionadded:: 0.1.0
    """

    event_id: str
    timestamp: str
    action: str
    actor: Actor
    target: Mapping[str, TargetValue]
    outcome: Outcome
    correlation_id: str
    service: str
    error: ErrorClass | None = None
    error_message: str | None = None
    duration_ms: float | None = None
    http_status: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    uncorrelated: bool = False
    truncated: bool = False
    coerced: bool = False
    trace_id: str | None = None
    span_id: str | None = None
    schema_version: int = SCHEMA_VERSION
    event_type: str = EVENT_TYPE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Build an event from its wire form (tolerates unknown extra keys)."""
        actor = data["actor"]
        error = data.get("error")
        return cls(
            event_id=data["event_id"],
            timestamp=data["timestamp"],
            action=data["action"],
            actor=Actor(actor["type"], actor["id"]),
            target=dict(data.get("target") or {}),
            outcome=Outcome(data["outcome"]),
            correlation_id=data["correlation_id"],
            service=data["service"],
            error=ErrorClass(error) if error else None,
            error_message=data.get("error_message"),
            duration_ms=data.get("duration_ms"),
            http_status=data.get("http_status"),
            details=dict(data.get("details") or {}),
            uncorrelated=bool(data.get("uncorrelated", False)),
            truncated=bool(data.get("truncated", False)),
            coerced=bool(data.get("coerced", False)),
            trace_id=data.get("trace_id"),
            span_id=data.get("span_id"),
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
            event_type=data.get("event_type", EVENT_TYPE),
        )

    @classmethod
    def from_json(cls, line: bytes | str) -> AuditEvent:
        """Parse one JSON line."""
        return cls.from_dict(orjson.loads(line))


def load_schema() -> dict[str, Any]:
    """Return the published JSON Schema of an entry.

    .. versionadded:: 0.1.0
    """
    text = (
        importlib.resources.files("auditkeep")
        .joinpath("schema/audit-event.schema.json")
        .read_bytes()
    )
    schema: dict[str, Any] = orjson.loads(text)
    return schema
