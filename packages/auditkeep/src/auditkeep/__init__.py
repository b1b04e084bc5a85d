"""auditkeep: a lossless, structured, correlated audit trail.

Everything an application uses is importable from here, and ``__all__`` below
is the public API (``tests/auditkeep/test_public_api.py`` holds it to the
README and docs)::

    import auditkeep

    audit = auditkeep.configure(service="my-service")   # from AUDIT_LOG_*
    audit.emit("billing.invoice.sent", target={"resource_type": "invoice", "id": 7})

Three namespaces are public beside it, each for a reason of its own:
``auditkeep.integrations.httpx`` (needs the ``http`` extra, so importing
``auditkeep`` never needs httpx), ``auditkeep.query`` (reading a trail back)
and ``auditkeep.testing`` (helpers for tests). Every other module is internal:
its name and contents may change without notice.

.. versionadded:: 0.1.0
"""

from auditkeep._call import AuditCall
from auditkeep._classify import classify_exception, classify_http_status
from auditkeep._event import (
    SCHEMA_VERSION,
    Actor,
    ActorType,
    AuditEvent,
    ErrorClass,
    Outcome,
    load_schema,
)
from auditkeep._ids import new_correlation_id, new_event_id
from auditkeep._retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from auditkeep.config import AuditConfig
from auditkeep.context import (
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
from auditkeep.delivery.options import DeliveryOptions, Durability
from auditkeep.exceptions import (
    AlreadyConfiguredError,
    AuditError,
    ConfigError,
    InputError,
    InvalidEntryError,
    InvalidOptionError,
    LoggerClosedError,
    MissingDependencyError,
    SignerError,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    SpoolSyncError,
    SpoolWriteError,
)
from auditkeep.logger import Audited, AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor, register_secret
from auditkeep.runtime import configure, get_logger, install_sigterm_handler
from auditkeep.sinks import (
    FileSink,
    HttpSink,
    InMemorySink,
    StdoutSink,
    SyslogSink,
    install_sighup_reopen,
)
from auditkeep.typing import Sink, SinkResult, SinkStatus

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
    "InvalidOptionError",
    "LoggerClosedError",
    "MissingDependencyError",
    "Outcome",
    "SecretRedactor",
    "SignerError",
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
