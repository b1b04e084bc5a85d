"""An agent process killed (SIGKILL, no shutdown at all) in the middle of a Jira issue, and a new
agent process on the same Redis: the issue is not taken again, even when the Jira search lists
it in its trigger status once more — the lock and the dedup record are in Redis, written before
any side effect."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from codingkit import FILES, PROJECT, REPO
from jirakit import CHILD_PYTHONPATH, JIRA_EMAIL, MAP
from redisproc import RedisServer, free_port
from test_coding_process import _entries_until, _wait_listening

from agent_standins.git_server import GitServer
from agent_standins.gitlab import GitLabStandin
from agent_standins.jira import JiraStandin

TOKEN = "gl4Tn8Qw2Zr6Yc0Vm3Hk7Bp1Xs5Df9Ja"
JIRA_TOKEN = "ji7Wq2Lm9Xc4Rt8Pv1Ks6Hd3Gb0Nz5Ty"


def test_a_killed_agent_and_its_successor_take_the_issue_once(tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    redis_server = RedisServer(tmp_path)
    git = GitServer(tmp_path / "git", token=TOKEN).start()
    git.create_repo(REPO, FILES)
    gitlab = GitLabStandin(token=TOKEN)
    gitlab.add_project(PROJECT, REPO, http_url_to_repo=git.repo_url(REPO), git=git)
    jira = JiraStandin(email=JIRA_EMAIL, token=JIRA_TOKEN)
    jira.add_issue("PROJ-1", summary="Add a search box")
    agents: list[subprocess.Popen[bytes]] = []
    try:
        with gitlab.serve() as gitlab_server, jira.serve() as jira_server:
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "PYTHONPATH": CHILD_PYTHONPATH,
                "HOME": str(tmp_path / "home"),
                "LANG": "C.UTF-8",
                "GITLAB_URL": gitlab_server.url,
                "GITLAB_TOKEN": TOKEN,
                "GITLAB_WEBHOOK_SECRET": "crash-test-webhook-secret-01",
                "GITLAB_MAX_RETRIES": "0",
                "LLM_PROVIDER": "offline",
                "REDIS_URL": redis_server.url,
                "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
                "TASK_WORK_DIR": str(tmp_path / "work"),
                "CODING_CHECK_COMMAND": "sleep 5",  # busy when killed; ends by itself
                "APPROVAL_EXEMPT_PROJECTS": str(PROJECT),
                "JIRA_URL": jira_server.url,
                "JIRA_EMAIL": JIRA_EMAIL,
                "JIRA_API_TOKEN": JIRA_TOKEN,
                "JIRA_PROJECT_MAP": orjson.dumps(MAP).decode(),
                "POLL_JIRA_ENABLED": "true",
                "POLL_JIRA_INTERVAL_S": "0.2",
                "AUDIT_LOG_DESTINATION": "file",
                "AUDIT_LOG_FILE_PATH": str(trail),
                "AUDIT_LOG_FILE_MAX_BYTES": "0",
                "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
                "AUDIT_LOG_FLUSH_INTERVAL_S": "0.05",
            }

            def start() -> subprocess.Popen[bytes]:
                port = free_port()
                log = tmp_path / f"agent-{len(agents)}.stderr"
                with log.open("w") as err:  # the child keeps its own descriptor
                    agent = subprocess.Popen(
                        [sys.executable, "-m", "gitlab_copilot_agent.cli", "serve"],
                        env={**env, "PORT": str(port)},
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                agents.append(agent)
                _wait_listening(agent, port, log)
                return agent

            first = start()
            _entries_until(
                trail, lambda es: any(e["action"] == "copilot.patch.generated" for e in es)
            )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert jira.status_of("PROJ-1") == "In Progress"
            jira.set_status("PROJ-1", "To Do")  # listed again, as a stale search would
            start()
            _entries_until(
                trail,
                lambda es: any(
                    e["action"] == "jira.issue.skipped" and e["details"]["reason"] == "locked"
                    for e in es
                ),
            )
            time.sleep(0.5)  # more cycles
            found = _entries_until(trail, lambda es: True)
            taken = [e for e in found if e["action"] == "jira.issue.taken"]
            assert len(taken) == 1
            assert sum(e["action"] == "task.started" for e in found) == 1
            assert gitlab.created_merge_requests(PROJECT) == []
            skipped = [e for e in found if e["action"] == "jira.issue.skipped"]
            assert {e["details"]["holder_correlation_id"] for e in skipped} == {
                taken[0]["correlation_id"]
            }
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(20)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait(10)
        git.stop()
        redis_server.stop()
