"""The otlp sink against a real OTLP/HTTP receiver on loopback that decodes every request
with the official ``opentelemetry-proto`` messages (``http_receivers.py``, kind ``otlp``),
and the fault-injection suite of the http sink (``test_http.py``) run against it: down at
start, dying then flapping, 429/503 with Retry-After, a permanent 400, SIGTERM while
down, plus the Collector's partial success. Every guarantee is counted by distinct
``event_id``; decoded bodies are validated against the JSON Schema.

Durations are scaled down as in ``test_http.py`` (down at start for 3 s, an outage of 3 s).
The receiver is ours, not a Collector binary (none is installed here): it speaks the
OTLP/HTTP protocol as specified and as the Collector's receiver answers.
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from prometheus_client import CollectorRegistry

from auditkeep import AuditConfig
from auditkeep.delivery import dead_letter_path, redeliver_dead_letters
from auditkeep.exceptions import ConfigError
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor, default_redactor
from auditkeep.sinks.file import FileSink
from auditkeep.sinks.otlp import OtlpSink, otlp_sink_from_env
from auditkeep.testing import read_trail, validate_entries
from auditkeep.typing import SinkResult, SinkStatus

sys.path.insert(0, str(Path(__file__).parent))
from http_receivers import Reply, make_client_cert, make_tls_pair, receiver, rpc_status

CHILD = Path(__file__).with_name("http_child_emitter.py")
TARGET = {"resource_type": "merge_request", "project_id": 123, "mr_iid": 45}
TOKEN = "otlp-9c1e2a7b-44f0-4d2a-8e61-5b0d3c9f7a12"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


class CountingFallback:
    """Stands in for stdout: counts the copies the pipeline writes while the sink fails."""

    name: ClassVar[str] = "fallback"

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._lock = threading.Lock()

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        with self._lock:
            self.ids += [orjson.loads(line)["event_id"] for line in lines]
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        return None


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def make_logger(spool: Path, metrics: AuditMetrics) -> Iterator[Any]:
    made: list[AuditLogger] = []

    def make(sink: Any, **options: Any) -> AuditLogger:
        settings: dict[str, Any] = {
            "service": "svc",
            "spool_dir": spool,
            "metrics": metrics,
            "fallback": CountingFallback(),
            "retry_initial_s": 0.05,
            "retry_max_s": 1.0,
            "flush_interval_s": 0.05,
        }
        settings.update(options)
        logger = AuditLogger(sink, **settings)
        made.append(logger)
        return logger

    yield make
    for logger in made:
        logger.close(5)


def emit_n(logger: AuditLogger, n: int, action: str = "otlp.forward") -> list[str]:
    return [
        logger.emit(
            action,
            target=TARGET,
            details={"i": i},
            outcome="failure" if i % 7 == 0 else "success",
            error_message="refused" if i % 7 == 0 else None,
        )
        for i in range(n)
    ]


def emit_for(logger: AuditLogger, seconds: float, ids: list[str]) -> None:
    """Emit small bursts every 20 ms for ``seconds`` (paces the load; waits on nothing)."""
    pace = threading.Event()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ids += emit_n(logger, 10)
        pace.wait(0.02)


def entry(event_id: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "timestamp": "2025-03-04T05:06:07.123456Z",
            "service": "svc",
            "action": "otlp.forward",
            "outcome": "success",
            "correlation_id": "01a21fab-e7d5-7146-b6d0-c18003d0c8d4",
            **fields,
        }
    )


LINES = [entry(f"00000000-0000-7000-8000-{i:012d}") for i in range(3)]


# -- the fault-injection suite ---------------------------------------------------------------


class TestOutages:
    def test_receiver_down_at_start_gets_everything_once_up(
        self, make_logger: Any, registry: CollectorRegistry
    ) -> None:
        """Collector down for the first 3 s: every entry arrives once it is up, schema-valid."""
        with receiver("otlp", start=False) as rx:
            logger = make_logger(OtlpSink(rx.url, connect_timeout_s=0.5))
            ids: list[str] = []
            emit_for(logger, 3.0, ids)
            assert rx.answered() == []
            assert sample(registry, "audit_log_sink_errors_total", destination="otlp") > 0
            rx.start()
            ids += emit_n(logger, 500)
            assert logger.flush(30) is True
            assert rx.distinct() == set(ids)
            assert len(rx.distinct()) == len(ids) > 1000
            assert rx.problems == []
            validate_entries(rx.lines)
            assert (
                sample(registry, "audit_log_dropped_entries_total", reason="spool_unavailable") == 0
            )

    def test_dying_mid_stream_then_flapping_loses_nothing(
        self, make_logger: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The Collector dies for 3 s mid-stream, then flaps: none lost, duplicates counted."""
        with receiver("otlp") as rx:
            logger = make_logger(OtlpSink(rx.url, connect_timeout_s=0.5, read_timeout_s=2))
            ids: list[str] = []
            stop = threading.Event()

            def produce() -> None:
                while not stop.is_set():
                    ids.extend(emit_n(logger, 10))
                    stop.wait(0.005)

            producer = threading.Thread(target=produce)
            producer.start()
            try:
                assert rx.wait_for(lambda: len(rx.received) >= 500, 10)
                # Kept but never acknowledged: the sink must send it again (a duplicate).
                rx.script(Reply(action="accept_then_reset"))
                assert rx.wait_for(lambda: any(r.status is None for r in rx.requests), 10)
                rx.stop()
                stop.wait(3.0)  # the outage
                rx.start()
                for _ in range(3):  # flapping: down and up again, 0.5 s each
                    assert rx.wait_for_requests(len(rx.answered()) + 1, 5)
                    rx.stop()
                    stop.wait(0.5)
                    rx.start()
                    stop.wait(0.5)
            finally:
                stop.set()
                producer.join()
            assert logger.flush(30) is True
            reset_ids = next(r.event_ids for r in rx.answered() if r.status is None)
            duplicates = rx.duplicates()
            with capsys.disabled():
                print(
                    f"\n[otlp flapping] emitted={len(ids)} distinct={len(rx.distinct())} "
                    f"duplicates={duplicates} (at-least-once)"
                )
            assert rx.distinct() == set(ids)
            assert len(set(ids)) == len(ids)
            assert all(rx.received[i] >= 2 for i in reset_ids)
            assert duplicates >= len(reset_ids) > 0
            assert rx.problems == []

    def test_429_502_503_504_with_retry_after_are_retried(self, make_logger: Any) -> None:
        """429 with Retry-After (seconds, HTTP-date), 502, 503, 504: the next try waits."""
        with receiver("otlp") as rx:
            when = email.utils.formatdate(time.time() + 3, usegmt=True)  # >= 2 s ahead
            rx.script(
                Reply(503, retry_after=when),
                Reply(429, retry_after="2"),
                Reply(502),
                Reply(504),
                Reply(429),
            )
            logger = make_logger(OtlpSink(rx.url))
            ids = emit_n(logger, 300)
            assert logger.flush(30) is True
            requests = rx.answered()
            assert [r.status for r in requests][:6] == [503, 429, 502, 504, 429, 200]
            gaps = [b.started - a.answered for a, b in itertools.pairwise(requests)]
            assert gaps[0] >= 1.5  # Retry-After as an HTTP-date, 2-3 s ahead when scripted
            assert gaps[1] >= 1.95  # Retry-After: 2
            assert min(gaps[2:5]) >= 0.02  # backoff with jitter, never a hot loop
            assert rx.distinct() == set(ids)
            assert len(rx.distinct()) == 300
            assert rx.problems == []

    def test_permanent_400_is_dead_lettered_and_redelivered(
        self,
        make_logger: Any,
        spool: Path,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 400 dead-letters the batch (the Collector's Status message in the warning);
        redelivery works once fixed."""
        with receiver("otlp") as rx:
            rx.fail_status = 400
            logger = make_logger(OtlpSink(rx.url))
            ids = emit_n(logger, 120)
            assert logger.flush(10) is True
            assert logger.close(5) is True
            letters = dead_letter_path(spool, "otlp")
            kept = [orjson.loads(line)["event_id"] for line in letters.read_bytes().splitlines()]
            assert sorted(kept) == sorted(ids)
            assert sample(registry, "audit_log_dead_letters_total", destination="otlp") == 120
            warnings = [r.getMessage() for r in caplog.records if r.name == "auditkeep.delivery"]
            assert any(
                "permanently refused" in w and "(HTTP 400 Bad Request: scripted HTTP 400" in w
                for w in warnings
            )
            assert rx.received == {}

            rx.fail_status = None
            fixed = OtlpSink(rx.url)
            try:
                done = redeliver_dead_letters(spool, fixed, max_batch_events=50)
                assert (done.delivered, done.remaining, done.why) == (120, 0, None)
            finally:
                fixed.close(1)
            assert not letters.exists()
            assert rx.distinct() == set(ids)
            assert rx.problems == []

    def test_partial_success_dead_letters_the_batch_and_loses_nothing(
        self,
        make_logger: Any,
        spool: Path,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """rejected_log_records > 0: not retried (the OTLP spec), the batch is dead-lettered;
        received + dead letters hold every id, and a redelivery completes the trail."""
        with receiver("otlp") as rx:
            rx.otlp_reject = lambda e: e["details"]["i"] % 50 == 3
            logger = make_logger(OtlpSink(rx.url), max_batch_events=100)
            ids = emit_n(logger, 400)
            assert logger.flush(10) is True
            letters = dead_letter_path(spool, "otlp")
            dead = {orjson.loads(line)["event_id"] for line in letters.read_bytes().splitlines()}
            rejected = {i for k, i in enumerate(ids) if k % 50 == 3}
            assert rejected <= dead  # every refused record is kept...
            assert rx.distinct() | dead == set(ids)  # ...and so is everything else
            assert rx.distinct().isdisjoint(rejected)
            assert sample(registry, "audit_log_dead_letters_total", destination="otlp") == len(dead)
            warnings = [r.getMessage() for r in caplog.records if r.name == "auditkeep.delivery"]
            assert any("partial success: the Collector rejected" in w for w in warnings)
            # One try per batch: a partial success is never retried.
            assert all(r.status == 200 for r in rx.answered())

            rx.otlp_reject = lambda e: False
            fixed = OtlpSink(rx.url)
            try:
                assert redeliver_dead_letters(spool, fixed).delivered == len(dead)
            finally:
                fixed.close(1)
            assert rx.distinct() == set(ids)
            assert rx.problems == []

    def test_sigterm_while_down_then_restart_delivers_everything(
        self, spool: Path, make_logger: Any
    ) -> None:
        """SIGTERM of the emitting process while the Collector is down; a restart delivers."""
        with receiver("otlp", start=False) as rx:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), rx.url, str(spool), "otlp"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert proc.stdout is not None
            received = bytearray()
            deadline = time.monotonic() + 60
            while received.count(b"\n") < 3000 and time.monotonic() < deadline:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                received += chunk
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=60)
            received += rest
            ids = [line.decode() for line in received.split(b"\n") if len(line) == 36]
            assert proc.returncode == 128 + signal.SIGTERM
            assert len(ids) >= 3000
            assert rx.answered() == []

            rx.start()
            logger = make_logger(OtlpSink(rx.url))
            assert logger.flush(60) is True
            delivered = rx.distinct()
            assert set(ids) - delivered == set()
            assert len(delivered - set(ids)) <= 1  # the one whose id had no time to print
            assert rx.problems == []

    def test_fanout_file_and_otlp_carry_the_same_bytes(
        self, tmp_path: Path, make_logger: Any
    ) -> None:
        """file,otlp with the Collector down: the file has all at once; once up, every OTLP
        body is byte for byte the line in the file (what a hash chain verifies)."""
        path = tmp_path / "audit.jsonl"
        with receiver("otlp", start=False) as rx:
            logger = make_logger([FileSink(path, max_bytes=0), OtlpSink(rx.url)])
            ids = emit_n(logger, 1000)
            file_pipeline, otlp_pipeline = logger.pipelines
            assert file_pipeline.flush(10) is True
            assert otlp_pipeline.flush(0.5) is False
            rx.start()
            assert logger.flush(30) is True
            assert rx.distinct() == set(ids)
            assert sorted(rx.lines) == sorted(read_trail(path))
            validate_entries(rx.lines)
            assert rx.problems == []


# -- the mapping and the request shape --------------------------------------------------------


class TestMapping:
    def test_gzip_and_a_bearer_token_that_never_leaks(
        self,
        make_logger: Any,
        capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
        spool: Path,
    ) -> None:
        """gzip + 'Bearer <token>' on the wire; never in an entry, log line, repr or error."""
        redactor = SecretRedactor()
        redactor.register(TOKEN)
        with receiver("otlp", authorization=f"Bearer {TOKEN}", expect_gzip=True) as rx:
            sink = OtlpSink(rx.url, headers={"Authorization": f"Bearer {TOKEN}"}, gzip=True)
            logger = make_logger(sink, redactor=redactor)
            ids = emit_n(logger, 150)
            ids.append(
                logger.emit(
                    "otlp.forward",
                    outcome="failure",
                    error_message=f"call failed with Bearer {TOKEN}",
                    details={"header": f"Authorization: Bearer {TOKEN}"},
                )
            )
            assert logger.flush(10) is True
            assert rx.distinct() == set(ids)
            assert rx.problems == []
            assert all(r.headers["content-encoding"] == "gzip" for r in rx.answered())
            assert all(r.headers["content-type"] == "application/x-protobuf" for r in rx.answered())
            entries = validate_entries(rx.lines)
            assert {e["outcome"] for e in entries} == {"success", "failure"}
            rx.fail_status = 403
            result = sink.write_batch(LINES[:1])
            captured = capfd.readouterr()
            leaked = [repr(sink), sink.describe(), str(result), captured.out, captured.err]
            assert all(TOKEN not in text for text in [*leaked, caplog.text])
            assert all(TOKEN not in line.decode() for line in rx.lines)
            assert str(result.reason).startswith("HTTP 403 Forbidden")
        for path in spool.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes()

    def test_one_record_per_entry(self) -> None:
        """The documented mapping, read back with the official message classes."""
        bodies: list[bytes] = []

        def handler(request: httpx.Request) -> httpx.Response:
            bodies.append(request.content)
            return httpx.Response(200)

        failed = entry("e2", outcome="failure", correlation_id=None, service="other")
        traced = entry("e3", trace_id=TRACE_ID, span_id=SPAN_ID)
        bad_trace = entry("e4", trace_id="0" * 32, span_id=SPAN_ID)
        odd_trace = entry("e5", trace_id=TRACE_ID.upper(), span_id="xyz")
        lines = [LINES[0], failed, traced, bad_trace, odd_trace, b"not json"]
        sink = mock_sink(handler)
        try:
            before = time.time_ns()
            assert sink.write_batch(lines) is SinkResult.SUCCESS
            after = time.time_ns()
        finally:
            sink.close(1)
        request = ExportLogsServiceRequest.FromString(bodies[0])
        groups = {
            tuple((a.key, a.value.string_value) for a in r.resource.attributes): r
            for r in request.resource_logs
        }
        assert set(groups) == {(("service.name", "svc"),), (("service.name", "other"),), ()}
        records = [
            record
            for r in request.resource_logs
            for s in r.scope_logs
            for record in s.log_records
            if s.scope.name == "auditkeep" and s.scope.version == "0.1.0"
        ]
        by_body = {record.body.string_value.encode(): record for record in records}
        assert set(by_body) == set(lines)  # the body is the exact line
        first = by_body[LINES[0]]
        assert {a.key: a.value.string_value for a in first.attributes} == {
            "audit.action": "otlp.forward",
            "audit.outcome": "success",
            "audit.correlation_id": "01a21fab-e7d5-7146-b6d0-c18003d0c8d4",
            "audit.event_id": "00000000-0000-7000-8000-000000000000",
            "log.record.uid": "00000000-0000-7000-8000-000000000000",
        }
        assert first.time_unix_nano == 1_741_064_767_123_456_000
        assert before <= first.observed_time_unix_nano <= after
        assert (first.severity_number, first.severity_text) == (9, "INFO")
        assert (first.trace_id, first.span_id) == (b"", b"")
        second = by_body[failed]
        assert (second.severity_number, second.severity_text) == (13, "WARN")
        assert "audit.correlation_id" not in {a.key for a in second.attributes}
        assert by_body[traced].trace_id.hex() == TRACE_ID
        assert by_body[traced].span_id.hex() == SPAN_ID
        for junk in (bad_trace, odd_trace):  # all zeros, upper case: not valid W3C ids
            assert (by_body[junk].trace_id, by_body[junk].span_id) == (b"", b"")
        raw = by_body[b"not json"]
        assert (raw.severity_number, raw.time_unix_nano, len(raw.attributes)) == (0, 0, 0)

    def test_entries_with_a_trace_context_reach_the_receiver_with_it(self) -> None:
        """trace_id/span_id of an entry land on the record (checked by the receiver)."""
        with receiver("otlp") as rx:
            sink = OtlpSink(rx.url)
            try:
                lines = [
                    entry(f"00000000-0000-7000-8000-{i:012d}", trace_id=TRACE_ID, span_id=SPAN_ID)
                    for i in range(20)
                ]
                assert sink.write_batch(lines) is SinkResult.SUCCESS
            finally:
                sink.close(1)
            assert len(rx.distinct()) == 20
            assert rx.problems == []

    def test_batches_are_split_to_respect_max_body_bytes(self, make_logger: Any) -> None:
        """Every request body stays within max_body_bytes (checked by the receiver)."""
        with receiver("otlp", max_body_bytes=4096) as rx:
            logger = make_logger(OtlpSink(rx.url, max_body_bytes=4096), max_batch_events=200)
            ids = emit_n(logger, 400)
            assert logger.flush(10) is True
            sizes = [r.body_bytes for r in rx.answered()]
            assert max(sizes) <= 4096
            assert len(sizes) >= 400 * 500 // 4096
            assert rx.distinct() == set(ids)
            assert rx.problems == []

    def test_mutual_tls_with_a_ca_bundle_and_a_client_certificate(
        self, tmp_path: Path, make_logger: Any
    ) -> None:
        """https with a CA bundle and a client certificate: delivered; without the client
        certificate, or with an unknown CA, the handshake fails (RETRY, nothing lost)."""
        pair = make_tls_pair(tmp_path)
        if pair is None:
            pytest.skip("the openssl command is not installed")
        ca, cert, key = pair
        client = make_client_cert(tmp_path)
        with receiver("otlp", tls=(cert, key), client_ca=ca) as rx:
            for sink in (OtlpSink(rx.url), OtlpSink(rx.url, verify=str(ca))):
                try:
                    assert sink.write_batch(LINES).status is SinkStatus.RETRY
                finally:
                    sink.close(1)
            logger = make_logger(
                OtlpSink(rx.url, verify=str(ca), client_cert=(str(client[0]), str(client[1])))
            )
            ids = emit_n(logger, 50)
            assert logger.flush(10) is True
            assert rx.distinct() == set(ids)
            assert rx.problems == []


# -- classification, without a network (httpx.MockTransport) --------------------------------


def mock_sink(handler: Any, **options: Any) -> OtlpSink:
    return OtlpSink("http://collector.example", transport=httpx.MockTransport(handler), **options)


def otlp_answer(rejected: int = 0, message: str = "") -> httpx.Response:
    answer = ExportLogsServiceResponse()
    if rejected or message:
        answer.partial_success.rejected_log_records = rejected
        answer.partial_success.error_message = message
    return httpx.Response(
        200,
        content=answer.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )


class TestClassification:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (200, SinkStatus.SUCCESS),
            (202, SinkStatus.SUCCESS),
            (408, SinkStatus.RETRY),
            (429, SinkStatus.RETRY),
            (500, SinkStatus.RETRY),
            (502, SinkStatus.RETRY),
            (503, SinkStatus.RETRY),
            (504, SinkStatus.RETRY),
            (301, SinkStatus.FAILURE),
            (400, SinkStatus.FAILURE),
            (401, SinkStatus.FAILURE),
            (403, SinkStatus.FAILURE),
            (404, SinkStatus.FAILURE),
            (413, SinkStatus.FAILURE),
            (415, SinkStatus.FAILURE),
        ],
    )
    def test_status_decides_the_result(self, status: int, expected: SinkStatus) -> None:
        """The http sink's one retry policy; a refusal's reason is the Collector's Status."""
        body = rpc_status(status, "the reason") if status >= 300 else b""
        sink = mock_sink(
            lambda request: httpx.Response(
                status, content=body, headers={"Content-Type": "application/x-protobuf"}
            )
        )
        try:
            result = sink.write_batch(LINES)
        finally:
            sink.close(1)
        assert result.status is expected
        if expected is not SinkStatus.SUCCESS:
            assert str(result.reason).startswith(f"HTTP {status}")
            assert ": the reason" in str(result.reason)
        if status == 404:
            assert "AUDIT_LOG_OTLP_ENDPOINT" in str(result.reason)

    @pytest.mark.parametrize(
        ("header", "expected"), [("7", 7.0), ("1.5", 1.5), ("soon", None), (None, None)]
    )
    def test_retry_after(self, header: str | None, expected: float | None) -> None:
        """Retry-After of a 429/503 becomes retry_after_s (parse_retry_after); junk is ignored."""
        headers = {"Retry-After": header} if header is not None else {}
        for status in (429, 503):
            sink = mock_sink(lambda request, s=status: httpx.Response(s, headers=headers))
            try:
                result = sink.write_batch(LINES)
            finally:
                sink.close(1)
            assert (result.status, result.retry_after_s) == (SinkStatus.RETRY, expected)

    @pytest.mark.parametrize(
        "error",
        [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ZeroDivisionError("bug")],
    )
    def test_errors_are_retried_never_raised(self, error: Exception) -> None:
        """Connection errors, timeouts and even a bug below the sink are RETRY."""

        def handler(request: httpx.Request) -> httpx.Response:
            raise error

        sink = mock_sink(handler)
        try:
            assert sink.write_batch(LINES).status is SinkStatus.RETRY
        finally:
            sink.close(1)

    def test_partial_success(self, caplog: pytest.LogCaptureFixture) -> None:
        """rejected > 0 is FAILURE (dead letter) with the Collector's message; rejected == 0
        with a message is SUCCESS and one warning per distinct message."""
        answers = iter(
            [
                otlp_answer(2, "2 records too large"),
                otlp_answer(0, "slow down a little"),
                otlp_answer(0, "slow down a little"),
                otlp_answer(),
                httpx.Response(200, content=b"\xff\xfe not protobuf"),
                httpx.Response(
                    200, content=b"\xff", headers={"Content-Type": "application/x-protobuf"}
                ),
            ]
        )
        sink = mock_sink(lambda request: next(answers))
        caplog.set_level(logging.WARNING, "auditkeep.delivery")
        try:
            refused = sink.write_batch(LINES)
            assert refused.status is SinkStatus.FAILURE
            assert refused.reason == (
                "partial success: the Collector rejected 2 of 3 log records: 2 records too large"
            )
            for _ in range(5):
                assert sink.write_batch(LINES) is SinkResult.SUCCESS
        finally:
            sink.close(1)
        warnings = [r.getMessage() for r in caplog.records if "slow down" in r.getMessage()]
        assert len(warnings) == 1

    def test_the_collectors_texts_are_scrubbed(self) -> None:
        """A Status message or a partial-success message that echoes the header value or a
        registered secret: neither reaches a reason (both are logged)."""
        registered = "s3cr3t-" + "9f2c4e7a1b" * 3
        default_redactor.register(registered)
        echo = f"bad token Bearer {TOKEN}; also {registered}"
        status = ExportLogsServiceResponse()  # reused below as a partial success
        status.partial_success.rejected_log_records = 1
        status.partial_success.error_message = echo
        answers = iter(
            [
                httpx.Response(
                    401,
                    content=b"\x08\x10\x12" + bytes([len(echo)]) + echo.encode(),
                    headers={"Content-Type": "application/x-protobuf"},
                ),
                httpx.Response(
                    200,
                    content=status.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"},
                ),
            ]
        )
        sink = mock_sink(
            lambda request: next(answers), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            reasons = [str(sink.write_batch(LINES).reason) for _ in range(2)]
        finally:
            sink.close(1)
        assert reasons[0].startswith("HTTP 401 Unauthorized: bad token")
        assert reasons[1].startswith("partial success: the Collector rejected 1 of 3")
        for reason in reasons:
            assert TOKEN not in reason
            assert registered not in reason
            assert "[REDACTED]" in reason

    def test_a_split_batch_reports_the_first_refused_request(self) -> None:
        """Three requests, the second partially refused: FAILURE, the third never sent."""
        seen: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(len(ExportLogsServiceRequest.FromString(request.content).resource_logs))
            return otlp_answer(1) if len(seen) == 2 else otlp_answer()

        lines = [entry(f"e{i}", pad="x" * 600) for i in range(6)]
        sink = mock_sink(handler, max_body_bytes=2400)  # two ~1 kB records a request
        try:
            assert len(list(sink.bodies(lines))) == 3
            assert sink.write_batch(lines).status is SinkStatus.FAILURE
        finally:
            sink.close(1)
        assert len(seen) == 2

    def test_closed_sink_answers_retry(self) -> None:
        """After close, write_batch is a RETRY (the spool keeps the batch); close twice is fine."""
        sink = mock_sink(lambda request: otlp_answer())
        sink.close(1)
        sink.close(1)
        assert sink.write_batch(LINES) == SinkResult.retry("sink closed")

    def test_endpoint_path_and_arguments(self) -> None:
        """An empty path means /v1/logs; a given path is kept; bad arguments are refused."""
        for url, final in [
            ("http://c:4318", "http://c:4318/v1/logs"),
            ("https://c:4318/", "https://c:4318/v1/logs"),
            ("https://c/otlp/v1/logs", "https://c/otlp/v1/logs"),
        ]:
            sink = OtlpSink(url)
            try:
                assert sink.endpoint == final
            finally:
                sink.close(1)
        with pytest.raises(ValueError, match="http:// or https://"):
            OtlpSink("grpc://collector:4317")
        with pytest.raises(ValueError, match="max_body_bytes"):
            OtlpSink("http://c", max_body_bytes=10)
        with pytest.raises(ValueError, match="control characters"):
            OtlpSink("http://c", headers={"X-A": "a\nb"})


# -- encoding, for any entry (hypothesis) -------------------------------------------------------


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    extras=st.lists(
        st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5), min_size=1, max_size=30
    ),
    services=st.lists(st.sampled_from(["svc", "other", "ü-service"]), min_size=30, max_size=30),
    limit=st.integers(1024, 6000),
)
def test_any_batch_is_encoded_whole_exact_and_within_the_limit(
    extras: list[dict[str, Any]], services: list[str], limit: int
) -> None:
    """Every line comes back exactly once, byte for byte, in order per service, and no body
    above the limit holds more than one record."""
    lines = [
        orjson.dumps({**extra, **orjson.loads(entry(f"e{i}", service=services[i]))})
        for i, extra in enumerate(extras)
    ]
    sink = OtlpSink("http://collector.example", max_body_bytes=limit)
    try:
        bodies = list(sink.bodies(lines))
    finally:
        sink.close(1)
    seen: list[bytes] = []
    for body, count in bodies:
        request = ExportLogsServiceRequest.FromString(body)
        records = [
            (r.resource.attributes[0].value.string_value, record.body.string_value.encode())
            for r in request.resource_logs
            for s in r.scope_logs
            for record in s.log_records
        ]
        assert len(records) == count
        assert len(body) <= limit or count == 1
        assert all(orjson.loads(line)["service"] == service for service, line in records)
        seen += [line for _, line in records]
    assert sorted(seen) == sorted(lines)
    for service in set(services):
        mine = [line for line in lines if orjson.loads(line)["service"] == service]
        assert [line for line in seen if orjson.loads(line)["service"] == service] == mine


# -- configuration from the environment -----------------------------------------------------


class TestFromEnv:
    def test_full_configuration(self, tmp_path: Path) -> None:
        """Every AUDIT_LOG_OTLP_* setting lands in the sink; header values become secrets."""
        pair = make_tls_pair(tmp_path)
        if pair is None:
            pytest.skip("the openssl command is not installed")
        cert, key = make_client_cert(tmp_path)
        env = {
            "AUDIT_LOG_OTLP_ENDPOINT": "https://collector.example:4318",
            "AUDIT_LOG_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}, X-Scope-OrgID=acme",
            "AUDIT_LOG_OTLP_COMPRESSION": "gzip",
            "AUDIT_LOG_OTLP_CA_BUNDLE": str(pair[0]),
            "AUDIT_LOG_OTLP_CLIENT_CERT": str(cert),
            "AUDIT_LOG_OTLP_CLIENT_KEY": str(key),
            "AUDIT_LOG_OTLP_CONNECT_TIMEOUT_S": "2.5",
            "AUDIT_LOG_OTLP_READ_TIMEOUT_S": "7",
            "AUDIT_LOG_OTLP_MAX_BODY_BYTES": "65536",
        }
        sink = otlp_sink_from_env(env)
        try:
            assert sink.endpoint == "https://collector.example:4318/v1/logs"
            assert (sink.gzip, sink.max_body_bytes) == (True, 65536)
            timeout = sink._client.timeout
            assert (timeout.connect, timeout.read) == (2.5, 7.0)
            assert sink._client.headers["Authorization"] == f"Bearer {TOKEN}"
            assert sink._client.headers["X-Scope-OrgID"] == "acme"
            shown = repr(sink) + sink.describe()
            assert TOKEN not in shown
            assert "client certificate" in sink.describe()
        finally:
            sink.close(1)
        assert default_redactor.redact(f"token {TOKEN}") == "token [REDACTED]"

    def test_defaults_and_check_config(self, tmp_path: Path) -> None:
        """Only the endpoint is required; AuditConfig builds it and its summary shows it."""
        env = {
            "AUDIT_LOG_DESTINATION": "otlp",
            "AUDIT_LOG_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "AUDIT_LOG_OTLP_HEADERS": f"api-key={TOKEN}",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
        config = AuditConfig.from_env(env, read_only=True)
        summary = config.summary()
        assert "otlp:         POST http://127.0.0.1:4318/v1/logs (OTLP/HTTP protobuf logs;" in (
            summary
        )
        assert "uncompressed" in summary
        assert "headers: api-key (values not shown)" in summary
        assert TOKEN not in summary
        sinks = config.build_sinks()
        try:
            assert [type(s) for s in sinks] == [OtlpSink]
        finally:
            for s in sinks:
                s.close(1)

    def test_the_check_config_command_shows_otlp_and_no_header_value(self, tmp_path: Path) -> None:
        """`auditkeep check-config` (a real child process): the endpoint, gzip, header names;
        a bad value fails with one line naming the variable; no header value anywhere."""
        inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
        env = {
            **inherited,
            "AUDIT_LOG_DESTINATION": "otlp",
            "AUDIT_LOG_OTLP_ENDPOINT": "https://collector.example:4318",
            "AUDIT_LOG_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}",
            "AUDIT_LOG_OTLP_COMPRESSION": "gzip",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
        command = [sys.executable, "-m", "auditkeep", "check-config"]
        good = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        bad = subprocess.run(
            command,
            env={**env, "AUDIT_LOG_OTLP_COMPRESSION": "brotli"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert good.returncode == 0, good.stderr
        assert (
            "otlp:         POST https://collector.example:4318/v1/logs (OTLP/HTTP protobuf "
            "logs; gzip; TLS verified with the system's CAs; headers: Authorization "
            "(values not shown))"
        ) in good.stdout
        assert bad.returncode == 1
        assert bad.stderr.splitlines() == [
            "auditkeep: invalid configuration: AUDIT_LOG_OTLP_COMPRESSION: expected gzip or "
            "none, got 'brotli'"
        ]
        for text in (good.stdout, good.stderr, bad.stdout, bad.stderr):
            assert TOKEN not in text
        assert not (tmp_path / "spool").exists()  # check-config creates nothing

    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            ({"AUDIT_LOG_OTLP_ENDPOINT": ""}, "AUDIT_LOG_OTLP_ENDPOINT"),
            ({"AUDIT_LOG_OTLP_ENDPOINT": "collector:4318"}, "AUDIT_LOG_OTLP_ENDPOINT"),
            ({"AUDIT_LOG_OTLP_HEADERS": "X-A"}, "AUDIT_LOG_OTLP_HEADERS"),
            ({"AUDIT_LOG_OTLP_HEADERS": "Bad Name=x"}, "AUDIT_LOG_OTLP_HEADERS"),
            ({"AUDIT_LOG_OTLP_HEADERS": "X-A="}, "AUDIT_LOG_OTLP_HEADERS"),
            ({"AUDIT_LOG_OTLP_HEADERS": "X-A=a%0Ab"}, "AUDIT_LOG_OTLP_HEADERS"),
            ({"AUDIT_LOG_OTLP_COMPRESSION": "zstd"}, "AUDIT_LOG_OTLP_COMPRESSION"),
            ({"AUDIT_LOG_OTLP_VERIFY_TLS": "nope"}, "AUDIT_LOG_OTLP_VERIFY_TLS"),
            ({"AUDIT_LOG_OTLP_CA_BUNDLE": "/nonexistent/ca.pem"}, "AUDIT_LOG_OTLP_CA_BUNDLE"),
            ({"AUDIT_LOG_OTLP_CLIENT_CERT": "/x/c.pem"}, "AUDIT_LOG_OTLP_CLIENT_KEY"),
            ({"AUDIT_LOG_OTLP_CLIENT_KEY": "/x/c.key"}, "AUDIT_LOG_OTLP_CLIENT_CERT"),
            (
                {"AUDIT_LOG_OTLP_CLIENT_CERT": "/x/c.pem", "AUDIT_LOG_OTLP_CLIENT_KEY": "/x/k"},
                "AUDIT_LOG_OTLP_CLIENT_CERT",
            ),
            ({"AUDIT_LOG_OTLP_CONNECT_TIMEOUT_S": "0"}, "AUDIT_LOG_OTLP_CONNECT_TIMEOUT_S"),
            ({"AUDIT_LOG_OTLP_READ_TIMEOUT_S": "inf"}, "AUDIT_LOG_OTLP_READ_TIMEOUT_S"),
            ({"AUDIT_LOG_OTLP_MAX_BODY_BYTES": "100"}, "AUDIT_LOG_OTLP_MAX_BODY_BYTES"),
        ],
    )
    def test_bad_settings_name_the_variable(self, env: dict[str, str], variable: str) -> None:
        """Each invalid setting is a ConfigError naming the variable to fix."""
        env = {"AUDIT_LOG_OTLP_ENDPOINT": "https://collector.example", **env}
        with pytest.raises(ConfigError) as caught:
            otlp_sink_from_env(env)
        assert caught.value.variable == variable

    def test_headers_from_a_mounted_file(self, tmp_path: Path) -> None:
        """AUDIT_LOG_OTLP_HEADERS_FILE: the same text from a file; its errors name it."""
        mounted = tmp_path / "otlp-headers"
        mounted.write_text(f"Authorization=Bearer%20{TOKEN}\n")
        base = {"AUDIT_LOG_OTLP_ENDPOINT": "http://c", "AUDIT_LOG_OTLP_HEADERS_FILE": str(mounted)}
        sink = otlp_sink_from_env(base)
        try:
            assert sink._client.headers["Authorization"] == f"Bearer {TOKEN}"
        finally:
            sink.close(1)
        mounted.write_text(TOKEN)
        for env, variable in [
            (base, "AUDIT_LOG_OTLP_HEADERS_FILE"),
            ({**base, "AUDIT_LOG_OTLP_HEADERS": "X-A=b"}, "AUDIT_LOG_OTLP_HEADERS"),
            (
                {**base, "AUDIT_LOG_OTLP_HEADERS_FILE": "/nonexistent"},
                "AUDIT_LOG_OTLP_HEADERS_FILE",
            ),
        ]:
            with pytest.raises(ConfigError) as caught:
                otlp_sink_from_env(env)
            assert caught.value.variable == variable
            assert TOKEN not in str(caught.value)

    def test_a_header_error_never_quotes_a_value(self) -> None:
        """A pasted token without '=' or a bad value: the error names neither."""
        for raw in (TOKEN, f"X-Key={TOKEN}%0Ax", f"X-Key={TOKEN},{TOKEN}"):
            with pytest.raises(ConfigError) as caught:
                otlp_sink_from_env(
                    {"AUDIT_LOG_OTLP_ENDPOINT": "http://c", "AUDIT_LOG_OTLP_HEADERS": raw}
                )
            assert TOKEN not in str(caught.value)

    def test_a_client_key_that_does_not_match(self, tmp_path: Path) -> None:
        """A certificate that is no PEM: a ConfigError naming AUDIT_LOG_OTLP_CLIENT_CERT."""
        junk = tmp_path / "c.pem"
        junk.write_text("not a certificate")
        with pytest.raises(ConfigError) as caught:
            otlp_sink_from_env(
                {
                    "AUDIT_LOG_OTLP_ENDPOINT": "https://c",
                    "AUDIT_LOG_OTLP_CLIENT_CERT": str(junk),
                    "AUDIT_LOG_OTLP_CLIENT_KEY": str(junk),
                }
            )
        assert caught.value.variable == "AUDIT_LOG_OTLP_CLIENT_CERT"
