"""Run an ASGI app with uvicorn in a background thread, on a free loopback port.

Used by the tests, the benchmarks and ``gitlab-copilot-agent demo`` to put the
stand-ins (and the agent itself) behind a real socket::

    with run_in_thread(GitLabStandin().app) as server:
        client = GitLabClient(server.url, token, audit)

Startup waits on uvicorn's own ``started`` flag (set once the socket listens)
with a deadline; there are no fixed sleeps. ``stop()`` asks uvicorn to exit,
which runs the app's lifespan shutdown, and joins the thread.

``abort_connection(scope)`` lets an app served here drop the TCP connection of
the request it is handling with a reset and no answer: the stand-ins use it to
simulate a network failure. uvicorn gives an ASGI app no handle on its socket,
so this looks the connection up among the server's live connections by the
peer address in ``scope["client"]``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import uvicorn

__all__ = ["ServerHandle", "abort_connection", "run_in_thread"]

# Servers started here, by (host, port): abort_connection() finds its server through it.
_live_servers: dict[tuple[str, int], _ThreadedServer] = {}
_live_lock = threading.Lock()


class _ThreadedServer(uvicorn.Server):
    """A uvicorn server that reports the end of its startup, failed or not."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = threading.Event()
        self.exit_code: int | str | None = None

    def run_in_this_thread(self) -> None:
        # uvicorn reports a failed startup with sys.exit(); in a thread that
        # would surface as an unhandled thread exception. Keep the code instead.
        try:
            self.run()
        except SystemExit as exc:
            self.exit_code = exc.code
        finally:
            self.startup_done.set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_done.set()


class ServerHandle:
    """A running server: ``url`` to reach it, ``stop()`` (or ``with``) to end it."""

    def __init__(self, server: _ThreadedServer, thread: threading.Thread, host: str, port: int):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to shut down (lifespan shutdown included) and wait for the thread.

        Idempotent. If the thread is still alive at the deadline, in-flight
        requests are abandoned (uvicorn's force exit) and the thread gets a
        second, short wait.
        """
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(2.0)
        with _live_lock:
            if _live_servers.get((self.host, self.port)) is self._server:
                del _live_servers[(self.host, self.port)]

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    lifespan: Literal["auto", "on", "off"] = "auto",
    startup_timeout_s: float = 10.0,
    graceful_shutdown_s: float = 5.0,
    log_level: str = "warning",
) -> ServerHandle:
    """Serve ``app`` with uvicorn in a daemon thread and return once it listens.

    Args:
        app: an ASGI application.
        host: the address to bind (loopback by default).
        port: the port; 0 picks a free one (read it back from ``.port``/``.url``).
        lifespan: uvicorn's lifespan mode.
        startup_timeout_s: the deadline for the socket to listen.
        graceful_shutdown_s: how long ``stop()`` lets in-flight requests finish.
        log_level: uvicorn's log level.

    Raises:
        RuntimeError: the server did not start (bind error, failed lifespan
            startup) or not before the deadline.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        ws="none",
        loop="asyncio",
        lifespan=lifespan,
        log_level=log_level,
        log_config=None,
        access_log=False,
        # The agent decides itself which X-Forwarded-For to believe
        # (TRUSTED_PROXIES); uvicorn's rewrite would trust loopback by default.
        proxy_headers=False,
        timeout_graceful_shutdown=int(max(1, graceful_shutdown_s)),
    )
    server = _ThreadedServer(config)
    thread = threading.Thread(
        target=server.run_in_this_thread, name=f"uvicorn-{host}:{port}", daemon=True
    )
    thread.start()
    if not server.startup_done.wait(startup_timeout_s) or not server.started:
        server.should_exit = True
        server.force_exit = True
        thread.join(2.0)
        reason = (
            f"exited with code {server.exit_code}"
            if server.exit_code is not None
            else f"not listening after {startup_timeout_s} s"
        )
        raise RuntimeError(
            f"uvicorn did not start on {host}:{port}: {reason} (the uvicorn log has the cause)"
        )
    bound = server.servers[0].sockets[0].getsockname()
    bound_host, bound_port = str(bound[0]), int(bound[1])
    with _live_lock:
        _live_servers[(bound_host, bound_port)] = server
    return ServerHandle(server, thread, bound_host, bound_port)


def abort_connection(scope: Mapping[str, Any]) -> bool:
    """Reset the TCP connection carrying this request (no HTTP answer is sent).

    Call it from an app served by ``run_in_thread``, then wait for the
    ``http.disconnect`` message and return without sending anything. The
    socket is closed with ``SO_LINGER`` 0, so the peer sees a connection reset.

    Returns:
        False when the connection was not found (the app is not served here).
    """
    server_addr, client_addr = scope.get("server"), scope.get("client")
    if not server_addr or not client_addr:
        return False
    with _live_lock:
        server = _live_servers.get((str(server_addr[0]), int(server_addr[1])))
    if server is None:
        return False
    peer = (str(client_addr[0]), int(client_addr[1]))
    for connection in list(server.server_state.connections):
        transport: asyncio.Transport | None = getattr(connection, "transport", None)
        if transport is None:
            continue
        peername = transport.get_extra_info("peername")
        if peername is None or (str(peername[0]), int(peername[1])) != peer:
            continue
        sock: socket.socket | None = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return True
    return False
