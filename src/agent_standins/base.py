"""``Standin``: the shared base of every stand-in API (GitLab, the LLM, and the next ones).

A stand-in is an in-memory fake of an external API that speaks its real
shapes over a real socket. What they all need is here, once:

- a ``FaultScript`` (``standin.faults``) consulted before the API's own routes,
  with the error answers in the API's own shape (``render_error``);
- every request recorded (``standin.requests``), faulted ones included;
- ``reset()`` between tests;
- ``serve()``: uvicorn on a free loopback port in a thread (``servers.run_in_thread``);
- a small route table (``route``/``match_route``) for path templates such as
  ``/projects/{id}/merge_requests/{iid}``.

A new stand-in (Jira, say) subclasses ``Standin``, implements ``dispatch`` and
``render_error``, and gets the rest::

    class JiraStandin(Standin):
        def __init__(self) -> None:
            super().__init__(prefix="/rest/api/3")
            self.routes = [route("GET", "/issue/{key}", self._get_issue)]

        async def dispatch(self, request: Request) -> Response:
            return await match_route(self.routes, request, self.faults.relative(path_of(request)))

        def render_error(self, fault: Fault) -> Rendered: ...
"""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent_standins.faults import (
    Fault,
    FaultInjector,
    FaultScript,
    Receive,
    RecordedRequest,
    Rendered,
    Scope,
    Send,
)
from agent_standins.servers import ServerHandle, run_in_thread

__all__ = ["Route", "Standin", "as_response", "match_route", "path_of", "route"]

Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """One endpoint: a method and a path template whose ``{name}`` parts match one segment."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, template: str, handler: Handler) -> Route:
    """A ``Route`` for ``template`` (``/projects/{id}``); a trailing slash is allowed."""
    regex = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", template)
    return Route(method.upper(), re.compile(f"^{regex}/?$"), handler)


async def match_route(
    routes: Sequence[Route],
    request: Request,
    path: str,
    *,
    not_found: Callable[[], Response] | None = None,
    not_allowed: Callable[[], Response] | None = None,
) -> Response:
    """Call the handler whose template matches ``path`` (its parts as keyword arguments).

    A path that matches with another method gets 405, an unknown one 404
    (the defaults are JSON ``{"error": ...}``; pass the API's own shapes).
    """
    known_path = False
    for candidate in routes:
        found = candidate.pattern.match(path)
        if found is None:
            continue
        known_path = True
        if candidate.method == request.method:
            return await candidate.handler(request, **found.groupdict())
    if known_path:
        if not_allowed is not None:
            return not_allowed()
        return JSONResponse({"error": "405 Method Not Allowed"}, status_code=405)
    if not_found is not None:
        return not_found()
    return JSONResponse({"error": "404 Not Found"}, status_code=404)


def path_of(request: Request) -> str:
    """The raw (still URL-encoded) path, without the query: ``group%2Fapp`` stays one segment."""
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    return str(raw_path.decode("latin-1").split("?", 1)[0])


class Standin:
    """Base of the stand-ins: faults, recorded requests, reset and serving on loopback.

    Args:
        prefix: the API's path prefix (``/api/v4``), stripped before fault
            globs are matched so rules read like the API's documentation.

    Subclasses implement ``dispatch`` (the API) and ``render_error`` (its
    error shapes), and may extend ``reset`` to forget what was posted.
    """

    def __init__(self, *, prefix: str = "") -> None:
        self.faults = FaultScript(prefix=prefix)
        self._lock = threading.Lock()
        self._injector = FaultInjector(
            self._asgi, self.faults, self.render_error, record_headers=self.recorded_headers
        )

    # -- for tests, benchmarks and the demo -------------------------------------

    @property
    def app(self) -> FaultInjector:
        """The ASGI app to serve (``run_in_thread(standin.app)`` or ``standin.serve()``)."""
        return self._injector

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order, scripted faults included."""
        return self._injector.requests

    def reset(self) -> None:
        """Forget the fault rules and the recorded requests."""
        self.faults.clear()
        self._injector.clear_requests()

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lifespan: Literal["auto", "on", "off"] = "auto",
        log_level: str = "warning",
    ) -> ServerHandle:
        """Serve this stand-in on loopback in a thread; use the handle as a context manager."""
        return run_in_thread(self.app, host, port, lifespan=lifespan, log_level=log_level)

    # -- what a stand-in implements ---------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        """Answer one request that no fault rule took."""
        raise NotImplementedError

    def render_error(self, fault: Fault) -> Rendered:
        """The API's real error answer for an ``http`` fault."""
        raise NotImplementedError

    def recorded_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """The headers kept in ``requests`` (all of them unless a stand-in says otherwise)."""
        return headers

    # -- plumbing ----------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.dispatch(Request(scope, receive))
        await response(scope, receive, send)


def as_response(answer: Rendered) -> Response:
    """A Starlette response for a rendered error (for stand-ins that answer errors themselves)."""
    return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))
