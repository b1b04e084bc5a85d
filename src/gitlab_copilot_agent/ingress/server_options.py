"""How the agent is served: uvicorn's limits, a header deadline, and an optional metrics port.

* header size: ``WEBHOOK_MAX_HEADER_BYTES`` (h11's ``max_incomplete_event_size``); a larger
  request line or header block gets uvicorn's 400 and never reaches the app;
* header time: ``WEBHOOK_HEADER_TIMEOUT_S`` from a request's first byte (or from the
  connection, for its first request) to the end of its headers; uvicorn has none, so
  a sender trickling header bytes would hold a connection for ever;
* connections: ``WEBHOOK_MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``; over it, 503);
* keep-alive: ``WEBHOOK_KEEPALIVE_TIMEOUT_S`` of idleness between requests;
* body time: ``WEBHOOK_BODY_TIMEOUT_S``, enforced by the route (``ingress.body``), audited;
  the same bound applies to discarding a body the route refused without reading it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gitlab_copilot_agent.settings import Settings


def deadline_protocol(header_timeout_s: float, drain_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with two deadlines uvicorn lacks.

    * headers: a request's headers must be complete within ``header_timeout_s``
      of its first byte (or of the connection, or of the previous request's end);
    * drain: when the route answers before reading the whole body (too large,
      malformed headers, rate limited), uvicorn reads and discards the rest so
      the connection can be reused and the client gets its answer rather than a
      reset; the rest must arrive within ``drain_timeout_s`` or the connection
      is closed. Without it, a sender trickling a body after its answer would
      hold the connection for ever (each byte cancels uvicorn's keep-alive timer).
    """

    class DeadlineH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _draining = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout_s, draining=False)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                return
            their = self.conn.their_state
            if their is h11.IDLE:
                if self._timer is None or self._draining:
                    self._arm(header_timeout_s, draining=False)  # the next request's headers
            elif their is h11.SEND_BODY and self.conn.our_state is h11.DONE:
                pass  # still draining a refused body: its deadline runs
            else:
                self._disarm()  # headers complete: the route's body deadline takes over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
                self._arm(drain_timeout_s, draining=True)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, timeout_s: float, *, draining: bool) -> None:
            self._disarm()
            self._draining = draining
            self._timer = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            waiting = h11.SEND_BODY if self._draining else h11.IDLE
            if self.conn.their_state is waiting and not self.transport.is_closing():
                self.transport.close()

    return DeadlineH11Protocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that bound what a sender holds."""
    webhook = settings.webhook
    return {
        "http": deadline_protocol(webhook.header_timeout_s, drain_timeout_s=webhook.body_timeout_s),
        "h11_max_incomplete_event_size": webhook.max_header_bytes,
        "limit_concurrency": webhook.max_connections,
        "timeout_keep_alive": webhook.keepalive_timeout_s,
        "ws": "none",
        # Which X-Forwarded-For to believe is the agent's decision (TRUSTED_PROXIES).
        "proxy_headers": False,
        "server_header": False,
    }


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket, made so that asyncio sets ``TCP_NODELAY`` on its connections.

    asyncio only sets it when the socket's protocol is ``IPPROTO_TCP``;
    ``socket.create_server`` leaves it 0, and then every answer written in
    two parts (uvicorn writes headers, then body) waits ~40 ms for a delayed
    ACK (measured: 44 ms per request instead of 1 ms).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_sockets(settings: Settings, host: str, port: int) -> list[socket.socket]:
    """The listening sockets: the webhook port, and ``METRICS_PORT`` when set.

    Raises:
        SystemExit: with one plain line, when a port cannot be bound.
    """
    metrics_port = settings.server.metrics_port
    ports = [port] if metrics_port is None else [port, metrics_port]
    sockets: list[socket.socket] = []
    for number in ports:
        try:
            sockets.append(listen(host, number))
        except OSError as exc:
            for opened in sockets:
                opened.close()
            raise SystemExit(
                f"gitlab-copilot-agent: cannot listen on {host}:{number}: {exc.strerror or exc}"
            ) from None
    return sockets


def run_server(app: Any, settings: Settings, *, host: str, port: int, **overrides: Any) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, on the webhook port and the metrics port if set.

    ``overrides`` go to ``uvicorn.Config`` (log level, graceful shutdown, ...).

    Raises:
        SystemExit: a port could not be bound (code 1) or startup failed (code 3, as uvicorn).
    """
    config = uvicorn.Config(app, host=host, port=port, **{**uvicorn_options(settings), **overrides})
    server = uvicorn.Server(config)
    server.run(sockets=bind_sockets(settings, host, port))
    if not server.started:
        raise SystemExit(3)
