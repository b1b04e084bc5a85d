"""The agent's shared HTTP plumbing: one ``AsyncClient`` factory and one retry loop.

Every API client builds its ``httpx.AsyncClient`` with ``build_async_client``,
which installs ``auditkeep.integrations.httpx.AuditedTransport``: the single
instrumentation point. Each attempt on the wire emits one audit entry (action
and target from the client's route table, outcome, error class, duration,
HTTP status) and carries the correlation id as ``X-Correlation-ID``; no call
site writes audit code.

``send_with_retries`` runs the attempts of one logical call:

- it retries only what the caller declares safe (``retry_statuses``,
  ``retry_exceptions``): reads are retried on 429/502/503/504 and on network
  errors and timeouts; writes only where the server cannot have acted (429,
  connection never made), so a retry never posts a comment twice;
- it waits with exponential backoff and jitter, or at least ``Retry-After``
  when the server says so (read by the library's ``auditkeep.parse_retry_after``,
  the same parser as the audit log's http destination);
- every attempt and every wait fits in one deadline: a wait that would cross
  it ends the retries instead, and each attempt's timeout is cut to what is
  left;
- each attempt is numbered in the audit entry (``details.attempt`` = 1, 2, …)
  through the request's ``audit`` extension, so a security engineer sees every
  request that reached the server, not one summary.

``send_checked`` is one logical call as every client makes it: reads and
writes retried by the rules above, a final non-2xx or transport failure raised
as the client's ``ApiError`` subclass with the error class (``auth_failure``,
``not_found``, ``rate_limit``, ``timeout``, ...) and a message scrubbed whole
before it is cut. GitLab and Jira share it, so their retries and error classes
cannot drift apart.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self

import httpx
import orjson

from auditkeep import (
    AuditLogger,
    ErrorClass,
    classify_exception,
    classify_http_status,
    parse_retry_after,
)
from auditkeep.integrations.httpx import AuditedTransport, RouteTable
from gitlab_copilot_agent.scrub import scrub_then_cut

__all__ = [
    "MAX_MESSAGE_CHARS",
    "READ_RETRY_EXCEPTIONS",
    "READ_RETRY_STATUSES",
    "WRITE_RETRY_EXCEPTIONS",
    "WRITE_RETRY_STATUSES",
    "ApiClient",
    "ApiError",
    "RetryPolicy",
    "build_async_client",
    "decode_json",
    "send_checked",
    "send_with_retries",
]

MAX_MESSAGE_CHARS: Final = 500
"""The longest error message an ``ApiError`` carries (after scrubbing)."""

READ_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
"""Answers after which a read is sent again."""
WRITE_RETRY_STATUSES: Final = frozenset({429})
"""Answers after which a write is sent again: a 429 was refused before any processing."""
READ_RETRY_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
WRITE_RETRY_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
"""Failures where the request never left the client."""


class ApiClient:
    """What every API client shares: one audited ``httpx.AsyncClient``, its calls sent
    through ``send_checked`` with the client's policy, error type and secrets, closed once.

    A subclass sets ``_error_type`` (class level), ``_client``, ``_policy`` and
    ``_secrets`` (in ``__init__``), and reads its service's error text in
    ``_failure_text``.
    """

    _error_type: ClassVar[type[ApiError]]
    _client: httpx.AsyncClient
    _policy: RetryPolicy
    _secrets: tuple[str, ...]

    async def _send(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        audit_target: Mapping[str, Any] | None = None,
        audit_details: Mapping[str, Any] | None = None,
        read_only: bool | None = None,
    ) -> httpx.Response:
        return await send_checked(
            self._client,
            method,
            path,
            policy=self._policy,
            error_type=self._error_type,
            error_message=self._failure_text,
            secrets=self._secrets,
            params=params,
            json=json,
            audit_target=audit_target,
            audit_details=audit_details,
            read_only=read_only,
        )

    def _failure_text(self, response: httpx.Response) -> str:
        """The service's error text from a failed response, whole (scrubbed, then cut, later)."""
        raise NotImplementedError

    def _unexpected(self, response: httpx.Response, wanted: str) -> ApiError:
        """A 2xx answer without what the call needs: a ``validation_error``."""
        return self._error_type(
            response.status_code,
            f"expected {wanted} in the response",
            error_class=ErrorClass.VALIDATION_ERROR,
            method=response.request.method,
            path=response.request.url.path,
        )

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, how long between, and by when.

    Args:
        max_retries: attempts after the first one.
        initial_backoff_s: the first wait without ``Retry-After``; doubles each time.
        max_backoff_s: the longest wait without ``Retry-After``.
        deadline_s: the budget of the whole call, attempts and waits included.
    """

    max_retries: int = 3
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    deadline_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be > 0")

    def backoff_s(self, retry: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``retry`` (1-based).

        Exponential with "equal jitter" (half fixed, half random), so clients
        that failed together do not come back together; never less than
        ``retry_after`` when the server sent one.
        """
        base = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (retry - 1))
        jittered = base / 2 + random.uniform(0, base / 2)
        if retry_after is None:
            return jittered
        return retry_after + random.uniform(0, min(1.0, self.initial_backoff_s))


def build_async_client(
    base_url: str,
    *,
    audit: AuditLogger | Callable[[], AuditLogger],
    routes: RouteTable,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An ``AsyncClient`` whose every request goes through ``AuditedTransport``.

    Args:
        base_url: prefix of every request URL.
        audit: the audit logger (or a callable returning it).
        routes: maps requests to actions and targets.
        timeout_s: connect, read, write and pool timeout of one attempt.
        headers: default headers (credentials go here, never in URLs).
        transport: the inner transport (tests); default ``httpx.AsyncHTTPTransport``.
    """
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers or {}),
        timeout=httpx.Timeout(timeout_s),
        transport=AuditedTransport(audit, routes, wrapped=transport),
        follow_redirects=False,
    )


async def send_with_retries(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    retry_statuses: frozenset[int],
    retry_exceptions: tuple[type[Exception], ...],
    params: Mapping[str, str | int] | None = None,
    json: Any = None,
    audit_target: Mapping[str, Any] | None = None,
    audit_details: Mapping[str, Any] | None = None,
) -> httpx.Response:
    """Send one logical request, retrying as allowed; return the last response.

    The caller decides what a non-2xx final response means. Each attempt gets
    ``details.attempt`` in its audit entry, plus ``audit_target`` and
    ``audit_details``.

    Raises:
        httpx.HTTPError: the last attempt's transport error (timeout, reset,
            refused connection) when no retry is left or allowed.
    """
    deadline = time.monotonic() + policy.deadline_s
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        timeout = client.timeout if remaining >= _longest(client.timeout) else max(remaining, 0.001)
        request = client.build_request(
            method,
            url,
            params=params,
            json=json,
            timeout=timeout,
            extensions={
                "audit": {
                    "target": dict(audit_target or {}),
                    "details": {**(audit_details or {}), "attempt": attempt},
                }
            },
        )
        try:
            response = await client.send(request)
        except retry_exceptions:
            wait = policy.backoff_s(attempt)
            if attempt > policy.max_retries or time.monotonic() + wait >= deadline:
                raise
            await asyncio.sleep(wait)
            continue
        if response.status_code not in retry_statuses or attempt > policy.max_retries:
            return response
        wait = policy.backoff_s(attempt, parse_retry_after(response.headers.get("retry-after")))
        if time.monotonic() + wait >= deadline:
            return response
        await response.aclose()
        await asyncio.sleep(wait)


def _longest(timeout: httpx.Timeout) -> float:
    values = [timeout.connect, timeout.read, timeout.write, timeout.pool]
    return max((v for v in values if v is not None), default=float("inf"))


class ApiError(Exception):
    """An API call failed after its retries (the base of ``GitLabError``, ``JiraError``).

    Attributes:
        status_code: the HTTP status, or None when no answer came (timeout,
            network error); auditkeep's classifier reads it.
        message: the service's error text, scrubbed and cut; never a token.
        audit_error_class: the ``ErrorClass`` value of the failure.
        method, path: the request (path relative to the API root).

    .. versionadded:: 0.1.0
    """

    service: ClassVar[str] = "HTTP"

    def __init__(
        self,
        status_code: int | None,
        message: str,
        *,
        error_class: ErrorClass | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.method = method
        self.path = path
        found = error_class or (classify_http_status(status_code) if status_code else None)
        self.audit_error_class = str(found or ErrorClass.INTERNAL_ERROR)
        where = f" ({method} {path})" if method else ""
        what = f"HTTP {status_code}" if status_code is not None else self.audit_error_class
        super().__init__(f"{self.service} API {what}: {message}{where}")


async def send_checked(
    client: httpx.AsyncClient,
    method: Literal["GET", "POST", "PUT", "DELETE"],
    path: str,
    *,
    policy: RetryPolicy,
    error_type: type[ApiError],
    error_message: Callable[[httpx.Response], str],
    secrets: Sequence[str] = (),
    params: Mapping[str, str | int] | None = None,
    json: Any = None,
    audit_target: Mapping[str, Any] | None = None,
    audit_details: Mapping[str, Any] | None = None,
    read_only: bool | None = None,
) -> httpx.Response:
    """One logical call: retried as a read (GET) or a write, a 2xx returned, else raised.

    Args:
        path: relative to the client's base URL (a leading ``/`` is dropped).
        error_type: the client's ``ApiError`` subclass.
        error_message: the service's error text from a failed response, whole
            (it is scrubbed of ``secrets`` and every registered secret, then cut).
        secrets: exact values to scrub besides the redactor's (the client's token).
        read_only: retried as a read (default: only a GET is); a POST that only
            queries (Jira's search, whose query goes in the body to stay out
            of URLs and their logs) says so here.

    Raises:
        ApiError: ``error_type``, with the status or the transport failure's class.
    """
    read = method == "GET" if read_only is None else read_only
    try:
        response = await send_with_retries(
            client,
            method,
            path.removeprefix("/"),
            policy=policy,
            retry_statuses=READ_RETRY_STATUSES if read else WRITE_RETRY_STATUSES,
            retry_exceptions=READ_RETRY_EXCEPTIONS if read else WRITE_RETRY_EXCEPTIONS,
            params=params,
            json=json,
            audit_target=audit_target,
            audit_details=audit_details,
        )
    except httpx.HTTPError as exc:
        raise error_type(
            None,
            scrub_then_cut(_describe(exc), MAX_MESSAGE_CHARS, *secrets),
            error_class=classify_exception(exc),
            method=method,
            path=path,
        ) from exc
    if response.is_success:
        return response
    raise error_type(
        response.status_code,
        scrub_then_cut(error_message(response), MAX_MESSAGE_CHARS, *secrets),
        method=method,
        path=path,
    )


def decode_json(response: httpx.Response) -> Any:
    """The JSON body, or None when it is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
