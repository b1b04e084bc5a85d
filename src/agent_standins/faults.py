"""Scripted misbehaviour for the stand-ins: error answers, slow answers, connection resets.

A ``FaultScript`` holds rules ``(path glob, method, Fault, times)``; the
``FaultInjector`` ASGI middleware consults it before the stand-in's own
routes, so any path can be made to fail the way the real service fails::

    standin.faults.add("/projects/42/merge_requests/7", Fault.http(503), times=2)
    standin.faults.add("*/notes", Fault.http(429, retry_after_s=1), method="POST")
    standin.faults.add("/user", Fault.slow(5.0))           # then answers normally
    standin.faults.add("/projects/42", Fault.reset())      # TCP reset, no answer
    standin.faults.add("/user", Fault.echo_header(401, "private-token", offset=480))

Rules are tried in the order they were added; a rule with ``times=N`` applies
to the next N matching requests and is then used up (the path recovers). The
bodies of error answers come from the stand-in (``render``), so each speaks its
API's real error shape.

A slow answer waits while watching the connection: when the client gives up
(its timeout), the wait ends and nothing is answered, so a server never keeps
a thread busy for a client that left, and shuts down promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_standins.servers import abort_connection

__all__ = [
    "Echo",
    "Fault",
    "FaultInjector",
    "FaultScript",
    "Receive",
    "RecordedRequest",
    "Rendered",
    "Scope",
    "Send",
]


@dataclass(frozen=True)
class Echo:
    """Where an error message repeats a request header (see ``Fault.echo_header``)."""

    header: str
    offset: int
    length: int

    def message(self, value: str) -> str:
        """``length`` characters of filler with ``value`` written at ``offset``."""
        filler = "error detail " * ((self.offset + self.length) // 13 + 1)
        head = filler[: self.offset]
        return head + value + filler[len(head) + len(value) : self.length]


@dataclass(frozen=True)
class Fault:
    """One way to misbehave. Build it with ``http``, ``echo_header``, ``slow`` or ``reset``."""

    kind: Literal["http", "slow", "reset"]
    status: int = 0
    delay_s: float = 0.0
    retry_after_s: float | None = None
    body: bytes | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    message: str | None = None
    """The error text a renderer puts in the API's error shape (default: its own)."""
    echo: Echo | None = None

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after_s: float | None = None,
        body: bytes | str | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer ``status`` with the stand-in's real error body for it (or ``body``).

        ``retry_after_s`` adds a ``Retry-After`` header (a 429 gets the
        stand-in's rate-limit headers either way).
        """
        raw = body.encode() if isinstance(body, str) else body
        return cls(
            "http",
            status=status,
            retry_after_s=retry_after_s,
            body=raw,
            content_type=content_type,
            headers=dict(headers or {}),
        )

    @classmethod
    def echo_header(cls, status: int, header: str, *, offset: int, length: int = 600) -> Fault:
        """Answer ``status`` with an error message that repeats the request's ``header``.

        Some servers and proxies echo what they were sent (``invalid token
        'glpat-…'``); this puts the header's value at character ``offset`` of a
        ``length``-character message, in the stand-in's real error shape, so
        tests can place a credential exactly where a client cuts its messages.
        """
        if offset < 0 or length < 1:
            raise ValueError("need offset >= 0 and length >= 1")
        return cls("http", status=status, echo=Echo(header.lower(), offset, length))

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Wait ``delay_s`` before answering normally (nothing, if the client leaves first)."""
        return cls("slow", delay_s=delay_s)

    @classmethod
    def reset(cls) -> Fault:
        """Drop the connection with a TCP reset instead of answering."""
        return cls("reset")


@dataclass(frozen=True)
class Rendered:
    """An error answer: status, headers and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass
class _Rule:
    pattern: str
    method: str | None
    fault: Fault
    remaining: int | None


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the stand-in received it (faulted ones included)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    fault: str | None
    received_at: float


class FaultScript:
    """Thread-safe list of fault rules; paths are matched with ``fnmatch`` globs.

    Args:
        prefix: stripped from request paths before matching (``/api/v4``), so
            rules read like the API's documentation.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    def add(
        self, path: str, fault: Fault, *, method: str | None = None, times: int | None = None
    ) -> None:
        """Apply ``fault`` to requests whose path matches the glob ``path``.

        Args:
            path: a glob over the raw (still URL-encoded) path after the prefix,
                e.g. ``/projects/42/merge_requests/7/diffs`` or ``*/notes``.
            fault: what to do.
            method: only this HTTP method (default: any).
            times: only the next N matching requests (default: all of them).
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._rules.append(_Rule(path, method.upper() if method else None, fault, times))

    def clear(self) -> None:
        """Forget every rule."""
        with self._lock:
            self._rules.clear()

    def relative(self, path: str) -> str:
        return path[len(self.prefix) :] if self.prefix and path.startswith(self.prefix) else path

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, if any (and use up one of its times)."""
        relative = self.relative(path)
        with self._lock:
            for rule in self._rules:
                if rule.method not in (None, method):
                    continue
                if not fnmatch.fnmatchcase(relative, rule.pattern):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return rule.fault
        return None


class FaultInjector:
    """ASGI middleware: records each request, applies the scripted fault, else calls ``app``.

    Args:
        app: the stand-in's own API.
        script: the fault rules.
        render: turns an ``http`` fault into the API's real error answer.
        record_headers: what of the request's headers is kept in the record
            (default: all); a stand-in that must not hold a credential in
            memory replaces it here (``echo_header`` still sees the real value).
    """

    def __init__(
        self,
        app: ASGIApp,
        script: FaultScript,
        render: Callable[[Fault], Rendered],
        *,
        record_headers: Callable[[dict[str, str]], dict[str, str]] | None = None,
    ) -> None:
        self.app = app
        self.script = script
        self.render = render
        self.record_headers = record_headers
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        fault = self.script.take(scope["method"], path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=scope["method"],
                    path=path,
                    query=scope.get("query_string", b"").decode("latin-1"),
                    headers=self.record_headers(headers) if self.record_headers else headers,
                    body=body,
                    fault=fault.kind if fault else None,
                    received_at=time.monotonic(),
                )
            )
        if fault is not None and fault.kind == "reset":
            if not abort_connection(scope):
                raise RuntimeError("connection reset needs a server started by run_in_thread")
            await _wait_disconnect(receive, more)
            return
        if fault is not None and fault.kind == "slow":
            if await _client_left_within(receive, more, fault.delay_s):
                return
            more = False
        if fault is not None and fault.kind == "http":
            if fault.echo is not None:
                echoed = fault.echo.message(headers.get(fault.echo.header, ""))
                fault = dataclasses.replace(fault, message=echoed)
            await _send_rendered(send, self.render(fault))
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """Read the request body; the bool says whether the client is still connected."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


async def _wait_disconnect(receive: Receive, connected: bool) -> None:
    while connected:
        message = await receive()
        connected = message["type"] != "http.disconnect"


async def _client_left_within(receive: Receive, connected: bool, delay_s: float) -> bool:
    """Wait ``delay_s``; True as soon as the client disconnects."""
    if not connected:
        return True
    watcher = asyncio.ensure_future(_wait_disconnect(receive, True))
    done, _ = await asyncio.wait({watcher}, timeout=delay_s)
    if not done:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        return False
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_rendered(send: Send, answer: Rendered) -> None:
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()
    ]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
