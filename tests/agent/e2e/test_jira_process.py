"""A full Jira cycle with the agent as a real process (``serve``), its Jira poller on, and its
task process — instrumented as part 2's coding scenario is (``test_coding_process``):

- **no unaudited call**: a PEP 578 hook (``sitecustomize`` on ``PYTHONPATH``, loaded by the
  agent and its task process) records every ``subprocess.Popen`` and ``socket.connect``; each
  git process, the task process, and each connection to GitLab, Jira or Redis must have its
  audit entry;
- **the Jira token nowhere**: not in any file under the task, clone, git server, spool and
  home directories, the audit file, the agent's and task's stdout/stderr, any Redis key or
  value, the argv of any process started, or the Jira stand-in's recorded requests — searched
  with every 8-character fragment (the GitLab token too).

The approval is required here and given by a listed Jira approver's comment, so the comment
listing is part of the cycle.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from codingkit import FILES, PROJECT, REPO
from jirakit import APPROVER, CHILD_PYTHONPATH, JIRA_EMAIL, MAP
from redisproc import RedisServer, free_port
from test_coding_process import (
    HOOK,
    _entries_until,
    _fragments,
    _random,
    _subcommand,
    _ts,
    _wait_listening,
    unmatched_git,
)

from agent_standins.git_server import GitServer
from agent_standins.gitlab import GitLabStandin
from agent_standins.jira import JiraStandin
from auditkeep.testing import read_trail, validate_entries


@dataclass
class JiraRun:
    tmp: Path
    trail: Path
    hook_log: Path
    redis: RedisServer
    git: GitServer
    gitlab: GitLabStandin
    jira: JiraStandin
    stdout: Path
    stderr: Path
    secrets: dict[str, str]
    ports: dict[str, int]

    def entries(self) -> list[dict[str, Any]]:
        return validate_entries(read_trail(self.trail))

    def hook_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.hook_log.read_text().splitlines()]


def _has(action: str) -> Any:
    return lambda es: any(e["action"] == action for e in es)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JiraRun]:
    tmp = tmp_path_factory.mktemp("jira-process")
    token, jira_token = _random("", 36), _random("", 40)
    hook_dir = tmp / "hook"
    hook_dir.mkdir()
    hook_log = tmp / "hook-events.jsonl"
    (hook_dir / "sitecustomize.py").write_text(HOOK.format(log=str(hook_log)))
    trail = tmp / "audit.jsonl"
    redis_server = RedisServer(tmp)
    git = GitServer(tmp / "git", token=token).start()
    git.create_repo(REPO, FILES)
    gitlab = GitLabStandin(token=token)
    gitlab.add_project(PROJECT, REPO, http_url_to_repo=git.repo_url(REPO), git=git)
    jira = JiraStandin(email=JIRA_EMAIL, token=jira_token)
    jira.add_issue("PROJ-1", summary="Add a search box", description="Search by name.")
    port = free_port()
    stdout, stderr = tmp / "agent.stdout", tmp / "agent.stderr"
    ports: dict[str, int] = {}
    with gitlab.serve() as gitlab_server, jira.serve() as jira_server:
        ports.update(gitlab=gitlab_server.port, jira=jira_server.port)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": f"{hook_dir}:{CHILD_PYTHONPATH}",
            "HOME": str(tmp / "home"),
            "LANG": "C.UTF-8",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "GITLAB_URL": gitlab_server.url,
            "GITLAB_TOKEN": token,
            "GITLAB_WEBHOOK_SECRET": _random("", 32),
            "GITLAB_MAX_RETRIES": "0",
            "LLM_PROVIDER": "offline",
            "REDIS_URL": redis_server.url,
            "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
            "TASK_WORK_DIR": str(tmp / "work"),
            "TASK_KEEP_WORK_DIRS": "true",
            "JIRA_URL": jira_server.url,
            "JIRA_EMAIL": JIRA_EMAIL,
            "JIRA_API_TOKEN": jira_token,
            "JIRA_PROJECT_MAP": orjson.dumps(MAP).decode(),
            "POLL_JIRA_ENABLED": "true",
            "POLL_JIRA_INTERVAL_S": "0.2",
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(trail),
            "AUDIT_LOG_FILE_MAX_BYTES": "0",
            "AUDIT_LOG_SPOOL_DIR": str(tmp / "spool"),
            "AUDIT_LOG_FLUSH_INTERVAL_S": "0.05",
        }
        with stdout.open("w") as out, stderr.open("w") as err:
            agent = subprocess.Popen(
                [sys.executable, "-m", "gitlab_copilot_agent.cli", "serve"],
                env=env,
                stdout=out,
                stderr=err,
            )
            try:
                _wait_listening(agent, port, stderr)
                found = _entries_until(trail, _has("approval_gate.requested"))
                task_id = next(e for e in found if e["action"] == "approval_gate.requested")[
                    "details"
                ]["task_id"]
                jira.add_comment_as("PROJ-1", APPROVER, "Ann", f"/copilot approve {task_id}")
                _entries_until(trail, _has("jira.issue.finished"))
                time.sleep(0.5)  # a few idle cycles too
            finally:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(40)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait(10)
    try:
        yield JiraRun(
            tmp, trail, hook_log, redis_server, git, gitlab, jira, stdout, stderr,
            {"JIRA_API_TOKEN": jira_token, "GITLAB_TOKEN": token}, ports,
        )  # fmt: skip
    finally:
        git.stop()
        redis_server.stop()


def test_the_issue_became_a_draft_merge_request(run: JiraRun) -> None:
    entries = run.entries()
    done = next(e for e in entries if e["action"] == "jira.issue.finished")
    assert done["outcome"] == "success"
    assert run.jira.status_of("PROJ-1") == "In Review"
    assert [mr["draft"] for mr in run.gitlab.created_merge_requests(PROJECT)] == [True]
    for action in ("jira.api.search_issues", "jira.api.transition_issue", "jira.api.add_comment",
                   "jira.api.list_comments", "gitlab.api.create_merge_request"):  # fmt: skip
        assert any(e["action"] == action for e in entries), action


def test_the_jira_token_is_in_no_output_file_argv_or_redis_value(run: JiraRun) -> None:
    places: dict[str, bytes] = {}
    for root in (run.tmp / "work", run.tmp / "git", run.tmp / "spool", run.tmp / "home"):
        for path in root.rglob("*") if root.exists() else ():
            if path.is_file() and not path.is_symlink():
                places[str(path)] = path.read_bytes()
    assert list((run.tmp / "work").rglob(".git/config")), "the task's clone must be searched"
    places["audit file"] = run.trail.read_bytes()
    places["agent and task stdout"] = run.stdout.read_bytes()
    places["agent and task stderr"] = run.stderr.read_bytes()
    dump = run.redis.dump()
    assert any(k.startswith("copilot:dedup:jira:") for k in dump)
    places.update({f"redis {k}": k.encode() + b" " + v for k, v in dump.items()})
    spawned = [e for e in run.hook_events() if e["event"] == "popen"]
    places["argv of every process started"] = "\n".join(
        " ".join(e["argv"]) + " " + e["executable"] for e in spawned
    ).encode()
    places["the Jira stand-in's recorded requests"] = repr(run.jira.requests).encode()
    leaks = [
        (name, fragment, where)
        for name, secret in run.secrets.items()
        for fragment in _fragments(secret)
        for where, content in places.items()
        if fragment.encode() in content
    ]
    assert leaks == []
    assert len(places) > 20


def test_every_process_and_connection_of_the_jira_cycle_has_its_entry(run: JiraRun) -> None:
    entries, events = run.entries(), run.hook_events()
    cid = next(e for e in entries if e["action"] == "jira.issue.finished")["correlation_id"]
    gits = [e for e in events if e["event"] == "popen" and Path(e["argv"][0]).name == "git"]
    assert [_subcommand(e["argv"]) for e in gits].count("push") == 1
    assert unmatched_git([e for e in entries if e["correlation_id"] == cid], events) == []
    started = [_ts(e) for e in entries if e["action"] == "task.started"]
    others = [e for e in events if e["event"] == "popen" and Path(e["argv"][0]).name != "git"]
    assert len(others) == len(started) == 1
    assert "run-task" in others[0]["argv"]
    assert started[0] <= others[0]["t"]
    endpoints: dict[int, Callable[[dict[str, Any]], bool]] = {
        run.ports["gitlab"]: lambda e: (
            e["action"].startswith("gitlab.api.")
            and e["action"] not in ("gitlab.api.clone_repo", "gitlab.api.push_branch")
        ),
        run.ports["jira"]: lambda e: e["action"].startswith("jira.api."),
        run.redis.port: lambda e: (e.get("details") or {}).get("store") == "redis",
    }
    connects = [e for e in events if e["event"] == "connect"]
    assert {p for p in endpoints if any(c["address"].endswith(f", {p})") for c in connects)} == set(
        endpoints
    )
    unmatched = []
    for connect in connects:
        port = next((p for p in endpoints if connect["address"].endswith(f", {p})")), None)
        if port is None or not any(endpoints[port](e) and _ts(e) >= connect["t"] for e in entries):
            unmatched.append(connect["address"])
    assert unmatched == []
