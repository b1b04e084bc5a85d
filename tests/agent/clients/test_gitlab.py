"""``GitLabClient`` against the GitLab stand-in on a real loopback socket.

Every test reads the real audit output (``auditkeep.testing.capture_events``),
validates it against the published schema and compares whole values. Failures
come from the stand-in's scripted misbehaviour, the way GitLab fails.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from agent_standins.faults import Fault
from agent_standins.gitlab import GitLabStandin, diff_file
from agent_standins.servers import ServerHandle, run_in_thread
from auditkeep import Actor, correlation_scope, new_correlation_id
from auditkeep.logger import AuditLogger
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import capture_events, validate_entries
from gitlab_copilot_agent.clients.gitlab import GitLabClient, GitLabError

TOKEN = "glpat-Test-Secret-7f3a9c2e5b1d"
PROJECT, PATH, IID = 42, "group/app", 7
WEBHOOK = Actor("webhook_event", "delivery-1")


@pytest.fixture(scope="module")
def standin() -> GitLabStandin:
    gitlab = GitLabStandin(token=TOKEN)
    gitlab.add_merge_request(
        PROJECT,
        8,
        title="Big change",
        files=[diff_file(f"src/mod_{n:03d}.py", [f"X = {n}"]) for n in range(250)],
    )
    gitlab.add_merge_request(
        PROJECT,
        9,
        files=[diff_file("src/digits.py", ["A = 1"])],
        head_sha="1234567890123456789012345678901234567890",
    )
    for n in range(120):
        gitlab.add_note(PROJECT, 8, f"note {n}")
    # A merged MR: its source branch exists, and no open MR uses it (create_merge_request).
    gitlab.add_merge_request(PROJECT, 10, files=[], source_branch="feature/docs")
    gitlab.set_merge_request_state(PROJECT, 10, "merged")
    return gitlab


@pytest.fixture(scope="module")
def server(standin: GitLabStandin) -> Iterator[ServerHandle]:
    with run_in_thread(standin.app) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh_standin(standin: GitLabStandin) -> None:
    standin.reset()


@pytest.fixture
def audit() -> Iterator[tuple[AuditLogger, InMemorySink]]:
    with capture_events() as captured:
        yield captured


def make_client(url: str, logger: AuditLogger, **overrides: Any) -> GitLabClient:
    token = overrides.pop("token", TOKEN)
    options: dict[str, Any] = {
        "timeout_s": 2.0,
        "max_retries": 2,
        "initial_backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "deadline_s": 10.0,
        **overrides,
    }
    return GitLabClient(url, token, logger, **options)


def call(
    client: GitLabClient,
    fn: Callable[[GitLabClient], Awaitable[Any]],
    correlation_id: str | None = None,
) -> Any:
    """Run client calls inside a correlation scope (webhook actor), then close the client."""

    async def go() -> Any:
        try:
            with correlation_scope(WEBHOOK, correlation_id):
                return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def invoke(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[GitLabClient], Awaitable[Any]]:
    """``client.<name>(*args, **kwargs)`` as a function of the client."""

    def run(client: GitLabClient) -> Awaitable[Any]:
        return getattr(client, name)(*args, **kwargs)  # type: ignore[no-any-return]

    return run


def entries(logger: AuditLogger, sink: InMemorySink) -> list[dict[str, Any]]:
    assert logger.flush(5.0)
    return validate_entries(sink.lines)


def summary(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What a security engineer filters on: action, outcome, error class, status, attempt."""
    return (
        entry["action"],
        entry["outcome"],
        entry.get("error"),
        entry.get("http_status"),
        entry.get("details", {}).get("attempt"),
    )


def head_sha(standin: GitLabStandin, iid: int = IID) -> str:
    return str(standin.merge_request(PROJECT, iid)["sha"])


MR_TARGET = {"resource_type": "merge_request", "project_id": PROJECT, "mr_iid": IID}

# Arguments for every public API method of GitLabClient, the expected action and
# target. The enumeration test fails when a public method is missing here.
ArgsFor = Callable[[GitLabStandin], tuple[tuple[Any, ...], dict[str, Any]]]
CALLS: dict[str, tuple[ArgsFor, str, dict[str, Any]]] = {
    "get_mr_details": (lambda s: ((PROJECT, IID), {}), "gitlab.api.get_mr_details", MR_TARGET),
    "get_mr_diff": (lambda s: ((PROJECT, IID), {}), "gitlab.api.get_mr_diff", MR_TARGET),
    "list_mr_notes": (lambda s: ((PROJECT, IID), {}), "gitlab.api.list_mr_notes", MR_TARGET),
    "post_mr_note": (
        lambda s: ((PROJECT, IID, "Looks good."), {"comment_type": "review"}),
        "gitlab.api.post_mr_note",
        {**MR_TARGET, "comment_type": "review"},
    ),
    "post_commit_discussion": (
        lambda s: ((PROJECT, head_sha(s), "Validate this."), {"path": "src/search.py", "line": 5}),
        "gitlab.api.post_commit_discussion",
        {"resource_type": "commit", "project_id": PROJECT, "commit_sha": "<head_sha>"},
    ),
    "get_project_info": (
        lambda s: ((PROJECT,), {}),
        "gitlab.api.get_project_info",
        {"resource_type": "project", "project_id": PROJECT},
    ),
    "get_current_user": (
        lambda s: ((), {}),
        "gitlab.api.get_current_user",
        {"resource_type": "user"},
    ),
    "get_project_member": (
        lambda s: ((PROJECT, 5), {}),
        "gitlab.api.get_project_member",
        {"resource_type": "project_member", "project_id": PROJECT, "user_id": 5},
    ),
    "create_merge_request": (
        lambda s: (
            (PROJECT,),
            {"source_branch": "feature/docs", "target_branch": "main", "title": "Docs"},
        ),
        "gitlab.api.create_merge_request",
        {
            "resource_type": "merge_request",
            "project_id": PROJECT,
            "source_branch": "feature/docs",
            "target_branch": "main",
            "draft": True,
            "mr_iid": 11,
        },
    ),
    "list_merge_requests": (
        lambda s: ((PROJECT,), {}),
        "gitlab.api.list_merge_requests",
        {"resource_type": "merge_request", "project_id": PROJECT},
    ),
    "create_branch": (
        lambda s: ((PROJECT,), {"branch": "agent/PROJ-1", "ref": "main"}),
        "gitlab.api.create_branch",
        {"resource_type": "branch", "project_id": PROJECT, "branch": "agent/PROJ-1", "ref": "main"},
    ),
}
NOT_API_CALLS = {"aclose"}  # public coroutines that send nothing


def public_coroutines() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(GitLabClient, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


class TestActions:
    @pytest.mark.parametrize("method", sorted(CALLS))
    def test_each_method_emits_its_entry(
        self,
        method: str,
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """One successful call = one entry: action, target, success, status, duration, attempt 1."""
        logger, sink = audit
        build, action, target = CALLS[method]
        args, kwargs = build(standin)
        result = call(
            make_client(server.url, logger), lambda c: getattr(c, method)(*args, **kwargs)
        )
        (entry,) = entries(logger, sink)
        expected_target = {
            k: (head_sha(standin) if v == "<head_sha>" else v) for k, v in target.items()
        }
        status = 201 if method.startswith(("post_", "create_")) else 200
        assert (entry["action"], entry["target"], entry["outcome"], entry["http_status"]) == (
            action,
            expected_target,
            "success",
            status,
        )
        assert entry["details"]["attempt"] == 1
        assert entry["duration_ms"] > 0
        assert entry["service"] == "test"
        assert result

    def test_mr_details_are_returned(self, standin: GitLabStandin, server: ServerHandle) -> None:
        """The MR comes back as GitLab sends it, ``diff_refs`` included."""
        with capture_events() as (logger, _sink):
            mr = call(make_client(server.url, logger), lambda c: c.get_mr_details(PROJECT, IID))
        assert mr == {**standin.merge_request(PROJECT, IID), "user_notes_count": 1}
        assert set(mr["diff_refs"]) == {"base_sha", "head_sha", "start_sha"}

    def test_project_paths_are_encoded_on_the_wire_and_decoded_in_the_target(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """``group/app`` travels as ``group%2Fapp`` and is audited as ``group/app``."""
        logger, sink = audit
        notes = call(make_client(server.url, logger), lambda c: c.list_mr_notes(PATH, IID))
        (entry,) = entries(logger, sink)
        assert [n["body"] for n in notes] == ["added 1 commit", "Please take a look."]
        assert entry["action"] == "gitlab.api.list_mr_notes"
        assert entry["target"] == {**MR_TARGET, "project_id": PATH}
        assert [r.path for r in standin.requests] == [
            "/api/v4/projects/group%2Fapp/merge_requests/7/notes"
        ]

    def test_diff_pagination_emits_one_entry_per_page(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """250 files = 3 pages of 100: all files in order, three entries (pages 1, 2, 3)."""
        logger, sink = audit
        diffs = call(make_client(server.url, logger), lambda c: c.get_mr_diff(PROJECT, 8))
        found = entries(logger, sink)
        assert [d["new_path"] for d in diffs] == [f"src/mod_{n:03d}.py" for n in range(250)]
        assert [(e["action"], e["target"], e["http_status"], e["details"]) for e in found] == [
            (
                "gitlab.api.get_mr_diff",
                {**MR_TARGET, "mr_iid": 8},
                200,
                {"method": "GET", "page": page, "attempt": 1},
            )
            for page in (1, 2, 3)
        ]
        assert [r.query for r in standin.requests] == [
            f"page={page}&per_page=100" for page in (1, 2, 3)
        ]

    def test_notes_are_paginated_oldest_first(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """120 notes = 2 pages, ascending by creation, one entry per page."""
        logger, sink = audit
        notes = call(make_client(server.url, logger), lambda c: c.list_mr_notes(PROJECT, 8))
        found = entries(logger, sink)
        assert [n["body"] for n in notes] == [f"note {n}" for n in range(120)]
        assert [(e["action"], e["details"]["page"]) for e in found] == [
            ("gitlab.api.list_mr_notes", 1),
            ("gitlab.api.list_mr_notes", 2),
        ]

    def test_posted_note_reaches_gitlab(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """The note is created once, with the body; the entry says which kind of comment it is."""
        logger, sink = audit
        note = call(
            make_client(server.url, logger),
            lambda c: c.post_mr_note(PATH, IID, "Please add tests.", comment_type="note"),
        )
        (entry,) = entries(logger, sink)
        assert standin.posted_notes(PROJECT, IID) == [note]
        assert (note["body"], note["author"]["username"]) == (
            "Please add tests.",
            "project_42_bot_copilot",
        )
        assert entry["target"] == {**MR_TARGET, "project_id": PATH, "comment_type": "note"}
        assert entry["details"] == {"method": "POST", "body_chars": 17, "attempt": 1}

    def test_inline_comment_is_a_commit_discussion_on_the_line(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """The discussion carries a text position on new_path/new_line at the commit."""
        logger, sink = audit
        refs = standin.merge_request(PROJECT, IID)["diff_refs"]
        sha = refs["head_sha"]
        call(
            make_client(server.url, logger),
            lambda c: c.post_commit_discussion(
                PROJECT,
                sha,
                "Shell injection.",
                path="src/search.py",
                line=5,
                base_sha=refs["base_sha"],
                start_sha=refs["start_sha"],
            ),
        )
        (discussion,) = standin.commit_discussions()
        (entry,) = entries(logger, sink)
        assert discussion["notes"][0]["position"] == {
            "position_type": "text",
            "head_sha": sha,
            "base_sha": refs["base_sha"],
            "start_sha": refs["start_sha"],
            "old_path": "src/search.py",
            "new_path": "src/search.py",
            "new_line": 5,
        }
        assert entry["details"] == {
            "method": "POST",
            "file_path": "src/search.py",
            "line": 5,
            "body_chars": 16,
            "attempt": 1,
        }

    def test_all_digit_sha_stays_a_string(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A SHA made only of digits is audited as the string it is, not a number."""
        logger, sink = audit
        sha = head_sha(standin, 9)
        call(
            make_client(server.url, logger),
            lambda c: c.post_commit_discussion(PROJECT, sha, "x", path="src/digits.py", line=1),
        )
        (entry,) = entries(logger, sink)
        assert entry["target"] == {
            "resource_type": "commit",
            "project_id": PROJECT,
            "commit_sha": sha,
        }

    def test_line_outside_the_diff_is_a_client_error(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """GitLab's 400 ``line_code can't be blank`` surfaces with its message, not retried."""
        logger, sink = audit
        with pytest.raises(GitLabError) as raised:
            call(
                make_client(server.url, logger),
                lambda c: c.post_commit_discussion(
                    PROJECT, head_sha(standin), "x", path="src/search.py", line=99
                ),
            )
        assert raised.value.status_code == 400
        assert "line_code" in raised.value.message
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.post_commit_discussion", "failure", "client_error", 400, 1)
        ]

    @pytest.mark.parametrize(
        ("method", "args", "kwargs"),
        [
            ("get_mr_details", ("../../user", 7), {}),
            ("get_mr_details", (PROJECT, 0), {}),
            ("get_project_info", ("",), {}),
            ("post_mr_note", (PROJECT, IID, "  "), {"comment_type": "review"}),
            ("post_mr_note", (PROJECT, IID, "x"), {"comment_type": "bogus"}),
            ("post_commit_discussion", (PROJECT, "not-a-sha", "x"), {"path": "a", "line": 1}),
            ("post_commit_discussion", (PROJECT, "abcdef1", "x"), {"path": "a", "line": 0}),
        ],
    )
    def test_bad_arguments_are_refused_before_any_request(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """Path traversal, empty bodies and malformed ids never reach GitLab."""
        logger, sink = audit
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            call(make_client(server.url, logger), invoke(method, args, kwargs))
        assert standin.requests == []
        assert entries(logger, sink) == []


class TestErrorClasses:
    @pytest.mark.parametrize(
        ("status", "error", "message"),
        [
            (401, "auth_failure", "401 Unauthorized"),
            (403, "auth_failure", "403 Forbidden"),
            (404, "not_found", "404 Project Not Found"),
            (500, "server_error", "500 Internal Server Error"),
        ],
    )
    def test_final_errors_are_not_retried(
        self,
        status: int,
        error: str,
        message: str,
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """401/403/404/500 fail at once with GitLab's message and the matching error class."""
        logger, sink = audit
        standin.faults.add(f"/projects/{PROJECT}", Fault.http(status))
        with pytest.raises(GitLabError) as raised:
            call(make_client(server.url, logger), lambda c: c.get_project_info(PROJECT))
        assert (raised.value.status_code, raised.value.message) == (status, message)
        assert raised.value.audit_error_class == error
        (entry,) = entries(logger, sink)
        assert summary(entry) == ("gitlab.api.get_project_info", "failure", error, status, 1)
        assert entry["target"] == {"resource_type": "project", "project_id": PROJECT}

    def test_wrong_token_is_an_auth_failure(
        self, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """The stand-in's own token check answers 401 like GitLab."""
        logger, sink = audit
        client = make_client(server.url, logger, token="glpat-wrong-token-000000")
        with pytest.raises(GitLabError) as raised:
            call(client, lambda c: c.get_current_user())
        assert (raised.value.status_code, raised.value.message) == (401, "401 Unauthorized")
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.get_current_user", "failure", "auth_failure", 401, 1)
        ]

    def test_unknown_project_is_not_found(
        self, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A project the token cannot see is a 404 ``Project Not Found``."""
        logger, sink = audit
        with pytest.raises(GitLabError) as raised:
            call(make_client(server.url, logger), lambda c: c.get_mr_details("nobody/else", 1))
        assert (raised.value.status_code, raised.value.message) == (404, "404 Project Not Found")
        (entry,) = entries(logger, sink)
        assert summary(entry) == ("gitlab.api.get_mr_details", "failure", "not_found", 404, 1)
        assert entry["target"]["project_id"] == "nobody/else"

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (
                {
                    "message": [
                        "Another open merge request already exists for this source branch: !12"
                    ]
                },
                "Another open merge request already exists for this source branch: !12",
            ),
            ({"message": {"title": ["can't be blank"]}}, "title: can't be blank"),
            ({"error": "title is missing"}, "title is missing"),
        ],
    )
    def test_error_messages_of_every_shape(
        self,
        body: dict[str, Any],
        message: str,
        standin: GitLabStandin,
        server: ServerHandle,
    ) -> None:
        """``message`` as a string, an array or an object, and ``error``, all become text."""
        standin.faults.add("/user", Fault.http(409, body=orjson.dumps(body)))
        with capture_events() as (logger, _sink), pytest.raises(GitLabError) as raised:
            call(make_client(server.url, logger), lambda c: c.get_current_user())
        assert (raised.value.status_code, raised.value.message) == (409, message)
        assert raised.value.audit_error_class == "client_error"

    def test_server_error_is_retried_then_given_up(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A GET answered 503 every time: 1 + max_retries attempts, each audited, then 503."""
        logger, sink = audit
        standin.faults.add("*/diffs", Fault.http(503))
        with pytest.raises(GitLabError) as raised:
            call(make_client(server.url, logger), lambda c: c.get_mr_diff(PROJECT, IID))
        assert raised.value.status_code == 503
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.get_mr_diff", "failure", "server_error", 503, n) for n in (1, 2, 3)
        ]

    def test_gateway_errors_recover(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """502 then 503 then the answer: the call succeeds and all three attempts are audited."""
        logger, sink = audit
        standin.faults.add(f"/projects/{PROJECT}", Fault.http(502), times=1)
        standin.faults.add(f"/projects/{PROJECT}", Fault.http(503), times=1)
        project = call(make_client(server.url, logger), lambda c: c.get_project_info(PROJECT))
        assert project["path_with_namespace"] == PATH
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.get_project_info", "failure", "server_error", 502, 1),
            ("gitlab.api.get_project_info", "failure", "server_error", 503, 2),
            ("gitlab.api.get_project_info", "success", None, 200, 3),
        ]

    def test_rate_limit_waits_for_retry_after(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """429 ``Retry later`` with Retry-After: 1: the retry comes ≥ 1 s later and succeeds."""
        logger, sink = audit
        standin.faults.add("/user", Fault.http(429, retry_after_s=1), times=1)
        user = call(make_client(server.url, logger), lambda c: c.get_current_user())
        first, second = standin.requests
        found = entries(logger, sink)
        assert user["username"] == "project_42_bot_copilot"
        assert (first.fault, second.fault) == ("http", None)
        assert second.received_at - first.received_at >= 1.0
        assert [summary(e) for e in found] == [
            ("gitlab.api.get_current_user", "failure", "rate_limit", 429, 1),
            ("gitlab.api.get_current_user", "success", None, 200, 2),
        ]
        assert found[0]["details"]["retry_after"] == "1"

    def test_rate_limit_answer_has_gitlab_shape(
        self, standin: GitLabStandin, server: ServerHandle
    ) -> None:
        """The stand-in's 429 is plain text with Retry-After and the RateLimit-* headers."""
        standin.faults.add("/user", Fault.http(429, retry_after_s=30))
        response = httpx.get(f"{server.url}/api/v4/user", headers={"PRIVATE-TOKEN": TOKEN})
        assert (response.status_code, response.text) == (429, "Retry later\n")
        assert response.headers["content-type"] == "text/plain"
        assert response.headers["retry-after"] == "30"
        assert {
            "ratelimit-name",
            "ratelimit-limit",
            "ratelimit-observed",
            "ratelimit-remaining",
            "ratelimit-reset",
            "ratelimit-resettime",
        } <= set(response.headers)

    def test_rate_limit_beyond_the_deadline_is_not_waited_for(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A Retry-After longer than the call's deadline ends the retries at once."""
        logger, sink = audit
        standin.faults.add("/user", Fault.http(429, retry_after_s=60))
        started = time.monotonic()
        with pytest.raises(GitLabError) as raised:
            call(make_client(server.url, logger, deadline_s=5.0), lambda c: c.get_current_user())
        assert time.monotonic() - started < 2.0
        assert (raised.value.status_code, raised.value.message) == (429, "Retry later")
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.get_current_user", "failure", "rate_limit", 429, 1)
        ]

    @pytest.mark.parametrize("header", ["inf", "1e400", "1" + "0" * 400, "-3", "soon"])
    def test_unusable_retry_after_falls_back_to_backoff(
        self,
        header: str,
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """A Retry-After the library's parser refuses: the client's own backoff, then success.

        The client reads the header with ``auditkeep.parse_retry_after``, the http
        sink's parser; its old one read ``inf`` as "wait forever" and gave up.
        """
        logger, sink = audit
        headers = {"retry-after": header}
        standin.faults.add("/user", Fault.http(429, headers=headers), times=1)
        user = call(make_client(server.url, logger), lambda c: c.get_current_user())
        assert user["id"] == standin.user["id"]
        found = entries(logger, sink)
        assert [summary(e) for e in found] == [
            ("gitlab.api.get_current_user", "failure", "rate_limit", 429, 1),
            ("gitlab.api.get_current_user", "success", None, 200, 2),
        ]

    def test_slow_answer_is_a_timeout(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """An answer slower than the client timeout: timeout entries per attempt, no status."""
        logger, sink = audit
        standin.faults.add(f"/projects/{PROJECT}/merge_requests/{IID}", Fault.slow(3.0))
        client = make_client(server.url, logger, timeout_s=0.2, max_retries=1)
        with pytest.raises(GitLabError) as raised:
            call(client, lambda c: c.get_mr_details(PROJECT, IID))
        assert (raised.value.status_code, raised.value.audit_error_class) == (None, "timeout")
        assert isinstance(raised.value.__cause__, httpx.TimeoutException)
        found = entries(logger, sink)
        assert [summary(e) for e in found] == [
            ("gitlab.api.get_mr_details", "failure", "timeout", None, n) for n in (1, 2)
        ]
        assert all(e["duration_ms"] >= 200 for e in found)

    @pytest.mark.parametrize("method", ["get_mr_details", "post_mr_note"])
    def test_cancelled_request_leaves_one_failure_entry(
        self,
        method: str,
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """A task cancelled while GitLab is still answering (shutdown, a caller's deadline).

        Exactly one entry for the attempt: failure, ``timeout``, ``details.cancelled``,
        in the caller's correlation scope; the task ends cancelled and nothing is retried.
        """
        logger, sink = audit
        standin.faults.add(f"/projects/{PROJECT}/merge_requests/{IID}*", Fault.slow(5.0))
        client = make_client(server.url, logger)
        args: tuple[Any, ...] = (
            (PROJECT, IID) if method == "get_mr_details" else (PROJECT, IID, "x")
        )
        kwargs = {} if method == "get_mr_details" else {"comment_type": "note"}
        correlation_id = new_correlation_id()

        async def go() -> None:
            with correlation_scope(WEBHOOK, correlation_id):
                task = asyncio.create_task(getattr(client, method)(*args, **kwargs))
            deadline = time.monotonic() + 5.0
            while not standin.requests and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert [r.fault for r in standin.requests] == ["slow"]  # GitLab has it, mid-answer
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.aclose()

        started = time.monotonic()
        asyncio.run(go())
        assert time.monotonic() - started < 4.0  # the cancel ended it, not the slow answer
        (entry,) = entries(logger, sink)
        assert summary(entry) == (CALLS[method][1], "failure", "timeout", None, 1)
        assert entry["details"]["cancelled"] is True
        assert entry["error_message"].startswith("CancelledError")
        assert entry["correlation_id"] == correlation_id
        assert len(standin.requests) == 1

    def test_connection_reset_is_a_network_error(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A reset without an answer, then recovery: network_error, then success."""
        logger, sink = audit
        standin.faults.add("/user", Fault.reset(), times=1)
        user = call(make_client(server.url, logger), lambda c: c.get_current_user())
        assert user["id"] == standin.user["id"]
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.get_current_user", "failure", "network_error", None, 1),
            ("gitlab.api.get_current_user", "success", None, 200, 2),
        ]

    def test_connection_reset_every_time_raises(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Resets on every attempt end in a network_error ``GitLabError``."""
        logger, sink = audit
        standin.faults.add("/user", Fault.reset())
        with pytest.raises(GitLabError) as raised:
            call(make_client(server.url, logger, max_retries=1), lambda c: c.get_current_user())
        assert (raised.value.status_code, raised.value.audit_error_class) == (None, "network_error")
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.get_current_user", "failure", "network_error", None, n) for n in (1, 2)
        ]

    @pytest.mark.parametrize("method", ["get_project_info", "post_mr_note"])
    def test_closed_port_is_a_network_error(
        self, method: str, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Nothing listening: connection refused on each attempt, reads and writes alike."""
        logger, sink = audit
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = make_client(f"http://127.0.0.1:{port}", logger, max_retries=1)
        args: tuple[Any, ...] = (PROJECT,) if method == "get_project_info" else (PROJECT, IID, "x")
        kwargs = {} if method == "get_project_info" else {"comment_type": "note"}
        with pytest.raises(GitLabError) as raised:
            call(client, invoke(method, args, kwargs))
        assert raised.value.audit_error_class == "network_error"
        assert isinstance(raised.value.__cause__, httpx.ConnectError)
        assert [summary(e) for e in entries(logger, sink)] == [
            (f"gitlab.api.{method}", "failure", "network_error", None, n) for n in (1, 2)
        ]

    @pytest.mark.parametrize(
        ("fault", "error", "status"),
        [
            (Fault.http(500), "server_error", 500),
            (Fault.http(502), "server_error", 502),
            (Fault.http(503), "server_error", 503),
            (Fault.slow(3.0), "timeout", None),
            (Fault.reset(), "network_error", None),
        ],
        ids=["500", "502", "503", "slow", "reset"],
    )
    def test_post_is_not_retried_when_gitlab_may_have_acted(
        self,
        fault: Fault,
        error: str,
        status: int | None,
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """A note POST that may have been processed is sent once: no duplicate comments."""
        logger, sink = audit
        standin.faults.add("*/notes", fault, method="POST")
        client = make_client(server.url, logger, timeout_s=0.3)
        with pytest.raises(GitLabError) as raised:
            call(client, lambda c: c.post_mr_note(PROJECT, IID, "Review", comment_type="review"))
        assert raised.value.audit_error_class == error
        assert [r.method for r in standin.requests] == ["POST"]
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.post_mr_note", "failure", error, status, 1)
        ]

    def test_post_is_retried_after_429(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A refused (429) note is sent again and created exactly once."""
        logger, sink = audit
        standin.faults.add("*/notes", Fault.http(429, retry_after_s=0), method="POST", times=1)
        call(
            make_client(server.url, logger),
            lambda c: c.post_mr_note(PROJECT, IID, "Review", comment_type="review"),
        )
        assert [n["body"] for n in standin.posted_notes(PROJECT, IID)] == ["Review"]
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.post_mr_note", "failure", "rate_limit", 429, 1),
            ("gitlab.api.post_mr_note", "success", None, 201, 2),
        ]


class TestCorrelationAndSecrets:
    def test_correlation_id_reaches_gitlab_and_every_entry(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Each request carries ``X-Correlation-ID`` = the scope's id = the entries' id."""
        logger, sink = audit

        async def review(client: GitLabClient) -> None:
            await client.get_mr_details(PROJECT, IID)
            await client.get_mr_diff(PROJECT, IID)
            await client.post_mr_note(PROJECT, IID, "Summary", comment_type="review")

        cid = new_correlation_id()
        call(make_client(server.url, logger), review, correlation_id=cid)
        found = entries(logger, sink)
        assert [e["correlation_id"] for e in found] == [cid, cid, cid]
        assert [r.headers.get("x-correlation-id") for r in standin.requests] == [cid, cid, cid]
        assert {e["actor"]["type"] for e in found} == {"webhook_event"}

    def test_token_never_leaks(
        self,
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """Not in URLs, entries, exception messages or output, even when GitLab echoes it."""
        logger, sink = audit
        standin.faults.add(
            "/user", Fault.http(500, body=orjson.dumps({"message": f"token {TOKEN} rejected"}))
        )
        standin.faults.add(f"/projects/{PROJECT}", Fault.reset())
        standin.faults.add("*/diffs", Fault.http(401))
        errors: list[GitLabError] = []

        async def everything(client: GitLabClient) -> None:
            await client.get_mr_details(PROJECT, IID)
            await client.post_mr_note(PROJECT, IID, "x", comment_type="note")
            for coro in (
                client.get_current_user(),
                client.get_project_info(PROJECT),
                client.get_mr_diff(PROJECT, IID),
            ):
                try:
                    await coro
                except GitLabError as exc:
                    errors.append(exc)

        client = make_client(server.url, logger, max_retries=1)
        assert TOKEN not in repr(client)
        call(client, everything)
        found = entries(logger, sink)
        out, err = capfd.readouterr()
        assert len(errors) == 3
        assert "[REDACTED]" in errors[0].message
        for exc in errors:
            assert TOKEN not in str(exc)
            assert TOKEN not in repr(exc)
            assert TOKEN not in exc.message
        assert TOKEN not in b"\n".join(sink.lines).decode()
        assert len(found) >= 6
        assert TOKEN not in out
        assert TOKEN not in err
        assert {r.headers.get("private-token") for r in standin.requests} == {TOKEN}
        assert all(TOKEN not in r.path and TOKEN not in r.query for r in standin.requests)

    @pytest.mark.parametrize("window", [500, 500 + 4096], ids=["at-the-cut", "at-the-window"])
    def test_an_echoed_token_is_scrubbed_before_the_message_is_cut(
        self,
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
        window: int,
    ) -> None:
        """GitLab echoes the token at every offset around the 500-character cut (and the edge
        of the scrubbed window): no message keeps any 8 characters of it."""
        logger, _ = audit
        offsets = range(window - len(TOKEN) - 2, window + 2)
        for offset in offsets:
            standin.faults.add(
                "/user",
                Fault.echo_header(403, "private-token", offset=offset, length=window + 100),
                times=1,
            )
        messages: list[str] = []

        async def ask(client: GitLabClient) -> None:
            for _ in offsets:
                try:
                    await client.get_current_user()
                except GitLabError as exc:
                    messages.append(f"{exc}\n{exc!r}")

        call(make_client(server.url, logger, max_retries=0), ask)
        assert len(messages) == len(offsets)
        fragments = {TOKEN[i : i + 8] for i in range(len(TOKEN) - 7)}
        assert [m for m in messages if any(f in m for f in fragments)] == []
        assert all(len(m.split("\n")[0]) < 600 for m in messages)


class TestEveryPublicMethodIsAudited:
    def test_argument_table_covers_every_public_coroutine(self) -> None:
        """Adding a public method to GitLabClient forces adding it to CALLS (or NOT_API_CALLS)."""
        public = public_coroutines()
        assert public - NOT_API_CALLS - set(CALLS) == set(), "add the new method to CALLS"
        assert set(CALLS) - public == set(), "CALLS names a method that no longer exists"

    def test_every_public_method_emits_a_mapped_entry(
        self, standin: GitLabStandin, server: ServerHandle
    ) -> None:
        """Each API method, called for real, emits ≥ 1 mapped ``gitlab.api.*`` entry."""
        silent: dict[str, list[str]] = {}
        for name in sorted(public_coroutines() - NOT_API_CALLS):
            build, _action, _target = CALLS[name]
            args, kwargs = build(standin)
            with capture_events() as (logger, sink):
                call(make_client(server.url, logger), invoke(name, args, kwargs))
                actions = [e["action"] for e in entries(logger, sink)]
            mapped = [
                a for a in actions if a.startswith("gitlab.api.") and a != "gitlab.api.unmapped"
            ]
            if not mapped:
                silent[name] = actions
        assert silent == {}


class TestGitLabStandin:
    def test_pagination_headers_follow_gitlab(self, server: ServerHandle) -> None:
        """x-page/x-next-page/x-total(-pages) and Link; x-next-page is empty on the last page."""
        url = f"{server.url}/api/v4/projects/{PROJECT}/merge_requests/8/diffs"
        headers = {"PRIVATE-TOKEN": TOKEN}
        first = httpx.get(url, params={"per_page": 100}, headers=headers)
        last = httpx.get(url, params={"per_page": 100, "page": 3}, headers=headers)
        assert [
            first.headers[h] for h in ("x-page", "x-next-page", "x-total", "x-total-pages")
        ] == [
            "1",
            "2",
            "250",
            "3",
        ]
        assert 'rel="next"' in first.headers["link"]
        assert (last.headers["x-next-page"], last.headers["x-prev-page"], len(last.json())) == (
            "",
            "2",
            50,
        )

    @pytest.mark.parametrize(
        ("headers", "status", "body"),
        [
            ({}, 401, {"message": "401 Unauthorized"}),
            ({"PRIVATE-TOKEN": "nope"}, 401, {"message": "401 Unauthorized"}),
            ({"PRIVATE-TOKEN": ""}, 404, {"message": "404 Not Found"}),
            ({"Authorization": f"Bearer {TOKEN}"}, 200, None),
        ],
    )
    def test_token_check(
        self, headers: dict[str, str], status: int, body: Any, server: ServerHandle
    ) -> None:
        """Missing or wrong token → 401, empty → 404, Bearer accepted, as on GitLab."""
        response = httpx.get(f"{server.url}/api/v4/user", headers=headers)
        assert response.status_code == status
        if body is not None:
            assert response.json() == body

    def test_unencoded_project_path_is_not_found(self, server: ServerHandle) -> None:
        """``/projects/group/app`` (slash not encoded) is a different path: 404."""
        response = httpx.get(
            f"{server.url}/api/v4/projects/group/app", headers={"PRIVATE-TOKEN": TOKEN}
        )
        assert response.status_code == 404

    def test_members_api_reports_the_access_level_and_404_for_others(
        self, standin: GitLabStandin, server: ServerHandle
    ) -> None:
        """``members/all/:user_id``: the member with ``access_level``; a non-member gets 404,
        which the client raises as ``GitLabError`` (and audits as ``not_found``)."""
        standin.add_member(PROJECT, 6, "mia", 40)
        with capture_events() as (logger, sink):

            async def ask(client: GitLabClient) -> Any:
                found = await client.get_project_member(PROJECT, 6)
                with pytest.raises(GitLabError) as missing:
                    await client.get_project_member(PROJECT, 77)
                return found, missing.value

            found, missing = call(make_client(server.url, logger), ask)
            logged = entries(logger, sink)
        assert (found["username"], found["access_level"]) == ("mia", 40)
        assert missing.status_code == 404
        assert [(e["action"], e["outcome"], e.get("error")) for e in logged] == [
            ("gitlab.api.get_project_member", "success", None),
            ("gitlab.api.get_project_member", "failure", "not_found"),
        ]
        assert logged[1]["target"] == {
            "resource_type": "project_member",
            "project_id": PROJECT,
            "user_id": 77,
        }

    def test_an_mr_on_a_git_server_reports_the_live_head(
        self, standin: GitLabStandin, server: ServerHandle
    ) -> None:
        """With ``head=``, ``sha`` and ``diff_refs.head_sha`` are asked at each request."""
        heads = iter(["a" * 40, "b" * 40])
        current = {"sha": next(heads)}
        standin.add_project(43, "group/lib", http_url_to_repo="http://127.0.0.1:1/group/lib.git")
        standin.add_merge_request(43, 1, files=[], head=lambda: current["sha"])
        url = f"{server.url}/api/v4/projects/43/merge_requests/1"
        first = httpx.get(url, headers={"PRIVATE-TOKEN": TOKEN}).json()
        current["sha"] = next(heads)
        second = httpx.get(url, headers={"PRIVATE-TOKEN": TOKEN}).json()
        project = httpx.get(f"{server.url}/api/v4/projects/43", headers={"PRIVATE-TOKEN": TOKEN})
        assert (first["sha"], first["diff_refs"]["head_sha"]) == ("a" * 40, "a" * 40)
        assert (second["sha"], second["diff_refs"]["head_sha"]) == ("b" * 40, "b" * 40)
        assert standin.merge_request(43, 1)["sha"] == "b" * 40
        assert project.json()["http_url_to_repo"] == "http://127.0.0.1:1/group/lib.git"


class TestMergeRequestsTheAgentOpens:
    def test_a_draft_mr_is_opened_and_its_iid_audited(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """``Draft: `` prefix (GitLab's draft marker), never doubled; the entry names the new MR."""
        logger, sink = audit

        async def open_two(client: GitLabClient) -> list[dict[str, Any]]:
            first = await client.create_merge_request(
                PROJECT, source_branch="feature/docs", target_branch="main", title="Docs"
            )
            await client.create_branch(PROJECT, branch="agent/PROJ-2", ref="main")
            second = await client.create_merge_request(
                PROJECT,
                source_branch="agent/PROJ-2",
                target_branch="main",
                title="draft: already marked",
            )
            third_branch = await client.create_branch(PROJECT, branch="agent/PROJ-3", ref="main")
            third = await client.create_merge_request(
                PROJECT,
                source_branch="agent/PROJ-3",
                target_branch="main",
                title="Ready",
                draft=False,
            )
            assert third["sha"] == third_branch["commit"]["id"]
            return [first, second, third]

        opened = call(make_client(server.url, logger), open_two)
        assert [(m["iid"], m["title"], m["draft"]) for m in opened] == [
            (11, "Draft: Docs", True),
            (12, "draft: already marked", True),
            (13, "Ready", False),
        ]
        assert standin.created_merge_requests(PROJECT) == opened
        creates = [e for e in entries(logger, sink) if e["action"].endswith("merge_request")]
        assert [
            (e["target"]["mr_iid"], e["target"]["draft"], e["http_status"]) for e in creates
        ] == [
            (11, True, 201),
            (12, True, 201),
            (13, False, 201),
        ]

    def test_a_second_mr_for_the_same_branch_is_refused_once(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """GitLab's 409 (array message) is a client_error, not retried, with no mr_iid."""
        logger, sink = audit
        with pytest.raises(GitLabError) as raised:
            call(
                make_client(server.url, logger),
                lambda c: c.create_merge_request(
                    PROJECT, source_branch="feature/search", target_branch="main", title="Again"
                ),
            )
        assert (raised.value.status_code, raised.value.audit_error_class) == (409, "client_error")
        assert "already exists for this source branch: !7" in raised.value.message
        (entry,) = entries(logger, sink)
        assert summary(entry) == (
            "gitlab.api.create_merge_request",
            "failure",
            "client_error",
            409,
            1,
        )
        assert "mr_iid" not in entry["target"]
        assert standin.created_merge_requests(PROJECT) == []

    def test_create_is_not_retried_after_a_5xx(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """GitLab may have opened it: one POST, one failure entry (the shared write policy)."""
        logger, sink = audit
        standin.faults.add(f"/projects/{PROJECT}/merge_requests", Fault.http(503), method="POST")
        with pytest.raises(GitLabError):
            call(
                make_client(server.url, logger),
                lambda c: c.create_merge_request(
                    PROJECT, source_branch="feature/docs", target_branch="main", title="Docs"
                ),
            )
        assert [r.method for r in standin.requests] == ["POST"]
        assert [summary(e) for e in entries(logger, sink)] == [
            ("gitlab.api.create_merge_request", "failure", "server_error", 503, 1)
        ]

    def test_list_filters_by_state_and_updated_after(
        self, standin: GitLabStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Open MRs only, least recently updated first; a watermark keeps the newer ones."""
        logger, sink = audit
        standin.touch_merge_request(PROJECT, 8, "2026-06-01T12:00:00.000Z")
        standin.touch_merge_request(PROJECT, 9, "2026-06-02T12:00:00.000Z")
        try:

            async def both(client: GitLabClient) -> tuple[list[int], list[int]]:
                everything = await client.list_merge_requests(PROJECT)
                newer = await client.list_merge_requests(
                    PROJECT, updated_after="2026-06-01T12:00:00Z"
                )
                return [m["iid"] for m in everything], [m["iid"] for m in newer]

            everything, newer = call(make_client(server.url, logger), both)
        finally:
            for iid in (8, 9):
                standin.touch_merge_request(PROJECT, iid, "2026-05-01T10:00:00.000Z")
        assert everything == [7, 8, 9]  # 10 is merged
        assert newer == [9]
        assert [r.query.split("&page=")[0] for r in standin.requests] == [
            "state=opened&order_by=updated_at&sort=asc",
            "state=opened&order_by=updated_at&sort=asc&updated_after=2026-06-01T12%3A00%3A00%2B00%3A00",
        ]
        assert [e["action"] for e in entries(logger, sink)] == [
            "gitlab.api.list_merge_requests"
        ] * 2

    def test_an_existing_branch_is_a_400(
        self, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """``Branch already exists``: what the Jira flow reads to pick the next branch name."""
        logger, sink = audit
        with pytest.raises(GitLabError) as raised:
            call(
                make_client(server.url, logger),
                lambda c: c.create_branch(PROJECT, branch="feature/search", ref="main"),
            )
        assert (raised.value.status_code, raised.value.message) == (400, "Branch already exists")
        (entry,) = entries(logger, sink)
        assert entry["target"] == {
            "resource_type": "branch",
            "project_id": PROJECT,
            "branch": "feature/search",
            "ref": "main",
        }

    @pytest.mark.parametrize(
        ("method", "kwargs"),
        [
            ("create_branch", {"branch": "a..b", "ref": "main"}),
            ("create_branch", {"branch": "-x", "ref": "main"}),
            ("create_branch", {"branch": "ok", "ref": "ma in"}),
            ("create_merge_request", {"source_branch": "a", "target_branch": "a", "title": "t"}),
            ("create_merge_request", {"source_branch": "a", "target_branch": "b", "title": " "}),
            ("list_merge_requests", {"state": "everything"}),
            ("list_merge_requests", {"updated_after": "yesterday"}),
            ("list_merge_requests", {"updated_after": "2026-06-01T12:00:00"}),
        ],
    )
    def test_bad_arguments_never_reach_gitlab(
        self,
        method: str,
        kwargs: dict[str, Any],
        standin: GitLabStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        logger, sink = audit
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            call(make_client(server.url, logger), invoke(method, (PROJECT,), kwargs))
        assert standin.requests == []
        assert entries(logger, sink) == []
