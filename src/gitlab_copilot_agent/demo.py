"""``gitlab-copilot-agent demo``: the agent, for real, against local stand-ins.

The one module of the agent that imports ``agent_standins`` (the command
imports it only when it runs).

It starts a GitLab stand-in, an OpenAI-compatible LLM stand-in and a git
server (``git http-backend``, the real smart-HTTP protocol) on loopback, a
real Redis when ``redis-server`` is installed (else the in-memory store), the
agent itself on a real socket, then sends real webhooks:

1. the review: a signed "merge request opened" (reviewed end to end), a
   delivery with a wrong token and a replay of the signed one (both refused);
2. the coding task: ``/copilot fix …`` by a developer (approval requested),
   the developer approving their own request (refused), a non-member trying
   (refused), a maintainer approving; the task runs in its own process
   (``gitlab-copilot-agent run-task``), pushes to the git server, and the
   agent posts the result;
3. the Jira issue (a Jira stand-in; the Jira poller on): an issue in "To Do" is
   picked up by a poll cycle, moved to In Progress, given a branch
   ``agent/<KEY>``; the gate asks on the issue, a listed Jira approver's comment
   approves; the task pushes, a draft MR opens, its link is commented on the
   issue and the issue moves to In Review — all under the cycle's correlation id.

Then it prints the trail of each with ``auditkeep trace`` and a short
``auditkeep report``.

``AUDIT_LOG_*`` settings are honoured; without them the trail goes to
``<dir>/audit.jsonl``.

With ``TASK_EXECUTOR=kubernetes`` in the environment the coding task runs as a
Kubernetes Job through the Kubernetes API stand-in (``agent_standins.kubernetes``:
a stand-in, since no real API server can run here), which runs the Job's
``run-task`` as a local process; the pod's channel needs the demo's Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from agent_standins.git_server import GitServer
from agent_standins.gitlab import (
    DEFAULT_MR_IID,
    DEFAULT_PROJECT_ID,
    DEFAULT_PROJECT_PATH,
    DEFAULT_TOKEN,
    GitLabStandin,
    diff_file,
)
from agent_standins.jira import JiraStandin
from agent_standins.llm import DEFAULT_API_KEY, LLMStandin
from agent_standins.servers import run_in_thread
from auditkeep.config import AuditConfig
from auditkeep.demo import KEY as DEMO_KEY
from auditkeep.demo import claim_demo_dir
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.scrub import scrub, scrub_then_cut
from gitlab_copilot_agent.settings import SERVICE_NAME, Settings
from gitlab_copilot_agent.webhook_auth import expected_signature, signing_key

# Demo-only credentials for the stand-ins; registered with the redactor like real ones.
WEBHOOK_SECRET = "demo-webhook-secret-4f1c"  # noqa: S105
SIGNING_TOKEN = "whsec_ZGVtby1zaWduaW5nLWtleS0zMi1ieXRlcy1sb25nISE="  # noqa: S105
CODING_MR = 8
CODING_BRANCH = "feature/search-docs"
REPO_FILES = {
    "README.md": "# App\n\nA small web app.\n",
    "src/app.py": "ROUTES = {}\n",
    ".gitlab-ci.yml": "test:\n  script: [pytest]\n",
}
DEVELOPER: dict[str, Any] = {"id": 5, "name": "Jane Doe", "username": "jdoe"}
MAINTAINER: dict[str, Any] = {"id": 6, "name": "Mia Maintainer", "username": "mia"}
OUTSIDER: dict[str, Any] = {"id": 8, "name": "Eve Outsider", "username": "eve"}


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


def _signed(body: bytes, event: str = "Merge Request Hook") -> dict[str, str]:
    """Headers of a delivery signed as GitLab signs it (Standard Webhooks)."""
    webhook_id = str(uuid.uuid4())
    timestamp = str(int(time.time()))
    signature = expected_signature(signing_key(SIGNING_TOKEN), webhook_id, timestamp, body)
    return {
        "content-type": "application/json",
        "x-gitlab-event": event,
        "x-gitlab-event-uuid": str(uuid.uuid4()),
        "idempotency-key": webhook_id,
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
    }


def _note_event(user: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "object_kind": "note",
        "event_type": "note",
        "user": user,
        "project_id": DEFAULT_PROJECT_ID,
        "project": {"id": DEFAULT_PROJECT_ID, "path_with_namespace": DEFAULT_PROJECT_PATH},
        "object_attributes": {
            "id": uuid.uuid4().int % 10**9,
            "note": text,
            "noteable_type": "MergeRequest",
            "author_id": user["id"],
            "system": False,
            "action": "create",
        },
        "merge_request": {"iid": CODING_MR, "state": "opened", "source_branch": CODING_BRANCH},
    }


@contextlib.contextmanager
def _redis(root: Path) -> Iterator[str | None]:
    """A private redis-server on a free loopback port, when one is installed."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = (root / "redis.log").open("w")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0" if server.poll() is None else None
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def _wait_for_note(gitlab: GitLabStandin, iid: int, count: int, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        notes = gitlab.posted_notes(DEFAULT_PROJECT_ID, iid)
        if len(notes) >= count:
            return str(notes[count - 1]["body"])
        time.sleep(0.05)
    return "(no reply within the deadline)"


def _coding_scenario(http: httpx.Client, gitlab: GitLabStandin, git: GitServer) -> str:
    """The US-3 story; returns the task's correlation id."""
    before = git.head(DEFAULT_PROJECT_PATH, CODING_BRANCH)
    print(f"\n== coding task on group/app!{CODING_MR} (branch {CODING_BRANCH} at {before[:12]})")
    steps = [
        (DEVELOPER, "/copilot fix document the search endpoint in `README.md`", "developer"),
        (DEVELOPER, "/copilot approve {task}", "developer, their own request"),
        (OUTSIDER, "/copilot approve {task}", "not a project member"),
        (MAINTAINER, "/copilot approve {task}", "maintainer"),
    ]
    task_cid, task_id = "", ""
    for replies, (user, text, who) in enumerate(steps, start=1):
        command = text.format(task=task_id)
        body = orjson.dumps(_note_event(user, command))
        # Signed: with a signing token configured, unsigned deliveries are refused.
        answer = http.post("/webhook", content=body, headers=_signed(body, "Note Hook"))
        print(f"-> @{user['username']} ({who}): {command!r} -> {answer.status_code}")
        if not task_cid:
            task_cid = answer.json().get("correlation_id", "")
        reply = _wait_for_note(gitlab, CODING_MR, replies)
        print("   agent: " + reply.splitlines()[0][:150])
        if not task_id:
            task_id = reply.split("`")[1] if "`" in reply else ""
    after = git.head(DEFAULT_PROJECT_PATH, CODING_BRANCH)
    print(f"\n== the git server: {CODING_BRANCH} moved {before[:12]} -> {after[:12]}")
    for line in git.commit_message(DEFAULT_PROJECT_PATH, CODING_BRANCH).splitlines():
        if line.strip():
            print(f"   {line}")
    return task_cid


# -- the Jira scenario (issue 13) -----------------------------------------------------

JIRA_EMAIL = "agent@example.com"
JIRA_TOKEN = "demo-jira-api-token-7c2e9a41"  # noqa: S105 - the stand-in's, registered as secret
JIRA_ISSUE = "PROJ-7"
JIRA_APPROVER = "acc-mia-0006"
JIRA_SETTINGS = {
    "JIRA_EMAIL": JIRA_EMAIL,
    "JIRA_API_TOKEN": JIRA_TOKEN,
    "POLL_JIRA_ENABLED": "true",
    "POLL_JIRA_INTERVAL_S": "0.5",
    "JIRA_PROJECT_MAP": orjson.dumps(
        {
            "PROJ": {
                "gitlab_project_id": DEFAULT_PROJECT_ID,
                "target_branch": "main",
                "approvers": [JIRA_APPROVER],
            }
        }
    ).decode(),
}


def _wait(check: Any, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _jira_scenario(jira: JiraStandin, gitlab: GitLabStandin, git: GitServer) -> str:
    """A Jira issue through the poller to a draft MR; returns the poll cycle's correlation id."""
    print(f"\n== Jira issue {JIRA_ISSUE} in 'To Do' (the Jira poller runs every 0.5 s)")
    jira.add_issue(JIRA_ISSUE, summary="Mention the health check in the README",
                   description="Add a line about GET /healthz.")  # fmt: skip
    if not _wait(lambda: any("waits for approval" in t for t in jira.comment_texts(JIRA_ISSUE))):
        print("!! the poller did not take the issue within 60 s")
        return ""
    asked = next(t for t in jira.comment_texts(JIRA_ISSUE) if "waits for approval" in t)
    print(f"   status now: {jira.status_of(JIRA_ISSUE)}")
    print(f"   agent (Jira comment): {asked[:160]}…")
    task_id = asked.split()[2]
    cycle_cid = asked.rsplit("auditkeep trace ", 1)[-1].strip()
    jira.add_comment_as(JIRA_ISSUE, JIRA_APPROVER, "Mia Maintainer", f"/copilot approve {task_id}")
    print(f"-> Mia (a listed Jira approver) comments: '/copilot approve {task_id}'")
    if not _wait(lambda: jira.status_of(JIRA_ISSUE) == "In Review"):
        print(f"!! the issue is still {jira.status_of(JIRA_ISSUE)!r}")
        return cycle_cid
    for mr in gitlab.created_merge_requests(DEFAULT_PROJECT_ID):
        print(f"   draft MR !{mr['iid']}: {mr['title']!r} ({mr['source_branch']} -> "
              f"{mr['target_branch']}, draft={mr['draft']})")  # fmt: skip
    print(f"   agent (Jira comment): {jira.comment_texts(JIRA_ISSUE)[-1][:160]}")
    moves = " -> ".join(to for _from, to in jira.transitions_done(JIRA_ISSUE))
    print(f"   Jira transitions: To Do -> {moves}")
    branch = f"agent/{JIRA_ISSUE}"
    print(f"   {branch}: {git.commit_message(DEFAULT_PROJECT_PATH, branch).splitlines()[0]}")
    return cycle_cid


def _audit_environment(root: Path) -> dict[str, str]:
    if os.environ.get("AUDIT_LOG_DESTINATION"):
        return dict(os.environ)
    env = {
        **os.environ,
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(root / "audit.jsonl"),
        "AUDIT_LOG_SPOOL_DIR": str(root / "spool"),
    }
    key = _signing_key(root)
    if key is not None:  # the agent's and every task process's entries: chained and signed
        env["AUDIT_LOG_SIGNING_KEY_FILE"] = str(key)
    return env


def _signing_key(root: Path) -> Path | None:
    """A key made for this run (as ``auditkeep keygen`` makes one), or None without the
    ``integrity`` extra (``cryptography``): then the trail is not signed."""
    try:
        from auditkeep.integrity.keys import generate
    except ImportError:
        return None
    key = root / DEMO_KEY
    generate(key)
    return key


# -- TASK_EXECUTOR=kubernetes: the coding task as a Job, through the Kubernetes API stand-in --


@contextlib.contextmanager
def _kubernetes(root: Path, redis_url: str | None) -> Iterator[dict[str, str] | None]:
    """The agent's ``K8S_*`` settings for the stand-in (``{}`` without TASK_EXECUTOR=kubernetes;
    None when it is asked for but there is no Redis for the pod's channel)."""
    if os.environ.get("TASK_EXECUTOR", "").strip().lower() != "kubernetes":
        yield {}
        return
    if redis_url is None:
        yield None
        return
    from agent_standins.kubernetes import KubernetesStandin

    image_env = {  # what the agent's image would give the container: this installation
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
    }
    standin = KubernetesStandin(root / "k8s-pods", image_env=image_env)
    standin.add_secret(
        "default", "agent-secrets", {"GITLAB_TOKEN": DEFAULT_TOKEN, "LLM_API_KEY": DEFAULT_API_KEY}
    )
    try:
        with standin.serve() as api:
            kubeconfig = standin.write_kubeconfig(root / "kubeconfig", api.url)
            print(f"executor: kubernetes (Jobs through the Kubernetes API stand-in at {api.url})")
            yield {
                "TASK_EXECUTOR": "kubernetes",
                "K8S_IMAGE": "registry.example.com/gitlab-copilot-agent:demo",
                "K8S_SECRET_NAME": "agent-secrets",
                "K8S_KUBECONFIG": str(kubeconfig),
                "K8S_POLL_MAX_S": "0.5",
            }
    finally:
        standin.stop_all()


def run_demo(directory: str | os.PathLike[str], *, force: bool = False) -> int:
    """Run the scripted demo; return the process exit code.

    The folder is claimed as ``auditkeep demo`` claims its own: a folder
    holding files the demo did not write is refused unless ``force``, and only
    the demo's files are ever replaced.
    """
    try:
        root = claim_demo_dir(directory, force=force)
    except FileExistsError as exc:
        print(f"gitlab-copilot-agent demo: {exc}", file=sys.stderr)
        return 2
    environment = _audit_environment(root)
    audit_config = AuditConfig.from_env(environment, service=SERVICE_NAME)
    # The task processes read AUDIT_LOG_* from the agent's environment: the same trail.
    os.environ.update({k: v for k, v in environment.items() if k.startswith("AUDIT_LOG_")})
    audit = audit_config.build()
    gitlab, llm = GitLabStandin(), LLMStandin()
    jira = JiraStandin(email=JIRA_EMAIL, token=JIRA_TOKEN)
    git = GitServer(root / "git", token=DEFAULT_TOKEN)
    with (
        run_in_thread(gitlab.app) as gitlab_server,
        run_in_thread(llm.app) as llm_server,
        run_in_thread(jira.app) as jira_server,
        git,
        _redis(root) as redis_url,
        _kubernetes(root, redis_url) as kubernetes,
    ):
        if kubernetes is None:
            print("gitlab-copilot-agent demo: TASK_EXECUTOR=kubernetes needs redis-server "
                  "(the Job's pod talks to the agent through Redis)", file=sys.stderr)  # fmt: skip
            audit.close()
            return 2
        git.create_repo(DEFAULT_PROJECT_PATH, REPO_FILES)
        git.create_branch(DEFAULT_PROJECT_PATH, CODING_BRANCH)
        gitlab.add_project(
            DEFAULT_PROJECT_ID,
            DEFAULT_PROJECT_PATH,
            http_url_to_repo=git.repo_url(DEFAULT_PROJECT_PATH),
            git=git,
        )
        gitlab.add_merge_request(
            DEFAULT_PROJECT_ID,
            CODING_MR,
            title="Document search",
            source_branch=CODING_BRANCH,
            files=[diff_file("README.md", ["A small web app."], start_line=3)],
            head=lambda: git.head(DEFAULT_PROJECT_PATH, CODING_BRANCH),
        )
        gitlab.add_member(DEFAULT_PROJECT_ID, MAINTAINER["id"], MAINTAINER["username"], 40)
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
                # The loopback git server speaks plain http; only it may.
                "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
                "TASK_WORK_DIR": str(root / "tasks"),
                **({"REDIS_URL": redis_url} if redis_url else {}),
                "JIRA_URL": jira_server.url,
                **JIRA_SETTINGS,
                **kubernetes,
            }
        )
        print(
            f"state store: {'redis at ' + redis_url if redis_url else 'memory (no redis-server)'}"
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
            # Unsigned, so refused as missing_signature: with a signing token configured
            # the agent does not fall back to the token (a stripped signature is a downgrade).
            print(
                f"-> unsigned delivery with a wrong X-Gitlab-Token: {bad.status_code} {bad.json()}"
            )
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
            task_cid = _coding_scenario(http, gitlab, git)
            pushed = "Copilot-Task-Id" in git.commit_message(DEFAULT_PROJECT_PATH, CODING_BRANCH)
            cycle_cid = _jira_scenario(jira, gitlab, git)
            in_review = jira.status_of(JIRA_ISSUE) == "In Review"
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
    ok = bool(reviews) and pushed and in_review
    if audit_config.file_path is None or "file" not in audit_config.destinations:
        print("\n(the trail went to the configured AUDIT_LOG_DESTINATION, not a file)")
        return 0 if ok else 1
    from auditkeep.query.cli import main as auditkeep_main

    trail = str(audit_config.file_path)
    print(f"\n== audit trail: {trail}")
    print(f"\n== auditkeep trace {review_cid}   (the review)")
    auditkeep_main(["trace", review_cid, trail, "--format", "table"])
    print(f"\n== auditkeep trace {task_cid}   (the coding task, from the comment to the push)")
    auditkeep_main(["trace", task_cid, trail, "--format", "table"])
    print(f"\n== auditkeep trace {cycle_cid}   (the Jira issue: the poll cycle that took it)")
    auditkeep_main(["trace", cycle_cid, trail, "--format", "table"])
    print("\n== auditkeep report")
    auditkeep_main(["report", trail, "--format", "table"])
    print("\n== auditkeep query --action 'webhook.auth.*' --outcome failure")
    auditkeep_main(
        ["query", trail, "--action", "webhook.auth.*", "--outcome", "failure", "--format", "table"]
    )
    signing = environment.get("AUDIT_LOG_SIGNING_KEY_FILE")
    if signing:
        from auditkeep.cli import main as auditkeep_cli

        public = f"{signing}.pub"
        print(f"\n== auditkeep verify --public-key {public} {trail}")
        verified = auditkeep_cli(["verify", "--public-key", public, trail])
        ok = ok and verified == 0
    return 0 if ok else 1
