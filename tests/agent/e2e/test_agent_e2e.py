"""The whole agent over real sockets: signed webhooks in, stand-ins out, the trail read back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from agent_standins.faults import Fault
from agent_standins.gitlab import DEFAULT_TOKEN, GitLabStandin
from agent_standins.llm import DEFAULT_API_KEY, LLMStandin
from agent_standins.servers import run_in_thread
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.settings import Settings
from gitlab_copilot_agent.webhook_auth import expected_signature, signing_key

SIGNING = "whsec_ZTJlLXNpZ25pbmcta2V5LTMyLWJ5dGVzLWxvbmchISE="
SECRET = "e2e-webhook-secret-77aa"
PROJECT, MR = 42, 7
MR_PATH = f"/projects/{PROJECT}/merge_requests/{MR}"


@dataclass
class World:
    gitlab: GitLabStandin
    llm: LLMStandin
    trail: Path
    spool: Path
    audit: AuditLogger
    client: httpx.Client

    def send_mr_opened(self) -> str:
        body = orjson.dumps(
            {
                "object_kind": "merge_request",
                "project": {"id": PROJECT, "path_with_namespace": "group/app"},
                "object_attributes": {"iid": MR, "action": "open", "state": "opened"},
            }
        )
        webhook_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
        signature = expected_signature(signing_key(SIGNING), webhook_id, timestamp, body)
        response = self.client.post(
            "/webhook",
            content=body,
            headers={
                "content-type": "application/json",
                "x-gitlab-event": "Merge Request Hook",
                "x-gitlab-event-uuid": str(uuid.uuid4()),
                "webhook-id": webhook_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": f"v1,{signature}",
            },
        )
        assert response.status_code == 202, response.text
        cid: str = response.json()["correlation_id"]
        return cid

    def trail_of(
        self, cid: str, *, until_action: str, timeout_s: float = 20
    ) -> list[dict[str, Any]]:
        """The correlated entries, once one with ``until_action`` has been written."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.audit.flush(10)
            entries = [
                e for e in validate_entries(read_trail(self.trail)) if e["correlation_id"] == cid
            ]
            if any(e["action"] == until_action for e in entries) or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    gitlab, llm = GitLabStandin(), LLMStandin()
    trail, spool = tmp_path / "audit.jsonl", tmp_path / "spool"
    audit = AuditLogger(
        FileSink(trail, max_bytes=0),
        service="gitlab-copilot-agent",
        spool_dir=spool,
        metrics=AuditMetrics(CollectorRegistry()),
    )
    with run_in_thread(gitlab.app) as g, run_in_thread(llm.app) as m:
        settings = Settings.from_env(
            {
                "GITLAB_URL": g.url,
                "GITLAB_TOKEN": DEFAULT_TOKEN,
                "GITLAB_WEBHOOK_SECRET": SECRET,
                "GITLAB_WEBHOOK_SIGNING_TOKEN": SIGNING,
                "GITLAB_TIMEOUT_S": "0.5",
                "GITLAB_MAX_RETRIES": "0",
                "LLM_PROVIDER": "openai",
                "LLM_BASE_URL": f"{m.url}/v1",
                "LLM_API_KEY": DEFAULT_API_KEY,
            }
        )
        app = create_app(settings, audit=audit)
        with run_in_thread(app) as agent, httpx.Client(base_url=agent.url, timeout=10) as client:
            yield World(gitlab, llm, trail, spool, audit, client)
    audit.close()


class TestReview:
    def test_one_webhook_one_correlated_trail_with_every_ac1_action(
        self, world: World, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A signed MR webhook yields the review, every entry sharing the webhook's id."""
        cid = world.send_mr_opened()
        entries = world.trail_of(cid, until_action="gitlab.api.post_commit_discussion")
        by_action: dict[str, dict[str, Any]] = {}
        for entry in entries:
            by_action.setdefault(entry["action"], entry)
        mr = {"resource_type": "merge_request", "project_id": PROJECT, "mr_iid": MR}
        llm = {"resource_type": "llm", "project_id": PROJECT, "mr_iid": MR}
        assert by_action["webhook.auth.validated"]["target"] == {
            "resource_type": "webhook",
            "project_id": PROJECT,
        }
        assert by_action["gitlab.api.get_mr_details"]["target"] == mr
        assert by_action["gitlab.api.get_mr_diff"]["target"] == mr
        assert by_action["gitlab.api.get_project_info"]["target"] == {
            "resource_type": "project",
            "project_id": PROJECT,
        }
        assert by_action["gitlab.api.post_mr_note"]["target"] == {**mr, "comment_type": "review"}
        discussion = by_action["gitlab.api.post_commit_discussion"]["target"]
        assert (discussion["resource_type"], discussion["project_id"]) == ("commit", PROJECT)
        assert len(discussion["commit_sha"]) == 40
        assert by_action["copilot.sdk.review_request"]["target"] == llm
        assert by_action["copilot.sdk.response_received"]["target"] == llm
        assert {e["outcome"] for e in entries} == {"success"}
        assert all(e["actor"]["type"] == "webhook_event" for e in entries)
        # The id also went out on every GitLab request.
        sent = {r.headers.get("x-correlation-id") for r in world.gitlab.requests}
        assert sent == {cid}

        world.audit.flush(10)
        out, err = capfd.readouterr()
        everything = b"".join(p.read_bytes() for p in world.trail.parent.rglob("*") if p.is_file())
        for secret in (DEFAULT_TOKEN, DEFAULT_API_KEY, SECRET, SIGNING):
            assert secret.encode() not in everything
            assert secret not in out + err


class TestGitLabErrorClasses:
    @pytest.mark.parametrize(
        ("fault", "error_class", "status"),
        [
            (Fault.http(401), "auth_failure", 401),
            (Fault.http(403), "auth_failure", 403),
            (Fault.http(404), "not_found", 404),
            (Fault.http(429, retry_after_s=1), "rate_limit", 429),
            (Fault.http(500), "server_error", 500),
            (Fault.slow(3.0), "timeout", None),
            (Fault.reset(), "network_error", None),
        ],
        ids=["401", "403", "404", "429", "500", "slow", "reset"],
    )
    def test_stand_in_misbehaviour_maps_to_its_error_class(
        self, world: World, fault: Fault, error_class: str, status: int | None
    ) -> None:
        """Each GitLab failure mode is recorded with its class, status and the webhook's id."""
        world.gitlab.faults.add(MR_PATH, fault, method="GET")
        cid = world.send_mr_opened()
        entries = world.trail_of(cid, until_action="gitlab.api.get_mr_details")
        [call] = [e for e in entries if e["action"] == "gitlab.api.get_mr_details"]
        assert (call["outcome"], call["error"], call.get("http_status")) == (
            "failure",
            error_class,
            status,
        )
        assert call["target"] == {
            "resource_type": "merge_request",
            "project_id": PROJECT,
            "mr_iid": MR,
        }
        assert world.gitlab.posted_notes(PROJECT, MR) == []
