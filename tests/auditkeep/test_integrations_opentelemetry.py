"""``auditkeep.integrations.opentelemetry``: trace ids in entries, spans for audited calls,
the trace carried into child processes and requests; and, off, no OpenTelemetry at all.

Real parts throughout: entries read back from a real file and validated against the
schema, the SDK's own ``InMemorySpanExporter``, real child interpreters, a real HTTP
server on loopback.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import auditkeep
from auditkeep import Actor, correlation_headers, correlation_scope, scope_from_env, subprocess_env
from auditkeep.integrations import opentelemetry as otel
from auditkeep.integrations.httpx import AuditedTransport, RouteTable
from auditkeep.logger import AuditLogger, set_context_fields
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries

CID = "0192f3a4-5b6c-7d8e-9f01-23456789abcd"
PYTHONPATH = str(Path(auditkeep.__file__).parents[1])


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.enable(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        otel.disable()
        provider.shutdown()


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[tuple[AuditLogger, Path]]:
    path = tmp_path / "audit.jsonl"
    logger = AuditLogger(
        FileSink(path, max_bytes=0),
        service="svc",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        max_entry_bytes=1024,
    )
    try:
        yield logger, path
    finally:
        logger.close()


def entries(logger: AuditLogger, path: Path) -> list[dict[str, Any]]:
    assert logger.flush(10)
    return validate_entries(read_trail(path))


def parent_of(traceparent: str) -> dict[str, str]:
    """The ids a W3C traceparent names (its flags say sampled)."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00", traceparent
    assert int(flags, 16) & 1, traceparent
    return {"trace_id": trace_id, "span_id": span_id}


def ids(span: trace.Span | ReadableSpan) -> dict[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


class TestEntries:
    def test_an_entry_in_a_span_carries_its_ids_and_one_outside_carries_none(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        provider, _ = spans
        logger, path = trail
        logger.emit("test.outside.before")
        with provider.get_tracer("t").start_as_current_span("outer") as span:
            logger.emit("test.inside.span")
        logger.emit("test.outside.after")
        found = {e["action"]: e for e in entries(logger, path)}
        inside = found["test.inside.span"]
        assert {k: inside[k] for k in ("trace_id", "span_id")} == ids(span)
        assert len(inside["trace_id"]) == 32
        assert len(inside["span_id"]) == 16
        for action in ("test.outside.before", "test.outside.after"):
            assert "trace_id" not in found[action]
            assert "span_id" not in found[action]

    def test_a_trace_the_sampler_drops_still_gives_its_entries_their_ids(
        self, trail: tuple[AuditLogger, Path]
    ) -> None:
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        logger, path = trail
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=ALWAYS_OFF)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        otel.enable(tracer_provider=provider)
        try:
            with provider.get_tracer("t").start_as_current_span("dropped") as span:
                logger.emit("test.sampled.out")
        finally:
            otel.disable()
        (entry,) = entries(logger, path)
        assert {k: entry[k] for k in ("trace_id", "span_id")} == ids(span)
        assert exporter.get_finished_spans() == ()

    def test_disabled_the_entries_carry_no_trace_fields_even_in_a_span(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        provider, _ = spans
        logger, path = trail
        otel.disable()
        assert not otel.enabled()
        with provider.get_tracer("t").start_as_current_span("outer"):
            logger.emit("test.inside.span")
        (entry,) = entries(logger, path)
        assert "trace_id" not in entry
        assert "span_id" not in entry

    def test_an_entry_cut_to_its_core_keeps_its_trace_ids(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        """At the smallest entry limit (1,024 bytes) a bulky entry is cut down; the ids stay."""
        provider, _ = spans
        logger, path = trail
        bulky = {f"k{i}": "x" * 200 for i in range(60)}
        with provider.get_tracer("t").start_as_current_span("outer") as span:
            logger.emit(
                "test.bulky.entry",
                target={"resource_type": "r" * 300, **bulky},
                actor=Actor("a" * 300, "b" * 300),
                details=bulky,
            )
        (entry,) = entries(logger, path)
        assert entry["truncated"] is True
        assert {k: entry[k] for k in ("trace_id", "span_id")} == ids(span)
        assert len(read_trail(path)[0]) <= 1024

    def test_the_schema_refuses_malformed_or_lone_trace_fields(self) -> None:
        from jsonschema import Draft202012Validator

        validator = Draft202012Validator(auditkeep.load_schema())
        base = {
            "schema_version": 1,
            "event_id": "018bcfe5-6800-7fff-bffd-bf39fba1b200",
            "timestamp": "2025-01-15T14:32:15.123Z",
            "event_type": "audit",
            "action": "a.b",
            "actor": {"type": "system", "id": ""},
            "target": {"resource_type": "none"},
            "outcome": "success",
            "correlation_id": CID,
            "service": "svc",
        }
        good = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
        assert validator.is_valid(base)
        assert validator.is_valid({**base, **good})
        for bad in (
            {"trace_id": good["trace_id"]},
            {"span_id": good["span_id"]},
            {**good, "trace_id": good["trace_id"].upper()},
            {**good, "trace_id": "0" * 32},
            {**good, "span_id": "0" * 16},
            {**good, "span_id": good["span_id"] + "0"},
        ):
            assert not validator.is_valid({**base, **bad}), bad


class TestTheHook:
    def test_a_failing_or_overreaching_hook_never_costs_the_entry(
        self, trail: tuple[AuditLogger, Path]
    ) -> None:
        """A hook that raises adds nothing; one that names a core field cannot replace it."""
        logger, path = trail

        def failing() -> dict[str, str]:
            raise RuntimeError("boom")

        previous = set_context_fields(failing)
        try:
            logger.emit("test.hook.failing")
            set_context_fields(
                lambda: {
                    "action": "forged.action",
                    "error": "auth_failure",
                    "details": "x",
                    "tenant": "t1",
                    "x": "y" * 65,
                }
            )
            logger.emit("test.hook.overreaching")
        finally:
            set_context_fields(previous)
        first, second = entries(logger, path)
        assert first["action"] == "test.hook.failing"
        assert second["action"] == "test.hook.overreaching"
        assert second["tenant"] == "t1"
        assert "x" not in second
        # A field the schema names is the logger's: the success entry stays valid.
        assert "error" not in second
        assert "details" not in second


class TestCallSpans:
    def test_an_audited_call_runs_in_its_own_span_and_its_entry_names_it(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        provider, exporter = spans
        logger, path = trail
        with (
            correlation_scope(Actor("webhook_event", "d1"), CID),
            provider.get_tracer("t").start_as_current_span("outer") as outer,
        ):
            with logger.audited("gitlab.api.get_mr_details", target={"resource_type": "mr"}) as c:
                c.http_status = 200
            with (
                pytest.raises(TimeoutError),
                logger.audited("gitlab.api.post_mr_note", target={"resource_type": "mr"}),
            ):
                raise TimeoutError("slow")
        found = {e["action"]: e for e in entries(logger, path)}
        by_name = {s.name: s for s in exporter.get_finished_spans()}
        ok, failed = by_name["gitlab.api.get_mr_details"], by_name["gitlab.api.post_mr_note"]
        for span in (ok, failed):
            assert span.kind is trace.SpanKind.CLIENT
            assert span.parent is not None
            assert span.parent.span_id == outer.get_span_context().span_id
            entry = found[span.name]
            assert {k: entry[k] for k in ("trace_id", "span_id")} == ids(span)
            assert span.attributes is not None
            assert span.attributes["audit.event_id"] == entry["event_id"]
            assert span.attributes["correlation_id"] == CID
            assert span.attributes["audit.resource_type"] == "mr"
        assert ok.attributes is not None
        assert failed.attributes is not None
        assert ok.attributes["http.response.status_code"] == 200
        assert ok.attributes["audit.outcome"] == "success"
        assert ok.status.status_code is trace.StatusCode.UNSET
        assert failed.attributes["audit.outcome"] == "failure"
        assert failed.attributes["error.type"] == "timeout" == found[failed.name]["error"]
        assert failed.status.status_code is trace.StatusCode.ERROR
        # The outer span is current again after the calls: no context leaked.
        assert trace.get_current_span() is trace.INVALID_SPAN

    def test_a_call_whose_entry_cannot_be_written_still_ends_its_span(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        """The logger closed during the call: LoggerClosedError, and the span is ended and no
        longer current (the caller's context is as it was)."""
        provider, exporter = spans
        logger, _ = trail
        with provider.get_tracer("t").start_as_current_span("outer") as outer:
            with (
                pytest.raises(auditkeep.LoggerClosedError),
                logger.audited("test.call.closed"),
            ):
                logger.close()
            assert trace.get_current_span() is outer
        names = [s.name for s in exporter.get_finished_spans()]
        assert names == ["test.call.closed", "outer"]

    def test_a_span_attribute_never_holds_a_target_or_details_value(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        _, exporter = spans
        logger, _ = trail
        secret_ish = "glpat-abcdefghijklmnopqrst"
        with logger.audited(
            "test.call.values",
            target={"resource_type": "repo", "url": secret_ish},
            details={"token": secret_ish},
        ):
            pass
        (span,) = exporter.get_finished_spans()
        assert span.attributes is not None
        assert secret_ish not in repr(dict(span.attributes))

    def test_a_scope_opened_in_a_span_sets_its_correlation_id(
        self, spans: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        provider, exporter = spans
        other = "0192f3a4-5b6c-7d8e-9f01-000000000002"
        with (
            provider.get_tracer("t").start_as_current_span("webhook"),
            correlation_scope(Actor("webhook_event", "d1"), CID),
            correlation_scope(Actor("system", "task"), other),
        ):
            pass
        (span,) = exporter.get_finished_spans()
        assert span.attributes is not None
        assert span.attributes["correlation_id"] == CID  # the first scope opened in it

    def test_the_transport_sends_traceparent_naming_the_calls_span(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        """A real server on loopback sees W3C traceparent/baggage of the request's own span."""
        provider, exporter = spans
        logger, path = trail
        seen: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        routes = RouteTable("svc", ())

        async def call() -> None:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{server.server_port}",
                transport=AuditedTransport(logger, routes),
            ) as client:
                await client.get("/things/1")

        try:
            import asyncio

            with (
                correlation_scope(Actor("webhook_event", "d1"), CID),
                provider.get_tracer("t").start_as_current_span("outer"),
            ):
                asyncio.run(call())
        finally:
            server.shutdown()
            server.server_close()
        (headers,) = seen
        (span,) = [s for s in exporter.get_finished_spans() if s.name == "svc.api.unmapped"]
        wanted = ids(span)
        assert parent_of(headers["traceparent"]) == wanted
        assert headers["baggage"] == f"correlation_id={CID}"
        assert headers["x-correlation-id"] == CID
        (entry,) = entries(logger, path)
        assert entry["span_id"] == wanted["span_id"]


CHILD = r"""
import sys
import orjson
from prometheus_client import CollectorRegistry
from auditkeep import scope_from_env
from auditkeep.integrations import opentelemetry as otel
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink

otel.enable()  # the API alone: no SDK in this child, the parent's ids are continued
logger = AuditLogger(FileSink(sys.argv[1], max_bytes=0), service="child",
                     spool_dir=sys.argv[2], metrics=AuditMetrics(CollectorRegistry()))
with scope_from_env() as cid:
    logger.emit("test.child.emitted")
logger.emit("test.child.after_scope")
assert logger.close(10)
"""


class TestChildProcesses:
    def run_child(self, env: dict[str, str], tmp_path: Path) -> list[dict[str, Any]]:
        out = tmp_path / "child.jsonl"
        env = {**env, "PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"}
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(out), str(tmp_path / "child-spool")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (proc.returncode, proc.stderr) == (0, "")
        return validate_entries(read_trail(out))

    def test_subprocess_env_carries_the_trace_and_the_child_continues_it(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
    ) -> None:
        provider, _ = spans
        with (
            correlation_scope(Actor("webhook_event", "d1"), CID),
            provider.get_tracer("t").start_as_current_span("task") as span,
        ):
            env = subprocess_env({"TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        wanted = ids(span)
        assert parent_of(env["TRACEPARENT"]) == wanted
        assert env["BAGGAGE"] == f"correlation_id={CID}"
        inside, after = self.run_child(env, tmp_path)
        assert inside["correlation_id"] == CID
        assert {k: inside[k] for k in ("trace_id", "span_id")} == wanted
        # Outside scope_from_env's block the child is back outside the trace.
        assert "trace_id" not in after

    def test_the_baggage_alone_carries_the_correlation_id(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
    ) -> None:
        provider, _ = spans
        with (
            correlation_scope(Actor("webhook_event", "d1"), CID),
            provider.get_tracer("t").start_as_current_span("task"),
        ):
            env = subprocess_env({})
        del env["AUDIT_CORRELATION_ID"]
        inside, _ = self.run_child(env, tmp_path)
        assert inside["correlation_id"] == CID

    def test_no_active_span_removes_stale_trace_context(
        self, spans: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        stale = {"TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "BAGGAGE": "a=b"}
        assert correlation_headers() == {}
        env = subprocess_env(stale)
        assert "TRACEPARENT" not in env
        assert "BAGGAGE" not in env

    def test_a_child_scope_without_trace_context_keeps_the_active_span(
        self, spans: tuple[TracerProvider, InMemorySpanExporter], trail: tuple[AuditLogger, Path]
    ) -> None:
        """scope_from_env with no TRACEPARENT (or a malformed one) inside a span: the entries
        keep that span's ids rather than losing the trace."""
        provider, _ = spans
        logger, path = trail
        with provider.get_tracer("t").start_as_current_span("outer") as span:
            with scope_from_env({"AUDIT_CORRELATION_ID": CID}):
                logger.emit("test.child.no_carrier")
            with scope_from_env({"AUDIT_CORRELATION_ID": CID, "TRACEPARENT": "00-zz-01"}):
                logger.emit("test.child.bad_carrier")
        for entry in entries(logger, path):
            assert {k: entry[k] for k in ("trace_id", "span_id")} == ids(span)
            assert entry["correlation_id"] == CID

    def test_a_baggage_correlation_id_that_is_no_uuid_is_refused(
        self, spans: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        with (
            pytest.raises(ValueError, match="badly formed"),
            scope_from_env({"BAGGAGE": "correlation_id=not-a-uuid"}),
        ):
            pass


OFF = r"""
import sys, tempfile
import orjson
import auditkeep
from prometheus_client import CollectorRegistry
from auditkeep import Actor, correlation_headers, correlation_scope, scope_from_env, subprocess_env
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink

logger = AuditLogger(FileSink(sys.argv[1], max_bytes=0), service="off",
                     spool_dir=sys.argv[2], metrics=AuditMetrics(CollectorRegistry()))
env = {"TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
       "AUDIT_CORRELATION_ID": sys.argv[3]}
with scope_from_env(env):
    logger.emit("test.off.emitted")
    with logger.audited("test.off.call"):
        pass
    child_env = subprocess_env({})
    headers = correlation_headers()
assert logger.close(10)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
sys.stdout.write(orjson.dumps({"loaded": loaded, "env": child_env, "headers": headers}).decode())
"""


class TestTracingOff:
    def test_tracing_off_imports_no_opentelemetry(self, tmp_path: Path) -> None:
        """Without ``enable()``: emit, an audited call, scope_from_env, subprocess_env and
        correlation_headers import no opentelemetry module (in a fresh interpreter that has
        the package installed), and the entries carry no trace field."""
        out = tmp_path / "off.jsonl"
        proc = subprocess.run(
            [sys.executable, "-c", OFF, str(out), str(tmp_path / "spool"), CID],
            env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (proc.returncode, proc.stderr) == (0, "")
        report = orjson.loads(proc.stdout)
        assert report["loaded"] == []
        assert "TRACEPARENT" not in report["env"]
        assert "BAGGAGE" not in report["env"]
        assert set(report["headers"]) == {"X-Correlation-ID"}
        found = validate_entries(read_trail(out))
        assert [e["action"] for e in found] == ["test.off.emitted", "test.off.call"]
        assert all("trace_id" not in e and "span_id" not in e for e in found)

    def test_the_off_check_would_see_an_import(self, tmp_path: Path) -> None:
        """Guards the test above: the same script after ``enable()`` does load opentelemetry."""
        script = OFF.replace(
            "logger = AuditLogger(",
            "from auditkeep.integrations import opentelemetry as o\n"
            "o.enable()\nlogger = AuditLogger(",
            1,
        )
        proc = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "on.jsonl"), str(tmp_path / "s"), CID],
            env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (proc.returncode, proc.stderr) == (0, "")
        report = orjson.loads(proc.stdout)
        assert "opentelemetry.trace" in report["loaded"]
        # scope_from_env continued the TRACEPARENT: the entries carry its trace id.
        found = validate_entries(read_trail(tmp_path / "on.jsonl"))
        assert {e["trace_id"] for e in found} == {"1" * 32}


def test_without_the_extra_one_error_names_it(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None
        import auditkeep
        try:
            import auditkeep.integrations.opentelemetry
        except auditkeep.MissingDependencyError as exc:
            assert (exc.name, exc.extra) == ("opentelemetry", "otel")
            print(exc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        "auditkeep.integrations.opentelemetry needs opentelemetry, which is not installed: "
        "pip install 'auditkeep[otel]'\n"
    )
