"""OpenTelemetry tracing for the audit trail: trace ids in entries, spans for audited calls.

``enable()`` installs three hooks, and ``disable()`` removes them; without
them (the default) nothing in auditkeep imports ``opentelemetry``:

- **entries**: every entry emitted while a span is active carries top-level
  ``trace_id`` (32 lower-case hex digits) and ``span_id`` (16), the W3C ids of
  that span, so a trace viewer and the audit trail lead to each other;
- **audited calls**: each ``AuditLogger.audited()`` block, decorator and
  ``AuditedTransport`` request (``auditkeep._call``, the one place every
  audited call goes through) runs in a span named after its action, of kind
  ``CLIENT``, current while the call runs, so its entry carries the span's
  own id. Its attributes: ``audit.action``, ``audit.outcome``,
  ``audit.event_id`` (the entry's), ``audit.resource_type``,
  ``correlation_id``, ``error.type`` and ``http.response.status_code`` when
  there is one; a failure sets the span's status to error. Target and details
  values are **not** copied onto spans: they are scrubbed in the entry, which
  the event id leads to;
- **processes and requests**: ``subprocess_env()`` adds ``TRACEPARENT`` /
  ``TRACESTATE`` of the active span and ``BAGGAGE`` with
  ``correlation_id=<id>``; ``correlation_headers()`` (and so
  ``AuditedTransport``) adds the same as ``traceparent``/``tracestate``/
  ``baggage`` headers; ``scope_from_env()`` in the child continues that trace
  for its block; and a correlation scope that opens while a span is recording
  sets the span's ``correlation_id`` attribute, unless it has one (a span
  keeps the scope it began in, or the first one opened in it).

The W3C formats are used whatever ``OTEL_PROPAGATORS`` says: they are what
``TRACEPARENT`` means. Spans come from the global tracer provider unless one is
given; configuring the SDK (exporters, sampling) is the application's part.

Needs the ``otel`` extra (``opentelemetry-api``); without it, importing this
module raises ``auditkeep.MissingDependencyError`` naming the extra.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

from auditkeep._optional import missing_dependency

try:
    from opentelemetry import baggage, trace
    from opentelemetry import context as otel_context
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:
    raise missing_dependency(
        exc,
        module="opentelemetry",
        extra="otel",
        feature="auditkeep.integrations.opentelemetry",
    ) from None

from auditkeep import _call, context, logger
from auditkeep._event import ErrorClass, Outcome
from auditkeep.context import get_correlation_id

__all__ = ["BAGGAGE_KEY", "SPAN_ATTRIBUTE", "disable", "enable", "enabled", "trace_fields"]

BAGGAGE_KEY: Final = "correlation_id"
"""The W3C baggage member that carries the correlation id to child processes and requests."""
SPAN_ATTRIBUTE: Final = "correlation_id"
"""The span attribute that holds the correlation id."""

_TRACE_CONTEXT: Final = TraceContextTextMapPropagator()
_BAGGAGE: Final = W3CBaggagePropagator()
_tracer: trace.Tracer | None = None


def trace_fields() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of the active span, or None when none is active."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


class _Propagation:
    """``auditkeep.context.Propagation``: W3C trace context and baggage, in and out."""

    def fields(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        if not trace.get_current_span().get_span_context().is_valid:
            return carrier
        _TRACE_CONTEXT.inject(carrier)
        cid = get_correlation_id()
        ctx = baggage.set_baggage(BAGGAGE_KEY, cid) if cid else None
        _BAGGAGE.inject(carrier, context=ctx)
        return carrier

    @contextlib.contextmanager
    def continued(self, carrier: Mapping[str, str]) -> Iterator[str | None]:
        if not carrier:  # nothing handed down: the block keeps the current context
            yield None
            return
        # Over the current context: without a (valid) traceparent the active span stays.
        ctx = _TRACE_CONTEXT.extract(carrier, context=otel_context.get_current())
        ctx = _BAGGAGE.extract(carrier, context=ctx)
        found = baggage.get_baggage(BAGGAGE_KEY, ctx)
        token = otel_context.attach(ctx)
        try:
            yield found if isinstance(found, str) and found else None
        finally:
            otel_context.detach(token)

    def scope_opened(self, correlation_id: str) -> None:
        # A span keeps the first scope opened in it (a span opened before any scope, like
        # a server span, gets its delivery's); one opened in a scope already has it.
        span = trace.get_current_span()
        if span.is_recording():
            known = getattr(span, "attributes", None)  # the SDK's spans can be read
            if not (isinstance(known, Mapping) and SPAN_ATTRIBUTE in known):
                span.set_attribute(SPAN_ATTRIBUTE, correlation_id)


class _CallSpan:
    """``auditkeep._call.CallSpan``: one span, current from the call's start to its entry."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def end(
        self, outcome: Outcome, error: ErrorClass | None, http_status: object, event_id: str
    ) -> None:
        span = self._span
        try:
            if span.is_recording():
                attributes: dict[str, Any] = {"audit.outcome": outcome.value}
                if event_id:
                    attributes["audit.event_id"] = event_id
                if type(http_status) is int:
                    attributes["http.response.status_code"] = http_status
                if outcome is Outcome.FAILURE:
                    attributes["error.type"] = (error or ErrorClass.INTERNAL_ERROR).value
                    span.set_status(trace.StatusCode.ERROR)
                span.set_attributes(attributes)
        finally:
            otel_context.detach(self._token)
            span.end()


def _open_call_span(action: str, target: object) -> _CallSpan:
    tracer = _tracer if _tracer is not None else trace.get_tracer("auditkeep")  # after disable()
    attributes: dict[str, str] = {"audit.action": action}
    resource_type = target.get("resource_type") if isinstance(target, dict) else None
    if type(resource_type) is str and len(resource_type) <= 64:
        attributes["audit.resource_type"] = resource_type
    cid = get_correlation_id()
    if cid:
        attributes[SPAN_ATTRIBUTE] = cid
    return _CallSpan(tracer.start_span(action, kind=trace.SpanKind.CLIENT, attributes=attributes))


def enable(*, tracer_provider: trace.TracerProvider | None = None, call_spans: bool = True) -> None:
    """Put trace ids in entries and carry the trace to children; span audited calls.

    Args:
        tracer_provider: where the audited calls' spans come from (default:
            the global one, ``opentelemetry.trace.get_tracer_provider()``).
        call_spans: False keeps the ids and the propagation but opens no span
            per audited call.

    Idempotent; a second call replaces the first one's settings.
    """
    global _tracer
    # The global provider's tracer is a proxy: it follows a provider set later.
    _tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("auditkeep")
    logger.set_context_fields(trace_fields)
    context.set_propagation(_Propagation())
    _call.set_call_spans(_open_call_span if call_spans else None)


def disable() -> None:
    """Remove the hooks: entries carry no trace fields, nothing is propagated or spanned."""
    global _tracer
    logger.set_context_fields(None)
    context.set_propagation(None)
    _call.set_call_spans(None)
    _tracer = None


def enabled() -> bool:
    """True between ``enable()`` and ``disable()``."""
    return logger._context_fields is trace_fields
