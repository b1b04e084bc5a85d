"""The Jira stand-in over a real loopback socket: Jira Cloud's REST v3 shapes and failures."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from agent_standins.faults import Fault
from agent_standins.jira import (
    DEFAULT_EMAIL,
    DEFAULT_TOKEN,
    REMOVED_MESSAGE,
    JiraStandin,
    adf_problem,
)
from agent_standins.servers import ServerHandle, run_in_thread

BASIC = {
    "Authorization": "Basic "
    + base64.b64encode(f"{DEFAULT_EMAIL}:{DEFAULT_TOKEN}".encode()).decode()
}
PAT = "jira-dc-pat-standin-0123456789"
API = "/rest/api/3"


@pytest.fixture(scope="module")
def jira() -> JiraStandin:
    standin = JiraStandin(pat=PAT)
    for n in range(1, 6):
        standin.add_issue(f"APP-{n}", summary=f"Task {n}", description=f"Line {n}")
    standin.add_issue("APP-9", summary="Started", status="In Progress")
    standin.add_issue("OPS-1", summary="Other project")
    standin.add_comment_as("APP-1", "acct-1", "Ann", "first")
    return standin


@pytest.fixture(scope="module")
def server(jira: JiraStandin) -> Iterator[ServerHandle]:
    with run_in_thread(jira.app) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(jira: JiraStandin) -> None:
    jira.reset()


def ask(server: ServerHandle, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", BASIC)
    return httpx.request(method, f"{server.url}{API}{path}", headers=headers, **kwargs)


def search(server: ServerHandle, **body: Any) -> httpx.Response:
    return ask(server, "POST", "/search/jql", json=body)


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Basic " + base64.b64encode(b"agent@example.com:wrong").decode()},
            {"Authorization": "Basic not-base64!"},
            {"Authorization": "Bearer wrong-pat-000000000000"},
            {"Authorization": f"Token {DEFAULT_TOKEN}"},
        ],
        ids=["none", "wrong-token", "garbage", "wrong-pat", "other-scheme"],
    )
    def test_anything_but_the_credential_is_jiras_401(
        self, server: ServerHandle, headers: dict[str, str]
    ) -> None:
        answer = ask(server, "GET", "/issue/APP-1", headers=headers)
        assert (answer.status_code, answer.json()) == (
            401,
            {
                "message": "Client must be authenticated to access this resource.",
                "status-code": 401,
            },
        )

    def test_basic_and_bearer_pat_are_accepted(self, server: ServerHandle) -> None:
        assert ask(server, "GET", "/issue/APP-1").status_code == 200
        bearer = {"Authorization": f"Bearer {PAT}"}
        assert ask(server, "GET", "/issue/APP-1", headers=bearer).status_code == 200

    def test_recorded_requests_never_hold_the_credential(
        self, jira: JiraStandin, server: ServerHandle
    ) -> None:
        ask(server, "GET", "/issue/APP-1")
        ask(server, "GET", "/issue/APP-1", headers={"Authorization": f"Bearer {PAT}"})
        assert [r.headers["authorization"] for r in jira.requests] == [
            "Basic [checked]",
            "Bearer [checked]",
        ]


class TestSearch:
    def test_next_page_token_paging_without_total(self, server: ServerHandle) -> None:
        """5 issues by pages of 2: tokens until ``isLast``; no ``total``/``startAt``."""
        pages: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            body: dict[str, Any] = {"jql": "project = APP AND status = 'To Do'", "maxResults": 2}
            body["fields"] = ["summary"]
            if token:
                body["nextPageToken"] = token
            page = search(server, **body).json()
            pages.append(page)
            if page["isLast"]:
                break
            token = page["nextPageToken"]
        assert [len(p["issues"]) for p in pages] == [2, 2, 1]
        assert [p["isLast"] for p in pages] == [False, False, True]
        assert "nextPageToken" not in pages[-1]
        assert all("total" not in p and "startAt" not in p for p in pages)
        keys = [i["key"] for p in pages for i in p["issues"]]
        assert sorted(keys) == [f"APP-{n}" for n in range(1, 6)]
        assert set(pages[0]["issues"][0]["fields"]) == {"summary"}

    def test_default_fields_are_id_only_and_get_works_too(self, server: ServerHandle) -> None:
        """As on Jira Cloud: without ``fields`` an issue is just its id (GET or POST)."""
        answer = ask(server, "GET", "/search/jql", params={"jql": "key = APP-2"})
        assert answer.json()["issues"] == [{"id": answer.json()["issues"][0]["id"]}]
        assert set(search(server, jql="key = APP-2").json()["issues"][0]) == {"id"}

    @pytest.mark.parametrize(
        ("jql", "keys"),
        [
            ('project IN (APP, OPS) AND status = "In Progress"', ["APP-9"]),
            ("project = ops", ["OPS-1"]),
            ("status in ('In Progress', 'Done') AND project = APP ORDER BY created", ["APP-9"]),
        ],
    )
    def test_the_jql_the_agent_writes(
        self, server: ServerHandle, jql: str, keys: list[str]
    ) -> None:
        found = search(server, jql=jql, fields=["status"]).json()["issues"]
        assert [i["key"] for i in found] == keys

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"jql": ""}, "Unbounded JQL queries are not allowed here."),
            ({"jql": "summary ~ x"}, "Error in the JQL Query"),
            ({"jql": "project = APP", "nextPageToken": "nope"}, "nextPageToken"),
        ],
    )
    def test_bad_searches_are_400_with_error_messages(
        self, server: ServerHandle, body: dict[str, Any], message: str
    ) -> None:
        answer = search(server, **body)
        assert answer.status_code == 400
        assert message in answer.json()["errorMessages"][0]
        assert answer.json()["errors"] == {}

    @pytest.mark.parametrize(("method", "path"), [("GET", "/search"), ("POST", "/search/id")])
    def test_the_removed_search_is_410_gone(
        self, server: ServerHandle, method: str, path: str
    ) -> None:
        answer = ask(server, method, path, params={"jql": "project = APP"})
        assert (answer.status_code, answer.json()) == (
            410,
            {"errorMessages": [REMOVED_MESSAGE], "errors": {}},
        )


class TestIssuesTransitionsComments:
    def test_issue_shape(self, server: ServerHandle) -> None:
        issue = ask(server, "GET", "/issue/APP-1").json()
        assert issue["key"] == "APP-1"
        assert issue["fields"]["status"]["name"] == "To Do"
        assert issue["fields"]["status"]["statusCategory"]["key"] == "new"
        assert issue["fields"]["project"]["key"] == "APP"
        assert issue["fields"]["description"] == {
            "type": "doc",
            "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Line 1"}]}],
        }
        only = ask(server, "GET", "/issue/APP-1", params={"fields": "summary"}).json()
        assert only["fields"] == {"summary": "Task 1"}

    def test_unknown_issue_is_404(self, server: ServerHandle) -> None:
        answer = ask(server, "GET", "/issue/APP-404")
        assert answer.json() == {
            "errorMessages": ["Issue does not exist or you do not have permission to see it."],
            "errors": {},
        }

    def test_transitions_and_a_204_with_an_empty_body(
        self, jira: JiraStandin, server: ServerHandle
    ) -> None:
        offered = ask(server, "GET", "/issue/APP-1/transitions").json()
        assert offered["expand"] == "transitions"
        assert [(t["id"], t["name"], t["to"]["name"]) for t in offered["transitions"]] == [
            ("21", "In Progress", "In Progress"),
            ("31", "In Review", "In Review"),
            ("41", "Done", "Done"),
        ]
        moved = ask(server, "POST", "/issue/APP-1/transitions", json={"transition": {"id": "21"}})
        assert (moved.status_code, moved.content) == (204, b"")
        assert jira.status_of("APP-1") == "In Progress"
        refused = ask(server, "POST", "/issue/APP-1/transitions", json={"transition": {"id": "21"}})
        assert refused.status_code == 400
        assert refused.json()["errorMessages"] == [
            "Transition id '21' is not valid for this issue."
        ]
        jira.reset()
        assert jira.status_of("APP-1") == "To Do"

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("plain text", "Comment body is not valid!"),
            ({"type": "doc", "version": 1, "content": [{"type": "script"}]}, "not valid"),
            (
                {
                    "type": "doc",
                    "version": 1,
                    "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}],
                },
                "not valid",
            ),
            (
                {
                    "type": "doc",
                    "version": 1,
                    "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "x" * 32_768}]}
                    ],
                },
                "exceeds the allowed limit of 32,767 characters",
            ),
        ],
        ids=["string", "unknown-node", "empty-text", "too-long"],
    )
    def test_comments_must_be_valid_adf(
        self, server: ServerHandle, body: Any, message: str
    ) -> None:
        answer = ask(server, "POST", "/issue/APP-1/comment", json={"body": body})
        assert answer.status_code == 400
        assert message in answer.json()["errors"]["comment"]

    def test_a_comment_is_201_and_listed_after_the_seeded_one(
        self, jira: JiraStandin, server: ServerHandle
    ) -> None:
        doc = {
            "type": "doc",
            "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": "hi"}]}],
        }
        created = ask(server, "POST", "/issue/APP-1/comment", json={"body": doc})
        assert created.status_code == 201
        assert {"id", "self", "author", "body", "created", "updated"} <= set(created.json())
        listing = ask(server, "GET", "/issue/APP-1/comment", params={"maxResults": 1}).json()
        assert (listing["total"], len(listing["comments"])) == (2, 1)
        second = ask(server, "GET", "/issue/APP-1/comment", params={"startAt": 1}).json()
        assert second["comments"][0]["body"] == doc
        assert jira.comment_texts("APP-1") == ["hi"]
        jira.reset()
        assert jira.comment_texts("APP-1") == []
        assert ask(server, "GET", "/issue/APP-1/comment").json()["total"] == 1  # seeded kept

    def test_adf_problem_accepts_marks_and_nesting_jira_accepts(self) -> None:
        doc = {
            "type": "doc",
            "version": 1,
            "content": [
                {
                    "type": "bulletList",
                    "content": [
                        {
                            "type": "listItem",
                            "content": [
                                {
                                    "type": "paragraph",
                                    "content": [
                                        {"type": "text", "text": "a", "marks": [{"type": "strong"}]}
                                    ],
                                }
                            ],
                        }
                    ],
                }
            ],
        }
        assert adf_problem(doc) is None


class TestFaults:
    def test_429_carries_jiras_rate_limit_headers(
        self, jira: JiraStandin, server: ServerHandle
    ) -> None:
        jira.faults.add("/issue/APP-1", Fault.http(429, retry_after_s=7), times=1)
        answer = ask(server, "GET", "/issue/APP-1")
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "7"
        assert answer.headers["ratelimit-reason"] == "jira-burst-based"
        assert answer.headers["x-ratelimit-remaining"] == "0"
        assert "x-ratelimit-reset" in answer.headers
        assert ask(server, "GET", "/issue/APP-1").status_code == 200  # used up

    def test_gateway_errors_are_html_and_5xx_are_error_messages(
        self, jira: JiraStandin, server: ServerHandle
    ) -> None:
        jira.faults.add("/issue/*", Fault.http(502), times=1)
        jira.faults.add("/issue/*", Fault.http(500), times=1)
        gateway, internal = ask(server, "GET", "/issue/APP-1"), ask(server, "GET", "/issue/APP-1")
        assert gateway.headers["content-type"].startswith("text/html")
        assert internal.json() == {"errorMessages": ["Internal Server Error"], "errors": {}}

    def test_an_echoed_header_is_placed_where_asked(
        self, jira: JiraStandin, server: ServerHandle
    ) -> None:
        jira.faults.add("/issue/APP-1", Fault.echo_header(401, "authorization", offset=10))
        message = ask(server, "GET", "/issue/APP-1").json()["message"]
        assert message[10:].startswith(BASIC["Authorization"])

    def test_slow_answer_times_the_client_out(
        self, jira: JiraStandin, server: ServerHandle
    ) -> None:
        jira.faults.add("/issue/APP-1", Fault.slow(5.0))
        with pytest.raises(httpx.ReadTimeout):
            ask(server, "GET", "/issue/APP-1", timeout=0.3)

    def test_reset_drops_the_connection(self, jira: JiraStandin, server: ServerHandle) -> None:
        jira.faults.add("/issue/APP-1", Fault.reset())
        with pytest.raises(httpx.TransportError):
            ask(server, "GET", "/issue/APP-1")

    def test_a_fault_body_is_sent_as_given(self, jira: JiraStandin, server: ServerHandle) -> None:
        jira.faults.add("/search/jql", Fault.http(200, body=orjson.dumps({"issues": []})))
        assert search(server, jql="project = APP").json() == {"issues": []}
