"""The Jira scenario's world: the agent app(s) with the Jira poller on, the Jira and GitLab
stand-ins, a real git server holding the target branch, a real Redis (or the memory store),
and real task processes writing to the same audit file.

Test modules import this with their own directory put on ``sys.path`` (next to codingkit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from codingkit import FILES, PROJECT, REPO, SRC, TOKEN, child_environment
from prometheus_client import CollectorRegistry

from agent_standins.git_server import GitServer
from agent_standins.gitlab import GitLabStandin
from agent_standins.jira import JiraStandin
from agent_standins.servers import ServerHandle, run_in_thread
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.settings import Settings

# The task processes import this checkout's library too, not an installed copy.
CHILD_PYTHONPATH = f"{SRC}:{SRC.parent / 'packages' / 'auditkeep' / 'src'}"

JIRA_EMAIL = "agent@example.com"
# Shaped like no known credential: only the agent's own registration can scrub it.
JIRA_TOKEN = "jr4Hq8Wc2Ns6Vb0Lp3Xt7Km1Fd5Gz9Ry"
SECRET = "jira-e2e-webhook-secret-0042"
APPROVER = "acc-approver-0001"
STRANGER = "acc-stranger-0002"
MAP = {
    "PROJ": {
        "gitlab_project_id": PROJECT,
        "target_branch": "main",
        "trigger_status": "To Do",
        "in_progress_status": "In Progress",
        "in_review_status": "In Review",
        "approvers": [APPROVER],
    }
}


@dataclass
class JiraWorld:
    jira: JiraStandin
    gitlab: GitLabStandin
    git: GitServer
    audit: AuditLogger
    trail: Path
    tmp: Path
    settings: Settings
    agents: list[ServerHandle] = field(default_factory=list)

    def start_agent(self) -> ServerHandle:
        app = create_app(self.settings, audit=self.audit, registry=CollectorRegistry())
        agent = run_in_thread(app, graceful_shutdown_s=2)
        self.agents.append(agent)
        return agent

    def stop_agent(self, agent: ServerHandle) -> None:
        agent.stop()
        self.agents.remove(agent)

    def entries(self, cid: str | None = None) -> list[dict[str, Any]]:
        assert self.audit.flush(10)
        found = validate_entries(read_trail(self.trail)) if self.trail.exists() else []
        return [e for e in found if cid is None or e["correlation_id"] == cid]

    def wait(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 60
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.entries()
            if done(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; actions: {[e['action'] for e in found][-40:]}")
            time.sleep(0.05)

    def wait_cycles(self, more: int = 3) -> list[dict[str, Any]]:
        """Wait until ``more`` Jira poll cycles have finished after now: "nothing happens"
        is then shown over that many cycles, not over a guessed sleep."""

        def finished(entries: list[dict[str, Any]]) -> int:
            return sum(
                1
                for e in entries
                if e["action"] == "poll.cycle.finished" and e["actor"]["id"] == "jira"
            )

        start = finished(self.entries())
        return self.wait(lambda es: finished(es) >= start + more)

    def wait_for(self, action: str, **match: Any) -> dict[str, Any]:
        def hit(entry: dict[str, Any]) -> bool:
            if entry["action"] != action:
                return False
            where = {**entry.get("target", {}), **(entry.get("details") or {})}
            return all(where.get(k) == v for k, v in match.items())

        found = self.wait(lambda es: any(hit(e) for e in es))
        return next(e for e in found if hit(e))


def count(entries: list[dict[str, Any]], action: str, **match: Any) -> int:
    return sum(
        1
        for e in entries
        if e["action"] == action
        and all(
            {**e.get("target", {}), **(e.get("details") or {})}.get(k) == v
            for k, v in match.items()
        )
    )


@contextmanager
def jira_world(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    issues: Mapping[str, str] = {"PROJ-1": "Add a search box"},
    redis_url: str | None = None,
    extra: Mapping[str, str] | None = None,
    approval_exempt: bool = True,
) -> Iterator[JiraWorld]:
    """The stand-ins and the settings; agents are started by the test (``start_agent``)."""
    trail = tmp / "audit.jsonl"
    child_environment(monkeypatch, tmp, trail)
    git = GitServer(tmp / "git", token=TOKEN).start()
    git.create_repo(REPO, FILES)
    gitlab = GitLabStandin(token=TOKEN)
    gitlab.add_project(PROJECT, REPO, http_url_to_repo=git.repo_url(REPO), git=git)
    jira = JiraStandin(email=JIRA_EMAIL, token=JIRA_TOKEN)
    for key, summary in issues.items():
        jira.add_issue(key, summary=summary, description=f"Details of {key}.", status="To Do")
    audit = AuditLogger(
        FileSink(trail, max_bytes=0),
        service="gitlab-copilot-agent",
        spool_dir=tmp / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
    )
    values = {
        "GITLAB_TOKEN": TOKEN,
        "GITLAB_WEBHOOK_SECRET": SECRET,
        "GITLAB_MAX_RETRIES": "0",
        "GITLAB_TIMEOUT_S": "5",
        "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
        "GIT_TIMEOUT_S": "30",
        "TASK_WORK_DIR": str(tmp / "work"),
        "TASK_TIMEOUT_S": "60",
        "LLM_PROVIDER": "offline",
        "JIRA_EMAIL": JIRA_EMAIL,
        "JIRA_API_TOKEN": JIRA_TOKEN,
        "JIRA_MAX_RETRIES": "0",
        "JIRA_PROJECT_MAP": orjson.dumps(MAP).decode(),
        "POLL_JIRA_ENABLED": "true",
        "POLL_JIRA_INTERVAL_S": "0.2",
        "POLL_SHUTDOWN_GRACE_S": "1",
        **({"APPROVAL_EXEMPT_PROJECTS": str(PROJECT)} if approval_exempt else {}),
        **({"REDIS_URL": redis_url} if redis_url else {}),
    }
    values.update(extra or {})
    try:
        with ExitStack() as stack:
            gitlab_server = stack.enter_context(gitlab.serve())
            jira_server = stack.enter_context(jira.serve())
            settings = Settings.from_env(
                {"GITLAB_URL": gitlab_server.url, "JIRA_URL": jira_server.url, **values}
            )
            world = JiraWorld(jira, gitlab, git, audit, trail, tmp, settings)
            try:
                yield world
            finally:
                for agent in list(world.agents):
                    world.stop_agent(agent)
    finally:
        audit.close()
        git.stop()
