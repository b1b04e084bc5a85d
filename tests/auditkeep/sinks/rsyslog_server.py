"""A real rsyslogd for the syslog sink's tests, and the fixtures that start it.

Each server runs ``rsyslogd -n -f <conf> -i <pidfile>`` in the foreground as a
child process, with everything in its own directory: the config, the pid file,
its work directory, a unix socket (``imuxsock`` with the system socket off, so
``/dev/log`` is never touched) and free loopback ports for ``imudp``, ``imtcp``
(octet-counted framing) and, when rsyslog's GnuTLS driver is installed, an
``imtcp`` TLS listener. Every message it receives is written to ``received.log``
as one tab-separated line: the input, the header fields as rsyslog parsed them,
and the raw MSG last (JSON never holds a raw tab or newline).

``conftest.py`` loads this module by path (the tests have no packages) and
re-exports the fixtures.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if os.access("/usr/sbin/rsyslogd", os.X_OK) else None
)
OPENSSL = shutil.which("openssl")
# GnuTLS: the OpenSSL driver of rsyslog 8.2302 closes every TLS session's socket
# twice, which now and then closes another thread's file (rsyslog PR #6375).
GTLS_DRIVER = bool(
    glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so")
    or os.path.exists("/usr/lib/rsyslog/lmnsd_gtls.so")
)
START_TIMEOUT_S = 15.0
PROBE_APP = "rsyslog-probe"

_TEMPLATE = "\\t".join(
    [
        "%inputname%",
        "%pri%",
        "%syslogfacility%",
        "%syslogseverity%",
        "%hostname%",
        "%app-name%",
        "%procid%",
        "%msgid%",
        "%timereported:::date-rfc3339%",
        "%structured-data%",
        "%msg%",
    ]
)


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false, but fail under CI, which must run everything."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the project's setup must provide it)")
    pytest.skip(reason)


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait until ``predicate()`` holds, checking every 20 ms, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        pause.wait(0.02)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Received:
    """One message as rsyslog parsed it."""

    input: str
    pri: int
    facility: int
    severity: int
    hostname: str
    app_name: str
    procid: str
    msgid: str
    timestamp: str
    structured_data: str
    msg: bytes

    @classmethod
    def parse(cls, line: bytes) -> Received:
        fields = line.split(b"\t", 10)
        text = [f.decode() for f in fields[:10]]
        return cls(
            input=text[0],
            pri=int(text[1]),
            facility=int(text[2]),
            severity=int(text[3]),
            hostname=text[4],
            app_name=text[5],
            procid=text[6],
            msgid=text[7],
            timestamp=text[8],
            structured_data=text[9],
            msg=fields[10],
        )


class RsyslogServer:
    """One rsyslogd with its own directory; ``start``/``stop`` may repeat (same ports)."""

    def __init__(self, directory: Path, tls: TlsFiles | None) -> None:
        self.directory = directory
        self.tls = tls
        self.unix_path = directory / "log.sock"
        self.output = directory / "received.log"
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port(socket.SOCK_STREAM)
        self.tls_port = free_port(socket.SOCK_STREAM) if tls else None
        self._conf = directory / "rsyslog.conf"
        self._conf.write_text(self._config())
        self._process: subprocess.Popen[bytes] | None = None
        self._probes = 0

    def address(self, transport: str) -> str:
        if transport == "unix":
            return f"unix://{self.unix_path}"
        if transport == "tls":
            require(self.tls_port is not None, "rsyslog's TLS driver (rsyslog-gnutls) is missing")
        port = {"udp": self.udp_port, "tcp": self.tcp_port, "tls": self.tls_port}[transport]
        return f"{transport}://127.0.0.1:{port}"

    def _config(self) -> str:
        d = self.directory
        tls_globals = tls_input = ""
        if self.tls is not None:
            tls_globals = (
                f' defaultNetstreamDriverCAFile="{self.tls.cert}"'
                f' defaultNetstreamDriverCertFile="{self.tls.cert}"'
                f' defaultNetstreamDriverKeyFile="{self.tls.key}"'
            )
            tls_input = (
                f'input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" name="tls"\n'
                '      streamDriver.name="gtls" streamDriver.mode="1"\n'
                '      streamDriver.authMode="anon")\n'
            )
        return (
            f'global(workDirectory="{d}" maxMessageSize="64k"{tls_globals})\n'
            'module(load="imuxsock" sysSock.use="off")\n'
            f'input(type="imuxsock" socket="{self.unix_path}" useSpecialParser="off"\n'
            '      parseHostname="on" ignoreTimestamp="off" useSysTimeStamp="off"\n'
            '      ratelimit.interval="0")\n'
            'module(load="imudp")\n'
            f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" name="udp")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" name="tcp"\n'
            '      supportOctetCountedFraming="on")\n'
            f"{tls_input}"
            f'template(name="received" type="string" string="{_TEMPLATE}\\n")\n'
            f'action(type="omfile" file="{self.output}" template="received")\n'
        )

    def start(self) -> None:
        assert RSYSLOGD is not None
        assert self._process is None, "already running"
        stderr = open(self.directory / "rsyslogd.stderr", "ab")  # noqa: SIM115 - child owns it
        with stderr:
            self._process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self._conf), "-i", str(self.directory / "rsyslogd.pid")],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def _wait_ready(self) -> None:
        process = self._process
        assert process is not None

        def alive() -> bool:
            if process.poll() is not None:
                log = (self.directory / "rsyslogd.stderr").read_text(errors="replace")
                raise AssertionError(f"rsyslogd exited with {process.returncode}:\n{log}")
            return True

        def listening() -> bool:
            alive()
            try:
                socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1).close()
                if self.tls is not None and self.tls_port is not None:
                    # A full handshake and a close_notify, so rsyslogd logs no error.
                    context = ssl.create_default_context(cafile=str(self.tls.cert))
                    raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=1)
                    # The handshake is the test; rsyslog may drop the socket
                    # rather than answer the close_notify.
                    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
                    with tls, contextlib.suppress(OSError):
                        tls.unwrap()
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
                    unix.connect(str(self.unix_path))
            except OSError:
                return False
            return True

        poll(listening, START_TIMEOUT_S, "rsyslogd to listen")
        # UDP cannot be probed by connecting: send datagrams until one is written
        # out, which also shows the queue and the output action are running.
        self._probes += 1
        msgid = f"probe-{self._probes}"
        probe = f"<14>1 - - {PROBE_APP} - {msgid} - ready".encode()

        def probed() -> bool:
            alive()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(probe, ("127.0.0.1", self.udp_port))
            return any(r.msgid == msgid for r in self.records(PROBE_APP))

        poll(probed, START_TIMEOUT_S, "rsyslogd to write a UDP probe")

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        poll(predicate, timeout_s, what)

    def records(self, app_name: str) -> list[Received]:
        """Every message received so far with this APP-NAME, in arrival order."""
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        # A line still being written has no newline yet: leave it for later.
        lines = data.split(b"\n")[:-1]
        return [r for r in map(Received.parse, lines) if r.app_name == app_name]

    def wait_for(self, app_name: str, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` messages with this APP-NAME arrived; return them all."""
        poll(lambda: len(self.records(app_name)) >= count, timeout_s, f"{count} messages")
        return self.records(app_name)


def _make_tls_files(directory: Path) -> TlsFiles | None:
    if OPENSSL is None:
        return None
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(files.key),
            "-out",
            str(files.cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles | None:
    """A self-signed certificate for 127.0.0.1 (None without rsyslog's TLS driver or openssl)."""
    if not GTLS_DRIVER:
        return None
    return _make_tls_files(tmp_path_factory.mktemp("tls"))


@contextlib.contextmanager
def _running(directory: Path, tls: TlsFiles | None) -> Iterator[RsyslogServer]:
    require(
        RSYSLOGD is not None,
        "rsyslogd is not installed; run scripts/install-system-deps as root "
        "(apt-get install rsyslog rsyslog-gnutls)",
    )
    server = RsyslogServer(directory, tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rsyslog(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles | None
) -> Iterator[RsyslogServer]:
    """One rsyslogd shared by the session; tests tell their messages apart by APP-NAME."""
    with _running(tmp_path_factory.mktemp("rsyslog"), tls_files) as server:
        yield server


@pytest.fixture
def private_rsyslog(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles | None
) -> Iterator[RsyslogServer]:
    """An rsyslogd of the test's own, which it may stop and start again."""
    with _running(tmp_path_factory.mktemp("rsyslog-own"), tls_files) as server:
        yield server
