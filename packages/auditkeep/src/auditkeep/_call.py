"""One audited call: the single place where the end of a call becomes its entry.

``AuditLogger.audited()`` (block and decorator) records through ``PendingCall``,
and so do ``auditkeep.integrations.httpx.AuditedTransport`` and the wrappers an
application writes around its own clients (they use ``audited()``). The rules
therefore hold for every audited call alike:

- **one entry per call**, whatever ended it: a return, an exception, or a
  ``BaseException`` that is no ``Exception`` (the task was cancelled, Ctrl-C,
  ``SystemExit``). Those last ones are ``outcome: failure`` with error
  ``timeout`` (see ``auditkeep._classify``) and ``details.cancelled: true``:
  the vocabulary of the published schema stays as it is, and a filter on the
  detail tells a cancelled call from one that timed out on the wire;
- **the caller's exception comes first**: when the call raised, nothing on the
  audit side (a closed logger, a value ``emit`` refuses, a failing classifier)
  replaces its exception. Without one, a closed logger raises
  ``LoggerClosedError`` (the call happened and could not be recorded);
- **the exception's text is rendered once**, here (class name and ``str()``,
  never raising), and scrubbed once, by ``emit``, like every string.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from auditkeep import _coerce
from auditkeep._classify import classify_exception, classify_http_status, status_of
from auditkeep._event import ERROR_CLASSES, Actor, ErrorClass, Outcome, lookup
from auditkeep.exceptions import InvalidEntryError

if TYPE_CHECKING:
    from auditkeep.logger import AuditLogger
    from auditkeep.redact import SecretRedactor


class CallSpan(Protocol):
    """A trace span around one audited call, current while the call runs."""

    def end(
        self, outcome: Outcome, error: ErrorClass | None, http_status: object, event_id: str
    ) -> None:
        """Close the span with what the call's entry records (called once, after the entry)."""
        ...


CallSpans = Callable[[str, object], CallSpan]
# Filled by auditkeep.integrations.opentelemetry: opens the span of an audited
# call (its action, its target). None, the default, costs one global read per call.
_call_spans: CallSpans | None = None


def set_call_spans(opener: CallSpans | None) -> CallSpans | None:
    """Install (or, with None, remove) the span opener of audited calls; return the previous."""
    global _call_spans
    previous, _call_spans = _call_spans, opener
    return previous


class AuditCall:
    """What an ``audited`` block may add to its entry before it is emitted.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("details", "error", "error_message", "http_status", "outcome", "target")

    def __init__(self, target: dict[str, Any], details: dict[str, Any]) -> None:
        self.target = target
        self.details = details
        self.http_status: int | None = None
        self.outcome: Outcome | None = None
        self.error: ErrorClass | None = None
        self.error_message: str | None = None

    def fail(self, error: ErrorClass | str, message: str | None = None) -> None:
        """Record a failure that raised no exception (e.g. a refused request).

        Raises:
            InvalidEntryError: ``error`` is not an ``ErrorClass`` value.
        """
        found = lookup(ERROR_CLASSES, error)
        if found is None:
            raise InvalidEntryError(
                f"error must be one of {sorted(ERROR_CLASSES)}; got <{_coerce.type_name(error)}>"
            )
        self.error = found
        self.outcome = Outcome.FAILURE
        self.error_message = message


class PendingCall:
    """A call under way: started when built, recorded once by ``finish``."""

    __slots__ = ("_action", "_actor", "_logger", "_span", "_started", "call")

    def __init__(
        self,
        logger: AuditLogger,
        action: str,
        target: object,
        details: object,
        actor: Actor | None,
    ) -> None:
        self._logger = logger
        self._action = action
        self._actor = actor
        self.call = AuditCall(_as_dict(target), _as_dict(details))
        self._span: CallSpan | None = None
        opener = _call_spans
        if opener is not None and logger.enabled:
            with contextlib.suppress(Exception):  # tracing never stops a call
                self._span = opener(action, self.call.target)
        self._started: int | None = time.perf_counter_ns()

    def finish(self, exc: BaseException | None) -> None:
        """Emit the call's entry (a second ``finish`` records nothing).

        Raises:
            LoggerClosedError, InvalidEntryError: only when ``exc`` is None; with
                the caller's exception nothing is raised here, the caller
                re-raises its own.
        """
        started, self._started = self._started, None
        if started is None:
            return
        try:
            if exc is None:
                self._record(started, None)
                return
            # Never replace the caller's own exception with ours (a closed logger
            # is counted by emit itself).
            with contextlib.suppress(Exception):
                self._record(started, exc)
        finally:
            span, self._span = self._span, None
            if span is not None:  # _record failed before its entry: close the span anyway
                with contextlib.suppress(Exception):
                    span.end(Outcome.FAILURE, ErrorClass.INTERNAL_ERROR, None, "")

    def _record(self, started: int, exc: BaseException | None) -> None:
        call = self.call
        duration_ms = (time.perf_counter_ns() - started) / 1e6
        outcome, error, message, status = (
            call.outcome,
            call.error,
            call.error_message,
            call.http_status,
        )
        details: object = call.details
        if exc is not None:
            outcome = Outcome.FAILURE
            classified, carried = _classified(exc)
            # An error class the block set stays, if it is one.
            error = (lookup(ERROR_CLASSES, error) if error is not None else None) or classified
            if message is None:
                message = exception_text(exc, self._logger._redactor)
            if status is None:
                status = carried
            if not isinstance(exc, Exception):
                details = _with_cancelled(details)
        elif outcome is None and status is not None:
            code, _ = _coerce.http_status(status)
            if code is not None and code >= 400:
                outcome = Outcome.FAILURE
                if error is None:
                    error = classify_http_status(code)
        final = outcome if outcome is not None else Outcome.SUCCESS
        event_id = ""
        try:
            # Emitted while the call's span is still current: the entry carries its span_id.
            event_id = self._logger.emit(
                self._action,
                outcome=final,
                target=call.target,
                actor=self._actor,
                error=error,
                error_message=message,
                duration_ms=duration_ms,
                http_status=status,
                details=cast(Mapping[str, Any], details),
            )
        finally:
            span, self._span = self._span, None
            if span is not None:
                with contextlib.suppress(Exception):
                    span.end(final, error, status, event_id)


def _as_dict(value: object) -> dict[str, Any]:
    """A copy the block may add to. A value that is no mapping is handed on as it
    is, for ``emit`` to record and flag rather than to fail here."""
    if value is None:
        return {}
    try:
        if type(value) is dict:
            return dict(value)
        if isinstance(value, Mapping):
            return dict(value.items())
        return cast(dict[str, Any], value)
    except Exception:  # noqa: BLE001 - emit records and flags what this cannot copy
        return cast(dict[str, Any], value)


def _with_cancelled(details: object) -> object:
    """``details`` plus ``cancelled: true``; a value that is no dict is left for emit to flag."""
    if type(details) is dict:
        return {**details, "cancelled": True}
    return details


def exception_text(exc: BaseException, redactor: SecretRedactor) -> str:
    """``"<class name>: <str(exc)>"``, never raising.

    ``emit`` scrubs the whole message; ``redactor`` scrubs a bounded repr
    before cutting it, when ``str(exc)`` itself fails.
    """
    name = _coerce.type_name(exc)
    text, _ = _coerce.safe_str(exc, redactor.scrub_then_cut)
    return f"{name}: {text}"


def _classified(exc: BaseException) -> tuple[ErrorClass, int | None]:
    """The error class and HTTP status of the caller's exception; never raises."""
    try:
        error = classify_exception(exc)
    except Exception:  # noqa: BLE001 - e.g. an audit_error_class that is no ErrorClass
        error = ErrorClass.INTERNAL_ERROR
    try:
        status = status_of(exc)
    except Exception:  # noqa: BLE001 - a property of the caller's exception may raise
        status = None
    return error, status
