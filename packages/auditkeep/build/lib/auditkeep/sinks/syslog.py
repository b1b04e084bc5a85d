"""RFC 5424 syslog messages carrying the JSON entry, over UDP, TCP, TLS or a unix socket.

Each entry becomes one message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG

* ``PRI`` is ``facility * 8 + severity``: severity 6 (informational) when the
  entry's ``outcome`` is ``success``, 4 (warning) when it is ``failure``.
* ``TIMESTAMP`` is the entry's own ``timestamp`` (UTC, microseconds), so the
  daemon records when the action happened, not when delivery caught up.
* ``HOSTNAME`` defaults to ``socket.gethostname()``; ``PROCID`` is the pid of
  the writing process; ``MSGID`` is the entry's ``action``. Header fields are
  cut to the RFC's lengths (48 for APP-NAME, 32 for MSGID) and every character
  outside printable US-ASCII becomes ``_``, so no entry can break the header.
* No structured data (``-``): everything is in ``MSG``.
* ``MSG`` is the entry's JSON, byte for byte, *without* the UTF-8 byte-order
  mark that RFC 5424 allows. JSON text is UTF-8 by definition (RFC 8259), and
  the receivers people feed into a SIEM (rsyslog's ``mmjsonparse``, syslog-ng's
  ``json-parser``, Vector, Logstash) expect the message to start with ``{``;
  rsyslog keeps a BOM as part of ``%msg%``, which would break them.

Framing, and why content can never split or forge a message:

* ``tcp://`` and ``tls://`` use octet counting (RFC 6587 §3.4.1, RFC 5425
  §4.3): ``LEN SP MSG``. The length is computed by the sink, so no byte of an
  entry can end a frame or start another.
* ``udp://`` and ``unix://`` send one datagram per message. A unix path that
  is a stream socket (as some syslog-ng setups make ``/dev/log``) is used as a
  stream, each message ending with a NUL byte, as glibc's ``syslog(3)`` does.
* On top of that the library never puts a raw control character in an entry
  (the redactor escapes them). Should a line still hold a byte below 0x20 or
  0x7F, the sink writes it as the JSON escape ``\\u00XX`` (the same JSON
  value), so not even a NUL or a newline reaches the wire inside a message,
  and rsyslog's control-character escaping on receipt never alters the JSON.

Delivery guarantees, by transport:

* ``tcp://`` and ``tls://`` are reliable up to the daemon's socket: a batch is
  ``SUCCESS`` once the kernel accepted every byte. Before each batch the sink
  checks whether the daemon closed the connection (it restarted) and, if so,
  reconnects first; any error closes the socket and returns ``RETRY`` (the
  pipeline keeps the batch in its spool) and the next batch reconnects. Syslog
  has no application-level acknowledgement, so a daemon that crashes with
  bytes still in its receive buffer loses them without the sink knowing; a
  retried batch may also be delivered twice (at-least-once). If a send times
  out part-way, the daemon sees the last frame cut short and drops it (rsyslog:
  "Incomplete frame at end of stream"); the whole batch is then retried.
  A certificate that fails verification is also a ``RETRY``: the entries stay
  in the spool until the configuration is fixed, and the error metric grows.
* ``unix://`` datagrams are reliable while the daemon runs: the kernel blocks
  (up to ``timeout_s``) rather than drop when the daemon falls behind, and a
  restarted daemon makes the next send fail, so the sink reconnects and the
  batch is retried. This is the default (``unix:///dev/log``).
* ``udp://`` gives **no delivery guarantee**: a datagram dropped by the
  network, a full receive buffer or a daemon that is down is lost, and the sink
  cannot know (an ICMP "port unreachable" sometimes surfaces as an error on a
  later send, which is retried). A UDP datagram cannot exceed 65,507 bytes; a
  batch holding a larger message is refused as ``FAILURE`` (dead-lettered by
  the pipeline) before anything is sent. Keep ``max_entry_bytes`` well below
  that (the default, 16 KiB, is). Prefer ``tcp://`` or ``tls://`` for audit.

Receivers must accept messages as large as the largest entry plus about 150
bytes of header. rsyslog truncates anything above its ``maxMessageSize``
(default 8 KiB): set ``global(maxMessageSize="64k")``. For ``tls://`` into
rsyslog 8.2302 (Debian 12), use its GnuTLS driver (``gtls``, package
rsyslog-gnutls): that version's OpenSSL driver closes each TLS session's socket
twice, which can close another of the daemon's files (rsyslog PR #6375) and
lose messages the sink was told were delivered.

Host names are resolved on every (re)connect and that lookup is not bounded by
``timeout_s``. The sink is thread-safe; after ``fork`` the child opens its own
connection rather than interleave frames with its parent's.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import ssl
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final
from urllib.parse import urlsplit

import orjson

from auditkeep._env import env_seconds
from auditkeep.exceptions import ConfigError
from auditkeep.redact import default_redactor
from auditkeep.typing import SinkResult

__all__ = ["FACILITIES", "SyslogSink", "syslog_sink_from_env"]

FACILITIES: Final[Mapping[str, int]] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}
"""Facility names accepted by ``SyslogSink`` (numbers 0-23 are accepted too)."""

SEVERITY_INFORMATIONAL: Final = 6
SEVERITY_WARNING: Final = 4

ENV_ADDRESS: Final = "AUDIT_LOG_SYSLOG_ADDRESS"
ENV_FACILITY: Final = "AUDIT_LOG_SYSLOG_FACILITY"
ENV_APP_NAME: Final = "AUDIT_LOG_SYSLOG_APP_NAME"
ENV_TIMEOUT_S: Final = "AUDIT_LOG_SYSLOG_TIMEOUT_S"
ENV_TLS_CA_FILE: Final = "AUDIT_LOG_SYSLOG_TLS_CA_FILE"
MAX_TIMEOUT_S: Final = 300.0
DEFAULT_ADDRESS: Final = "unix:///dev/log"

MAX_UDP_MESSAGE_BYTES: Final = 65_507
"""The largest UDP payload over IPv4; a larger message cannot be sent over ``udp://``."""

_EXAMPLE_PORTS: Final = {"udp": 514, "tcp": 601, "tls": 6514}
_SCHEMES: Final = ("udp", "tcp", "tls", "unix")
_NIL: Final = "-"
_MAX_APP_NAME: Final = 48
_MAX_MSGID: Final = 32
_MAX_HOSTNAME: Final = 255
_NOT_PRINTUSASCII: Final = re.compile(r"[^\x21-\x7e]")
_CONTROL_BYTE: Final = re.compile(rb"[\x00-\x1f\x7f]")
_TIMESTAMP: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True, slots=True)
class _Address:
    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""


def _parse_address(address: str) -> _Address:
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(
            f"expected scheme://host:port or unix:///path, got {address!r}; "
            "for example tcp://syslog.example.com:601 or unix:///dev/log"
        )
    if scheme not in _SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} in {address!r}; use udp, tcp, tls or unix")
    if scheme == "unix":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"a unix address needs an absolute socket path, got {address!r}; "
                "for example unix:///dev/log"
            )
        return _Address(scheme, path=rest)
    example = f"{scheme}://{rest or 'host'}:{_EXAMPLE_PORTS[scheme]}"
    try:
        parts = urlsplit("//" + rest)
        port = parts.port
    except ValueError:
        raise ValueError(
            f"invalid host or port in {address!r}; the port must be a number from 1 to 65535, "
            f"for example {example}"
        ) from None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"expected only host:port after {scheme}://, got {address!r}")
    if not parts.hostname:
        raise ValueError(f"missing host in {address!r}; for example {scheme}://localhost:514")
    if port is None:
        raise ValueError(f"missing port in {address!r}; add one, for example {example}")
    if port == 0:
        raise ValueError(f"port 0 is not a destination in {address!r}; for example {example}")
    return _Address(scheme, host=parts.hostname, port=port)


def _parse_facility(facility: str | int) -> int:
    if isinstance(facility, bool):
        raise ValueError(f"facility must be a name or a number, got {facility!r}")
    if isinstance(facility, str):
        name = facility.strip().lower()
        if name in FACILITIES:
            return FACILITIES[name]
        if not name.isdigit():
            names = ", ".join(FACILITIES)
            raise ValueError(
                f"unknown facility {facility!r}; use one of {names}, or a number from 0 to 23"
            )
        facility = int(name)
    if not 0 <= facility <= 23:
        raise ValueError(f"facility number must be from 0 to 23, got {facility}")
    return facility


def _header_field(value: str, max_chars: int) -> str:
    # Cut only text known to hold no credential: an action (emit refuses one
    # that holds a credential) or a value scrubbed first (app name, hostname).
    cleaned = _NOT_PRINTUSASCII.sub("_", value)[:max_chars]
    return cleaned or _NIL


def _escape_control(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % match[0][0]


def _tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SyslogSink:
    """Sends each entry as one RFC 5424 message to a syslog daemon.

    Args:
        address: ``udp://host:port``, ``tcp://host:port``, ``tls://host:port``
            or ``unix:///path`` (IPv6 hosts in brackets: ``tcp://[::1]:601``).
        app_name: The APP-NAME field (printable ASCII, at most 48 characters
            are kept), usually the service name.
        facility: A name from ``FACILITIES`` or a number from 0 to 23.
        hostname: The HOSTNAME field (default: ``socket.gethostname()``).
        timeout_s: Bound on connecting, the TLS handshake and each send.
        tls_ca_file: PEM bundle of the CAs that may sign the daemon's
            certificate (default: the system's). Only for ``tls://``.
        tls_verify: Check the daemon's certificate and host name. Turn it off
            only for testing.

    Raises:
        ValueError: The address, facility or timeout is invalid, or a TLS
            option is given for an address that is not ``tls://``.
        OSError: ``tls_ca_file`` cannot be read or holds no certificate
            (``ssl.SSLError`` is an ``OSError``).

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "syslog"

    def __init__(
        self,
        address: str,
        *,
        app_name: str,
        facility: str | int = "auth",
        hostname: str | None = None,
        timeout_s: float = 5.0,
        tls_ca_file: str | None = None,
        tls_verify: bool = True,
    ) -> None:
        self._address_text = address
        self._address = _parse_address(address)
        self._facility = _parse_facility(facility)
        if not app_name.strip():
            raise ValueError("app_name must not be empty")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        is_tls = self._address.scheme == "tls"
        if tls_ca_file is not None and not is_tls:
            raise ValueError(f"tls_ca_file needs a tls:// address, got {address!r}")
        self._app_name = _header_field(default_redactor.redact(app_name.strip()), _MAX_APP_NAME)
        self._hostname = _header_field(
            default_redactor.redact(socket.gethostname() if hostname is None else hostname),
            _MAX_HOSTNAME,
        )
        self._timeout_s = float(timeout_s)
        self._tls: ssl.SSLContext | None = _tls_context(tls_ca_file, tls_verify) if is_tls else None
        self._tls_ca_file = tls_ca_file
        self._octet_counted = self._address.scheme in ("tcp", "tls")
        self._nul_terminated = False  # set when a unix path turns out to be a stream socket
        # Serialises batches: frames from two threads must never interleave.
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = os.getpid()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"SyslogSink(address={self._address_text!r}, app_name={self._app_name!r}, "
            f"facility={self._facility})"
        )

    def describe(self) -> str:
        """The address and what its transport guarantees, for ``auditkeep check-config``.

        .. versionadded:: 0.1.0
        """
        if self._tls is not None and self._tls.verify_mode == ssl.CERT_NONE:
            trust = "certificate NOT verified"
        else:
            trust = f"CAs from {self._tls_ca_file}" if self._tls_ca_file else "the system's CAs"
        transport = {
            "unix": "unix socket: the local daemon",
            "udp": "UDP datagrams: NO delivery guarantee",
            "tcp": "TCP, octet-counted frames (RFC 6587)",
            "tls": f"TLS (RFC 5425), {trust}",
        }[self._address.scheme]
        return (
            f"{self._address_text} ({transport}; facility {self._facility}, "
            f"app-name {self._app_name})"
        )

    def preflight(self) -> list[tuple[bool, str]]:
        """What ``auditkeep check-config`` must say before rollout: ``(fatal, message)`` pairs.

        A unix socket that does not exist or that nothing listens on is fatal
        there: a service would start, but every entry would wait in the spool
        until a daemon appears. ``udp://`` is a warning: it works, without a
        delivery guarantee. TCP and TLS daemons are not contacted (the network
        seen from where ``check-config`` runs may not be the service's).

        .. versionadded:: 0.1.0
        """
        address = self._address
        if address.scheme == "udp":
            return [
                (
                    False,
                    f"{ENV_ADDRESS}={self._address_text}: UDP gives no delivery guarantee (a "
                    "datagram lost on the way cannot be known, let alone retried); use tcp://, "
                    "tls:// or the local unix socket for an audit trail",
                )
            ]
        if address.scheme != "unix":
            return []
        fix = f"start the syslog daemon, or set {ENV_ADDRESS}"
        try:
            mode = os.stat(address.path).st_mode
        except OSError as exc:
            return [(True, f"{ENV_ADDRESS}: {address.path} {_stat_problem(exc)}; {fix}")]
        if not stat.S_ISSOCK(mode):
            return [(True, f"{ENV_ADDRESS}: {address.path} is not a socket; {fix}")]
        try:
            self._connect_unix(address.path).close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return [(True, f"{ENV_ADDRESS}: nothing listens on {address.path} ({reason}); {fix}")]
        return []

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if self._closed:
            return SinkResult.retry("sink closed")
        if not lines:
            return SinkResult.SUCCESS
        procid = str(os.getpid())
        messages = [self._message(line, procid) for line in lines]
        if self._address.scheme == "udp" and any(len(m) > MAX_UDP_MESSAGE_BYTES for m in messages):
            # Can never be sent as one datagram.
            return SinkResult.failure(
                f"an entry is larger than {MAX_UDP_MESSAGE_BYTES} bytes, the largest UDP"
                " syslog message; use a tcp:// or tls:// address"
            )
        with self._lock:
            if self._closed:
                return SinkResult.retry("sink closed")
            try:
                self._send(messages)
            except Exception as exc:  # noqa: BLE001 - a sink reports trouble, never raises
                # The daemon restarted, went away or stalled: start from a fresh
                # connection on the next batch, which the pipeline retries.
                self._disconnect()
                code = getattr(exc, "errno", None)
                reason = f"{type(exc).__name__} sending to {self._address_text}"
                if isinstance(code, int) and code in errno.errorcode:
                    reason += f" ({errno.errorcode[code]})"
                if code == errno.EMSGSIZE:
                    return SinkResult.failure(reason)
                return SinkResult.retry(reason)
            finally:
                if self._closed:
                    # close() timed out waiting for this batch and left the closing to us.
                    self._disconnect()
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        # Every batch is handed to the kernel before write_batch returns.
        return True

    def close(self, timeout_s: float) -> None:
        self._closed = True
        if self._lock.acquire(timeout=max(timeout_s, 0.0)):
            try:
                self._disconnect(goodbye_s=min(max(timeout_s, 0.0), 1.0))
            finally:
                self._lock.release()

    def _message(self, line: bytes, procid: str) -> bytes:
        action: object = None
        outcome: object = None
        timestamp: object = None
        if _CONTROL_BYTE.search(line) is not None:
            line = _CONTROL_BYTE.sub(_escape_control, line)
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = None
        if isinstance(entry, dict):
            action = entry.get("action")
            outcome = entry.get("outcome")
            timestamp = entry.get("timestamp")
        severity = SEVERITY_WARNING if outcome == "failure" else SEVERITY_INFORMATIONAL
        msgid = _header_field(action, _MAX_MSGID) if isinstance(action, str) else _NIL
        if not (isinstance(timestamp, str) and _TIMESTAMP.fullmatch(timestamp)):
            timestamp = _NIL
        header = (
            f"<{self._facility * 8 + severity}>1 {timestamp} {self._hostname} "
            f"{self._app_name} {procid} {msgid} - "
        )
        return header.encode("ascii") + line

    def _send(self, messages: list[bytes]) -> None:
        if self._pid != os.getpid():
            # A forked child shares its parent's connection; frames would interleave.
            self._pid = os.getpid()
            self._disconnect(goodbye_s=None)
        sock = self._sock
        if sock is not None and sock.type == socket.SOCK_STREAM and _peer_closed(sock):
            self._disconnect()
            sock = None
        if sock is None:
            sock = self._sock = self._connect()
        if self._octet_counted:
            sock.sendall(b"".join(b"%d %b" % (len(m), m) for m in messages))
        elif self._nul_terminated:
            sock.sendall(b"".join(m + b"\0" for m in messages))
        else:
            for message in messages:
                sock.send(message)

    def _connect(self) -> socket.socket:
        address, timeout_s = self._address, self._timeout_s
        if address.scheme == "unix":
            return self._connect_unix(address.path)
        if address.scheme == "udp":
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout_s)
                # Connected, so an ICMP "port unreachable" can surface as an error.
                sock.connect(sockaddr)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((address.host, address.port), timeout=timeout_s)
        if self._tls is None:
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=address.host)
        except BaseException:
            sock.close()
            raise

    def _connect_unix(self, path: str) -> socket.socket:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind)
            try:
                sock.settimeout(self._timeout_s)
                sock.connect(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EPROTOTYPE and kind == socket.SOCK_DGRAM:
                    continue  # the daemon listens on a stream socket
                raise
            self._nul_terminated = kind == socket.SOCK_STREAM
            return sock
        raise AssertionError("unreachable")  # pragma: no cover

    def _disconnect(self, goodbye_s: float | None = 0.0) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if isinstance(sock, ssl.SSLSocket) and goodbye_s:
            # A TLS close_notify lets the daemon tell a clean close from a cut.
            with contextlib.suppress(Exception):
                sock.settimeout(goodbye_s)
                sock.unwrap()
        with contextlib.suppress(OSError):
            sock.close()


def _stat_problem(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist: no syslog daemon listens there"
    return f"cannot be examined ({exc.strerror or type(exc).__name__})"


def _peer_closed(sock: socket.socket) -> bool:
    # A syslog daemon never sends anything, so readable means end of stream (a
    # restart or shutdown), a reset, or noise to throw away. Without this check
    # the first batch after a restart would go into a dead connection and be
    # lost: TCP only reports the reset on the send after that.
    # Non-blocking for the check: in timeout mode recv would wait for data first.
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False  # nothing to read, or only TLS housekeeping (session tickets)
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def syslog_sink_from_env(env: Mapping[str, str], service: str) -> SyslogSink:
    """Build a ``SyslogSink`` from ``AUDIT_LOG_SYSLOG_*`` variables.

    ``AUDIT_LOG_SYSLOG_ADDRESS`` (default ``unix:///dev/log``),
    ``AUDIT_LOG_SYSLOG_FACILITY`` (a name or 0-23, default ``auth``),
    ``AUDIT_LOG_SYSLOG_APP_NAME`` (default: ``service``),
    ``AUDIT_LOG_SYSLOG_TIMEOUT_S`` (default 5) and
    ``AUDIT_LOG_SYSLOG_TLS_CA_FILE`` (``tls://`` only; default: the system's CAs).

    Raises:
        ConfigError: A variable is invalid; the message names the fix.

    .. versionadded:: 0.1.0
    """
    address = (env.get(ENV_ADDRESS) or "").strip() or DEFAULT_ADDRESS
    try:
        scheme = _parse_address(address).scheme
    except ValueError as exc:
        raise ConfigError(ENV_ADDRESS, str(exc)) from None
    facility = (env.get(ENV_FACILITY) or "").strip() or "auth"
    try:
        _parse_facility(facility)
    except ValueError as exc:
        raise ConfigError(ENV_FACILITY, str(exc)) from None
    app_name = (env.get(ENV_APP_NAME) or "").strip() or service
    if not app_name:
        raise ConfigError(ENV_APP_NAME, "must not be empty; set it to the service's name")
    timeout_s = env_seconds(env, ENV_TIMEOUT_S, 5.0, maximum=MAX_TIMEOUT_S)
    ca_file = (env.get(ENV_TLS_CA_FILE) or "").strip() or None
    if ca_file is not None:
        if scheme != "tls":
            raise ConfigError(
                ENV_TLS_CA_FILE,
                f"only used with a tls:// address, but {ENV_ADDRESS} is {address!r}; "
                "unset it or use tls://host:port",
            )
        try:
            _tls_context(ca_file, verify=True)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                ENV_TLS_CA_FILE,
                f"cannot load CA bundle {ca_file!r} ({reason}); "
                "point it at a readable PEM file of CA certificates",
            ) from None
    return SyslogSink(
        address,
        app_name=app_name,
        facility=facility,
        timeout_s=timeout_s,
        tls_ca_file=ca_file,
    )
