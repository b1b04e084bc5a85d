"""Real HTTP receivers on loopback for the http sink tests.

A ``Receiver`` is a ``ThreadingHTTPServer`` on a fixed free port that can be taken down
(it stops listening and cuts its open connections) and brought up again on the same
port. It speaks one intake dialect (``kind``): plain NDJSON or a JSON array, Splunk HEC,
Elasticsearch ``_bulk`` or Grafana Loki, and checks each request's real shape (path,
content type, gzip, authorization, body framing, per-entry fields). A request that breaks
the shape is answered like the real intake would (400, 401, 403) and recorded in
``problems``, so a test asserts ``problems == []``.

``otlp`` is an OpenTelemetry Collector's OTLP/HTTP logs receiver: it decodes each request
with the official ``ExportLogsServiceRequest`` message, checks every record against the
entry in its body (attributes, times, severity, trace context, resource ``service.name``),
answers ``ExportLogsServiceResponse`` (``otlp_reject(entry)`` makes it refuse records with
a partial success, as a Collector does) and errors as a protobuf ``google.rpc.Status``.
The entry lines it took are in ``lines``.

Faults are scripted: ``fail_status`` answers every request with one status, ``delay_s``
makes each request slow, ``es_item_fault(doc)`` gives a ``_bulk`` item its own status, and
``script(Reply(...), ...)`` queues one-shot answers (429 with ``Retry-After``, 503, a
connection reset, or "keep the entries, then reset" which forces an at-least-once
duplicate). ``received`` counts each event id every time it was accepted,
so ``distinct()`` and ``duplicates()`` give exact figures.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

KINDS = ("ndjson", "json_array", "splunk_hec", "elasticsearch_bulk", "loki", "otlp")
PROTOBUF = "application/x-protobuf"
HEC_KEYS = frozenset({"time", "host", "source", "sourcetype", "index", "event", "fields"})
HEC_SUCCESS = b'{"text":"Success","code":0}'


class ShapeError(Exception):
    """The request is not what the real intake accepts."""

    def __init__(self, message: str, status: int = 400, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class Reply:
    """A one-shot scripted answer.

    ``action``: ``respond`` (answer ``status``; a 2xx status still checks and keeps the
    entries), ``reset`` (drop the connection with a TCP reset, keep nothing) or
    ``accept_then_reset`` (keep the entries, then reset instead of answering).
    """

    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    action: str = "respond"


@dataclass
class Request:
    """What one request looked like and how it was answered."""

    started: float
    path: str
    headers: dict[str, str]
    wire_bytes: int
    body_bytes: int = 0
    status: int | None = None  # None: the connection was reset, no answer
    answered: float = 0.0
    event_ids: list[str] = field(default_factory=list)


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def entry_epoch_us(entry: dict[str, Any]) -> int:
    """Microseconds since the epoch of an entry's ``timestamp`` (independent of the sink)."""
    from datetime import datetime

    stamp = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
    return int(stamp.timestamp()) * 1_000_000 + stamp.microsecond


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver, address: tuple[str, int]) -> None:
        self.receiver = receiver
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.receiver._track(request, add=True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            self.receiver._track(request, add=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Cut connections and resets raise in the handler; that is the point of them.
        self.receiver.handler_errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        self.server.receiver._handle(self)

    def do_GET(self) -> None:
        self.send_error(405)

    def reset(self) -> None:
        """Drop the connection with an RST (SO_LINGER 0), answering nothing."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def answer(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 204 and body:
            self.wfile.write(body)


class Receiver:
    """A scriptable intake on ``127.0.0.1:<port>``; see the module docstring."""

    def __init__(
        self,
        kind: str = "ndjson",
        *,
        authorization: str | None = None,
        expect_gzip: bool | None = None,
        max_body_bytes: int | None = None,
        index: str | None = None,
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
    ) -> None:
        assert kind in KINDS
        self.kind = kind
        self.authorization = authorization
        self.expect_gzip = expect_gzip
        self.max_body_bytes = max_body_bytes
        self.index = index
        self.tls = tls
        self.client_ca = client_ca  # with tls: require a client certificate signed by it
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.fail_status: int | None = None
        self.delay_s = 0.0
        self.es_item_fault: Callable[[dict[str, Any]], int | None] = lambda doc: None
        self.otlp_reject: Callable[[dict[str, Any]], bool] = lambda entry: False
        self.lines: list[bytes] = []
        self.received: Counter[str] = Counter()
        self.requests: list[Request] = []
        self.problems: list[str] = []
        self.handler_errors = 0
        self.es_store: dict[str, dict[str, Any]] = {}
        self._script: deque[Reply] = deque()
        self._cond = threading.Condition()
        self._conns: set[Any] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> Receiver:
        """Listen on the receiver's port (again)."""
        assert self._server is None
        server = _Server(self, (self.host, self.port))
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            if self.client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(cafile=str(self.client_ca))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (a crash, seen from the client)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.wait_for(lambda: not self._conns, 10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, request: Any, *, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(request)
            else:
                self._conns.discard(request)
            self._cond.notify_all()

    # -- scripting and reading -------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue one-shot answers for the next requests, in order."""
        with self._cond:
            self._script.extend(replies)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds (checked after each request); False at the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def wait_for_requests(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` requests have been answered (or reset) in all."""
        return self.wait_for(lambda: len(self.requests) >= count, timeout_s)

    def distinct(self) -> set[str]:
        with self._cond:
            return set(self.received)

    def duplicates(self) -> int:
        """Entries accepted more than once (at-least-once redeliveries)."""
        with self._cond:
            return sum(count - 1 for count in self.received.values())

    def answered(self) -> list[Request]:
        with self._cond:
            return list(self.requests)

    # -- one request ---------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        stopping = handler.server.stopping
        length = handler.headers.get("Content-Length")
        if length is None:
            self._problem("request without Content-Length")
            handler.answer(411, b"{}")
            return
        raw = handler.rfile.read(int(length))
        if len(raw) < int(length):
            handler.close_connection = True  # cut mid-body (stop() or a client abort)
            return None
        request = Request(
            started=time.monotonic(),
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            wire_bytes=len(raw),
        )
        with self._cond:
            reply = self._script.popleft() if self._script else None
            fail_status = self.fail_status
            delay = self.delay_s
        if reply is not None:
            delay += reply.delay_s
        # Everything is recorded before the client can see an answer, so a test that
        # waited for the answer (logger.flush) reads complete figures.
        if delay and stopping.wait(delay):
            self._record(request)
            return handler.reset()  # taken down mid-request: nothing was kept
        if reply is not None and reply.action == "reset":
            self._record(request)
            return handler.reset()
        status = reply.status if reply is not None else (fail_status or 200)
        if not 200 <= status < 300:
            headers = {"Retry-After": reply.retry_after} if reply and reply.retry_after else {}
            request.status = status
            self._record(request)
            return handler.answer(
                status, self._error_body(status), headers, content_type=self._content_type()
            )
        try:
            body = self._decode(handler, raw)
            request.body_bytes = len(body)
            self._check_auth(handler)
            status, answer, ids = self._accept(handler.path, handler.headers, body)
        except ShapeError as exc:
            self._problem(str(exc))
            request.status = exc.status
            self._record(request)
            return handler.answer(
                exc.status,
                exc.body or self._error_body(exc.status),
                content_type=self._content_type(),
            )
        request.event_ids = ids
        if reply is not None and reply.action == "accept_then_reset":
            self._record(request, keep=ids)
            return handler.reset()
        request.status = status
        self._record(request, keep=ids)
        return handler.answer(status, answer, content_type=self._content_type())

    def _record(self, request: Request, keep: list[str] | None = None) -> None:
        request.answered = time.monotonic()
        with self._cond:
            if keep:
                self.received.update(keep)
            self.requests.append(request)
            self._cond.notify_all()

    def _problem(self, message: str) -> None:
        with self._cond:
            self.problems.append(message)

    def _content_type(self) -> str:
        return PROTOBUF if self.kind == "otlp" else "application/json"

    def _error_body(self, status: int) -> bytes:
        if self.kind == "otlp":
            return rpc_status(status, f"scripted HTTP {status}")
        if self.kind == "splunk_hec":
            known = {
                400: b'{"text":"Invalid data format","code":6}',
                401: b'{"text":"Token is required","code":2}',
                403: b'{"text":"Invalid token","code":4}',
                503: b'{"text":"Server is busy","code":9}',
            }
            return known.get(status, b'{"text":"Error","code":8}')
        return orjson.dumps({"error": {"status": status}})

    def _decode(self, handler: _Handler, raw: bytes) -> bytes:
        encoding = handler.headers.get("Content-Encoding")
        if self.expect_gzip is True and encoding != "gzip":
            raise ShapeError("expected Content-Encoding: gzip")
        if self.expect_gzip is False and encoding:
            raise ShapeError(f"unexpected Content-Encoding: {encoding}")
        if encoding == "gzip":
            try:
                body = gzip.decompress(raw)
            except OSError:
                raise ShapeError("Content-Encoding gzip but the body is not gzip") from None
        elif encoding:
            raise ShapeError(f"unsupported Content-Encoding {encoding}", 415)
        else:
            body = raw
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            raise ShapeError(f"body of {len(body)} bytes > {self.max_body_bytes}", 413)
        return body

    def _check_auth(self, handler: _Handler) -> None:
        if self.authorization is None:
            return
        got = handler.headers.get("Authorization")
        if got is None:
            raise ShapeError("no Authorization header", 401)
        if got != self.authorization:
            raise ShapeError("wrong Authorization header", 403)

    def _expect_content_type(self, headers: Any, wanted: str) -> None:
        got = (headers.get("Content-Type") or "").split(";")[0].strip()
        if got != wanted:
            raise ShapeError(f"Content-Type {got!r}, expected {wanted!r}", 415)

    def _accept(self, path: str, headers: Any, body: bytes) -> tuple[int, bytes, list[str]]:
        """Check the shape; return (status, answer body, accepted event ids)."""
        if self.kind == "ndjson":
            self._expect_content_type(headers, "application/x-ndjson")
            if not body.endswith(b"\n"):
                raise ShapeError("NDJSON body must end with a newline")
            entries = [_entry(line) for line in body[:-1].split(b"\n")]
            return 200, b'{"accepted":true}', [e["event_id"] for e in entries]
        if self.kind == "json_array":
            self._expect_content_type(headers, "application/json")
            items = _json(body)
            if not isinstance(items, list):
                raise ShapeError("JSON body must be an array")
            return 200, b'{"accepted":true}', [_entry_obj(e)["event_id"] for e in items]
        if self.kind == "splunk_hec":
            return self._accept_hec(path, headers, body)
        if self.kind == "elasticsearch_bulk":
            return self._accept_bulk(path, headers, body)
        if self.kind == "otlp":
            return self._accept_otlp(path, headers, body)
        return self._accept_loki(path, headers, body)

    def _accept_otlp(self, path: str, headers: Any, body: bytes) -> tuple[int, bytes, list[str]]:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        if path != "/v1/logs":
            raise ShapeError(f"OTLP path {path!r}", 404, rpc_status(404, "not found"))
        self._expect_content_type(headers, PROTOBUF)
        try:
            export = ExportLogsServiceRequest.FromString(body)
        except DecodeError:
            raise ShapeError(
                "not an ExportLogsServiceRequest", 400, rpc_status(400, "bad")
            ) from None
        ids, lines, rejected = [], [], 0
        for resource_logs in export.resource_logs:
            resource = {a.key: a.value.string_value for a in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                if scope_logs.scope.name != "auditkeep":
                    raise ShapeError(f"scope {scope_logs.scope.name!r}")
                for record in scope_logs.log_records:
                    line = record.body.string_value.encode()
                    entry = _entry(line)
                    check_otlp_record(record, entry, resource)
                    with self._cond:
                        refuse = self.otlp_reject(entry)
                    if refuse:
                        rejected += 1
                        continue
                    ids.append(entry["event_id"])
                    lines.append(line)
        if not ids and not rejected:
            raise ShapeError("an OTLP request without records")
        with self._cond:
            self.lines += lines
        answer = ExportLogsServiceResponse()
        if rejected:
            answer.partial_success.rejected_log_records = rejected
            answer.partial_success.error_message = "scripted: records refused by a processor"
        return 200, answer.SerializeToString(), ids

    def _accept_hec(self, path: str, headers: Any, body: bytes) -> tuple[int, bytes, list[str]]:
        if path != "/services/collector/event":
            raise ShapeError(
                f"HEC path {path!r}", 404, b'{"text":"The requested URL was not found","code":404}'
            )
        self._expect_content_type(headers, "application/json")
        decoder = json.JSONDecoder()
        text = body.decode("utf-8")
        pos, ids, number = 0, [], 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos == len(text):
                break
            try:
                envelope, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                raise ShapeError(
                    "HEC body is not a sequence of JSON objects",
                    400,
                    orjson.dumps(
                        {"text": "Invalid data format", "code": 6, "invalid-event-number": number}
                    ),
                ) from None
            if not isinstance(envelope, dict) or not set(envelope) <= HEC_KEYS:
                raise ShapeError(f"HEC envelope keys {sorted(envelope)}")
            event = envelope.get("event")
            if not isinstance(event, dict):
                raise ShapeError(
                    "HEC event missing or not an object",
                    400,
                    b'{"text":"Event field is required","code":12}',
                )
            entry = _entry_obj(event)
            stamp = envelope.get("time")
            if not isinstance(stamp, int | float) or abs(stamp * 1e6 - entry_epoch_us(entry)) > 2:
                raise ShapeError(f"HEC time {stamp!r} does not match {entry['timestamp']}")
            if not isinstance(envelope.get("sourcetype"), str) or not isinstance(
                envelope.get("source"), str
            ):
                raise ShapeError("HEC source/sourcetype missing")
            if self.index is not None and envelope.get("index") != self.index:
                raise ShapeError(
                    f"HEC index {envelope.get('index')!r}",
                    400,
                    b'{"text":"Incorrect index","code":7}',
                )
            ids.append(entry["event_id"])
            number += 1
        if not ids:
            raise ShapeError("empty HEC body", 400, b'{"text":"No data","code":5}')
        return 200, HEC_SUCCESS, ids

    def _accept_bulk(self, path: str, headers: Any, body: bytes) -> tuple[int, bytes, list[str]]:
        parts = path.strip("/").split("/")
        if parts[-1] != "_bulk" or len(parts) > 2:
            raise ShapeError(f"bulk path {path!r}", 404)
        path_index = parts[0] if len(parts) == 2 else None
        self._expect_content_type(headers, "application/x-ndjson")
        if not body.endswith(b"\n"):
            raise ShapeError("bulk body must end with a newline")
        lines = body[:-1].split(b"\n")
        if len(lines) % 2:
            raise ShapeError("bulk body must hold action/document pairs")
        items, ids, errors = [], [], False
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            action = _json(action_line)
            if not isinstance(action, dict) or list(action) != ["create"]:
                raise ShapeError(f"bulk action {action!r}; expected create")
            meta = action["create"]
            index = meta.get("_index", path_index)
            if index is None or (self.index is not None and index != self.index):
                raise ShapeError(f"bulk index {index!r}")
            doc = _entry(doc_line)
            if meta.get("_id") != doc["event_id"]:
                raise ShapeError("bulk _id is not the event_id")
            event_id = doc["event_id"]
            with self._cond:
                fault = self.es_item_fault(doc)
                exists = event_id in self.es_store
                if fault is None and not exists:
                    self.es_store[event_id] = doc
            result: dict[str, Any] = {"_index": index, "_id": event_id}
            if fault is not None:
                kind = (
                    "es_rejected_execution_exception"
                    if fault == 429
                    else "mapper_parsing_exception"
                )
                result.update(status=fault, error={"type": kind, "reason": f"scripted {fault}"})
                errors = True
            elif exists:
                result.update(
                    status=409,
                    error={
                        "type": "version_conflict_engine_exception",
                        "reason": "document already exists",
                    },
                )
                errors = True
                ids.append(event_id)
            else:
                result.update(status=201, result="created", _version=1)
                ids.append(event_id)
            items.append({"create": result})
        return 200, orjson.dumps({"took": 1, "errors": errors, "items": items}), ids

    def _accept_loki(self, path: str, headers: Any, body: bytes) -> tuple[int, bytes, list[str]]:
        if path != "/loki/api/v1/push":
            raise ShapeError(f"Loki path {path!r}", 404)
        self._expect_content_type(headers, "application/json")
        push = _json(body)
        if (
            not isinstance(push, dict)
            or list(push) != ["streams"]
            or not isinstance(push["streams"], list)
        ):
            raise ShapeError('Loki body must be {"streams": [...]}')
        ids = []
        for stream in push["streams"]:
            labels = stream.get("stream")
            values = stream.get("values")
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise ShapeError("Loki stream labels must be a string map")
            if not isinstance(values, list):
                raise ShapeError("Loki values must be a list")
            for value in values:
                if not (
                    isinstance(value, list)
                    and len(value) == 2
                    and all(isinstance(v, str) for v in value)
                ):
                    raise ShapeError('Loki value must be ["<ns>", "<line>"]')
                nanos, line = value
                entry = _entry(line.encode())
                if not nanos.isdigit() or int(nanos) != entry_epoch_us(entry) * 1000:
                    raise ShapeError(
                        f"Loki timestamp {nanos!r} does not match {entry['timestamp']}"
                    )
                if labels.get("service") != entry["service"]:
                    raise ShapeError("Loki stream label service does not match the entry")
                ids.append(entry["event_id"])
        return 204, b"", ids


SEVERITY = {"success": (9, "INFO"), "failure": (13, "WARN")}


def check_otlp_record(record: Any, entry: dict[str, Any], resource: dict[str, str]) -> None:
    """The mapping of docs/otlp.md, record by record (raises ``ShapeError``)."""
    attributes = {a.key: a.value.string_value for a in record.attributes}
    expected = {
        "audit.action": entry["action"],
        "audit.outcome": entry["outcome"],
        "audit.event_id": entry["event_id"],
        "log.record.uid": entry["event_id"],
    }
    if entry.get("correlation_id") is not None:
        expected["audit.correlation_id"] = entry["correlation_id"]
    if attributes != expected:
        raise ShapeError(f"OTLP attributes {attributes} != {expected}")
    if resource != {"service.name": entry["service"]}:
        raise ShapeError(f"OTLP resource {resource}")
    if record.time_unix_nano != entry_epoch_us(entry) * 1000:
        raise ShapeError(f"time_unix_nano {record.time_unix_nano} != {entry['timestamp']}")
    if not record.time_unix_nano <= record.observed_time_unix_nano <= time.time_ns():
        raise ShapeError("observed_time_unix_nano before the entry or in the future")
    if (record.severity_number, record.severity_text) != SEVERITY[entry["outcome"]]:
        raise ShapeError(f"severity {record.severity_number} for {entry['outcome']}")
    if record.trace_id.hex() != entry.get("trace_id", "") or record.span_id.hex() != entry.get(
        "span_id", ""
    ):
        raise ShapeError("OTLP trace_id/span_id do not match the entry")


GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 502: 14, 503: 14, 504: 4}


def rpc_status(http_status: int, message: str) -> bytes:
    """A ``google.rpc.Status`` {code, message}, encoded by hand (two fields, no dependency)."""
    text = message.encode()
    code = GRPC_CODES.get(http_status, 2)  # 2: UNKNOWN
    assert len(text) < 128
    return b"\x08" + bytes([code]) + b"\x12" + bytes([len(text)]) + text


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ShapeError("not JSON") from None


def _entry(line: bytes) -> dict[str, Any]:
    return _entry_obj(_json(line))


def _entry_obj(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("event_id"), str):
        raise ShapeError("an entry must be a JSON object with an event_id")
    return entry


@contextlib.contextmanager
def receiver(kind: str = "ndjson", *, start: bool = True, **options: Any) -> Iterator[Receiver]:
    """A ``Receiver`` that is stopped when the block ends."""
    rx = Receiver(kind, **options)
    if start:
        rx.start()
    try:
        yield rx
    finally:
        rx.stop()


def make_tls_pair(directory: Path) -> tuple[Path, Path, Path] | None:
    """(CA bundle, server cert, server key) for 127.0.0.1, made with the openssl CLI; None
    when openssl is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, pem = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_pem),
        "-days",
        "2",
        "-subj",
        "/CN=auditkeep test CA",
    )
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_pem),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(pem),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return ca_pem, pem, key


def make_client_cert(directory: Path) -> tuple[Path, Path]:
    """(client cert, key) signed by the CA ``make_tls_pair`` left in ``directory``."""
    key, csr, pem = directory / "client.key", directory / "client.csr", directory / "client.pem"
    ext = directory / "client.ext"
    ext.write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=auditkeep client"],
        [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(directory / "ca.pem"),
            "-CAkey",
            str(directory / "ca.key"),
            "-CAcreateserial",
            "-out",
            str(pem),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ],
    ):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    return pem, key
