"""``/metrics`` and ``/healthz`` behind a token or on their own port; the API docs off.

Default (neither ``METRICS_TOKEN`` nor ``METRICS_PORT``): both are served on
the webhook port without authentication, so a Kubernetes probe and a
Prometheus scrape work with no configuration. What they expose is counts and
backlog sizes, never an entry's content or a secret. Set ``METRICS_TOKEN`` to
require ``Authorization: Bearer <token>`` on both, and/or ``METRICS_PORT`` to
serve them only on a second listener (and answer 404 for them on the webhook
port) that a network policy can keep inside the cluster.

The docs (``/docs``, ``/redoc``, ``/openapi.json``) describe every route and
parameter to whoever asks; they are off unless ``API_DOCS_ENABLED=true``.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send

from gitlab_copilot_agent.settings import Settings

OPERATIONAL_PATHS: Final = frozenset({"/metrics", "/healthz"})


def fastapi_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``FastAPI(...)``: docs off by default, no slash redirects.

    Without redirects ``POST /webhook/`` is not answered by a 307 that leaves
    no entry; the route serves it like ``/webhook``.
    """
    if settings.server.api_docs_enabled:
        docs: dict[str, Any] = {}
    else:
        docs = {"docs_url": None, "redoc_url": None, "openapi_url": None}
    return {**docs, "redirect_slashes": False}


class OperationalEndpointGate:
    """ASGI middleware: where ``/metrics`` and ``/healthz`` answer, and to whom."""

    def __init__(self, app: ASGIApp, *, token: str | None, port: int | None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode() if token else None
        self._port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        operational = scope["path"] in OPERATIONAL_PATHS
        if self._port is not None:
            server = scope.get("server")
            on_metrics_port = server is not None and server[1] == self._port
            if operational != on_metrics_port:
                await _answer(send, 404, b"not found")
                return
        if operational and self._expected is not None:
            presented = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    presented = value
                    break
            if not hmac.compare_digest(presented, self._expected):
                await _answer(send, 401, b"bearer token required", bearer=True)
                return
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, text: bytes, *, bearer: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if bearer:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def protect_operational_endpoints(app: Any, settings: Settings) -> None:
    """Install the gate on a FastAPI app, from ``METRICS_TOKEN`` and ``METRICS_PORT``."""
    server = settings.server
    token = server.metrics_token.get_secret_value() if server.metrics_token else None
    if token is None and server.metrics_port is None:
        return  # the default: nothing to check on any request
    app.add_middleware(OperationalEndpointGate, token=token, port=server.metrics_port)
