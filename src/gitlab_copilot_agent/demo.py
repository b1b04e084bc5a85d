"""``gitlab-copilot-agent demo``: the agent, for real, against local stand-ins.

The one module of the agent that imports ``agent_standins`` (the command
imports it only when it runs).

It starts a GitLab stand-in and an OpenAI-compatible LLM stand-in on loopback,
the agent itself on a real socket, then sends real webhooks: a signed
"merge request opened" (reviewed end to end), a delivery with a wrong token
and a replay of the signed one (both refused). Then it prints the audit trail
of the review with ``auditrail trace`` and a short ``auditrail report``.

``AUDIT_LOG_*`` settings are honoured; without them the trail goes to
``<dir>/audit.jsonl``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from agent_standins.gitlab import (
    DEFAULT_MR_IID,
    DEFAULT_PROJECT_ID,
    DEFAULT_TOKEN,
    GitLabStandin,
)
from agent_standins.llm import DEFAULT_API_KEY, LLMStandin
from agent_standins.servers import run_in_thread
from auditrail.config import AuditConfig
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.scrub import scrub, scrub_then_cut
from gitlab_copilot_agent.settings import SERVICE_NAME, Settings
from gitlab_copilot_agent.webhook_auth import expected_signature, signing_key

# Demo-only credentials for the stand-ins; registered with the redactor like real ones.
WEBHOOK_SECRET = "demo-webhook-secret-4f1c"  # noqa: S105
SIGNING_TOKEN = "whsec_ZGVtby1zaWduaW5nLWtleS0zMi1ieXRlcy1sb25nISE="  # noqa: S105


def _merge_request_event(gitlab: GitLabStandin) -> dict[str, Any]:
    mr = gitlab.merge_request(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 5, "name": "Jane Doe", "username": "jdoe"},
        "project": {"id": DEFAULT_PROJECT_ID, "path_with_namespace": "group/app"},
        "object_attributes": {
            "id": mr.get("id", 9001),
            "iid": DEFAULT_MR_IID,
            "title": mr.get("title", "Add search"),
            "action": "open",
            "state": "opened",
            "source_branch": mr.get("source_branch", "feature/search"),
            "target_branch": mr.get("target_branch", "main"),
            "last_commit": {"id": mr.get("sha", "")},
        },
    }


def _signed(body: bytes) -> dict[str, str]:
    webhook_id = str(uuid.uuid4())
    timestamp = str(int(time.time()))
    signature = expected_signature(signing_key(SIGNING_TOKEN), webhook_id, timestamp, body)
    return {
        "content-type": "application/json",
        "x-gitlab-event": "Merge Request Hook",
        "x-gitlab-event-uuid": str(uuid.uuid4()),
        "idempotency-key": webhook_id,
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
    }


def _audit_environment(root: Path) -> dict[str, str]:
    if os.environ.get("AUDIT_LOG_DESTINATION"):
        return dict(os.environ)
    return {
        **os.environ,
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(root / "audit.jsonl"),
        "AUDIT_LOG_SPOOL_DIR": str(root / "spool"),
    }


def run_demo(directory: str | os.PathLike[str]) -> int:
    """Run the scripted demo; return the process exit code."""
    root = Path(directory).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    audit_config = AuditConfig.from_env(_audit_environment(root), service=SERVICE_NAME)
    audit = audit_config.build()
    gitlab, llm = GitLabStandin(), LLMStandin()
    with run_in_thread(gitlab.app) as gitlab_server, run_in_thread(llm.app) as llm_server:
        settings = Settings.from_env(
            {
                "GITLAB_URL": gitlab_server.url,
                "GITLAB_TOKEN": DEFAULT_TOKEN,
                "GITLAB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "GITLAB_WEBHOOK_SIGNING_TOKEN": SIGNING_TOKEN,
                "LLM_PROVIDER": "openai",
                "LLM_BASE_URL": f"{llm_server.url}/v1",
                "LLM_API_KEY": DEFAULT_API_KEY,
                "GITLAB_MAX_RETRIES": "2",
                # The demo's own client plays a reverse proxy on loopback.
                "TRUSTED_PROXIES": "127.0.0.1/32",
            }
        )
        app = create_app(settings, audit=audit)
        with run_in_thread(app) as agent, httpx.Client(base_url=agent.url, timeout=10) as http:
            body = orjson.dumps(_merge_request_event(gitlab))
            headers = _signed(body)
            opened = http.post("/webhook", content=body, headers=headers)
            print(f"-> signed 'Merge Request Hook' (open !{DEFAULT_MR_IID}): {opened.status_code}")
            bad = http.post(
                "/webhook",
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-gitlab-event": "Merge Request Hook",
                    "x-gitlab-token": "not-the-secret",
                    "x-forwarded-for": "203.0.113.9",
                },
            )
            print(f"-> delivery with a wrong X-Gitlab-Token: {bad.status_code} {bad.json()}")
            replay = http.post("/webhook", content=body, headers=headers)
            print(f"-> the signed delivery replayed: {replay.status_code} {replay.json()}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                notes = gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
                if any("copilot-review" in n.get("body", "") for n in notes):
                    break
                time.sleep(0.05)
            else:
                print("!! the review did not arrive within 30 s")
        review_cid = opened.json().get("correlation_id", "")
    audit.close()

    posted = gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
    reviews = [n for n in posted if "copilot-review" in n.get("body", "")]
    print(
        f"\n== the agent posted {len(reviews)} review note(s) and "
        f"{len(gitlab.commit_discussions())} inline comment(s) on group/app!{DEFAULT_MR_IID}"
    )
    if reviews:
        first_line = scrub(reviews[-1]["body"]).splitlines()[0]
        print("   " + scrub_then_cut(first_line, 100))
    if audit_config.file_path is None or "file" not in audit_config.destinations:
        print("\n(the trail went to the configured AUDIT_LOG_DESTINATION, not a file)")
        return 0 if reviews else 1
    from auditrail.query.cli import main as auditrail_main

    trail = str(audit_config.file_path)
    print(f"\n== audit trail: {trail}")
    print(f"\n== auditrail trace {review_cid}")
    auditrail_main(["trace", review_cid, trail])
    print("\n== auditrail report")
    auditrail_main(["report", trail])
    print("\n== auditrail query --action 'webhook.auth.*' --outcome failure")
    auditrail_main(
        ["query", trail, "--action", "webhook.auth.*", "--outcome", "failure", "--format", "table"]
    )
    return 0 if reviews else 1
