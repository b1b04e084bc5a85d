"""auditrail: a lossless, structured, correlated audit trail.

.. versionadded:: 0.1.0
"""

from auditrail._event import (
    SCHEMA_VERSION,
    Actor,
    ActorType,
    AuditEvent,
    ErrorClass,
    Outcome,
    load_schema,
)
from auditrail._ids import new_correlation_id, new_event_id
from auditrail.context import (
    ContextThreadPoolExecutor,
    bind_correlation,
    copy_context_to_thread,
    correlation_headers,
    correlation_scope,
    get_actor,
    get_correlation_id,
    reset_correlation,
    scope_from_env,
    subprocess_env,
)
from auditrail.errors import classify_exception, classify_http_status
from auditrail.redact import SecretRedactor, register_secret
from auditrail.typing import Sink, SinkResult, SinkStatus

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Actor",
    "ActorType",
    "AuditEvent",
    "ContextThreadPoolExecutor",
    "ErrorClass",
    "Outcome",
    "SecretRedactor",
    "Sink",
    "SinkResult",
    "SinkStatus",
    "bind_correlation",
    "classify_exception",
    "classify_http_status",
    "copy_context_to_thread",
    "correlation_headers",
    "correlation_scope",
    "get_actor",
    "get_correlation_id",
    "load_schema",
    "new_correlation_id",
    "new_event_id",
    "register_secret",
    "reset_correlation",
    "scope_from_env",
    "subprocess_env",
]
