"""Audit every request an ``httpx`` client sends: one shared instrumentation point.

``AuditedTransport`` wraps the client's transport, so each attempt on the wire
(retries included) emits exactly one entry, however the call site is written.
A ``RouteTable`` maps method and path to the action name and target; a request
no route knows still emits an entry, under ``<namespace>.api.unmapped`` with
its path, so a new call path can never go unaudited (and tests can fail on it).

A route may also take target fields from a successful answer
(``response_target``): a create call's new id (``mr_iid`` of a merge request
just opened) is known only then. The body is read in the transport only for
those routes, only for a 2xx JSON object of at most ``MAX_RESPONSE_TARGET_BYTES``,
and only scalar values are copied (strings cut to 200 characters).

Needs the ``http`` extra (``httpx``); without it, importing this module raises
``auditkeep.MissingDependencyError`` naming the extra.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auditkeep._optional import missing_dependency

try:
    import httpx
except ImportError as exc:
    raise missing_dependency(
        exc, module="httpx", extra="http", feature="auditkeep.integrations.httpx"
    ) from None

from auditkeep.context import correlation_headers
from auditkeep.logger import AuditLogger

__all__ = ["MAX_RESPONSE_TARGET_BYTES", "AuditedTransport", "Route", "RouteTable"]

_PARAM = re.compile(r"\{(\w+)\}")
MAX_RESPONSE_TARGET_BYTES = 1_048_576
"""The largest answer read for ``Route.response_target`` (a larger one adds nothing)."""


def _coerce(name: str, value: str) -> str | int:
    # Only identifiers become numbers (project_id=42 filters as a number);
    # a sha or a branch that happens to be all digits stays a string.
    decoded = urllib.parse.unquote(value)
    is_id = name.endswith(("_id", "_iid")) or name in ("id", "iid")
    return int(decoded) if is_id and decoded.isdigit() and len(decoded) <= 18 else decoded


@dataclass(frozen=True)
class Route:
    """One audited endpoint: ``Route("GET", "/projects/{project_id}/merge_requests/{mr_iid}",
    "gitlab.api.get_mr_details", "merge_request")``.

    Path parameters become target fields, URL-decoded; ``*_id``/``*_iid``
    parameters made of digits become integers. ``response_target`` maps
    target fields to keys of a successful JSON object answer
    (``{"mr_iid": "iid"}``).

    .. versionadded:: 0.1.0
    """

    method: str
    template: str
    action: str
    resource_type: str
    target_extra: Mapping[str, Any] = field(default_factory=dict)
    response_target: Mapping[str, str] = field(default_factory=dict)
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Escape the literal parts only: escaping first would turn "{name}" into "\\{name\\}".
        parts = _PARAM.split(self.template)
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
        )
        object.__setattr__(self, "pattern", re.compile(f"^{regex}/?$"))

    def match(self, method: str, path: str) -> dict[str, Any] | None:
        if method != self.method:
            return None
        found = self.pattern.match(path)
        if found is None:
            return None
        target: dict[str, Any] = {"resource_type": self.resource_type, **self.target_extra}
        target.update({k: _coerce(k, v) for k, v in found.groupdict().items()})
        return target


@dataclass(frozen=True)
class RouteTable:
    """Routes of one API, under a path prefix (``/api/v4``) and an action namespace.

    .. versionadded:: 0.1.0
    """

    namespace: str
    routes: tuple[Route, ...]
    prefix: str = ""
    rate_limit_headers: tuple[str, ...] = ()
    """Headers of a 429 copied into ``details`` (lower-cased, ``-`` as ``_``, at most 100
    characters), e.g. Jira's ``RateLimit-Reason``; ``Retry-After`` always is."""

    def resolve(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """Return the action and target of a request (``<namespace>.api.unmapped`` if unknown)."""
        route, target = self.find(method, path)
        if route is not None:
            return route.action, target
        return f"{self.namespace}.api.unmapped", target

    def find(self, method: str, path: str) -> tuple[Route | None, dict[str, Any]]:
        """The matching route and its target, or None and the unmapped target.

        .. versionadded:: 0.1.0
        """
        relative = path[len(self.prefix) :] if path.startswith(self.prefix) else path
        for route in self.routes:
            target = route.match(method, relative)
            if target is not None:
                return route, target
        return None, {
            "resource_type": "http_endpoint",
            "method": method,
            "path": relative,
        }


class AuditedTransport(httpx.AsyncBaseTransport):
    """An async transport that audits each request and forwards the correlation id.

    With ``auditkeep.integrations.opentelemetry`` enabled, each request also
    carries W3C ``traceparent``/``tracestate``/``baggage`` naming its call's span.

    Args:
        logger: the audit logger, or a callable returning it (resolved per request,
            so a client can be built before the logger).
        routes: how requests map to actions and targets.
        wrapped: the real transport (default: ``httpx.AsyncHTTPTransport()``).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        logger: AuditLogger | Callable[[], AuditLogger],
        routes: RouteTable,
        wrapped: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._logger = logger
        self._routes = routes
        self._wrapped = wrapped if wrapped is not None else httpx.AsyncHTTPTransport()

    def _audit_logger(self) -> AuditLogger:
        return self._logger if isinstance(self._logger, AuditLogger) else self._logger()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        logger = self._audit_logger()
        if not logger.enabled:
            request.headers.update(correlation_headers())
            return await self._wrapped.handle_async_request(request)
        # The raw path: url.path is percent-decoded, which would split an
        # encoded segment such as "group%2Fapp" into two.
        raw_path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        route, target = self._routes.find(request.method, raw_path)
        action = route.action if route is not None else f"{self._routes.namespace}.api.unmapped"
        extra = request.extensions.get("audit", {})
        target = {**target, **extra.get("target", {})}
        details: dict[str, Any] = {"method": request.method, **extra.get("details", {})}
        # audited(): one entry per attempt however it ends (a cancelled task
        # included), and the caller's exception is never replaced (auditkeep._call).
        response: httpx.Response | None = None
        try:
            async with logger.audited(action, target=target, details=details) as call:
                # Inside the call: with tracing on, traceparent names the call's own span.
                request.headers.update(correlation_headers())
                response = await self._wrapped.handle_async_request(request)
                status = response.status_code
                call.http_status = status
                if status >= 400:
                    call.error_message = f"HTTP {status}"
                if status == 429:
                    for name in ("retry-after", *self._routes.rate_limit_headers):
                        value = response.headers.get(name)
                        if value is not None:
                            call.details[name.lower().replace("-", "_")] = value[:100]
                if route is not None and route.response_target and 200 <= status < 300:
                    call.target.update(await _response_target(response, route.response_target))
        except BaseException:
            # Recorded, but the entry could not be written (a closed logger):
            # the caller gets the error, so the response it never sees is closed.
            if response is not None:
                await response.aclose()
            raise
        return response

    async def aclose(self) -> None:
        await self._wrapped.aclose()


async def _response_target(response: httpx.Response, fields: Mapping[str, str]) -> dict[str, Any]:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and len(declared) < 12 and int(declared) > MAX_RESPONSE_TARGET_BYTES:
        return {}
    content = await response.aread()
    if len(content) > MAX_RESPONSE_TARGET_BYTES:
        return {}
    try:
        decoded = json.loads(content)
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    found: dict[str, Any] = {}
    for name, key in fields.items():
        value = decoded.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int) and abs(value) < 10**18:
            found[name] = value
        elif isinstance(value, str):
            found[name] = value[:200]
    return found
