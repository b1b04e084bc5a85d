"""The agent app on a real socket with a GitLab stand-in, for router and command tests.

Test modules import this with their own directory put on ``sys.path``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from agent_standins.gitlab import DEFAULT_MR_IID, DEFAULT_PROJECT_ID, DEFAULT_TOKEN, GitLabStandin
from agent_standins.servers import run_in_thread
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.plugins import Plugin
from gitlab_copilot_agent.settings import Settings

SECRET = "router-test-webhook-secret"
HUMAN = {"id": 5, "name": "Jane Doe", "username": "jdoe"}


@dataclass
class Agent:
    gitlab: GitLabStandin
    audit: AuditLogger
    trail: Path
    client: httpx.Client

    def post(self, event: str, payload: dict[str, Any]) -> httpx.Response:
        return self.client.post(
            "/webhook",
            content=orjson.dumps(payload),
            headers={
                "content-type": "application/json",
                "x-gitlab-event": event,
                "x-gitlab-token": SECRET,
                "x-gitlab-event-uuid": str(uuid.uuid4()),
            },
        )

    def note(self, text: str, note_id: int = 1300) -> str:
        """Post a Note Hook for MR !7 with ``text``; return the delivery's correlation id."""
        answer = self.post("Note Hook", note_hook(text, note_id))
        assert answer.status_code == 202, answer.text
        cid: str = answer.json()["correlation_id"]
        return cid

    def entries(self, cid: str | None = None) -> list[dict[str, Any]]:
        assert self.audit.flush(10)
        found = validate_entries(read_trail(self.trail)) if self.trail.exists() else []
        return [e for e in found if cid is None or e["correlation_id"] == cid]

    def wait(
        self, cid: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 20
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.entries(cid)
            if done(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def note_hook(text: str, note_id: int = 1300) -> dict[str, Any]:
    return {
        "object_kind": "note",
        "user": HUMAN,
        "project_id": DEFAULT_PROJECT_ID,
        "project": {"id": DEFAULT_PROJECT_ID, "path_with_namespace": "group/app"},
        "object_attributes": {
            "id": note_id,
            "note": text,
            "noteable_type": "MergeRequest",
            "author_id": HUMAN["id"],
            "system": False,
            "action": "create",
        },
        "merge_request": {"id": 42007, "iid": DEFAULT_MR_IID, "state": "opened"},
    }


def has_action(action: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda entries: any(e["action"] == action for e in entries)


def actions(entries: Sequence[dict[str, Any]]) -> list[str]:
    return [e["action"] for e in entries]


@contextmanager
def running_agent(
    tmp: Path, *, plugins: Sequence[Plugin] | None = None, gitlab_url: str | None = None
) -> Iterator[Agent]:
    """The app (default plugins unless given) against a fresh GitLab stand-in."""
    gitlab = GitLabStandin()
    trail = tmp / "audit.jsonl"
    audit = AuditLogger(
        FileSink(trail, max_bytes=0),
        service="gitlab-copilot-agent",
        spool_dir=tmp / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
    )
    try:
        with gitlab.serve() as server:
            settings = Settings.from_env(
                {
                    "GITLAB_URL": gitlab_url or server.url,
                    "GITLAB_TOKEN": DEFAULT_TOKEN,
                    "GITLAB_WEBHOOK_SECRET": SECRET,
                    "GITLAB_MAX_RETRIES": "0",
                    "GITLAB_TIMEOUT_S": "2",
                }
            )
            app = create_app(settings, audit=audit, registry=CollectorRegistry(), plugins=plugins)
            with run_in_thread(app) as agent, httpx.Client(base_url=agent.url) as client:
                yield Agent(gitlab, audit, trail, client)
    finally:
        audit.close()
