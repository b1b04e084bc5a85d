"""The coding scenario's world: the agent app on a real socket, the GitLab stand-in, a real git
server holding the MR's source branch, a real Redis (or the memory store), and real task
processes (``run-task``) writing to the same audit file.

Test modules import this with their own directory put on ``sys.path``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

import auditkeep
import gitlab_copilot_agent
from agent_standins.git_server import GitServer
from agent_standins.gitlab import GitLabStandin, diff_file
from agent_standins.servers import ServerHandle, run_in_thread
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.settings import Settings

SRC = Path(gitlab_copilot_agent.__file__).resolve().parents[1]
LIBRARY_SRC = Path(auditkeep.__file__).resolve().parents[1]
# Shaped like no known credential: only the agent's own registration can scrub them.
TOKEN = "gl7Qm2Xv9Kp4Wr8Ts3Yb6Nd1Hf5Jc0Lz"
SECRET = "coding-e2e-webhook-secret-41"
PROJECT, MR = 42, 7
REPO = "group/app"
BRANCH = "feature/search"
FILES = {
    "README.md": "# App\n\nA small app.\n",
    "src/app.py": "def greet(name):\n    return 'hi ' + name\n",
    ".gitlab-ci.yml": "test:\n  script: [pytest]\n",
}
User = dict[str, Any]
DEV: User = {"id": 5, "username": "jdoe", "name": "Jane Doe"}
MAINTAINER: User = {"id": 6, "username": "mia", "name": "Mia Maintainer"}
OWNER: User = {"id": 7, "username": "max", "name": "Max Owner"}
OUTSIDER: User = {"id": 8, "username": "eve", "name": "Eve Outsider"}
REPORTER: User = {"id": 9, "username": "rex", "name": "Rex Reporter"}

US3 = (
    "copilot.command.received",
    "approval_gate.requested",
    "approval_gate.decision",
    "task.started",
    "gitlab.api.clone_repo",
    "copilot.sdk.coding_request",
    "copilot.sdk.response_received",
    "copilot.patch.generated",
    "copilot.patch.validated",
    "gitlab.api.push_branch",
    "task.result.stored",
    "gitlab.api.post_mr_note",
    "task.finished",
)


def patch_appending(path: str, old: str, line: str) -> str:
    """A git diff adding ``line`` at the end of ``path`` whose content is ``old``."""
    lines = old.splitlines()
    n = len(lines)
    hunk = "".join(f" {text}\n" for text in lines)
    return (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
        f"@@ -1,{n} +1,{n + 1} @@\n{hunk}+{line}\n"
    )


@dataclass
class World:
    gitlab: GitLabStandin
    git: GitServer
    audit: AuditLogger
    trail: Path
    client: httpx.Client
    tmp: Path
    settings: Settings
    agent: ServerHandle

    def restart(self) -> None:
        """Stop the agent (its lifespan closes everything) and start a new one: same settings,
        same stand-ins, same Redis."""
        self.client.close()
        self.agent.stop()
        app = create_app(self.settings, audit=self.audit, registry=CollectorRegistry())
        self.agent = run_in_thread(app)
        self.client = httpx.Client(base_url=self.agent.url, timeout=30)

    def note(self, text: str, user: Mapping[str, Any] = DEV, note_id: int | None = None) -> str:
        """Post a Note Hook on the MR; return the delivery's correlation id."""
        payload = {
            "object_kind": "note",
            "user": dict(user),
            "project_id": PROJECT,
            "project": {"id": PROJECT, "path_with_namespace": REPO},
            "object_attributes": {
                "id": note_id if note_id is not None else int(uuid.uuid4().int % 10**9),
                "note": text,
                "noteable_type": "MergeRequest",
                "author_id": user["id"],
                "system": False,
                "action": "create",
                # Distinct per delivery, as GitLab's are: an identical body is a
                # replay the ingress refuses before any workflow sees it.
                "updated_at": f"{time.time_ns()}",
            },
            "merge_request": {"id": 42007, "iid": MR, "state": "opened"},
        }
        answer = self.client.post(
            "/webhook",
            content=orjson.dumps(payload),
            headers={
                "content-type": "application/json",
                "x-gitlab-event": "Note Hook",
                "x-gitlab-token": SECRET,
                "x-gitlab-event-uuid": str(uuid.uuid4()),
            },
        )
        assert answer.status_code == 202, answer.text
        cid: str = answer.json()["correlation_id"]
        return cid

    def entries(self, cid: str | None = None) -> list[dict[str, Any]]:
        assert self.audit.flush(10)
        found = validate_entries(read_trail(self.trail)) if self.trail.exists() else []
        return [e for e in found if cid is None or e["correlation_id"] == cid]

    def wait(
        self,
        done: Callable[[list[dict[str, Any]]], bool],
        cid: str | None = None,
        timeout_s: float = 60,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.entries(cid)
            if done(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; actions so far: {[e['action'] for e in found][-40:]}"
                )
            time.sleep(0.05)

    def wait_for(self, action: str, cid: str | None = None, **match: Any) -> dict[str, Any]:
        def hit(entries: list[dict[str, Any]]) -> bool:
            return any(_matches(e, action, match) for e in entries)

        found = self.wait(hit, cid)
        return next(e for e in found if _matches(e, action, match))

    def requested_task(self, cid: str) -> str:
        task_id: str = self.wait_for("approval_gate.requested", cid)["details"]["task_id"]
        return task_id

    def wait_note(self, text: str, timeout_s: float = 30) -> str:
        """The last note the agent posted once one contains ``text`` (replies follow entries)."""
        deadline = time.monotonic() + timeout_s
        while not any(text in n for n in self.notes()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no note with {text!r}; last: {self.notes()[-1:]}")
            time.sleep(0.02)
        return next(n for n in reversed(self.notes()) if text in n)

    def notes(self) -> list[str]:
        return [n["body"] for n in self.gitlab.posted_notes(PROJECT, MR)]

    def pushes(self) -> list[Any]:
        return [
            r for r in self.git.requests if r.service == "git-receive-pack" and r.method == "POST"
        ]

    def head(self) -> str:
        return self.git.head(REPO, BRANCH)


def _matches(entry: dict[str, Any], action: str, match: Mapping[str, Any]) -> bool:
    if entry["action"] != action:
        return False
    details = entry.get("details") or {}
    return all(details.get(k) == v or entry.get(k) == v for k, v in match.items())


def actions(entries: Sequence[dict[str, Any]]) -> list[str]:
    return [e["action"] for e in entries]


def in_order(found: Sequence[str], wanted: Sequence[str]) -> bool:
    """``wanted`` appears in ``found`` in this order (other actions may sit between)."""
    it = iter(found)
    return all(any(a == w for a in it) for w in wanted)


def child_environment(monkeypatch: pytest.MonkeyPatch, tmp: Path, trail: Path) -> None:
    """What the agent's environment must say so its task processes write the same trail."""
    monkeypatch.setenv("AUDIT_LOG_DESTINATION", "file")
    monkeypatch.setenv("AUDIT_LOG_FILE_PATH", str(trail))
    monkeypatch.setenv("AUDIT_LOG_FILE_MAX_BYTES", "0")
    monkeypatch.setenv("AUDIT_LOG_SPOOL_DIR", str(tmp / "spool-tasks"))
    monkeypatch.setenv("AUDIT_LOG_FLUSH_INTERVAL_S", "0.05")
    # Both source trees: a checkout's library, not another installed one, runs in the tasks.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(SRC), str(LIBRARY_SRC))))


@contextmanager
def coding_world(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    redis_url: str | None = None,
    extra: Mapping[str, str] | None = None,
    script: Mapping[str, str] | None = None,
) -> Iterator[World]:
    """The whole world; ``extra`` adds agent settings, ``script`` scripts the offline model."""
    trail = tmp / "audit.jsonl"
    child_environment(monkeypatch, tmp, trail)
    git = GitServer(tmp / "git", token=TOKEN).start()
    git.create_repo(REPO, FILES)
    git.create_branch(REPO, BRANCH)
    git.reset()
    gitlab = GitLabStandin(token=TOKEN)
    gitlab.add_project(PROJECT, REPO, http_url_to_repo=git.repo_url(REPO))
    gitlab.add_merge_request(
        PROJECT,
        MR,
        title="Add search",
        source_branch=BRANCH,
        files=[diff_file("src/app.py", ["def greet(name):"])],
        head=lambda: git.head(REPO, BRANCH),
    )
    gitlab.add_member(PROJECT, MAINTAINER["id"], MAINTAINER["username"], 40)
    gitlab.add_member(PROJECT, OWNER["id"], OWNER["username"], 50)
    gitlab.add_member(PROJECT, REPORTER["id"], REPORTER["username"], 20)
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
        **({"REDIS_URL": redis_url} if redis_url else {}),
    }
    if script is not None:
        path = tmp / "coding-script.json"
        path.write_bytes(orjson.dumps(dict(script)))
        values["OFFLINE_LLM_CODING_SCRIPT"] = str(path)
    values.update(extra or {})
    try:
        with gitlab.serve() as gitlab_server:
            settings = Settings.from_env({"GITLAB_URL": gitlab_server.url, **values})
            app = create_app(settings, audit=audit, registry=CollectorRegistry())
            agent = run_in_thread(app)
            world = World(
                gitlab, git, audit, trail, httpx.Client(base_url=agent.url, timeout=30), tmp,
                settings, agent,
            )  # fmt: skip
            try:
                yield world
            finally:
                world.client.close()
                world.agent.stop()
    finally:
        audit.close()
        git.stop()
