"""Exceptions raised by auditrail.

::

    AuditError
    ├── ConfigError          invalid AUDIT_LOG_* setting (names the variable)
    ├── InvalidEntryError    emit()/audited() called with an invalid action, outcome
    │                        or error class (also a ValueError)
    ├── InvalidOptionError   a DeliveryOptions value out of range (also a ValueError)
    ├── LoggerClosedError    emit() after close()
    └── SpoolError
        └── SpoolLockedError another live process owns the spool directory

Sinks never raise into the application: they return a ``SinkResult`` and the
pipeline turns trouble into retries, fallback writes and metrics.

.. versionadded:: 0.1.0
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every auditrail exception."""


class ConfigError(AuditError):
    """A setting is invalid; ``variable`` names it and the message says how to fix it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


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


class SpoolError(AuditError):
    """The spool directory cannot be used."""


class SpoolLockedError(SpoolError):
    """Another live process holds the spool directory's lock."""
