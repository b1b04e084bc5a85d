"""Two and three SIGTERMs during shutdown, with the destination hung, lose nothing.

Kubernetes, systemd and docker repeat SIGTERM. The child is an ordinary
service (``auditkeep.runtime.configure()`` from ``AUDIT_LOG_*``) sending to an
HTTP destination that accepts connections and never answers, so the first
SIGTERM's close is stuck waiting for it when the next signals arrive. A new
process on the same spool, with the destination healthy, must then deliver
every event_id whose ``emit()`` returned in the child.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.http import HttpSink
from auditkeep.testing import validate_entries

CHILD = Path(__file__).with_name("sigterm_child.py")
SHUTDOWN_TIMEOUT_S = 20.0  # far longer than the test waits: only the signals end the close


class _Intake(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        with server.lock:
            server.lines.extend(line for line in body.split(b"\n") if line)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """Accepts TCP connections (the kernel's backlog) and never answers a request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/intake"


def start_child(endpoint: str, spool: Path, *, own_handler: bool) -> subprocess.Popen[bytes]:
    env = {
        "CHILD_OWN_SIGTERM_HANDLER": "1" if own_handler else "0",
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AUDIT_LOG_DESTINATION": "http",
        "AUDIT_LOG_HTTP_ENDPOINT": endpoint,
        "AUDIT_LOG_HTTP_READ_TIMEOUT_S": "60",
        "AUDIT_LOG_SPOOL_DIR": str(spool),
        "AUDIT_LOG_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
    }
    return subprocess.Popen([sys.executable, str(CHILD)], stdout=subprocess.PIPE, env=env)


def read_ids_until(proc: subprocess.Popen[bytes], count: int) -> bytearray:
    assert proc.stdout is not None
    received = bytearray()
    deadline = time.monotonic() + 60
    while received.count(b"\n") < count and time.monotonic() < deadline:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        received += chunk
    return received


def redeliver(spool: Path) -> list[bytes]:
    """A new process-lifetime on the same spool, destination healthy: returns what arrived."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Intake)
    server.lines, server.lock = [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        logger = AuditLogger(
            HttpSink(f"http://127.0.0.1:{server.server_address[1]}/intake"),
            service="sigterm-child",
            spool_dir=spool,
            metrics=AuditMetrics(CollectorRegistry()),
        )
        assert logger.flush(60) is True
        assert logger.close() is True
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    return list(server.lines)


@pytest.mark.parametrize("own_handler", [False, True], ids=["library-handler", "app-handler"])
@pytest.mark.parametrize("signals", [2, 3])
def test_repeated_sigterm_during_shutdown_loses_nothing(
    tmp_path: Path, hung_endpoint: str, signals: int, own_handler: bool
) -> None:
    """Every id whose emit() returned is delivered after a restart; the child exits promptly.

    With the library's handler a later SIGTERM cuts the close short; with an
    application handler that raises each time, the raise interrupts only the
    wait, and is re-raised once the hand-over to the spool is done.
    """
    spool = tmp_path / "spool"
    proc = start_child(hung_endpoint, spool, own_handler=own_handler)
    received = read_ids_until(proc, 5_000)
    proc.send_signal(signal.SIGTERM)
    first = time.monotonic()
    for _ in range(signals - 1):
        time.sleep(0.3)  # the first close is now waiting on the hung destination
        proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    took = time.monotonic() - first
    received += rest
    ids = {line.decode() for line in received.split(b"\n") if len(line) == 36}
    assert len(ids) >= 5_000
    assert proc.returncode == 128 + signal.SIGTERM
    # The later signal cut the 20 s delivery deadline short.
    assert took < SHUTDOWN_TIMEOUT_S / 2

    lines = redeliver(spool)
    delivered = {orjson.loads(line)["event_id"] for line in lines}
    assert ids - delivered == set(), f"{len(ids - delivered)} of {len(ids)} lost"
    validate_entries(lines[:: max(1, len(lines) // 300)])


def test_one_sigterm_with_a_hung_destination_waits_for_the_deadline(
    tmp_path: Path, hung_endpoint: str
) -> None:
    """The contrast: without a second signal the close waits out the deadline, then spools."""
    spool = tmp_path / "spool"
    env_timeout = "1.5"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AUDIT_LOG_DESTINATION": "http",
        "AUDIT_LOG_HTTP_ENDPOINT": hung_endpoint,
        "AUDIT_LOG_HTTP_READ_TIMEOUT_S": "60",
        "AUDIT_LOG_SPOOL_DIR": str(spool),
        "AUDIT_LOG_SHUTDOWN_TIMEOUT_S": env_timeout,
    }
    proc = subprocess.Popen([sys.executable, str(CHILD)], stdout=subprocess.PIPE, env=env)
    received = read_ids_until(proc, 2_000)
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    rest, _ = proc.communicate(timeout=30)
    took = time.monotonic() - start
    received += rest
    ids = {line.decode() for line in received.split(b"\n") if len(line) == 36}
    assert proc.returncode == 128 + signal.SIGTERM
    assert took >= float(env_timeout) * 0.9
    delivered = {orjson.loads(line)["event_id"] for line in redeliver(spool)}
    assert ids - delivered == set()
