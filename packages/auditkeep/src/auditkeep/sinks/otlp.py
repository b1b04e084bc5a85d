"""OTLP logs over HTTP/protobuf to an OpenTelemetry Collector (``AUDIT_LOG_DESTINATION=otlp``).

This is a sink like the http sink, behind auditkeep's own delivery pipeline: buffer,
spool, retries and dead letters are the pipeline's, so nothing is dropped when the
Collector is down or slow. The OpenTelemetry SDK's ``BatchLogRecordProcessor`` is not
used because it drops records when its queue is full. The transport, the TLS options,
the retry policy and the scrubbing of errors are the http sink's
(``sinks/_http_transport.py``): ``408``, ``429`` and ``5xx`` (so 502, 503, 504) and
connection errors are ``RETRY`` with ``Retry-After`` honoured; any other status (400,
401, 403, 404, 413) is ``FAILURE``, and the pipeline dead-letters the batch. The OTLP
specification retries only 429, 502, 503 and 504; audit data is retried on 408, 500
and 501 too, because an outage must lose nothing (a redelivery only costs time).

Each request is an ``ExportLogsServiceRequest`` built with the official
``opentelemetry-proto`` messages (``Content-Type: application/x-protobuf``, optionally
gzip). The mapping of an entry to a ``LogRecord`` (docs/otlp.md has the table):

- ``body``: the entry's exact JSON line, as a string. Not a kvlist: the line is what
  the schema validates and what a hash over the exact bytes can verify, and a kvlist
  would lose JSON's types (``null``, integers above 2**63) and key order on the way.
- resource attribute ``service.name``: the entry's ``service`` (one ``ResourceLogs``
  per service in a request); scope ``auditkeep`` with the library's version.
- attributes ``audit.action``, ``audit.outcome``, ``audit.correlation_id`` (absent when
  the entry has none), ``audit.event_id``, and ``log.record.uid`` (the semantic
  conventions' deduplication key) = the ``event_id``.
- ``trace_id`` / ``span_id``: the entry's top-level ``trace_id`` (32 hex digits) and
  ``span_id`` (16 hex digits) when it has valid ones (never all zeros).
- ``time_unix_nano``: the entry's ``timestamp``; ``observed_time_unix_nano``: when this
  sink built the request (each attempt builds it again, so after an outage the gap shows
  how long the entry waited).
- severity: outcome ``success`` is INFO (9), ``failure`` is WARN (13): a failed call is
  worth a look, but it is the audited action that failed, not the audit trail, and
  ERROR would page people for every 404 the service was told. No outcome (a line that
  is not an entry): UNSPECIFIED, body = the line as it is.

Partial success: the Collector answers 200 with ``partial_success.rejected_log_records``
> 0 when it refused some records (and does not say which). The specification says the
client must not retry such a request, and the refusal is the Collector's decision about
those records, like a 400: the batch is ``FAILURE``, so the pipeline dead-letters all of
it. Nothing is lost (every rejected record is among the dead letters); the records the
Collector took arrive twice if the dead letters are redelivered (at-least-once, as
everywhere: deduplicate by ``log.record.uid``). A partial success that rejects nothing
but carries an ``error_message`` is a warning from the Collector: logged once per
message (``auditkeep.delivery``), the batch is delivered.

A batch is split into several requests so that no body exceeds ``max_body_bytes``
(before gzip); the first request that does not succeed decides the batch's result, as
in the http sink.

Hand-encoding protobuf was not needed: ``bench/bench_http.py`` measures this sink
beside the http sink in the same run (docs/benchmarks.md).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import logging
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from auditkeep._env import env_int
from auditkeep._optional import missing_dependency
from auditkeep.exceptions import ConfigError, MissingDependencyError
from auditkeep.redact import MIN_SECRET_CHARS, register_secret
from auditkeep.sinks._http_bodies import _entry_time, _load
from auditkeep.sinks._http_transport import (
    CONTROL,
    HEADER_NAME,
    HttpTransport,
    PostingSink,
    Tls,
    check_endpoint,
    endpoint_from_env,
    read_secret_file,
    safe_url,
    timeouts_from_env,
    tls_from_env,
    tls_load_error,
)
from auditkeep.typing import SinkResult

if TYPE_CHECKING:
    import httpx

__all__ = ["OtlpSink", "otlp_sink_from_env"]

DEFAULT_PATH: Final = "/v1/logs"
CONTENT_TYPE: Final = "application/x-protobuf"
DEFAULT_MAX_BODY_BYTES: Final = 4 << 20  # the Collector's otlphttp receiver takes 20 MiB
MIN_MAX_BODY_BYTES: Final = 1024
MAX_MAX_BODY_BYTES: Final = 256 << 20
SCOPE_NAME: Final = "auditkeep"
SCOPE_VERSION: Final = "0.1.0"
SEVERITY: Final = {"success": (9, "INFO"), "failure": (13, "WARN")}
"""Outcome -> (SeverityNumber, severity text); see the module docstring."""
_MAX_ANSWER_BYTES: Final = 1 << 20  # larger answers are not decoded (a 2xx is still success)
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
_SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")
_RECORD_FRAME: Final = 6  # a record's tag and length prefix, at most
_GROUP_FRAME: Final = 18  # the ResourceLogs and ScopeLogs tags and length prefixes, at most
_WARNINGS_KEPT: Final = 16
# The logger of what delivery has to say (docs/delivery.md): a Collector's warning is one.
_log: Final = logging.getLogger("auditkeep.delivery")
_HINTS: Final = {
    401: "check AUDIT_LOG_OTLP_HEADERS (the credential)",
    403: "check AUDIT_LOG_OTLP_HEADERS and the credential's permissions",
    404: "check the path of AUDIT_LOG_OTLP_ENDPOINT (the Collector's is /v1/logs)",
    413: "lower AUDIT_LOG_OTLP_MAX_BODY_BYTES",
    415: "the Collector does not take OTLP/HTTP protobuf at AUDIT_LOG_OTLP_ENDPOINT",
}
_EXTRA: Final = "otlp"
_FEATURE: Final = "the otlp destination (OtlpSink)"


class OtlpSink(PostingSink):
    """POSTs each batch to an OTLP/HTTP logs endpoint as ``ExportLogsServiceRequest``\\ s.

    Args:
        endpoint: ``http://`` or ``https://`` URL; an empty path means ``/v1/logs``.
        headers: request headers, e.g. ``{"Authorization": "Bearer <token>"}``. Values are
            never shown in ``repr``, ``describe`` or errors.
        gzip: compress each body (``Content-Encoding: gzip``).
        verify: verify the Collector's certificate (default), or the path of a CA bundle
            file (or directory); ``False`` turns verification off.
        client_cert: (certificate PEM file, key PEM file) for mutual TLS.
        connect_timeout_s: limit for opening a connection.
        read_timeout_s: limit for sending the body and for each read of the answer.
        max_body_bytes: the largest body (before compression) of one request.
        transport: an httpx transport (tests use ``httpx.MockTransport``).

    Raises:
        ValueError: an argument is out of range.
        MissingDependencyError: opentelemetry-proto, protobuf or httpx is not installed
            (names the ``otlp`` extra).
        OSError, ssl.SSLError: the CA bundle or the client certificate cannot be loaded.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "otlp"

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        gzip: bool = False,
        verify: bool | str = True,
        client_cert: tuple[str, str] | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if isinstance(max_body_bytes, bool) or max_body_bytes < MIN_MAX_BODY_BYTES:
            raise ValueError(f"max_body_bytes must be at least {MIN_MAX_BODY_BYTES}")
        self.endpoint = check_endpoint(endpoint, default_path=DEFAULT_PATH)
        self.gzip = gzip
        self.max_body_bytes = max_body_bytes
        self._pb = _proto()
        PostingSink.__init__(self)
        self._warned: set[str] = set()
        self._group_sizes: dict[str, int] = {}
        self._http = HttpTransport(
            self.endpoint,
            headers=headers or {},
            tls=Tls(verify, client_cert),
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            extra=_EXTRA,
            feature=_FEATURE,
            hints=_HINTS,
            transport=transport,
        )
        self._client = self._http.client

    def __repr__(self) -> str:
        return (
            f"OtlpSink(endpoint={safe_url(self.endpoint)!r}, gzip={self.gzip}, "
            f"tls={self._http.tls.describe()!r}, max_body_bytes={self.max_body_bytes}, "
            f"headers={self._http.header_names!r})"
        )

    def _describe_parts(self) -> list[str]:
        return ["OTLP/HTTP protobuf logs", "gzip" if self.gzip else "uncompressed"]

    def _sends(self, lines: Sequence[bytes]) -> Iterator[Callable[[], SinkResult]]:
        return (functools.partial(self._post, body, n) for body, n in self.bodies(lines))

    # -- encoding -------------------------------------------------------------------

    def bodies(self, lines: Sequence[bytes]) -> Iterator[tuple[bytes, int]]:
        """(serialized request, number of records) for one batch, each within the limit."""
        pb = self._pb
        observed = time.time_ns()
        limit = self.max_body_bytes
        groups: dict[str, Any] = {}  # service -> ScopeLogs of the request being built
        request = pb.ExportLogsServiceRequest()
        size = count = 0
        for line in lines:
            service, record = self._record(line, observed)
            cost = record.ByteSize() + _RECORD_FRAME
            if service not in groups:
                cost += self._group_bytes(service)
            if count and size + cost > limit:
                yield request.SerializeToString(), count
                groups, request, size, count = {}, pb.ExportLogsServiceRequest(), 0, 0
                cost = record.ByteSize() + _RECORD_FRAME + self._group_bytes(service)
            scope = groups.get(service)
            if scope is None:
                scope = groups[service] = self._new_group(request, service)
            scope.log_records.append(record)
            size += cost
            count += 1
        if count:
            yield request.SerializeToString(), count

    def _record(self, line: bytes, observed: int) -> tuple[str, Any]:
        pb = self._pb
        text = line.decode("utf-8", "replace")
        # Fields are set in place: building AnyValue/KeyValue objects first and copying
        # them in costs four times as much (measured: 13 us against 3 us a record).
        record = pb.LogRecord(observed_time_unix_nano=observed)
        record.body.string_value = text
        entry = _load(line)
        if entry is None:
            return "", record
        seconds, micros = _entry_time(entry)
        record.time_unix_nano = seconds * 1_000_000_000 + micros * 1000
        outcome = entry.get("outcome")
        severity = SEVERITY.get(outcome) if isinstance(outcome, str) else None
        if severity is not None:
            # SeverityNumber is an int enum; its stub's ValueType is a NewType of int.
            record.severity_number = severity[0]  # type: ignore[assignment]
            record.severity_text = severity[1]
        attributes = record.attributes
        for key, field in (
            ("audit.action", "action"),
            ("audit.outcome", "outcome"),
            ("audit.correlation_id", "correlation_id"),
            ("audit.event_id", "event_id"),
            ("log.record.uid", "event_id"),
        ):
            value = entry.get(field)
            if isinstance(value, str):
                pair = attributes.add()
                pair.key = key
                pair.value.string_value = value
        trace_id = entry.get("trace_id")
        if isinstance(trace_id, str) and _TRACE_ID.fullmatch(trace_id) and trace_id.strip("0"):
            record.trace_id = bytes.fromhex(trace_id)
            span_id = entry.get("span_id")
            if isinstance(span_id, str) and _SPAN_ID.fullmatch(span_id) and span_id.strip("0"):
                record.span_id = bytes.fromhex(span_id)
        service = entry.get("service")
        return (service if isinstance(service, str) else ""), record

    def _new_group(self, request: Any, service: str) -> Any:
        resource_logs = request.resource_logs.add()
        if service:
            pair = resource_logs.resource.attributes.add()
            pair.key = "service.name"
            pair.value.string_value = service
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = SCOPE_NAME
        scope_logs.scope.version = SCOPE_VERSION
        return scope_logs

    def _group_bytes(self, service: str) -> int:
        found = self._group_sizes.get(service)
        if found is None:
            request = self._pb.ExportLogsServiceRequest()
            self._new_group(request, service)
            found = int(request.ByteSize()) + _GROUP_FRAME
            if len(self._group_sizes) < 1024:  # services are few; a flood is not cached
                self._group_sizes[service] = found
        return found

    # -- one request ----------------------------------------------------------------

    def _post(self, body: bytes, count: int) -> SinkResult:
        response = self._http.post(body, CONTENT_TYPE, gzip=self.gzip)
        if isinstance(response, SinkResult):
            return response
        if not 200 <= response.status_code < 300:
            reason = self._status_message(response)
            return self._http.refusal(response, reason, variable="AUDIT_LOG_OTLP_ENDPOINT")
        return self._partial_success(response, count)

    def _decoded(self, response: httpx.Response, message: Any) -> Any | None:
        content = response.content
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not content or len(content) > _MAX_ANSWER_BYTES or kind != CONTENT_TYPE:
            return None
        try:
            return message.FromString(content)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError; an odd answer is no crash
            return None

    def _partial_success(self, response: httpx.Response, count: int) -> SinkResult:
        answer = self._decoded(response, self._pb.ExportLogsServiceResponse)
        if answer is None or not answer.HasField("partial_success"):
            return SinkResult.SUCCESS  # a 2xx: accepted
        partial = answer.partial_success
        message = self._http.scrub(partial.error_message)
        if partial.rejected_log_records > 0:
            text = (
                f"partial success: the Collector rejected {partial.rejected_log_records} of "
                f"{count} log records"
            )
            return SinkResult.failure(self._http.scrub(f"{text}: {message}" if message else text))
        if message and message not in self._warned and len(self._warned) < _WARNINGS_KEPT:
            self._warned.add(message)
            _log.warning(
                "destination otlp: the Collector accepted every record with a warning: %s",
                message,
            )
        return SinkResult.SUCCESS

    def _status_message(self, response: httpx.Response) -> str:
        """The Collector's reason: a ``google.rpc.Status`` (protobuf), or the body as text."""
        status = self._decoded(response, self._pb.Status)
        if status is not None:
            return self._http.scrub(status.message)
        return self._http.body_text(response)


# -- the protobuf messages ------------------------------------------------------------


class _Proto:
    """The message classes, imported when the first sink is built."""

    def __init__(self) -> None:
        try:
            import google.protobuf  # noqa: F401 - to name protobuf itself when it is missing
        except ImportError as exc:
            raise missing_dependency(
                exc, module="google", extra=_EXTRA, feature=_FEATURE, package="protobuf"
            ) from None
        try:
            from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
            from opentelemetry.proto.logs.v1 import logs_pb2
        except ImportError as exc:
            raise missing_dependency(
                exc,
                module="opentelemetry",
                extra=_EXTRA,
                feature=_FEATURE,
                package="opentelemetry-proto",
            ) from None
        self.ExportLogsServiceRequest = logs_service_pb2.ExportLogsServiceRequest
        self.ExportLogsServiceResponse = logs_service_pb2.ExportLogsServiceResponse
        self.LogRecord = logs_pb2.LogRecord
        self.Status = _status_message_class()


_proto_lock = threading.Lock()
_proto_modules: _Proto | None = None


def _proto() -> _Proto:
    global _proto_modules
    with _proto_lock:
        if _proto_modules is None:
            _proto_modules = _Proto()
        return _proto_modules


def _status_message_class() -> Any:
    """``google.rpc.Status`` (code, message), the body of an OTLP/HTTP error answer.

    Its generated module is in googleapis-common-protos, a dependency too many for two
    fields: the message is declared here, in a pool of its own, and decoded by protobuf
    itself (its ``details`` field is skipped as an unknown field).
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(
        name="auditkeep/google_rpc_status.proto", package="google.rpc", syntax="proto3"
    )
    message = proto.message_type.add(name="Status")
    field = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    message.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


# -- configuration ----------------------------------------------------------------------


def parse_headers(raw: str, name: str = "AUDIT_LOG_OTLP_HEADERS") -> dict[str, str]:
    """``k=v,k2=v2`` as ``OTEL_EXPORTER_OTLP_HEADERS`` (W3C Baggage style, values
    percent-decoded). Every value is a secret: an error never quotes one.

    Raises:
        ConfigError: naming ``name``.
    """
    headers: dict[str, str] = {}
    for number, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = urllib.parse.unquote(key).strip()
        value = urllib.parse.unquote(value).strip()
        if not sep or not HEADER_NAME.match(key):
            # Not even the name is quoted: without "=" the item may be a pasted token.
            raise ConfigError(
                name,
                f"item {number} is no Name=value pair with a valid header name; expected "
                "comma-separated Name=value pairs, values percent-encoded",
            )
        if not value:
            raise ConfigError(name, f"the value of {key} is empty")
        if CONTROL.search(value):
            raise ConfigError(name, f"the value of {key} holds control characters")
        headers[key] = value
    return headers


def _headers_text(env: Mapping[str, str]) -> tuple[str, str]:
    """(the ``k=v`` text, the variable it came from): inline or from a mounted file."""
    inline = env.get("AUDIT_LOG_OTLP_HEADERS", "").strip()
    file = env.get("AUDIT_LOG_OTLP_HEADERS_FILE", "").strip()
    if inline and file:
        raise ConfigError(
            "AUDIT_LOG_OTLP_HEADERS",
            "set either AUDIT_LOG_OTLP_HEADERS or AUDIT_LOG_OTLP_HEADERS_FILE, not both",
        )
    if file:
        name = "AUDIT_LOG_OTLP_HEADERS_FILE"
        return read_secret_file(name, file, "Name=value pairs"), name
    return inline, "AUDIT_LOG_OTLP_HEADERS"


def otlp_sink_from_env(env: Mapping[str, str]) -> OtlpSink:
    """Build an ``OtlpSink`` from ``AUDIT_LOG_OTLP_*`` settings.

    Every header value of at least ``MIN_SECRET_CHARS`` characters (and each word after
    the first, as the token of ``Bearer <token>``) is registered with the process-wide
    secret redactor, so it can never appear in an entry; shorter values are too short to
    be credentials (registering ``prod`` would redact every "prod"), but like all header
    values they are never shown by the sink.

    Raises:
        ConfigError: a missing or invalid setting (the message names the variable and the fix).

    .. versionadded:: 0.1.0
    """
    endpoint = endpoint_from_env(
        env, "AUDIT_LOG_OTLP_ENDPOINT", "https://otel-collector.example:4318/v1/logs"
    )
    parts = urllib.parse.urlsplit(endpoint)
    if parts.password and len(parts.password) >= MIN_SECRET_CHARS:
        register_secret(urllib.parse.unquote(parts.password))
    headers = parse_headers(*_headers_text(env))
    secrets = [v for v in headers.values() if len(v) >= MIN_SECRET_CHARS]
    secrets += [w for v in headers.values() for w in v.split()[1:] if len(w) >= MIN_SECRET_CHARS]
    register_secret(*secrets)
    compression = env.get("AUDIT_LOG_OTLP_COMPRESSION", "").strip().lower() or "none"
    if compression not in ("gzip", "none"):
        raise ConfigError(
            "AUDIT_LOG_OTLP_COMPRESSION", f"expected gzip or none, got {compression[:20]!r}"
        )
    tls = tls_from_env(
        env,
        verify_var="AUDIT_LOG_OTLP_VERIFY_TLS",
        ca_var="AUDIT_LOG_OTLP_CA_BUNDLE",
        cert_var="AUDIT_LOG_OTLP_CLIENT_CERT",
        key_var="AUDIT_LOG_OTLP_CLIENT_KEY",
    )
    connect, read = timeouts_from_env(
        env,
        connect_var="AUDIT_LOG_OTLP_CONNECT_TIMEOUT_S",
        read_var="AUDIT_LOG_OTLP_READ_TIMEOUT_S",
    )
    max_body = env_int(
        env,
        "AUDIT_LOG_OTLP_MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES,
        minimum=MIN_MAX_BODY_BYTES,
        maximum=MAX_MAX_BODY_BYTES,
    )
    try:
        return OtlpSink(
            endpoint,
            headers=headers,
            gzip=compression == "gzip",
            verify=tls.verify,
            client_cert=tls.client_cert,
            connect_timeout_s=connect,
            read_timeout_s=read,
            max_body_bytes=max_body,
        )
    except MissingDependencyError as exc:
        # A setting this environment cannot honour: a ConfigError naming it, in one line.
        raise ConfigError("AUDIT_LOG_DESTINATION", str(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        raise tls_load_error(
            tls, exc, ca_var="AUDIT_LOG_OTLP_CA_BUNDLE", cert_var="AUDIT_LOG_OTLP_CLIENT_CERT"
        ) from None
