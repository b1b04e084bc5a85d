"""auditrail: a lossless, structured, correlated audit trail.

Everything an application uses is importable from here, and ``__all__`` below
is the public API (``tests/auditrail/test_public_api.py`` holds it to the
README and docs)::

    import auditrail

    audit = auditrail.configure(service="my-service")   # from AUDIT_LOG_*
    audit.emit("billing.invoice.sent", target={"resource_type": "invoice", "id": 7})

Three namespaces are public beside it, each for a reason of its own:
``auditrail.integrations.httpx`` (needs the ``http`` extra, so importing
``auditrail`` never needs httpx), ``auditrail.query`` (reading a trail back)
and ``auditrail.testing`` (helpers for tests). Every other module is internal:
its name and contents may change without notice.

.. versionadded:: 0.1.0
"""

from auditrail._call import AuditCall
from auditrail._classify import classify_exception, classify_http_status
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
from auditrail._retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from auditrail.config import AuditConfig
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
from auditrail.delivery.options import DeliveryOptions, Durability
from auditrail.exceptions import (
    AlreadyConfiguredError,
    AuditError,
    ConfigError,
    InputError,
    InvalidEntryError,
    LoggerClosedError,
    MissingDependencyError,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    SpoolSyncError,
    SpoolWriteError,
)
from auditrail.logger import Audited, AuditLogger
from auditrail.metrics import AuditMetrics
from auditrail.redact import SecretRedactor, register_secret
from auditrail.runtime import configure, get_logger, install_sigterm_handler
from auditrail.sinks import (
    FileSink,
    HttpSink,
    InMemorySink,
    StdoutSink,
    SyslogSink,
    install_sighup_reopen,
)
from auditrail.typing import Sink, SinkResult, SinkStatus

__version__ = "0.1.0"

__all__ = [
    "MAX_RETRY_AFTER_S",
    "SCHEMA_VERSION",
    "Actor",
    "ActorType",
    "AlreadyConfiguredError",
    "AuditCall",
    "AuditConfig",
    "AuditError",
    "AuditEvent",
    "AuditLogger",
    "AuditMetrics",
    "Audited",
    "ConfigError",
    "ContextThreadPoolExecutor",
    "DeliveryOptions",
    "Durability",
    "ErrorClass",
    "FileSink",
    "HttpSink",
    "InMemorySink",
    "InputError",
    "InvalidEntryError",
    "LoggerClosedError",
    "MissingDependencyError",
    "Outcome",
    "SecretRedactor",
    "Sink",
    "SinkResult",
    "SinkStatus",
    "SpoolError",
    "SpoolFullError",
    "SpoolLockedError",
    "SpoolSyncError",
    "SpoolWriteError",
    "StdoutSink",
    "SyslogSink",
    "__version__",
    "bind_correlation",
    "classify_exception",
    "classify_http_status",
    "configure",
    "copy_context_to_thread",
    "correlation_headers",
    "correlation_scope",
    "get_actor",
    "get_correlation_id",
    "get_logger",
    "install_sighup_reopen",
    "install_sigterm_handler",
    "load_schema",
    "new_correlation_id",
    "new_event_id",
    "parse_retry_after",
    "register_secret",
    "reset_correlation",
    "scope_from_env",
    "subprocess_env",
]
