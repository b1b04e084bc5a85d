"""``gitlab-copilot-agent run-task`` as a process, and the local executor's hand-over.

The push step cannot be talked around: a task process started without its agent (no
channel), or whose agent's gate has no ``approve`` for it, pushes nothing — the git server
sees no push at all. Bad input stops it with one line. The environment a task gets holds the
task's own settings and nothing of the agent's webhook secrets or Redis.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from codingkit import BRANCH, CHILD_PYTHONPATH, FILES, REPO, TOKEN

from agent_standins.git_server import GitServer
from auditkeep import Actor, correlation_scope
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.settings import Settings
from gitlab_copilot_agent.tasks.executor import LocalExecutor
from gitlab_copilot_agent.tasks.spec import TaskSpec

CID = "01a22038-3e19-7ee7-9410-213bd4b57056"
SIGNING = "whsec_ZGVtby1zaWduaW5nLWtleS0zMi1ieXRlcy1sb25nISE="


@pytest.fixture
def git(tmp_path: Path) -> Any:
    with GitServer(tmp_path / "git", token=TOKEN) as server:
        server.create_repo(REPO, FILES)
        server.create_branch(REPO, BRANCH)
        yield server


def spec_for(git: GitServer) -> TaskSpec:
    return TaskSpec(
        task_id="0123456789abcdef",
        correlation_id=CID,
        project_id=42,
        mr_iid=7,
        repo_url=git.repo_url(REPO),
        branch=BRANCH,
        head_sha=git.head(REPO, BRANCH),
        instruction="mention search in the README",
        instruction_sha256="0" * 64,
    )


def task_env(tmp: Path, git: GitServer) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": CHILD_PYTHONPATH,
        "HOME": str(tmp),
        "GITLAB_URL": git.url,
        "GITLAB_TOKEN": TOKEN,
        "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(tmp / "audit.jsonl"),
        "AUDIT_LOG_SPOOL_DIR": str(tmp / "spool"),
        "AUDIT_CORRELATION_ID": CID,
        "AUDIT_ACTOR_TYPE": "webhook_event",
        "AUDIT_ACTOR_ID": "test",
    }


def run_task(env: dict[str, str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gitlab_copilot_agent.cli", "run-task"],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )


class TestThePushStep:
    def test_without_its_agent_a_task_pushes_nothing(self, tmp_path: Path, git: GitServer) -> None:
        """No channel: clone, model, patch, validation all run (and are audited), the push is
        refused before any git process (``not_approved``), the server sees no receive-pack."""
        before = git.head(REPO, BRANCH)
        git.reset()
        spec = spec_for(git)
        done = run_task(task_env(tmp_path, git), spec.to_json())
        assert done.returncode == 0, done.stderr
        assert b"result: push_failed" in done.stderr
        entries = validate_entries(read_trail(tmp_path / "audit.jsonl"))
        assert {e["correlation_id"] for e in entries} == {CID}
        push = next(e for e in entries if e["action"] == "gitlab.api.push_branch")
        assert (push["outcome"], push["error"], push["details"]["reason"]) == (
            "failure",
            "auth_failure",
            "not_approved",
        )
        assert "started without its agent" in push["error_message"]
        assert git.head(REPO, BRANCH) == before
        assert not any(r.service == "git-receive-pack" for r in git.requests)

    def test_an_agent_whose_gate_refuses_gets_no_push(self, tmp_path: Path, git: GitServer) -> None:
        """Through the local executor and the channel: the verifier refuses, the result says
        ``push_failed``/``not_approved``, the server sees no push."""
        before = git.head(REPO, BRANCH)
        settings = Settings.from_env(
            {
                "GITLAB_URL": git.url,
                "GITLAB_TOKEN": TOKEN,
                "GITLAB_WEBHOOK_SECRET": "never-in-a-task-0001",
                "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
                "TASK_WORK_DIR": str(tmp_path / "work"),
            }
        )
        base = {
            k: v for k, v in task_env(tmp_path, git).items() if k.startswith(("AUDIT_LOG", "P"))
        }
        executor = LocalExecutor(settings, base_environ=base)
        asked: list[tuple[str, str, str]] = []

        async def refuse(task_id: str, head: str, instruction: str) -> None:
            asked.append((task_id, head, instruction))
            raise PermissionError("no approve decision is recorded for task")

        async def go() -> Any:
            with correlation_scope(Actor("webhook_event", "t"), CID):
                return await executor.run(spec_for(git), verify_push=refuse)

        outcome = asyncio.run(go())
        assert (outcome.status, outcome.reason) == ("push_failed", "not_approved")
        assert asked == [("0123456789abcdef", before, "0" * 64)]
        assert git.head(REPO, BRANCH) == before
        assert not any(r.service == "git-receive-pack" for r in git.requests)
        assert list((tmp_path / "work").iterdir()) == []  # the task's directory is gone


class TestBadInput:
    def test_a_bad_spec_is_one_line_and_exit_2(self, tmp_path: Path, git: GitServer) -> None:
        done = run_task(task_env(tmp_path, git), b'{"task_id": 1}')
        assert done.returncode == 2
        assert done.stderr.decode().strip().count("\n") == 0
        assert "invalid task spec" in done.stderr.decode()

    def test_the_spec_may_come_in_a_file(self, tmp_path: Path, git: GitServer) -> None:
        """``--task-file``: the same task, read from a file (stdin unused)."""
        path = tmp_path / "task.json"
        path.write_bytes(spec_for(git).to_json())
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "gitlab_copilot_agent.cli",
                "run-task",
                "--task-file",
                str(path),
            ],
            stdin=subprocess.DEVNULL,
            env=task_env(tmp_path, git),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert b"result: push_failed" in done.stderr  # no agent, so no approval to verify

    def test_a_bad_setting_names_the_variable(self, tmp_path: Path, git: GitServer) -> None:
        env = {**task_env(tmp_path, git), "GIT_TIMEOUT_S": "soon"}
        done = run_task(env, spec_for(git).to_json())
        assert done.returncode == 2
        assert "GIT_TIMEOUT_S" in done.stderr.decode()
        assert "Traceback" not in done.stderr.decode()


class TestTheEnvironment:
    def test_a_task_gets_its_settings_the_scope_and_no_agent_secret(self, tmp_path: Path) -> None:
        settings = Settings.from_env(
            {
                "GITLAB_URL": "https://gitlab.example.com",
                "GITLAB_TOKEN": "glpat-task-env-000000000",
                "GITLAB_WEBHOOK_SECRET": "never-in-a-task-0001",
                "GITLAB_WEBHOOK_SIGNING_TOKEN": SIGNING,
                "REDIS_URL": "redis://:redis-password-0001@127.0.0.1:6379/0",
                "CODING_CHECK_COMMAND": "make 'test suite'",
                "CODING_PROTECTED_PATHS": "none",
            }
        )
        executor = LocalExecutor(settings, base_environ={"PATH": "/bin", "SECRET_THING": "x"})
        with correlation_scope(Actor("webhook_event", "evt"), CID):
            env = executor.environment(tmp_path, 7)
        assert env["GITLAB_TOKEN"] == "glpat-task-env-000000000"
        assert (env["AUDIT_CORRELATION_ID"], env["AUDIT_ACTOR_ID"]) == (CID, "evt")
        assert env["COPILOT_TASK_CHANNEL_FD"] == "7"
        assert env["HOME"] == str(tmp_path)
        assert env["CODING_CHECK_COMMAND"] == "make 'test suite'"
        assert env["CODING_PROTECTED_PATHS"] == "none"
        joined = "\n".join(f"{k}={v}" for k, v in env.items())
        for absent in ("never-in-a-task", "whsec_", "redis-password", "SECRET_THING", "REDIS_URL"):
            assert absent not in joined
        from gitlab_copilot_agent.settings import TaskSettings

        again = TaskSettings.from_env(env)
        assert again.coding == settings.coding
        assert again.gitlab == settings.gitlab
