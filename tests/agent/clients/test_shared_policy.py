"""GitLab and Jira fail and retry alike: one retry policy, one error path, one Retry-After parser.

The same misbehaviour, scripted on each stand-in, must leave the same audit
trail (outcome, error class, HTTP status, attempt number of every entry) and
raise the same error class, for a read and for a write.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import gitlab_copilot_agent.clients as clients_package
from agent_standins.faults import Fault
from agent_standins.gitlab import GitLabStandin
from agent_standins.jira import JiraStandin
from agent_standins.servers import ServerHandle, run_in_thread
from auditkeep.testing import capture_events, validate_entries
from gitlab_copilot_agent.clients._http import ApiError
from gitlab_copilot_agent.clients.gitlab import GitLabClient
from gitlab_copilot_agent.clients.jira import JiraClient
from gitlab_copilot_agent.settings import JiraSettings

GITLAB_TOKEN = "glpat-shared-policy-0123456789"
JIRA_EMAIL, JIRA_TOKEN = "agent@example.com", "ATATT-shared-policy-0123456789"
POLICY: dict[str, Any] = {"initial_backoff_s": 0.01, "max_backoff_s": 0.02, "deadline_s": 10.0}
TIMEOUT_S, RETRIES = 0.3, 2


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[GitLabStandin, JiraStandin, ServerHandle, ServerHandle]]:
    gitlab, jira = (
        GitLabStandin(token=GITLAB_TOKEN),
        JiraStandin(email=JIRA_EMAIL, token=JIRA_TOKEN),
    )
    jira.add_issue("PROJ-1")
    with run_in_thread(gitlab.app) as gl, run_in_thread(jira.app) as jr:
        yield gitlab, jira, gl, jr


Scenario = list[tuple[Fault, int | None]]
SCENARIOS: dict[str, Scenario] = {
    "401": [(Fault.http(401), None)],
    "403": [(Fault.http(403), None)],
    "404": [(Fault.http(404), None)],
    "500": [(Fault.http(500), None)],
    "502-then-ok": [(Fault.http(502), 1)],
    "503-always": [(Fault.http(503), None)],
    "429-retry-after-then-ok": [(Fault.http(429, retry_after_s=0), 1)],
    "429-always": [(Fault.http(429, retry_after_s=0), None)],
    "slow": [(Fault.slow(2.0), None)],
    "reset": [(Fault.reset(), None)],
}


_R, _W = RETRIES + 1, 1  # attempts of a read, of a write that may have been processed
EXPECTED: dict[tuple[str, str], tuple[list[tuple[Any, ...]], str | None]] = {
    **{
        (name, kind): ([("failure", error, status, 1)], error)
        for name, status, error in (
            ("401", 401, "auth_failure"),
            ("403", 403, "auth_failure"),
            ("404", 404, "not_found"),
            ("500", 500, "server_error"),
        )
        for kind in ("read", "write")
    },
    ("502-then-ok", "read"): (
        [("failure", "server_error", 502, 1), ("success", None, 200, 2)],
        None,
    ),
    ("502-then-ok", "write"): ([("failure", "server_error", 502, 1)], "server_error"),
    ("503-always", "read"): (
        [("failure", "server_error", 503, n) for n in range(1, _R + 1)],
        "server_error",
    ),
    ("503-always", "write"): ([("failure", "server_error", 503, 1)], "server_error"),
    **{
        ("429-retry-after-then-ok", kind): (
            [("failure", "rate_limit", 429, 1), ("success", None, status, 2)],
            None,
        )
        for kind, status in (("read", 200), ("write", 201))
    },
    **{
        ("429-always", kind): (
            [("failure", "rate_limit", 429, n) for n in range(1, _R + 1)],
            "rate_limit",
        )
        for kind in ("read", "write")
    },
    ("slow", "read"): ([("failure", "timeout", None, n) for n in range(1, _R + 1)], "timeout"),
    ("slow", "write"): ([("failure", "timeout", None, 1)], "timeout"),
    ("reset", "read"): (
        [("failure", "network_error", None, n) for n in range(1, _R + 1)],
        "network_error",
    ),
    ("reset", "write"): ([("failure", "network_error", None, 1)], "network_error"),
}


def trail(
    client: Any, fn: Callable[[Any], Awaitable[Any]], logger_sink: Any
) -> tuple[list[tuple[Any, ...]], str | None]:
    logger, sink = logger_sink

    async def go() -> str | None:
        try:
            await fn(client)
        except ApiError as exc:
            return exc.audit_error_class
        finally:
            await client.aclose()
        return None

    raised = asyncio.run(go())
    assert logger.flush(5.0)
    found = validate_entries(sink.lines)
    return [
        (e["outcome"], e.get("error"), e.get("http_status"), e["details"]["attempt"]) for e in found
    ], raised


@pytest.mark.parametrize("kind", ["read", "write"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_same_misbehaviour_leaves_the_same_trail(
    scenario: str,
    kind: str,
    servers: tuple[GitLabStandin, JiraStandin, ServerHandle, ServerHandle],
) -> None:
    gitlab, jira, gl_server, jira_server = servers
    gitlab.reset()
    jira.reset()
    for fault, times in SCENARIOS[scenario]:
        gitlab.faults.add("/projects/42*", fault, times=times)
        jira.faults.add("/issue/PROJ-1*", fault, times=times)
    with capture_events() as gl_audit:
        gl_client = GitLabClient(
            gl_server.url,
            GITLAB_TOKEN,
            gl_audit[0],
            timeout_s=TIMEOUT_S,
            max_retries=RETRIES,
            **POLICY,
        )
        gl_trail = trail(
            gl_client,
            (lambda c: c.get_project_info(42))
            if kind == "read"
            else (lambda c: c.post_mr_note(42, 7, "x", comment_type="note")),
            gl_audit,
        )
    with capture_events() as jira_audit:
        settings = JiraSettings(
            url=jira_server.url,
            email=JIRA_EMAIL,
            api_token=SecretStr(JIRA_TOKEN),
            timeout_s=TIMEOUT_S,
            max_retries=RETRIES,
        )
        jira_client = JiraClient(settings, jira_audit[0], **POLICY)
        jira_trail = trail(
            jira_client,
            (lambda c: c.get_issue("PROJ-1"))
            if kind == "read"
            else (lambda c: c.add_comment("PROJ-1", "x")),
            jira_audit,
        )
    assert jira_trail == gl_trail
    assert gl_trail == EXPECTED[(scenario, kind)]


def test_only_the_shared_plumbing_reads_retry_after_or_decides_retries() -> None:
    """The clients import neither the parser nor the retry sets: ``_http`` alone has them."""
    folder = Path(clients_package.__file__).parent
    for module in ("gitlab.py", "jira.py"):
        tree = ast.parse((folder / module).read_text())
        names = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert names.isdisjoint(
            {
                "parse_retry_after",
                "send_with_retries",
                "READ_RETRY_STATUSES",
                "WRITE_RETRY_STATUSES",
                "READ_RETRY_EXCEPTIONS",
                "WRITE_RETRY_EXCEPTIONS",
            }
        ), module
        # Every call goes through ApiClient._send, i.e. send_checked.
        assert "ApiClient" in names, module
        bases = {
            base.id
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.name.endswith("Client")
            for base in node.bases
            if isinstance(base, ast.Name)
        }
        assert bases == {"ApiClient"}, module
