"""Every exception auditkeep raises of its own, in one tree (all importable from ``auditkeep``).

::

    AuditError
    ├── ConfigError              invalid AUDIT_LOG_* setting (names the variable)
    ├── InvalidOptionError       a DeliveryOptions value out of range (also a ValueError)
    ├── AlreadyConfiguredError   configure() while the process logger is open
    ├── MissingDependencyError   an optional dependency is not installed (names the
    │                            extra to install; also an ImportError)
    ├── InvalidEntryError        emit()/audited() called with an invalid action, outcome
    │                            or error class (also a ValueError)
    ├── LoggerClosedError        emit() after close()
    ├── InputError               the query tools cannot find or read their input
    ├── SignerError              the separate checkpoint signer refused or cannot be reached
    └── SpoolError               the spool directory cannot be used
        ├── SpoolLockedError     another live process owns the spool directory
        ├── SpoolWriteError      an append was refused (disk full or failing)
        │   └── SpoolFullError   the spool is at its byte limit
        └── SpoolSyncError       appended, but the fsync after it failed

``except auditkeep.AuditError`` catches all of them
(``tests/auditkeep/test_exception_tree.py`` fails on a class outside it).
Arguments that are wrong in kind (a negative size, an unknown format name
passed to a constructor) raise the built-in ``ValueError`` or ``TypeError``, as
the standard library does. Sinks never raise into the application: they
return a ``SinkResult`` and the pipeline turns trouble into retries, fallback
writes and metrics.

.. versionadded:: 0.1.0
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every auditkeep exception."""


class ConfigError(AuditError):
    """A setting is invalid; ``variable`` names it and the message says how to fix it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class SignerError(AuditError):
    """The separate checkpoint signer (``auditkeep signer``) refused a request or cannot be reached.

    Raised on the logger's checkpoint thread, which logs it and goes on (the
    entries are still chained and delivered); never raised into ``emit``.
    """


class AlreadyConfiguredError(AuditError):
    """``configure()`` was called while the process logger it built before is still open.

    Replacing it would close a logger other code already holds; use
    ``get_logger()``, or close the current logger first.
    """


class MissingDependencyError(AuditError, ImportError):
    """A feature needs an optional dependency that is not installed.

    The message names the extra that brings it (``pip install 'auditkeep[http]'``);
    ``extra`` holds its name.
    """

    def __init__(self, message: str, *, name: str, extra: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra


class InvalidEntryError(AuditError, ValueError):
    """An ``emit()`` or ``audited()`` call names an action, outcome or error class the schema lacks.

    A programming error in the call itself, raised before anything is recorded.
    It is the only error bad input can make ``emit()`` raise: any *value*
    (``target``, ``details``, ``actor``, ``error_message``, ``duration_ms``,
    ``http_status``) is recorded, cut or replaced instead, and the entry is
    flagged ``truncated`` / ``coerced``. The message never repeats a credential.
    """


class InvalidOptionError(AuditError, ValueError):
    """A ``DeliveryOptions`` value is out of range; ``option`` names the field."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


class LoggerClosedError(AuditError):
    """``emit()`` was called after ``close()``; the call is counted, not silently dropped."""


class InputError(AuditError):
    """The query tools' input files cannot be found or read.

    .. versionadded:: 0.1.0
    """


class SpoolError(AuditError):
    """The spool directory cannot be used."""


class SpoolLockedError(SpoolError):
    """Another live process holds the spool directory's lock."""


class SpoolWriteError(SpoolError):
    """An append was refused: the disk is full or failing, or the spool is at its limit.

    ``committed`` is how many of the leading payloads are nevertheless in the
    spool (0 unless a failed write could not be cut back, see the spool
    module's docstring), the last of them with id ``last_id``; ``reason`` is a
    short label for metrics (``full`` for the byte limit, else the errno name
    such as ``ENOSPC``).
    """

    def __init__(
        self, message: str, *, committed: int = 0, last_id: int = 0, reason: str = "full"
    ) -> None:
        super().__init__(message)
        self.committed = committed
        self.last_id = last_id
        self.reason = reason


class SpoolFullError(SpoolWriteError):
    """Appending would take the spool past its byte limit."""


class SpoolSyncError(SpoolError):
    """The records were appended (``last_id``) but the fsync that should follow failed."""

    def __init__(self, message: str, *, last_id: int) -> None:
        super().__init__(message)
        self.last_id = last_id
