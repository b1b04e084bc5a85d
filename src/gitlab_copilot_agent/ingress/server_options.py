"""How the agent is served: uvicorn's limits, a header deadline, and an optional metrics port.

* header size: ``WEBHOOK_MAX_HEADER_BYTES`` (h11's ``max_incomplete_event_size``); a larger
  request line or header block gets uvicorn's 400 and never reaches the app;
* header time: ``WEBHOOK_HEADER_TIMEOUT_S`` from a request's first byte (or from the
  connection, for its first request) to the end of its headers; uvicorn has none, so
  a sender trickling header bytes would hold a connection for ever;
* connections: ``WEBHOOK_MAX_CONNECTIONS`` (uvicorn's ``limit_concurrency``; over it, 503);
* keep-alive: ``WEBHOOK_KEEPALIVE_TIMEOUT_S`` of idleness between requests;
* body time: ``WEBHOOK_BODY_TIMEOUT_S``, enforced by the route (``ingress.body``), audited.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gitlab_copilot_agent.settings import Settings


def header_deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose request headers exceed ``timeout_s``."""

    class HeaderDeadlineH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self._header_timer is None and not self.transport.is_closing():
                    self._arm()  # the next request's headers have started
            else:
                self._disarm()  # headers complete: the route's body deadline takes over

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineH11Protocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that bound what a sender holds."""
    return {
        "http": header_deadline_protocol(settings.webhook_header_timeout_s),
        "h11_max_incomplete_event_size": settings.webhook_max_header_bytes,
        "limit_concurrency": settings.webhook_max_connections,
        "timeout_keep_alive": settings.webhook_keepalive_timeout_s,
        "ws": "none",
        # Which X-Forwarded-For to believe is the agent's decision (TRUSTED_PROXIES).
        "proxy_headers": False,
        "server_header": False,
    }


def bind_sockets(settings: Settings, host: str, port: int) -> list[socket.socket]:
    """The listening sockets: the webhook port, and ``METRICS_PORT`` when set.

    Raises:
        SystemExit: with one plain line, when a port cannot be bound.
    """
    ports = [port] if settings.metrics_port is None else [port, settings.metrics_port]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for number in ports:
        try:
            sock = socket.create_server((host, number), family=family, backlog=2048)
        except OSError as exc:
            for opened in sockets:
                opened.close()
            raise SystemExit(
                f"gitlab-copilot-agent: cannot listen on {host}:{number}: {exc.strerror or exc}"
            ) from None
        sock.set_inheritable(True)
        sockets.append(sock)
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
