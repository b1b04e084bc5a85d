"""SyslogSink: RFC 5424 messages checked on the wire and through a real rsyslogd.

The rsyslogd fixtures live in ``rsyslog_server.py``. Entries are emitted through
a real ``AuditLogger`` so the library's escaping is what gets tested; an
``InMemorySink`` beside the syslog sink records the exact bytes that were sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep import SinkResult, SinkStatus
from auditkeep.exceptions import ConfigError
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.memory import InMemorySink
from auditkeep.sinks.syslog import MAX_UDP_MESSAGE_BYTES, SyslogSink, syslog_sink_from_env
from auditkeep.testing import validate_entries

if TYPE_CHECKING:
    from rsyslog_server import RsyslogServer, TlsFiles

HOST = "auditkeep-test-host"
PID = str(os.getpid())
TIMESTAMP = "2026-11-20T08:00:00.123456Z"

# Strings that would break a naive syslog encoding: line breaks that could start
# a new message, a forged RFC 5424 header, a fake octet count, structured-data
# and quoting characters, and text that is not ASCII.
TRICKY = (
    "line one\nline two\r\n<13>1 2026-11-20T08:00:00Z forged-host forged-app - forged - injected",
    "12 <14>1 - - spoof - - octet-count spoof",
    '<34>1 - - - - - [x@1 a="b"] ] \\] \\" "quoted"',
    "back\\slash \\n \\u0000 and a quote \"'",
    "naïve café — 東京 🔐 Ünïcödé",
    "\x00nul \x1b[31mansi\x1b[0m \x7fdel \u2028sep\u2029 \x85nel \ttab",
)
ACTIONS = ("gitlab.api.post_mr_note", "jira.api.add_comment", "copilot.sdk.review_request")


Closing = Callable[[SyslogSink], SyslogSink]


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Register a sink to be closed at teardown, even when an assertion fails first."""
    sinks: list[SyslogSink] = []

    def register(sink: SyslogSink) -> SyslogSink:
        sinks.append(sink)
        return sink

    yield register
    for sink in sinks:
        sink.close(1)


def entry_line(action: str = "gitlab.api.get_mr_details", **fields: Any) -> bytes:
    entry = {"action": action, "outcome": "success", "timestamp": TIMESTAMP, **fields}
    return orjson.dumps(entry)


def header(pri: int, msgid: str, *, app: str = "svc", timestamp: str = TIMESTAMP) -> bytes:
    return f"<{pri}>1 {timestamp} {HOST} {app} {PID} {msgid} - ".encode()


@contextlib.contextmanager
def udp_receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


def read_stream(listener: socket.socket, done: threading.Event, out: bytearray) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5)
        while chunk := conn.recv(65536):
            out.extend(chunk)
    done.set()


def split_octet_counted(data: bytes) -> list[bytes]:
    frames = []
    while data:
        length, _, rest = data.partition(b" ")
        frames.append(rest[: int(length)])
        data = rest[int(length) :]
    return frames


def emit_tricky(logger: AuditLogger, count: int) -> list[str]:
    """Emit ``count`` entries cycling through actions, outcomes and the tricky strings."""
    ids = []
    for n in range(count):
        text = TRICKY[n % len(TRICKY)]
        failed = n % 3 == 0
        ids.append(
            logger.emit(
                ACTIONS[n % len(ACTIONS)],
                outcome="failure" if failed else "success",
                target={"resource_type": "merge_request", "title": text, "mr_iid": n},
                error_message=text if failed else None,
                http_status=500 if failed else 200,
                details={"text": text, "nested": {"list": [text, n]}},
            )
        )
    return ids


def make_logger(
    sinks: list[Any], spool_dir: Path, metrics: AuditMetrics, **options: Any
) -> AuditLogger:
    return AuditLogger(
        sinks,
        service="svc",
        spool_dir=spool_dir,
        metrics=metrics,
        fallback=InMemorySink(),  # keep the pipeline's fallback copies off stdout
        flush_interval_s=0.02,
        **options,
    )


class TestWireFormat:
    """Exact bytes on the wire, read by plain sockets."""

    def test_sends_one_rfc5424_datagram_per_entry(self, closing: Closing) -> None:
        """PRI from facility and outcome, the entry's timestamp, msgid = action, MSG = JSON."""
        ok = entry_line("gitlab.api.get_mr_details")
        failed = entry_line("jira.api.get_issue", outcome="failure")
        with udp_receiver() as rx:
            port = rx.getsockname()[1]
            sink = closing(
                SyslogSink(
                    f"udp://127.0.0.1:{port}", app_name="svc", facility="local3", hostname=HOST
                )
            )
            assert sink.write_batch([ok, failed]) is SinkResult.SUCCESS
            received = [rx.recv(65536), rx.recv(65536)]
            sink.close(1)
        assert received == [
            header(19 * 8 + 6, "gitlab.api.get_mr_details") + ok,
            header(19 * 8 + 4, "jira.api.get_issue") + failed,
        ]

    def test_frames_tcp_messages_by_octet_counting(self, closing: Closing) -> None:
        """Each TCP message is ``LEN SP MSG`` and the frames split back into the entries."""
        # Not the last string: its raw control characters are the escaping test's business.
        lines = [entry_line(details={"text": t}) for t in TRICKY[:-1]]
        data = bytearray()
        done = threading.Event()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            reader = threading.Thread(target=read_stream, args=(listener, done, data))
            reader.start()
            sink = closing(
                SyslogSink(
                    f"tcp://127.0.0.1:{listener.getsockname()[1]}", app_name="svc", hostname=HOST
                )
            )
            assert sink.write_batch(lines[:2]) is SinkResult.SUCCESS
            assert sink.write_batch(lines[2:]) is SinkResult.SUCCESS
            sink.close(1)
            assert done.wait(5)
            reader.join()
        assert split_octet_counted(bytes(data)) == [
            header(4 * 8 + 6, "gitlab.api.get_mr_details") + line for line in lines
        ]

    def test_uses_a_unix_stream_socket_with_nul_terminators(
        self, tmp_path: Path, closing: Closing
    ) -> None:
        """A ``unix://`` stream socket gets NUL-terminated messages, as glibc sends them."""
        path = tmp_path / "stream.sock"
        line = entry_line()
        data = bytearray()
        done = threading.Event()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(path))
            listener.listen()
            reader = threading.Thread(target=read_stream, args=(listener, done, data))
            reader.start()
            sink = closing(SyslogSink(f"unix://{path}", app_name="svc", hostname=HOST))
            assert sink.write_batch([line, line]) is SinkResult.SUCCESS
            sink.close(1)
            assert done.wait(5)
            reader.join()
        message = header(4 * 8 + 6, "gitlab.api.get_mr_details") + line
        assert bytes(data) == message + b"\0" + message + b"\0"

    def test_header_fields_are_cut_and_kept_to_printable_ascii(self, closing: Closing) -> None:
        """Spaces and non-ASCII become ``_``; MSGID keeps 32 characters, APP-NAME 48."""
        action = "évil action <13>1 with spaces and more than 32 chars"
        line = entry_line(action)
        with udp_receiver() as rx:
            sink = closing(
                SyslogSink(
                    f"udp://127.0.0.1:{rx.getsockname()[1]}",
                    app_name="my app " + "x" * 60,
                    hostname="host name\n",
                )
            )
            assert sink.write_batch([line]) is SinkResult.SUCCESS
            received = rx.recv(65536)
            sink.close(1)
        app = ("my_app_" + "x" * 60)[:48]
        msgid = "_vil_action_<13>1_with_spaces_an"
        assert received == f"<38>1 {TIMESTAMP} host_name_ {app} {PID} {msgid} - ".encode() + line

    def test_escapes_raw_control_bytes_the_library_would_never_send(self, closing: Closing) -> None:
        """A raw newline or NUL in a line goes out as a JSON ``\\u`` escape, never raw."""
        line = b'{"action":"a","outcome":"success","note":"one\ntwo\x00\x7f"}'
        with udp_receiver() as rx:
            sink = closing(
                SyslogSink(f"udp://127.0.0.1:{rx.getsockname()[1]}", app_name="svc", hostname=HOST)
            )
            assert sink.write_batch([line]) is SinkResult.SUCCESS
            received = rx.recv(65536)
            sink.close(1)
        body = b'{"action":"a","outcome":"success","note":"one\\u000atwo\\u0000\\u007f"}'
        assert received == header(38, "a", timestamp="-") + body
        assert orjson.loads(body)["note"] == "one\ntwo\x00\x7f"

    def test_a_line_that_is_not_an_entry_gets_nil_header_fields(self, closing: Closing) -> None:
        """No action or timestamp to read: MSGID and TIMESTAMP are ``-``, severity informational."""
        with udp_receiver() as rx:
            sink = closing(
                SyslogSink(f"udp://127.0.0.1:{rx.getsockname()[1]}", app_name="svc", hostname=HOST)
            )
            assert sink.write_batch([b"not json", b"[1]"]) is SinkResult.SUCCESS
            received = [rx.recv(65536), rx.recv(65536)]
            sink.close(1)
        assert received == [
            header(38, "-", timestamp="-") + b"not json",
            header(38, "-", timestamp="-") + b"[1]",
        ]

    def test_refuses_a_udp_batch_with_a_message_too_large_for_a_datagram(
        self, closing: Closing
    ) -> None:
        """FAILURE (dead letter) and nothing sent, rather than a truncated entry."""
        big = entry_line(details={"text": "x" * MAX_UDP_MESSAGE_BYTES})
        with udp_receiver() as rx:
            sink = closing(
                SyslogSink(f"udp://127.0.0.1:{rx.getsockname()[1]}", app_name="svc", hostname=HOST)
            )
            refused = sink.write_batch([entry_line(), big])
            assert refused.status is SinkStatus.FAILURE
            assert f"larger than {MAX_UDP_MESSAGE_BYTES} bytes" in str(refused.reason)
            assert sink.write_batch([entry_line("next")]) is SinkResult.SUCCESS
            received = rx.recv(65536)
            sink.close(1)
        assert received == header(38, "next") + entry_line("next")

    def test_udp_cannot_see_a_datagram_lost_to_a_dead_daemon(self, closing: Closing) -> None:
        """The documented limit: the first datagram to a closed port is 'sent' and lost.

        Only the ICMP error it causes makes the next send fail (RETRY).
        """
        with udp_receiver() as rx:
            port = rx.getsockname()[1]
        sink = closing(SyslogSink(f"udp://127.0.0.1:{port}", app_name="svc", hostname=HOST))
        assert sink.write_batch([entry_line()]) is SinkResult.SUCCESS
        assert sink.write_batch([entry_line()]).status is SinkStatus.RETRY
        sink.close(1)

    def test_returns_retry_when_nothing_listens(self, tmp_path: Path, closing: Closing) -> None:
        """Refused connections and missing sockets are transient: RETRY, never an exception."""
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
        for address in (f"tcp://127.0.0.1:{port}", f"unix://{tmp_path}/none.sock"):
            sink = closing(SyslogSink(address, app_name="svc", timeout_s=1))
            assert sink.write_batch([entry_line()]).status is SinkStatus.RETRY
            sink.close(1)

    def test_close_is_idempotent_and_later_writes_retry(self, closing: Closing) -> None:
        """After close a batch is refused as RETRY (it stays in the spool)."""
        with udp_receiver() as rx:
            address = f"udp://127.0.0.1:{rx.getsockname()[1]}"
            sink = closing(SyslogSink(address, app_name="svc"))
            assert sink.write_batch([entry_line()]) is SinkResult.SUCCESS
            sink.close(1)
            sink.close(1)
            assert sink.write_batch([entry_line()]).status is SinkStatus.RETRY
        assert repr(sink) == f"SyslogSink(address={address!r}, app_name='svc', facility=4)"


class TestConfiguration:
    """``syslog_sink_from_env`` and the constructor's checks."""

    def test_defaults_to_the_local_socket_and_the_auth_facility(self) -> None:
        """No variables: ``unix:///dev/log``, facility auth (4), app name = service."""
        sink = syslog_sink_from_env({}, "svc")
        assert repr(sink) == "SyslogSink(address='unix:///dev/log', app_name='svc', facility=4)"

    def test_reads_every_variable(self, tls_files: TlsFiles | None) -> None:
        """Address, facility (name or number), app name, timeout and CA file are applied."""
        env = {
            "AUDIT_LOG_SYSLOG_ADDRESS": "tcp://[::1]:601",
            "AUDIT_LOG_SYSLOG_FACILITY": "LOCAL5",
            "AUDIT_LOG_SYSLOG_APP_NAME": "agent",
            "AUDIT_LOG_SYSLOG_TIMEOUT_S": "2.5",
        }
        sink = syslog_sink_from_env(env, "svc")
        assert repr(sink) == "SyslogSink(address='tcp://[::1]:601', app_name='agent', facility=21)"
        env["AUDIT_LOG_SYSLOG_FACILITY"] = "13"
        assert repr(syslog_sink_from_env(env, "svc")).endswith("facility=13)")
        ca = tls_files.cert if tls_files else None
        if ca is not None:
            env["AUDIT_LOG_SYSLOG_ADDRESS"] = "tls://localhost:6514"
            env["AUDIT_LOG_SYSLOG_TLS_CA_FILE"] = str(ca)
            assert repr(syslog_sink_from_env(env, "svc")).startswith(
                "SyslogSink(address='tls://localhost:6514'"
            )

    @pytest.mark.parametrize(
        ("variable", "value", "expected"),
        [
            ("AUDIT_LOG_SYSLOG_ADDRESS", "syslog.example.com:514", "expected scheme://"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "http://host:514", "unknown scheme 'http'"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "tcp://host", "missing port in 'tcp://host'"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "tls://host", "for example tls://host:6514"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "udp://host:99999", "from 1 to 65535"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "udp://host:0", "port 0"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "tcp://:601", "missing host"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "tcp://host:601/path", "only host:port"),
            ("AUDIT_LOG_SYSLOG_ADDRESS", "unix://dev/log", "absolute socket path"),
            ("AUDIT_LOG_SYSLOG_FACILITY", "audit", "unknown facility 'audit'; use one of kern"),
            ("AUDIT_LOG_SYSLOG_FACILITY", "24", "from 0 to 23"),
            ("AUDIT_LOG_SYSLOG_TIMEOUT_S", "soon", "positive number of seconds"),
            ("AUDIT_LOG_SYSLOG_TIMEOUT_S", "0", "positive number of seconds"),
            ("AUDIT_LOG_SYSLOG_TIMEOUT_S", "nan", "positive number of seconds"),
            ("AUDIT_LOG_SYSLOG_TLS_CA_FILE", "/nonexistent/ca.pem", "cannot load CA bundle"),
        ],
    )
    def test_rejects_a_bad_value_naming_the_variable(
        self, variable: str, value: str, expected: str
    ) -> None:
        """A ``ConfigError`` names the variable and says what a good value looks like."""
        env = {"AUDIT_LOG_SYSLOG_ADDRESS": "tls://localhost:6514", variable: value}
        with pytest.raises(ConfigError) as caught:
            syslog_sink_from_env(env, "svc")
        assert caught.value.variable == variable
        assert expected in str(caught.value)

    def test_rejects_a_ca_file_that_is_not_pem(self, tmp_path: Path) -> None:
        """A CA file without certificates is reported at start, not at the first connection."""
        bogus = tmp_path / "ca.pem"
        bogus.write_text("not a certificate\n")
        env = {
            "AUDIT_LOG_SYSLOG_ADDRESS": "tls://localhost:6514",
            "AUDIT_LOG_SYSLOG_TLS_CA_FILE": str(bogus),
        }
        with pytest.raises(ConfigError, match="cannot load CA bundle") as caught:
            syslog_sink_from_env(env, "svc")
        assert caught.value.variable == "AUDIT_LOG_SYSLOG_TLS_CA_FILE"

    def test_rejects_a_ca_file_without_tls(self, tmp_path: Path) -> None:
        """The CA file only makes sense with ``tls://``; saying so beats ignoring it."""
        env = {
            "AUDIT_LOG_SYSLOG_ADDRESS": "tcp://localhost:601",
            "AUDIT_LOG_SYSLOG_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        }
        with pytest.raises(ConfigError, match="only used with a tls:// address") as caught:
            syslog_sink_from_env(env, "svc")
        assert caught.value.variable == "AUDIT_LOG_SYSLOG_TLS_CA_FILE"

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"app_name": " "}, "app_name must not be empty"),
            ({"app_name": "svc", "timeout_s": 0}, "timeout_s must be a positive"),
            ({"app_name": "svc", "facility": 99}, "from 0 to 23"),
            ({"app_name": "svc", "facility": True}, "a name or a number"),
            ({"app_name": "svc", "tls_ca_file": "/ca.pem"}, "tls_ca_file needs a tls://"),
        ],
    )
    def test_constructor_rejects_impossible_arguments(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        """Bad constructor arguments raise ``ValueError`` at once."""
        with pytest.raises(ValueError, match=re.escape(message)):
            SyslogSink("udp://127.0.0.1:514", **kwargs)


class TestDeliveryToRsyslog:
    """Entries emitted by a real logger arrive intact in a real rsyslogd."""

    @pytest.mark.parametrize(
        ("transport", "input_name"),
        [("udp", "udp"), ("tcp", "tcp"), ("unix", "imuxsock"), ("tls", "tls")],
    )
    def test_entries_arrive_intact_one_per_message(
        self,
        rsyslog: RsyslogServer,
        tls_files: TlsFiles | None,
        tmp_path: Path,
        transport: str,
        input_name: str,
        closing: Closing,
    ) -> None:
        """Every entry is one message whose MSG is the exact JSON sent, with the right header.

        Strings hold newlines, forged headers, ``<``, ``]``, quotes, backslashes
        and non-ASCII text; none splits a message or changes its header.
        """
        app = f"t-deliver-{transport}"
        sink = closing(
            SyslogSink(
                rsyslog.address(transport),
                app_name=app,
                facility="local4",
                hostname=HOST,
                tls_ca_file=str(tls_files.cert) if transport == "tls" and tls_files else None,
            )
        )
        sent = InMemorySink()
        registry = CollectorRegistry()
        logger = make_logger([sink, sent], tmp_path, AuditMetrics(registry), max_batch_events=16)
        ids = emit_tricky(logger, 60)
        assert logger.close(10)

        received = rsyslog.wait_for(app, len(ids))
        assert len(received) == len(ids)
        # The library's own guarantee, which the framing does not rely on.
        assert all(re.search(rb"[\x00-\x1f\x7f]", line) is None for line in sent.lines)
        assert sorted(r.msg for r in received) == sorted(sent.lines)
        entries = validate_entries([r.msg for r in received])
        assert sorted(e["event_id"] for e in entries) == sorted(ids)
        assert {e["details"]["text"] for e in entries} >= {
            "naïve café — 東京 🔐 Ünïcödé",
            "12 <14>1 - - spoof - - octet-count spoof",
        }
        for record, entry in zip(received, entries, strict=True):
            severity = 4 if entry["outcome"] == "failure" else 6
            assert (
                record.input,
                record.pri,
                record.facility,
                record.severity,
                record.hostname,
                record.procid,
                record.msgid,
                record.timestamp,
                record.structured_data,
            ) == (
                input_name,
                20 * 8 + severity,
                20,
                severity,
                HOST,
                PID,
                entry["action"],
                entry["timestamp"],
                "-",
            )
        assert (
            registry.get_sample_value("audit_log_sink_errors_total", {"destination": "syslog"}) == 0
        )


class TestReconnect:
    """A daemon that stops and starts again: RETRY while down, delivery after."""

    @pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
    def test_retries_while_down_and_reconnects_after_a_restart(
        self,
        private_rsyslog: RsyslogServer,
        tls_files: TlsFiles | None,
        transport: str,
        closing: Closing,
    ) -> None:
        """The first batch after the restart is delivered, not lost in the dead connection."""
        app = f"t-restart-{transport}"
        sink = closing(
            SyslogSink(
                private_rsyslog.address(transport),
                app_name=app,
                hostname=HOST,
                timeout_s=2,
                tls_ca_file=str(tls_files.cert) if transport == "tls" and tls_files else None,
            )
        )
        before, during, after = (entry_line(details={"n": n}) for n in range(3))
        assert sink.write_batch([before]) is SinkResult.SUCCESS
        private_rsyslog.wait_for(app, 1)

        private_rsyslog.stop()
        assert sink.write_batch([during]).status is SinkStatus.RETRY
        assert sink.write_batch([during]).status is SinkStatus.RETRY

        private_rsyslog.start()
        assert sink.write_batch([after]) is SinkResult.SUCCESS
        assert [r.msg for r in private_rsyslog.wait_for(app, 2)] == [before, after]
        sink.close(1)

    def test_a_logger_loses_nothing_across_a_restart(
        self, private_rsyslog: RsyslogServer, tmp_path: Path, closing: Closing
    ) -> None:
        """Entries emitted while rsyslogd is down are spooled and delivered once it is back."""
        app = "t-restart-logger"
        sink = closing(
            SyslogSink(private_rsyslog.address("tcp"), app_name=app, hostname=HOST, timeout_s=2)
        )
        registry = CollectorRegistry()
        logger = make_logger(
            [sink], tmp_path, AuditMetrics(registry), retry_initial_s=0.02, retry_max_s=0.2
        )
        ids = emit_tricky(logger, 20)
        assert logger.flush(10)
        private_rsyslog.wait_for(app, 20)

        private_rsyslog.stop()
        ids += emit_tricky(logger, 20)
        # Make sure delivery was tried, and failed, while the daemon was down.
        errors = {"destination": "syslog"}
        private_rsyslog.wait_until(
            lambda: (registry.get_sample_value("audit_log_sink_errors_total", errors) or 0) > 0,
            10,
            "a failed delivery",
        )

        private_rsyslog.start()
        ids += emit_tricky(logger, 20)
        assert logger.close(10)

        received = private_rsyslog.wait_for(app, len(ids))
        entries = validate_entries([r.msg for r in received])
        # Nothing lost, and nothing delivered twice.
        assert sorted(e["event_id"] for e in entries) == sorted(ids)
