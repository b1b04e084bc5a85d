"""OpenTelemetry traces for the agent: on only when the standard ``OTEL_*`` variables say so.

Tracing is **on** when ``OTEL_SDK_DISABLED`` is not ``true`` and either
``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is
set (then the exporter is ``otlp``). Otherwise this module imports nothing
from OpenTelemetry and every helper below is a no-op (``span()`` returns a
shared null context).

Exporters (``OTEL_TRACES_EXPORTER``, comma-separated): ``otlp`` (OTLP over
HTTP/protobuf, the ``opentelemetry-exporter-otlp-proto-http`` package: the
``tracing`` extra; ``OTEL_EXPORTER_OTLP_PROTOCOL`` must be ``http/protobuf``
when set), ``console`` (stdout), ``none``. The SDK itself reads the rest:
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the service name
defaults to ``gitlab-copilot-agent``), ``OTEL_TRACES_SAMPLER[_ARG]``,
``OTEL_BSP_*`` (the batch processor), and the OTLP exporter's
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``/``HEADERS``/``TIMEOUT``/
``CERTIFICATE``/``COMPRESSION``. Header values are registered with the
redactor, so a collector's token never reaches a log line or an entry.

What gets a span (besides every audited call, which
``auditkeep.integrations.opentelemetry`` spans in the library):
``POST /webhook`` (``WebhookSpans``, a new root: an unauthenticated sender
does not choose the trace), the handling of each accepted delivery
(``webhook.handle``), each coding task in the agent (``coding.task``), the
task process (``task.process``, continuing the agent's trace from
``TRACEPARENT``) and each of its steps (``task.clone``, ``task.code``,
``task.validate``, ``task.commit``, ``task.push``), and each Redis command
(``redis <COMMAND>``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from auditkeep import register_secret
from gitlab_copilot_agent.settings import SERVICE_NAME

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

__all__ = [
    "EXPORTERS",
    "FASTAPI_TELEMETRY_OFF",
    "TracingError",
    "WebhookSpans",
    "active",
    "aflush",
    "config_problem",
    "configure_from_env",
    "describe",
    "install",
    "shutdown",
    "span",
    "wanted",
]

EXPORTERS: Final = ("otlp", "console", "none")
"""The values ``OTEL_TRACES_EXPORTER`` may list."""

FASTAPI_TELEMETRY_OFF: Final[Any] = {  # fastapi.telemetry.TelemetryConfig (FastAPI 0.16x)
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}
"""``FastAPI(telemetry=...)``: FastAPI's own telemetry (0.16x) stays off. Once a tracer
provider is set it would open a span for every request that continues the *sender's*
``traceparent`` and baggage and records the query string, and log exceptions with their
input values; the agent's ``WebhookSpans`` records method, route and status only, as a new
root. (Older FastAPI versions ignore the keyword.)"""

_NULL: Final = contextlib.nullcontext()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_owned = False


class TracingError(ValueError):
    """A tracing variable is wrong; the message names it, in one line."""


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def _exporters(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("OTEL_TRACES_EXPORTER", "")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if not names and (
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    return [n for n in names if n != "none"]


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """True when the ``OTEL_*`` variables turn tracing on (see the module docstring)."""
    env = os.environ if environ is None else environ
    return not _flag(env, "OTEL_SDK_DISABLED") and bool(_exporters(env))


def describe(environ: Mapping[str, str] | None = None) -> str:
    """One line for ``check-config``: whether tracing is on, and with which exporters."""
    env = os.environ if environ is None else environ
    if _flag(env, "OTEL_SDK_DISABLED"):
        return "tracing: off (OTEL_SDK_DISABLED=true)"
    names = _exporters(env)
    if not names:
        return "tracing: off (no OTEL_TRACES_EXPORTER, no OTLP endpoint)"
    return f"tracing: on, exporters {', '.join(names)}"


def config_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with the tracing variables, in one line naming one; None when fine.

    Imports nothing from OpenTelemetry (it only looks the packages up), so
    ``check-config`` and ``serve`` judge the variables before anything starts.
    """
    env = os.environ if environ is None else environ
    if not wanted(env):
        return None
    names = _exporters(env)
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        return f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r}; use {', '.join(EXPORTERS)}"
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    if "otlp" in names and protocol and protocol.strip() != "http/protobuf":
        return "OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported by this agent"
    if importlib.util.find_spec("auditkeep.integrations.opentelemetry") is None:
        return (
            "OTEL_TRACES_EXPORTER: tracing needs auditkeep.integrations.opentelemetry, which "
            "this auditkeep has not: install the auditkeep that came with this agent"
        )
    needed = ["opentelemetry.sdk"] + (
        ["opentelemetry.exporter.otlp.proto.http"] * ("otlp" in names)
    )
    for module in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # the parent package is missing
            found = False
        if not found:
            return (
                f"OTEL_TRACES_EXPORTER: tracing needs {module}, which is not installed: "
                "pip install 'gitlab-copilot-agent[tracing]'"
            )
    return None


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Set up the SDK from ``OTEL_*`` when they say so; return whether tracing is on.

    Raises:
        TracingError: ``config_problem()`` found one.
    """
    env = os.environ if environ is None else environ
    if not wanted(env):
        return False
    problem = config_problem(env)
    if problem is not None:
        raise TracingError(problem)
    names = _exporters(env)
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for pair in env.get(variable, "").split(","):
            # As given, as the SDK decodes it, and the credential after "Bearer ".
            value = urllib.parse.unquote(pair.partition("=")[2].strip())
            for secret in {pair.partition("=")[2].strip(), value, value.rpartition(" ")[2]}:
                if len(secret) >= 8:
                    register_secret(secret)
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporters: list[Any] = []
    for name in names:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over this default.
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider, owned=True)
    return True


def install(provider: TracerProvider, *, owned: bool = False) -> None:
    """Trace with ``provider`` (tests pass one with an in-memory exporter).

    Also enables ``auditkeep.integrations.opentelemetry`` on the same provider:
    trace ids in entries, a span per audited call, ``TRACEPARENT`` into task
    processes. ``owned``: ``shutdown()`` shuts the provider down too.
    """
    from auditkeep.integrations import opentelemetry as audit_tracing

    global _tracer, _provider, _owned
    _tracer = provider.get_tracer("gitlab_copilot_agent")
    _provider, _owned = provider, owned
    audit_tracing.enable(tracer_provider=provider)


def shutdown() -> None:
    """Stop tracing; an SDK set up from ``OTEL_*`` exports what it holds first."""
    global _tracer, _provider, _owned
    if _tracer is None:
        return
    from auditkeep.integrations import opentelemetry as audit_tracing

    audit_tracing.disable()
    provider, owned = _provider, _owned
    _tracer, _provider, _owned = None, None, False
    if owned and provider is not None:
        provider.shutdown()


async def aflush(timeout_s: float = 10.0) -> None:
    """Export the spans the SDK still holds (at the service's shutdown); a no-op when off."""
    provider = _provider
    if provider is None or not _owned:
        return
    import asyncio

    await asyncio.to_thread(provider.force_flush, int(timeout_s * 1000))


def active() -> bool:
    """True while tracing is set up."""
    return _tracer is not None


def span(
    name: str, attributes: Mapping[str, str | int] | None = None, *, client: bool = False
) -> contextlib.AbstractContextManager[object]:
    """A span, current for the block (a shared null context when tracing is off).

    It carries the current correlation id as ``correlation_id``. ``client``:
    the span is a call to another service (kind ``CLIENT``).
    """
    tracer = _tracer
    if tracer is None:
        return _NULL
    from opentelemetry.trace import SpanKind

    from auditkeep import get_correlation_id
    from auditkeep.integrations.opentelemetry import SPAN_ATTRIBUTE

    values = {k: v for k, v in (attributes or {}).items() if v is not None}
    cid = get_correlation_id()
    if cid:
        values[SPAN_ATTRIBUTE] = cid
    return tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT if client else SpanKind.INTERNAL, attributes=values
    )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WebhookSpans:
    """ASGI middleware: a ``SERVER`` span for each ``POST /webhook``, a new trace's root.

    The incoming ``traceparent`` is ignored on purpose: deliveries come from
    outside, before authentication, and must not choose the agent's trace ids.
    Only the route, method and status are recorded (never a header or body).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = _tracer
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if tracer is None or path.rstrip("/") != "/webhook":
            await self.app(scope, receive, send)
            return
        from opentelemetry import context as otel_context
        from opentelemetry.trace import SpanKind, StatusCode

        status: list[int] = []

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        method = str(scope.get("method", ""))[:16]
        with tracer.start_as_current_span(
            f"{method} /webhook",
            context=otel_context.Context(),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": "/webhook"},
        ) as current:
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                if status:
                    current.set_attribute("http.response.status_code", status[0])
                    if status[0] >= 500:
                        current.set_status(StatusCode.ERROR)
