"""``auditkeep.integrations.httpx``: route matching and the audited transport.

The transport is exercised with ``httpx.MockTransport`` (httpx's own test
transport) as the wrapped transport; real output is read back through
``auditkeep.testing`` and validated against the published schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from auditkeep import Actor, correlation_scope
from auditkeep.integrations.httpx import (
    MAX_RESPONSE_TARGET_BYTES,
    AuditedTransport,
    Route,
    RouteTable,
)
from auditkeep.logger import AuditLogger
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import capture_events, validate_entries

MR = "/projects/{project_id}/merge_requests/{mr_iid}"
ROUTES = RouteTable(
    "gitlab",
    (
        Route("GET", MR, "gitlab.api.get_mr_details", "merge_request"),
        Route("POST", f"{MR}/notes", "gitlab.api.post_mr_note", "merge_request"),
        Route("GET", "/projects/{project_id}", "gitlab.api.get_project_info", "project"),
        Route("GET", "/user", "gitlab.api.get_current_user", "user"),
        Route("GET", "/v1/chat.completions", "demo.api.dotted", "endpoint", {"kind": "chat"}),
    ),
    prefix="/api/v4",
)
BASE = "http://gitlab.test/api/v4"


def _entries(logger: AuditLogger, sink: InMemorySink) -> list[dict[str, Any]]:
    assert logger.flush(5.0)
    return validate_entries(sink.lines)


def _send(
    logger: AuditLogger | Callable[[], AuditLogger],
    handler: Callable[[httpx.Request], httpx.Response],
    method: str,
    path: str,
    **kwargs: Any,
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = AuditedTransport(logger, ROUTES, wrapped=httpx.MockTransport(handler))
        async with httpx.AsyncClient(base_url=BASE, transport=transport) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


class TestRoute:
    def test_path_params_become_target_fields(self) -> None:
        """Digits become integers; the resource type and extra fields come from the route."""
        route = Route("GET", MR, "gitlab.api.get_mr_details", "merge_request")
        assert route.match("GET", "/projects/42/merge_requests/7") == {
            "resource_type": "merge_request",
            "project_id": 42,
            "mr_iid": 7,
        }

    def test_encoded_params_are_decoded(self) -> None:
        """An encoded segment (group%2Fsub%2Fapp) matches one parameter and is decoded back."""
        route = Route("GET", MR, "gitlab.api.get_mr_details", "merge_request")
        assert route.match("GET", "/projects/group%2Fsub%2Fapp/merge_requests/7") == {
            "resource_type": "merge_request",
            "project_id": "group/sub/app",
            "mr_iid": 7,
        }

    def test_a_param_never_spans_segments(self) -> None:
        """An unencoded slash is a different path (GitLab answers it with 404)."""
        route = Route("GET", MR, "gitlab.api.get_mr_details", "merge_request")
        assert route.match("GET", "/projects/group/app/merge_requests/7") is None

    def test_method_must_match(self) -> None:
        """The same path with another method is another action."""
        route = Route("GET", MR, "gitlab.api.get_mr_details", "merge_request")
        assert route.match("POST", "/projects/42/merge_requests/7") is None

    def test_trailing_slash_is_accepted(self) -> None:
        """``/user/`` and ``/user`` are the same endpoint."""
        route = Route("GET", "/user", "gitlab.api.get_current_user", "user")
        assert route.match("GET", "/user/") == {"resource_type": "user"}

    def test_literal_parts_are_not_patterns(self) -> None:
        """A dot in a template matches a dot only; the whole path must match."""
        route = ROUTES.routes[4]
        assert route.match("GET", "/v1/chat.completions") == {
            "resource_type": "endpoint",
            "kind": "chat",
        }
        assert route.match("GET", "/v1/chatXcompletions") is None
        assert route.match("GET", "/v1/chat.completions/more") is None


class TestRouteTable:
    def test_prefix_is_stripped(self) -> None:
        """Routes are written relative to the API prefix."""
        assert ROUTES.resolve("GET", "/api/v4/projects/42") == (
            "gitlab.api.get_project_info",
            {"resource_type": "project", "project_id": 42},
        )

    def test_path_without_prefix_still_resolves(self) -> None:
        """A path that lacks the prefix is matched as it is."""
        assert ROUTES.resolve("GET", "/user")[0] == "gitlab.api.get_current_user"

    def test_first_matching_route_wins(self) -> None:
        """Order decides between routes that could both match."""
        table = RouteTable(
            "x",
            (
                Route("GET", "/items/special", "x.api.special", "item"),
                Route("GET", "/items/{item_id}", "x.api.item", "item"),
            ),
        )
        assert table.resolve("GET", "/items/special")[0] == "x.api.special"
        assert table.resolve("GET", "/items/3") == (
            "x.api.item",
            {"resource_type": "item", "item_id": 3},
        )

    def test_unknown_requests_fall_back_to_unmapped(self) -> None:
        """An unknown path, or a known one with another method, is ``<ns>.api.unmapped``."""
        assert ROUTES.resolve("DELETE", "/api/v4/projects/42") == (
            "gitlab.api.unmapped",
            {"resource_type": "http_endpoint", "method": "DELETE", "path": "/projects/42"},
        )
        assert ROUTES.resolve("GET", "/api/v4/projects/42/hooks")[0] == "gitlab.api.unmapped"


class TestAuditedTransport:
    def test_success_emits_one_complete_entry(self) -> None:
        """Action and target from the route, success, status, duration, method; schema-valid."""
        with capture_events() as (logger, sink):
            response = _send(logger, _ok, "GET", "/projects/42/merge_requests/7")
            (entry,) = _entries(logger, sink)
        assert response.json() == {"ok": True}
        assert entry["duration_ms"] >= 0
        assert {k: entry[k] for k in ("action", "target", "outcome", "http_status", "details")} == {
            "action": "gitlab.api.get_mr_details",
            "target": {"resource_type": "merge_request", "project_id": 42, "mr_iid": 7},
            "outcome": "success",
            "http_status": 200,
            "details": {"method": "GET"},
        }
        assert "error" not in entry

    def test_encoded_path_segment_resolves_to_its_route(self) -> None:
        """A URL-encoded project path is matched on the raw path and decoded in the target."""
        with capture_events() as (logger, sink):
            _send(logger, _ok, "GET", "/projects/group%2Fsub%2Fapp/merge_requests/7")
            (entry,) = _entries(logger, sink)
        assert (entry["action"], entry["target"]) == (
            "gitlab.api.get_mr_details",
            {"resource_type": "merge_request", "project_id": "group/sub/app", "mr_iid": 7},
        )

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (400, "client_error"),
            (401, "auth_failure"),
            (403, "auth_failure"),
            (404, "not_found"),
            (409, "client_error"),
            (422, "validation_error"),
            (429, "rate_limit"),
            (500, "server_error"),
            (502, "server_error"),
            (503, "server_error"),
            (504, "timeout"),
        ],
    )
    def test_error_statuses_are_classified(self, status: int, error: str) -> None:
        """A 4xx/5xx answer is a failure with its class and status; the response is returned."""
        with capture_events() as (logger, sink):
            response = _send(
                logger, lambda r: httpx.Response(status, text="nope"), "GET", "/api/v4/user"
            )
            (entry,) = _entries(logger, sink)
        assert response.status_code == status
        assert (entry["outcome"], entry["error"], entry["http_status"], entry["error_message"]) == (
            "failure",
            error,
            status,
            f"HTTP {status}",
        )

    def test_retry_after_is_recorded_on_429(self) -> None:
        """The server's ``Retry-After`` is kept in the details of a rate-limited attempt."""

        def limited(request: httpx.Request) -> httpx.Response:
            return httpx.Response(429, headers={"Retry-After": "7"}, text="Retry later")

        with capture_events() as (logger, sink):
            _send(logger, limited, "GET", "/user")
            (entry,) = _entries(logger, sink)
        assert entry["details"] == {"method": "GET", "retry_after": "7"}

    def test_declared_rate_limit_headers_are_recorded_on_429_only(self) -> None:
        """A table's ``rate_limit_headers`` join the details of a 429, bounded; not of a 200."""
        routes = RouteTable(
            "jira",
            (Route("GET", "/issue/{issue_key}", "jira.api.get_issue", "issue"),),
            rate_limit_headers=("RateLimit-Reason", "X-Absent"),
        )
        headers = {"Retry-After": "2", "RateLimit-Reason": "jira-per-issue-on-write" + "x" * 200}

        async def go(status: int) -> None:
            transport = AuditedTransport(
                logger,
                routes,
                wrapped=httpx.MockTransport(lambda r: httpx.Response(status, headers=headers)),
            )
            async with httpx.AsyncClient(base_url="http://jira.test", transport=transport) as c:
                await c.get("/issue/PROJ-1")

        with capture_events() as (logger, sink):
            asyncio.run(go(429))
            asyncio.run(go(200))
            limited, ok = _entries(logger, sink)
        assert limited["details"] == {
            "method": "GET",
            "retry_after": "2",
            "ratelimit_reason": headers["RateLimit-Reason"][:100],
        }
        assert ok["details"] == {"method": "GET"}

    @pytest.mark.parametrize(
        ("exc", "error"),
        [
            (httpx.ConnectError("refused"), "network_error"),
            (httpx.ReadError("connection reset by peer"), "network_error"),
            (httpx.RemoteProtocolError("server disconnected"), "network_error"),
            (httpx.ConnectTimeout("connect"), "timeout"),
            (httpx.ReadTimeout("read"), "timeout"),
        ],
    )
    def test_exceptions_are_recorded_then_reraised(self, exc: Exception, error: str) -> None:
        """A transport failure leaves a failure entry and reaches the caller unchanged."""

        def failing(request: httpx.Request) -> httpx.Response:
            raise exc

        with capture_events() as (logger, sink):
            with pytest.raises(type(exc)) as raised:
                _send(logger, failing, "GET", "/user")
            (entry,) = _entries(logger, sink)
        assert raised.value is exc
        assert (entry["action"], entry["outcome"], entry["error"]) == (
            "gitlab.api.get_current_user",
            "failure",
            error,
        )
        assert entry["error_message"] == f"{type(exc).__name__}: {exc}"
        assert "http_status" not in entry

    def test_correlation_id_goes_out_as_a_header(self) -> None:
        """Inside a scope the request carries ``X-Correlation-ID`` = the entry's correlation id."""
        seen: list[str | None] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers.get("X-Correlation-ID"))
            return httpx.Response(200, json={})

        with capture_events() as (logger, sink):
            with correlation_scope(Actor("webhook_event", "delivery-1")) as cid:
                _send(logger, record, "GET", "/user")
            (entry,) = _entries(logger, sink)
        assert seen == [cid]
        assert entry["correlation_id"] == cid
        assert entry["actor"] == {"type": "webhook_event", "id": "delivery-1"}

    def test_no_correlation_header_outside_a_scope(self) -> None:
        """Without a scope nothing is invented; the entry is marked uncorrelated."""
        seen: list[str | None] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers.get("X-Correlation-ID"))
            return httpx.Response(200, json={})

        with capture_events() as (logger, sink):
            _send(logger, record, "GET", "/user")
            (entry,) = _entries(logger, sink)
        assert seen == [None]
        assert entry["uncorrelated"] is True

    def test_audit_extension_is_merged(self) -> None:
        """Per-request ``extensions["audit"]`` adds target fields and details."""
        with capture_events() as (logger, sink):
            _send(
                logger,
                lambda r: httpx.Response(201, json={"id": 1}),
                "POST",
                "/projects/42/merge_requests/7/notes",
                json={"body": "hi"},
                extensions={
                    "audit": {"target": {"comment_type": "review"}, "details": {"attempt": 2}}
                },
            )
            (entry,) = _entries(logger, sink)
        assert (entry["action"], entry["target"], entry["details"], entry["http_status"]) == (
            "gitlab.api.post_mr_note",
            {
                "resource_type": "merge_request",
                "project_id": 42,
                "mr_iid": 7,
                "comment_type": "review",
            },
            {"method": "POST", "attempt": 2},
            201,
        )

    @pytest.mark.parametrize(
        ("status", "body", "added"),
        [
            (201, {"iid": 12, "web_url": "http://x/12", "draft": True}, {"mr_iid": 12}),
            (201, {"iid": "12"}, {"mr_iid": "12"}),
            (201, {"iid": True}, {}),  # a bool is not an id
            (201, {"iid": None}, {}),
            (201, [{"iid": 12}], {}),  # only a JSON object
            (400, {"iid": 12}, {}),  # only a success
        ],
    )
    def test_response_target_fields_come_from_a_successful_answer(
        self, status: int, body: Any, added: dict[str, Any]
    ) -> None:
        """A create call's new id joins the target; the client still reads the whole body."""
        routes = RouteTable(
            "gitlab",
            (
                Route(
                    "POST",
                    "/projects/{project_id}/merge_requests",
                    "gitlab.api.create_merge_request",
                    "merge_request",
                    response_target={"mr_iid": "iid"},
                ),
            ),
            prefix="/api/v4",
        )

        async def go() -> httpx.Response:
            transport = AuditedTransport(
                logger,
                routes,
                wrapped=httpx.MockTransport(lambda r: httpx.Response(status, json=body)),
            )
            async with httpx.AsyncClient(base_url=BASE, transport=transport) as client:
                return await client.post("/projects/42/merge_requests", json={})

        with capture_events() as (logger, sink):
            response = asyncio.run(go())
            (entry,) = _entries(logger, sink)
        assert response.json() == body
        assert entry["target"] == {"resource_type": "merge_request", "project_id": 42, **added}

    def test_response_target_skips_an_oversized_answer(self) -> None:
        """Bounded: an answer over MAX_RESPONSE_TARGET_BYTES adds nothing (and is not parsed)."""
        routes = RouteTable(
            "t",
            (
                Route(
                    "POST", "/things", "t.api.create", "thing", response_target={"thing_id": "id"}
                ),
            ),
        )
        big = {"id": 5, "pad": "x" * (MAX_RESPONSE_TARGET_BYTES + 10)}

        async def go() -> httpx.Response:
            transport = AuditedTransport(
                logger, routes, wrapped=httpx.MockTransport(lambda r: httpx.Response(201, json=big))
            )
            async with httpx.AsyncClient(base_url="http://t.test", transport=transport) as client:
                return await client.post("/things")

        with capture_events() as (logger, sink):
            response = asyncio.run(go())
            (entry,) = _entries(logger, sink)
        assert response.json()["id"] == 5
        assert entry["target"] == {"resource_type": "thing"}

    def test_unmapped_requests_are_still_audited(self) -> None:
        """A path no route knows emits ``<namespace>.api.unmapped`` with method and path."""
        with capture_events() as (logger, sink):
            _send(logger, _ok, "GET", "/projects/42/hooks")
            (entry,) = _entries(logger, sink)
        assert (entry["action"], entry["target"]) == (
            "gitlab.api.unmapped",
            {"resource_type": "http_endpoint", "method": "GET", "path": "/projects/42/hooks"},
        )

    def test_logger_may_be_resolved_per_request(self) -> None:
        """A callable logger is looked up at request time, so clients can exist before it."""
        with capture_events() as (logger, sink):
            _send(lambda: logger, _ok, "GET", "/user")
            (entry,) = _entries(logger, sink)
        assert entry["action"] == "gitlab.api.get_current_user"

    def test_aclose_closes_the_wrapped_transport(self) -> None:
        """Closing the audited transport closes the real one."""
        closed: list[bool] = []

        class Inner(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                return httpx.Response(200)

            async def aclose(self) -> None:
                closed.append(True)

        with capture_events() as (logger, _sink):
            asyncio.run(AuditedTransport(logger, ROUTES, wrapped=Inner()).aclose())
        assert closed == [True]
