"""``JiraClient`` against the Jira stand-in on a real loopback socket.

Every test reads the real audit output (``auditkeep.testing.capture_events``),
validates it against the published schema and compares whole values. Failures
come from the stand-in's misbehaviour, the way Jira Cloud fails: its own 401
for a wrong token, 404 for an unknown issue, and scripted 403/410/429/5xx,
slow answers and resets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from agent_standins.faults import Fault
from agent_standins.jira import AGENT_ACCOUNT_ID, JiraStandin, adf_problem, adf_text
from agent_standins.servers import ServerHandle, run_in_thread
from auditkeep import Actor, correlation_scope, new_correlation_id
from auditkeep.logger import AuditLogger
from auditkeep.query import cli as auditkeep_cli
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import capture_events, validate_entries
from gitlab_copilot_agent.clients.jira import (
    MAX_COMMENT_CHARS,
    JiraClient,
    JiraError,
    JiraIssue,
    adf_document,
    wiki_document,
)
from gitlab_copilot_agent.settings import JiraSettings, Settings, SettingsError

EMAIL = "agent@example.com"
TOKEN = "ATATT3xFfGF0-Jira-Test-Secret-4b7e2a9d1c"
PAT = "NjM5OTk4-jira-dc-pat-Test-Secret-8e1f"
BASIC = base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
POLL = Actor("poll_cycle", "cycle-1")
ISSUES = 7
KEY = "PROJ-2"


@pytest.fixture(scope="module")
def standin() -> JiraStandin:
    jira = JiraStandin(email=EMAIL, token=TOKEN, pat=PAT)
    for n in range(1, ISSUES + 1):
        jira.add_issue(
            f"PROJ-{n}",
            summary=f"Issue {n}",
            description=f"Do thing {n}.\nSecond line.",
            reporter=("acct-reporter", "Rita Reporter"),
        )
    jira.add_issue("OTHER-1", summary="Elsewhere", status="In Progress")
    jira.add_comment_as("PROJ-3", "acct-approver", "Alex Approver", "/copilot approve task-1")
    return jira


@pytest.fixture(scope="module")
def server(standin: JiraStandin) -> Iterator[ServerHandle]:
    with run_in_thread(standin.app) as handle:
        yield handle


@pytest.fixture(scope="module")
def dc_standin() -> JiraStandin:
    """Jira Data Center: REST v2, wiki-markup bodies, the PAT as Bearer."""
    jira = JiraStandin(email=EMAIL, token=TOKEN, pat=PAT, data_center=True)
    for n in range(1, ISSUES + 1):
        jira.add_issue(f"PROJ-{n}", summary=f"Issue {n}", description=f"Do thing {n}.")
    jira.add_comment_as("PROJ-3", "jdoe", "Jane Doe", "/copilot approve task-1")
    return jira


@pytest.fixture(scope="module")
def dc_server(dc_standin: JiraStandin) -> Iterator[ServerHandle]:
    with run_in_thread(dc_standin.app) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh_standin(standin: JiraStandin, dc_standin: JiraStandin) -> None:
    standin.reset()
    dc_standin.reset()


@pytest.fixture
def audit() -> Iterator[tuple[AuditLogger, InMemorySink]]:
    with capture_events() as captured:
        yield captured


def make_client(url: str, logger: AuditLogger, **overrides: Any) -> JiraClient:
    auth = overrides.pop("auth", {"email": EMAIL, "api_token": TOKEN})
    section = JiraSettings(
        url=url,
        timeout_s=overrides.pop("timeout_s", 2.0),
        max_retries=overrides.pop("max_retries", 2),
        **auth,
    )
    options: dict[str, Any] = {
        "initial_backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "deadline_s": 10.0,
        **overrides,
    }
    return JiraClient(section, logger, **options)


def call(
    client: JiraClient,
    fn: Callable[[JiraClient], Awaitable[Any]],
    correlation_id: str | None = None,
) -> Any:
    """Run client calls inside a poll cycle's correlation scope, then close the client."""

    async def go() -> Any:
        try:
            with correlation_scope(POLL, correlation_id):
                return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def invoke(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[JiraClient], Awaitable[Any]]:
    def run(client: JiraClient) -> Awaitable[Any]:
        return getattr(client, name)(*args, **kwargs)  # type: ignore[no-any-return]

    return run


def entries(logger: AuditLogger, sink: InMemorySink) -> list[dict[str, Any]]:
    assert logger.flush(5.0)
    return validate_entries(sink.lines)


def summary(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (
        entry["action"],
        entry["outcome"],
        entry.get("error"),
        entry.get("http_status"),
        entry.get("details", {}).get("attempt"),
    )


ISSUE_TARGET = {"resource_type": "issue", "issue_key": KEY, "project_key": "PROJ"}
JQL = 'project = PROJ AND status = "To Do" ORDER BY created DESC'

# Every public API method of JiraClient: arguments, and the entries (action, target) it
# leaves. The enumeration test fails when a public method is missing here.
CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any], list[tuple[str, dict[str, Any]]]]] = {
    "search_issues": (
        (JQL,),
        {"project_key": "PROJ"},
        [("jira.api.search_issues", {"resource_type": "issue", "project_key": "PROJ"})],
    ),
    "get_issue": ((KEY,), {}, [("jira.api.get_issue", ISSUE_TARGET)]),
    "get_transitions": ((KEY,), {}, [("jira.api.get_transitions", ISSUE_TARGET)]),
    "transition_issue": (
        (KEY, "in progress"),
        {},
        [
            ("jira.api.get_transitions", ISSUE_TARGET),
            (
                "jira.api.transition_issue",
                {
                    **ISSUE_TARGET,
                    "transition_id": "21",
                    "transition_name": "In Progress",
                    "to_status": "In Progress",
                },
            ),
        ],
    ),
    "add_comment": ((KEY, "Picked up."), {}, [("jira.api.add_comment", ISSUE_TARGET)]),
    "list_comments": ((KEY,), {}, [("jira.api.list_comments", ISSUE_TARGET)]),
}
NOT_API_CALLS = {"aclose"}


def public_coroutines() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(JiraClient, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


class TestEveryPublicMethodIsAudited:
    def test_argument_table_covers_every_public_coroutine(self) -> None:
        """Adding a public method to JiraClient forces adding it to CALLS (or NOT_API_CALLS)."""
        public = public_coroutines()
        assert public - NOT_API_CALLS - set(CALLS) == set(), "add the new method to CALLS"
        assert set(CALLS) - public == set(), "CALLS names a method that no longer exists"

    @pytest.mark.parametrize("method", sorted(CALLS))
    def test_each_method_emits_its_entries_with_their_targets(
        self, method: str, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Called for real: exactly the expected mapped ``jira.api.*`` entries, schema-valid,
        successful, attempt 1, with the poll cycle's actor; none unmapped."""
        logger, sink = audit
        args, kwargs, expected = CALLS[method]
        call(make_client(server.url, logger), invoke(method, args, kwargs))
        found = entries(logger, sink)
        assert [(e["action"], e["target"]) for e in found] == expected
        assert all(e["outcome"] == "success" and e["details"]["attempt"] == 1 for e in found)
        assert all(e["actor"] == {"type": "poll_cycle", "id": "cycle-1"} for e in found)
        assert all(e["duration_ms"] > 0 and e["http_status"] in (200, 201, 204) for e in found)


class TestActions:
    def test_search_follows_next_page_tokens(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """7 issues by pages of 3: three requests to /search/jql, the token carried, one entry
        each (``details.page``, the JQL); every issue of the project, none of OTHER."""
        logger, sink = audit
        found = call(make_client(server.url, logger), lambda c: c.search_issues(JQL, page_size=3))
        assert sorted(i.key for i in found) == sorted(f"PROJ-{n}" for n in range(1, ISSUES + 1))
        assert found[-1] == JiraIssue(
            "PROJ-1", "PROJ", "Issue 1", "Do thing 1.\nSecond line.", "To Do", "acct-reporter"
        )
        assert [(r.method, r.path, r.query) for r in standin.requests] == [
            ("POST", "/rest/api/3/search/jql", "")
        ] * 3
        bodies = [orjson.loads(r.body) for r in standin.requests]
        assert [b["jql"] for b in bodies] == [JQL] * 3
        assert "nextPageToken" not in bodies[0]
        assert all(b["nextPageToken"] for b in bodies[1:])
        assert [(e["details"]["page"], e["details"]["jql"]) for e in entries(logger, sink)] == [
            (1, JQL),
            (2, JQL),
            (3, JQL),
        ]

    def test_search_is_bounded_by_max_issues(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """max_issues=4 by pages of 3: two requests, the second asking for 1; four issues."""
        logger, sink = audit
        found = call(
            make_client(server.url, logger),
            lambda c: c.search_issues(JQL, page_size=3, max_issues=4),
        )
        assert len(found) == 4
        assert [orjson.loads(r.body)["maxResults"] for r in standin.requests] == [3, 1]
        assert len(entries(logger, sink)) == 2

    def test_a_repeated_page_token_is_an_error_not_a_loop(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A server that hands out the same nextPageToken forever: validation_error at page 3."""
        logger, sink = audit
        page = {"issues": [], "nextPageToken": "same", "isLast": False}
        standin.faults.add("/search/jql", Fault.http(200, body=orjson.dumps(page)))
        with pytest.raises(JiraError) as raised:
            call(make_client(server.url, logger), lambda c: c.search_issues(JQL))
        assert raised.value.audit_error_class == "validation_error"
        assert len(standin.requests) == 2
        assert len(entries(logger, sink)) == 2

    def test_get_issue_reads_adf_description_as_text(
        self, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Lower-case keys are upper-cased; the ADF description comes back as plain lines."""
        logger, _sink = audit
        issue = call(make_client(server.url, logger), lambda c: c.get_issue("proj-2"))
        assert issue == JiraIssue(
            "PROJ-2", "PROJ", "Issue 2", "Do thing 2.\nSecond line.", "To Do", "acct-reporter"
        )

    def test_transition_by_status_name_is_case_insensitive(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """``in review`` finds the transition to ``In Review``; its id is posted; 204."""
        logger, sink = audit
        chosen = call(
            make_client(server.url, logger), lambda c: c.transition_issue(KEY, "IN review")
        )
        assert (chosen.id, chosen.to_status) == ("31", "In Review")
        assert standin.transitions_done(KEY) == [("To Do", "In Review")]
        posted = standin.requests[-1]
        assert (posted.method, orjson.loads(posted.body)) == (
            "POST",
            {"transition": {"id": "31"}},
        )
        assert entries(logger, sink)[-1]["http_status"] == 204

    def test_no_transition_to_the_status_posts_nothing(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """An unknown target status: ``not_found``, the offer named, only the GET sent."""
        logger, sink = audit
        with pytest.raises(JiraError) as raised:
            call(make_client(server.url, logger), lambda c: c.transition_issue(KEY, "Shipped"))
        assert raised.value.audit_error_class == "not_found"
        assert "Done, In Progress, In Review" in raised.value.message
        assert [r.method for r in standin.requests] == ["GET"]
        assert [e["action"] for e in entries(logger, sink)] == ["jira.api.get_transitions"]
        assert standin.status_of(KEY) == "To Do"

    def test_comment_is_adf_the_stand_in_accepts(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Plain text plus the agent's MR link: one paragraph per line, the link the only mark."""
        logger, sink = audit
        text = "Opened a draft MR.\n\nReview it there."
        url = "https://gitlab.example.com/group/app/-/merge_requests/7"
        comment_id = call(
            make_client(server.url, logger), lambda c: c.add_comment(KEY, text, link=url)
        )
        (posted,) = standin.comments(KEY)
        assert posted["id"] == comment_id
        assert posted["author"]["accountId"] == AGENT_ACCOUNT_ID
        assert posted["body"] == {
            "type": "doc",
            "version": 1,
            "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": "Opened a draft MR."}]},
                {"type": "paragraph", "content": []},
                {"type": "paragraph", "content": [{"type": "text", "text": "Review it there."}]},
                {
                    "type": "paragraph",
                    "content": [
                        {
                            "type": "text",
                            "text": url,
                            "marks": [{"type": "link", "attrs": {"href": url}}],
                        }
                    ],
                },
            ],
        }
        (entry,) = entries(logger, sink)
        assert entry["details"] == {
            "method": "POST",
            "body_chars": len(text),
            "has_link": True,
            "attempt": 1,
        }

    def test_untrusted_text_stays_text(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Markdown, wiki markup, HTML, ADF JSON and control characters: no mark, no node,
        no link; the text reads back as sent (controls replaced)."""
        logger, _sink = audit
        hostile = (
            '[click](javascript:alert(1)) **bold** {code}x{code} <a href="http://evil">e</a>\n'
            '{"type": "mention", "attrs": {"id": "all"}} \x00\x1b[31m \u2028 "quote" \\ end'
        )
        call(make_client(server.url, logger), lambda c: c.add_comment(KEY, hostile))
        (posted,) = standin.comments(KEY)
        nodes = [n for p in posted["body"]["content"] for n in p["content"]]
        assert {n["type"] for n in nodes} == {"text"}
        assert all("marks" not in n for n in nodes)
        expected = hostile.replace("\x00", "\ufffd").replace("\x1b", "\ufffd")
        assert standin.comment_texts(KEY) == [expected.replace("\u2028", "\ufffd")]

    def test_a_long_comment_is_cut_to_what_jira_accepts(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """40,000 characters (Jira refuses more than 32,767): sent cut, accepted, marked."""
        logger, _sink = audit
        call(make_client(server.url, logger), lambda c: c.add_comment(KEY, "x" * 40_000))
        (text,) = standin.comment_texts(KEY)
        assert len(text) == MAX_COMMENT_CHARS
        assert text.endswith("…")

    def test_comments_are_listed_oldest_first_with_their_authors(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A human's comment and the agent's, in order, as plain text with account ids."""
        logger, _sink = audit

        async def both(client: JiraClient) -> Any:
            await client.add_comment("PROJ-3", "Waiting for approval.")
            return await client.list_comments("PROJ-3")

        found = call(make_client(server.url, logger), both)
        assert [(c.author_account_id, c.author_name, c.text) for c in found] == [
            ("acct-approver", "Alex Approver", "/copilot approve task-1"),
            (AGENT_ACCOUNT_ID, "Copilot Agent", "Waiting for approval."),
        ]

    def test_a_scoped_token_base_url_keeps_its_path(
        self, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """``https://api.atlassian.com/ex/jira/<cloudId>``: requests go under its path and
        are still mapped to their actions (not ``jira.api.unmapped``)."""
        logger, sink = audit
        seen: list[str] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            body = {"key": KEY, "fields": {"summary": "s", "status": {"name": "To Do"}}}
            return httpx.Response(200, json=body)

        section = JiraSettings(
            url="https://api.atlassian.com/ex/jira/11223344-aaaa-bbbb-cccc-ddddeeeeffff",
            email=EMAIL,
            api_token=SecretStr(TOKEN),
        )
        client = JiraClient(section, logger, transport=httpx.MockTransport(answer))
        issue = call(client, lambda c: c.get_issue(KEY))
        assert (issue.key, issue.project_key, issue.description) == (KEY, "PROJ", "")
        assert seen == [
            "https://api.atlassian.com/ex/jira/11223344-aaaa-bbbb-cccc-ddddeeeeffff"
            f"/rest/api/3/issue/{KEY}?fields=summary%2Cstatus%2Cdescription%2Cproject%2Creporter"
        ]
        assert [(e["action"], e["target"]) for e in entries(logger, sink)] == [
            ("jira.api.get_issue", ISSUE_TARGET)
        ]

    @pytest.mark.parametrize(
        ("method", "args", "kwargs"),
        [
            ("get_issue", ("../../myself",), {}),
            ("get_issue", ("PROJ-0",), {}),
            ("get_issue", ("PROJ",), {}),
            ("add_comment", (KEY, "   "), {}),
            ("add_comment", (KEY, "x"), {"link": "javascript:alert(1)"}),
            ("add_comment", (KEY, "x"), {"link": "https://user:pw@host/x"}),
            ("transition_issue", (KEY, "  "), {}),
            ("search_issues", ("",), {}),
            ("search_issues", ("x" * 4001,), {}),
            ("search_issues", (JQL,), {"page_size": 0}),
            ("search_issues", (JQL,), {"max_issues": 10_000}),
            ("search_issues", (JQL,), {"fields": ["summary&expand=x"]}),
            ("search_issues", (JQL,), {"project_key": "proj-1"}),
        ],
    )
    def test_bad_arguments_are_refused_before_any_request(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        standin: JiraStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        logger, sink = audit
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            call(make_client(server.url, logger), invoke(method, args, kwargs))
        assert standin.requests == []
        assert entries(logger, sink) == []


class TestAdfDocument:
    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(st.text(min_size=1, max_size=300).filter(lambda t: t.strip()))
    def test_any_text_is_a_valid_markless_document(self, text: str) -> None:
        """Whatever the text: valid ADF for the stand-in's validator, text nodes without
        marks only, and its plain text is the input with line ends and controls normalised."""
        document = adf_document(text)
        assert adf_problem(document) is None
        nodes = [n for p in document["content"] for n in p["content"]]
        assert all(n["type"] == "text" and "marks" not in n and n["text"] for n in nodes)
        normalised = text.replace("\r\n", "\n").replace("\r", "\n")
        assert len(adf_text(document)) == len(normalised)
        assert orjson.loads(orjson.dumps(document)) == document

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.sampled_from(["{noformat}", "{NoFormat", "{code}", "[x|http://e]", "*", "\n", "a"])
            | st.text(max_size=20),
            min_size=1,
            max_size=12,
        )
        .map("".join)
        .filter(lambda t: t.strip())
    )
    def test_any_text_stays_inside_one_noformat_block(self, text: str) -> None:
        """Data Center: exactly the two fences end or open a block, whatever the text."""
        body = wiki_document(text)
        assert len(re.findall(r"\{noformat", body, re.IGNORECASE)) == 2
        assert body.startswith("{noformat}\n")
        assert body.endswith("\n{noformat}")
        inner = body[len("{noformat}\n") : -len("\n{noformat}")]
        normalised = text.replace("\r\n", "\n").replace("\r", "\n")
        forged = len(re.findall(r"\{noformat", normalised, re.IGNORECASE))
        assert len(inner) == len(normalised) + forged  # one zero-width space each


class TestErrorClasses:
    @pytest.mark.parametrize(
        ("status", "error", "message"),
        [
            (403, "auth_failure", "You do not have the permission to perform this action."),
            (404, "not_found", "Issue does not exist or you do not have permission to see it."),
            (410, "client_error", "The requested API has been removed."),
            (500, "server_error", "Internal Server Error"),
        ],
    )
    def test_final_errors_are_not_retried(
        self,
        status: int,
        error: str,
        message: str,
        standin: JiraStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """403/404/410/500 in Jira's ``errorMessages`` shape: one attempt, the matching class."""
        logger, sink = audit
        standin.faults.add("/search/jql", Fault.http(status))
        with pytest.raises(JiraError) as raised:
            call(make_client(server.url, logger), lambda c: c.search_issues(JQL))
        assert raised.value.status_code == status
        assert raised.value.message.startswith(message)
        assert raised.value.audit_error_class == error
        assert [summary(e) for e in entries(logger, sink)] == [
            ("jira.api.search_issues", "failure", error, status, 1)
        ]

    def test_the_removed_search_endpoint_answers_410(self, server: ServerHandle) -> None:
        """The stand-in's own ``/rest/api/3/search`` is gone, as on Jira Cloud since 2025."""
        auth = {"Authorization": f"Basic {BASIC}"}
        for method, path in (("GET", "/search"), ("POST", "/search"), ("POST", "/search/id")):
            answer = httpx.request(method, f"{server.url}/rest/api/3{path}", headers=auth)
            assert answer.status_code == 410
            assert "migrate to the /rest/api/3/search/jql" in answer.json()["errorMessages"][0]

    def test_wrong_token_is_an_auth_failure(
        self, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """The stand-in's own credential check: Jira's 401 body, ``auth_failure``, no retry."""
        logger, sink = audit
        client = make_client(
            server.url, logger, auth={"email": EMAIL, "api_token": "ATATT-wrong-token-000"}
        )
        with pytest.raises(JiraError) as raised:
            call(client, lambda c: c.get_issue(KEY))
        assert (raised.value.status_code, raised.value.message) == (
            401,
            "Client must be authenticated to access this resource.",
        )
        assert [summary(e) for e in entries(logger, sink)] == [
            ("jira.api.get_issue", "failure", "auth_failure", 401, 1)
        ]

    def test_unknown_issue_is_not_found(
        self, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        logger, sink = audit
        with pytest.raises(JiraError) as raised:
            call(make_client(server.url, logger), lambda c: c.get_issue("PROJ-999"))
        assert raised.value.audit_error_class == "not_found"
        (entry,) = entries(logger, sink)
        assert entry["target"] == {
            "resource_type": "issue",
            "issue_key": "PROJ-999",
            "project_key": "PROJ",
        }

    def test_rate_limit_waits_for_retry_after(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """429 with Retry-After: 1 and RateLimit-Reason: the retry comes ≥ 1 s later."""
        logger, sink = audit
        standin.faults.add(f"/issue/{KEY}", Fault.http(429, retry_after_s=1), times=1)
        issue = call(make_client(server.url, logger), lambda c: c.get_issue(KEY))
        first, second = standin.requests
        found = entries(logger, sink)
        assert issue.key == KEY
        assert second.received_at - first.received_at >= 1.0
        assert [summary(e) for e in found] == [
            ("jira.api.get_issue", "failure", "rate_limit", 429, 1),
            ("jira.api.get_issue", "success", None, 200, 2),
        ]
        assert found[0]["details"]["retry_after"] == "1"
        assert found[0]["details"]["ratelimit_reason"] == "jira-burst-based"

    def test_rate_limit_every_time_gives_up_as_rate_limit(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        logger, sink = audit
        standin.faults.add("/search/jql", Fault.http(429, retry_after_s=0))
        with pytest.raises(JiraError) as raised:
            call(make_client(server.url, logger), lambda c: c.search_issues(JQL))
        assert raised.value.audit_error_class == "rate_limit"
        assert [summary(e)[2:] for e in entries(logger, sink)] == [
            ("rate_limit", 429, n) for n in (1, 2, 3)
        ]

    def test_gateway_errors_on_a_read_recover(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """502 (HTML from the edge) then 503: retried, then the answer; three entries."""
        logger, sink = audit
        standin.faults.add(f"/issue/{KEY}/transitions", Fault.http(502), times=1)
        standin.faults.add(f"/issue/{KEY}/transitions", Fault.http(503), times=1)
        offered = call(make_client(server.url, logger), lambda c: c.get_transitions(KEY))
        assert [t.to_status for t in offered] == ["In Progress", "In Review", "Done"]
        assert [summary(e) for e in entries(logger, sink)] == [
            ("jira.api.get_transitions", "failure", "server_error", 502, 1),
            ("jira.api.get_transitions", "failure", "server_error", 503, 2),
            ("jira.api.get_transitions", "success", None, 200, 3),
        ]

    @pytest.mark.parametrize(
        ("fault", "error", "status"),
        [(Fault.http(503), "server_error", 503), (Fault.slow(3.0), "timeout", None)],
        ids=["503", "timeout"],
    )
    def test_writes_are_not_retried_when_jira_may_have_acted(
        self,
        fault: Fault,
        error: str,
        status: int | None,
        standin: JiraStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """A comment POST that may have been processed is sent once: no duplicate comments."""
        logger, sink = audit
        standin.faults.add("/issue/*/comment", fault, method="POST")
        client = make_client(server.url, logger, timeout_s=0.3)
        with pytest.raises(JiraError) as raised:
            call(client, lambda c: c.add_comment(KEY, "Once."))
        assert raised.value.audit_error_class == error
        assert [r.method for r in standin.requests] == ["POST"]
        assert [summary(e) for e in entries(logger, sink)] == [
            ("jira.api.add_comment", "failure", error, status, 1)
        ]

    def test_a_refused_comment_is_sent_again_and_posted_once(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        logger, sink = audit
        standin.faults.add("/issue/*/comment", Fault.http(429, retry_after_s=0), times=1)
        call(make_client(server.url, logger), lambda c: c.add_comment(KEY, "Once."))
        assert standin.comment_texts(KEY) == ["Once."]
        assert [summary(e) for e in entries(logger, sink)] == [
            ("jira.api.add_comment", "failure", "rate_limit", 429, 1),
            ("jira.api.add_comment", "success", None, 201, 2),
        ]

    def test_slow_read_is_a_timeout_after_its_retries(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        logger, sink = audit
        standin.faults.add(f"/issue/{KEY}", Fault.slow(3.0))
        client = make_client(server.url, logger, timeout_s=0.2, max_retries=1)
        with pytest.raises(JiraError) as raised:
            call(client, lambda c: c.get_issue(KEY))
        assert (raised.value.status_code, raised.value.audit_error_class) == (None, "timeout")
        assert [summary(e) for e in entries(logger, sink)] == [
            ("jira.api.get_issue", "failure", "timeout", None, n) for n in (1, 2)
        ]

    def test_connection_reset_is_a_network_error(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        logger, _sink = audit
        standin.faults.add(f"/issue/{KEY}", Fault.reset())
        with pytest.raises(JiraError) as raised:
            call(make_client(server.url, logger, max_retries=0), lambda c: c.get_issue(KEY))
        assert raised.value.audit_error_class == "network_error"

    def test_invalid_adf_is_a_client_error_with_jiras_message(
        self, standin: JiraStandin, server: ServerHandle
    ) -> None:
        """The stand-in validates ADF like Jira: a plain string body is a 400 ``errors.comment``."""
        answer = httpx.post(
            f"{server.url}/rest/api/3/issue/{KEY}/comment",
            headers={"Authorization": f"Basic {BASIC}"},
            json={"body": "plain text"},
        )
        assert (answer.status_code, answer.json()) == (
            400,
            {"errorMessages": [], "errors": {"comment": "Comment body is not valid!"}},
        )


class TestCorrelationAndSecrets:
    def test_correlation_id_reaches_jira_and_every_entry(
        self, standin: JiraStandin, server: ServerHandle, audit: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """One poll cycle's id on every request (``X-Correlation-ID``) and every entry."""
        logger, sink = audit

        async def cycle(client: JiraClient) -> None:
            for issue in await client.search_issues(JQL, max_issues=1):
                await client.transition_issue(issue.key, "In Progress")
                await client.add_comment(issue.key, "Working on it.")

        cid = new_correlation_id()
        call(make_client(server.url, logger), cycle, correlation_id=cid)
        found = entries(logger, sink)
        assert len(found) == 4
        assert {e["correlation_id"] for e in found} == {cid}
        assert {r.headers.get("x-correlation-id") for r in standin.requests} == {cid}
        assert {e["actor"]["type"] for e in found} == {"poll_cycle"}

    @pytest.mark.parametrize("auth", ["basic", "pat"])
    def test_the_credential_never_leaks(
        self,
        auth: str,
        request: pytest.FixtureRequest,
        audit: tuple[AuditLogger, InMemorySink],
        capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Jira echoes the Authorization header (token or PAT, and the Basic value that
        encodes the token) at every offset around the 500-character cut, in error bodies of
        every shape, and the JQL names it: no 8 characters of any of them in the exceptions,
        the entries (search entries included), our logs or the process output."""
        logger, sink = audit
        caplog.set_level(logging.DEBUG)
        cloud = auth == "basic"
        standin: JiraStandin = request.getfixturevalue("standin" if cloud else "dc_standin")
        server: ServerHandle = request.getfixturevalue("server" if cloud else "dc_server")
        secret = TOKEN if auth == "basic" else PAT
        header = f"Basic {BASIC}" if auth == "basic" else f"Bearer {PAT}"
        offsets = [*range(500 - len(header) - 2, 502), 0, 40]
        for offset in offsets:
            for status in (401, 400, 503):
                standin.faults.add(
                    f"/issue/{KEY}",
                    Fault.echo_header(status, "authorization", offset=offset, length=600),
                    times=1,
                )
        standin.faults.add(
            "/search/jql" if cloud else "/search",
            Fault.http(400, body=orjson.dumps({"errorMessages": [f"bad jql near {secret}"]})),
        )
        errors: list[JiraError] = []

        async def everything(client: JiraClient) -> None:
            for _ in range(len(offsets) * 3):
                try:
                    await client.get_issue(KEY)
                except JiraError as exc:
                    errors.append(exc)
            try:
                await client.search_issues(f'project = PROJ AND summary ~ "{secret}"')
            except JiraError as exc:
                errors.append(exc)
            await client.add_comment(KEY, f"the token is {secret} and {header}")

        client = make_client(
            server.url,
            logger,
            max_retries=0,
            auth={"email": EMAIL, "api_token": TOKEN} if auth == "basic" else {"pat": PAT},
        )
        assert secret not in repr(client)
        call(client, everything)
        found = entries(logger, sink)
        out, err = capfd.readouterr()
        texts = [f"{e}\n{e!r}\n{e.message}" for e in errors]
        texts += [b"\n".join(sink.lines).decode(), out, err, caplog.text]
        texts += standin.comment_texts(KEY)
        fragments = {value[i : i + 8] for value in (secret, BASIC) for i in range(len(value) - 7)}
        assert len(errors) == len(offsets) * 3 + 1
        assert any(e["action"] == "jira.api.search_issues" for e in found)
        assert [t[:200] for t in texts if any(f in t for f in fragments)] == []
        assert all(len(e.message) <= 500 for e in errors)


class TestSettings:
    BASE: ClassVar[dict[str, str]] = {
        "GITLAB_URL": "https://gitlab.example.com",
        "GITLAB_TOKEN": "glpat-settings-test-0000",
        "GITLAB_WEBHOOK_SECRET": "settings-test-secret",
    }

    @pytest.mark.parametrize(
        ("env", "problem"),
        [
            (
                {"JIRA_URL": "https://acme.atlassian.net"},
                "JIRA_API_TOKEN: required with JIRA_URL (or JIRA_PAT for Jira Data Center)",
            ),
            ({"JIRA_EMAIL": EMAIL}, "JIRA_URL: required when Jira credentials are set"),
            (
                {"JIRA_URL": "https://acme.atlassian.net", "JIRA_API_TOKEN": TOKEN},
                "JIRA_EMAIL: required with JIRA_API_TOKEN (Basic auth is email:token)",
            ),
            (
                {"JIRA_URL": "https://acme.atlassian.net", "JIRA_PAT": PAT, "JIRA_EMAIL": EMAIL},
                "JIRA_PAT: set JIRA_PAT or JIRA_EMAIL with JIRA_API_TOKEN, not both",
            ),
            (
                {"JIRA_URL": "ftp://acme", "JIRA_PAT": PAT},
                "JIRA_URL: must start with http:// or https://, got 'ftp://acme'",
            ),
            (
                {"JIRA_URL": "https://a.atlassian.net", "JIRA_PAT": PAT, "JIRA_TIMEOUT_S": "0"},
                "JIRA_TIMEOUT_S: must be more than 0 and at most 600 seconds, got 0",
            ),
            (
                {"JIRA_URL": "https://a.atlassian.net", "JIRA_PAT": PAT + "\n"},
                "JIRA_PAT: contains a control character (often a trailing newline, e.g. from "
                "echo into a secret file); store the value without it",
            ),
        ],
    )
    def test_misconfiguration_is_one_line_naming_the_variable(
        self, env: dict[str, str], problem: str
    ) -> None:
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**self.BASE, **env})
        assert str(raised.value) == problem
        assert "\n" not in str(raised.value)
        assert TOKEN not in str(raised.value)
        assert PAT not in str(raised.value)

    def test_jira_is_off_by_default_and_its_secrets_are_registered_when_on(self) -> None:
        assert Settings.from_env(self.BASE).jira.enabled is False
        loaded = Settings.from_env(
            {
                **self.BASE,
                "JIRA_URL": "https://acme.atlassian.net/",
                "JIRA_EMAIL": EMAIL,
                "JIRA_API_TOKEN": TOKEN,
            }
        )
        assert loaded.jira.url == "https://acme.atlassian.net"
        assert {TOKEN, BASIC} <= set(loaded.secrets())
        assert loaded.jira.authorization() == f"Basic {BASIC}"
        assert TOKEN not in loaded.summary()
        assert BASIC not in loaded.summary()
        assert "jira:           https://acme.atlassian.net, agent@example.com" in loaded.summary()
        data_center = Settings.from_env(
            {**self.BASE, "JIRA_URL": "https://jira.example.com", "JIRA_PAT": PAT}
        )
        assert PAT in data_center.secrets()
        assert data_center.jira.authorization() == f"Bearer {PAT}"
        assert PAT not in data_center.summary()
        assert "(Data Center, REST v2)" in data_center.summary()


class TestReportByActorType:
    def test_report_puts_webhook_and_poll_activity_side_by_side(
        self,
        standin: JiraStandin,
        server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
        tmp_path: Path,
        capsysbinary: pytest.CaptureFixture[bytes],
    ) -> None:
        """Real entries of the Jira client, two poll cycles and one webhook delivery, written
        to a trail: ``auditkeep report`` counts each actor type's entries, failures and
        correlation ids (cycles, deliveries) in its first section."""
        logger, sink = audit
        standin.faults.add("/issue/PROJ-999", Fault.http(404))

        async def activity(client: JiraClient) -> None:
            for cycle in ("cycle-1", "cycle-2"):
                with correlation_scope(Actor("poll_cycle", cycle)):
                    await client.search_issues(JQL)
            with correlation_scope(Actor("webhook_event", "delivery-1")):
                await client.get_issue(KEY)
                with contextlib.suppress(JiraError):
                    await client.get_issue("PROJ-999")

        asyncio.run(_closing(make_client(server.url, logger), activity))
        assert len(entries(logger, sink)) == 4  # flushed, and schema-valid
        trail = tmp_path / "audit.jsonl"
        trail.write_bytes(b"".join(line.rstrip(b"\n") + b"\n" for line in sink.lines))
        code = auditkeep_cli.main(["report", str(trail), "--format", "json"])
        report = orjson.loads(capsysbinary.readouterr().out)
        assert code == 0
        rows = {r["actor_type"]: r for r in report["by_actor_type"]}
        assert {k: (r["entries"], r["failures"], r["correlations"]) for k, r in rows.items()} == {
            "poll_cycle": (2, 0, 2),
            "webhook_event": (2, 1, 1),
        }
        assert all(r["p95_ms"] > 0 for r in rows.values())


async def _closing(client: JiraClient, fn: Callable[[JiraClient], Awaitable[None]]) -> None:
    try:
        await fn(client)
    finally:
        await client.aclose()


class TestDataCenter:
    """A ``JIRA_PAT`` means Jira Data Center: REST v2, the same actions and targets."""

    @pytest.mark.parametrize("method", sorted(CALLS))
    def test_each_method_emits_the_same_entries_on_rest_v2(
        self,
        method: str,
        dc_standin: JiraStandin,
        dc_server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        logger, sink = audit
        args, kwargs, expected = CALLS[method]
        call(make_client(dc_server.url, logger, auth={"pat": PAT}), invoke(method, args, kwargs))
        found = entries(logger, sink)
        assert [(e["action"], e["target"]) for e in found] == expected
        assert all(e["outcome"] == "success" for e in found)
        assert {r.path.split("/issue/")[0] for r in dc_standin.requests} <= {
            "/rest/api/2/search",
            "/rest/api/2",
        }
        assert {r.headers["authorization"] for r in dc_standin.requests} == {"Bearer [checked]"}

    def test_search_pages_by_start_at_up_to_total(
        self,
        dc_standin: JiraStandin,
        dc_server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        logger, sink = audit
        found = call(
            make_client(dc_server.url, logger, auth={"pat": PAT}),
            lambda c: c.search_issues(JQL, page_size=3),
        )
        assert sorted(i.key for i in found) == sorted(f"PROJ-{n}" for n in range(1, ISSUES + 1))
        assert found[-1].description == "Do thing 1."
        bodies = [orjson.loads(r.body) for r in dc_standin.requests]
        assert [(r.method, r.path) for r in dc_standin.requests] == [
            ("POST", "/rest/api/2/search")
        ] * 3
        assert [b["startAt"] for b in bodies] == [0, 3, 6]
        assert [e["details"]["page"] for e in entries(logger, sink)] == [1, 2, 3]

    def test_a_comment_is_wiki_markup_that_shows_the_text_literally(
        self,
        dc_standin: JiraStandin,
        dc_server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """``*bold*``, ``[x|url]``, ``{code}`` and a forged ``{noformat}`` end stay inside one
        ``{noformat}`` block; the MR link is the only link."""
        logger, _sink = audit
        hostile = "*bold* [x|http://evil] {code}y{code}\n{noFormat}\n!img.png! end"
        url = "https://gitlab.example.com/group/app/-/merge_requests/7"
        call(
            make_client(dc_server.url, logger, auth={"pat": PAT}),
            lambda c: c.add_comment(KEY, hostile, link=url),
        )
        (body,) = dc_standin.comment_texts(KEY)
        assert body == wiki_document(hostile, link=url)
        assert body.split("\n") == [
            "{noformat}",
            "*bold* [x|http://evil] {code}y{code}",
            "{\u200bnoFormat}",  # no longer the block's end
            "!img.png! end",
            "{noformat}",
            f"[{url}|{url}]",
        ]

    def test_comments_are_read_as_the_wiki_text(
        self,
        dc_standin: JiraStandin,
        dc_server: ServerHandle,
        audit: tuple[AuditLogger, InMemorySink],
    ) -> None:
        logger, _sink = audit
        found = call(
            make_client(dc_server.url, logger, auth={"pat": PAT}),
            lambda c: c.list_comments("PROJ-3"),
        )
        assert [(c.author_account_id, c.text) for c in found] == [
            ("jdoe", "/copilot approve task-1")
        ]

    def test_cloud_only_endpoints_are_absent(self, dc_server: ServerHandle) -> None:
        """The stand-in is Data Center: no /rest/api/3, no /search/jql (the client never asks)."""
        auth = {"Authorization": f"Bearer {PAT}"}
        assert httpx.get(f"{dc_server.url}/rest/api/3/issue/{KEY}", headers=auth).status_code == 404
        assert (
            httpx.post(f"{dc_server.url}/rest/api/2/search/jql", headers=auth, json={}).status_code
            == 404
        )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "key",
                    "id",
                    "fields",
                    "issues",
                    "transitions",
                    "comments",
                    "to",
                    "name",
                    "status",
                    "project",
                    "summary",
                    "description",
                    "content",
                    "type",
                    "text",
                    "nextPageToken",
                    "isLast",
                    "total",
                    "author",
                    "body",
                    "accountId",
                    "reporter",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


class TestHostileAnswers:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        body=JSON,
        method=st.sampled_from(
            ["get_issue", "get_transitions", "search_issues", "list_comments", "add_comment"]
        ),
        data_center=st.booleans(),
    )
    def test_any_json_answer_is_a_result_or_a_jira_error(
        self, body: Any, method: str, data_center: bool
    ) -> None:
        """Whatever JSON a 2xx carries, a call returns or raises ``JiraError``
        (``validation_error``), never a ``TypeError``/``KeyError``/``AttributeError``."""
        answer = json.dumps(body).encode()  # stdlib: big integers too, as a server may send
        section = JiraSettings(
            url="https://jira.example.com",
            **({"pat": SecretStr(PAT)} if data_center else {"email": EMAIL, "api_token": TOKEN}),
            max_retries=0,
        )
        args: dict[str, tuple[Any, ...]] = {
            "get_issue": (KEY,),
            "get_transitions": (KEY,),
            "search_issues": (JQL,),
            "list_comments": (KEY,),
            "add_comment": (KEY, "x"),
        }
        with capture_events() as (logger, _sink):
            client = JiraClient(
                section,
                logger,
                transport=httpx.MockTransport(lambda r: httpx.Response(200, content=answer)),
            )

            async def go() -> str | None:
                try:
                    await getattr(client, method)(*args[method])
                except JiraError as exc:
                    return exc.audit_error_class
                finally:
                    await client.aclose()
                return None

            assert asyncio.run(go()) in (None, "validation_error")
