"""GitRunner against a real git server on loopback: the round trip, every push failure, the gate.

Real ``git`` on both sides (``git http-backend`` behind the GitServer stand-in),
a real audit file read back and validated against the schema.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from gitkit import PROJECT, TOKEN, Approval, Trail, make_runner, popen_log

from agent_standins.git_server import GitServer
from auditkeep import Actor
from auditkeep.context import correlation_scope
from gitlab_copilot_agent.git.errors import GitError, PushNotApproved
from gitlab_copilot_agent.git.runner import CLONE_REPO, PUSH_BRANCH, GitRunner

CID = "0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e"
TASK_ACTOR = Actor("system", "coding-task")
TARGET = {"project_id": 42, "mr_iid": 7}


async def clone_and_change(
    runner: GitRunner, server: GitServer, tmp_path: Path, name: str = "clone"
) -> tuple[Path, str, str]:
    """Clone ``feature``, change a file, commit; (clone, cloned sha, new sha)."""
    dest = tmp_path / name
    base = await runner.clone(server.repo_url(PROJECT), "feature", dest, target=TARGET)
    (dest / "README.md").write_text("# App\n\nChanged by the agent.\n")
    new = await runner.commit(dest, "Change the README", trailers={"Audit-Correlation-Id": CID})
    return dest, base, new


def only(entries: list[dict[str, Any]], action: str) -> dict[str, Any]:
    found = [e for e in entries if e["action"] == action]
    assert len(found) == 1, [e["action"] for e in entries]
    return found[0]


class TestRoundTrip:
    def test_clone_commit_push_reaches_the_server_and_the_trail(
        self, runner: GitRunner, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        """Clone → commit (agent author, trailer) → fast-forward push; two entries, one scope."""
        approval = Approval("task-7")

        async def main() -> tuple[Path, str, str, str]:
            with correlation_scope(TASK_ACTOR, CID):
                dest, base, new = await clone_and_change(runner, server, tmp_path)
                pushed = await runner.push(
                    dest,
                    "feature",
                    expected_remote_sha=base,
                    target=TARGET,
                    authorization=approval,
                )
            return dest, base, new, pushed

        with popen_log() as log:
            dest, base, new, pushed = asyncio.run(main())
        assert base == server.head(PROJECT, "main")
        assert (dest / "src" / "app.py").read_text() == "print('hi')\n"
        assert pushed == new == server.head(PROJECT, "feature")
        assert server.file_at(PROJECT, "feature", "README.md") == "# App\n\nChanged by the agent.\n"
        message = server.commit_message(PROJECT, "feature")
        assert message.rstrip().endswith(f"Audit-Correlation-Id: {CID}")
        assert approval.calls == 1
        assert all(r.authorized for r in server.requests)
        services = [r.service for r in server.requests]
        assert "git-upload-pack" in services
        assert "git-receive-pack" in services

        entries = trail.entries("gitlab.api.")
        assert [e["action"] for e in entries] == [CLONE_REPO, PUSH_BRANCH]
        clone, push = entries
        assert clone["target"] == {
            "resource_type": "repository",
            "project_id": 42,
            "mr_iid": 7,
            "repo": PROJECT,
            "branch": "feature",
            "commit_sha": base,
        }
        assert push["target"] == {**clone["target"], "commit_sha": new}
        assert (clone["outcome"], push["outcome"]) == ("success", "success")
        assert {clone["correlation_id"], push["correlation_id"]} == {CID}
        assert push["details"]["task_id"] == "task-7"
        assert push["details"]["expected_remote_sha"] == base
        assert push["details"]["approval_verified"] is True
        assert clone["details"]["url"] == server.repo_url(PROJECT)
        assert clone["duration_ms"] >= 0
        # Every git process of a step is named by its entry, in order (commit has no entry).
        assert clone["details"]["git_commands"] == ["clone", "config", "remote", "rev-parse"]
        assert push["details"]["git_commands"] == ["remote", "rev-parse", "merge-base", "push"]
        client = [s.argv[1] for s in log.git() if s.argv[1] != "http-backend"]
        commit_step = ["add", "diff", "commit", "rev-parse"]
        assert client == [
            *clone["details"]["git_commands"],
            *commit_step,
            *push["details"]["git_commands"],
        ]

    def test_commit_is_by_the_agent_and_runs_no_hook(
        self, runner: GitRunner, server: GitServer, tmp_path: Path
    ) -> None:
        """Author and committer are the agent; a hook planted in the clone never runs."""
        dest = tmp_path / "clone"
        asyncio.run(runner.clone(server.repo_url(PROJECT), "main", dest, target={}))
        marker = tmp_path / "hook-ran"
        hook = dest / ".git" / "hooks" / "post-commit"  # --no-verify does not skip it
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
        (dest / "new.txt").write_text("new\n")
        asyncio.run(runner.commit(dest, "Add new.txt", trailers={}))
        shown = subprocess.run(
            ["git", "log", "-1", "--format=%an <%ae>|%cn <%ce>|%B"],
            cwd=dest,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert shown.startswith(
            "gitlab-copilot-agent <agent@localhost>|gitlab-copilot-agent <agent@localhost>|"
            "Add new.txt"
        )
        assert not marker.exists()

    def test_nothing_to_commit_and_bad_trailers_are_refused(
        self, runner: GitRunner, server: GitServer, tmp_path: Path
    ) -> None:
        dest = tmp_path / "clone"
        asyncio.run(runner.clone(server.repo_url(PROJECT), "main", dest, target={}))
        with pytest.raises(GitError, match="nothing to commit") as raised:
            asyncio.run(runner.commit(dest, "Nothing", trailers={}))
        assert raised.value.error_class == "git_error"
        (dest / "x.txt").write_text("x\n")
        for trailers in ({"Bad Key": "v"}, {"Key": "two\nlines"}, {"Key": ""}):
            with pytest.raises(GitError) as bad:
                asyncio.run(runner.commit(dest, "x", trailers=trailers))
            assert bad.value.error_class == "validation_error"


def _fault_401(server: GitServer) -> None:
    server.fail_next(401)


def _fault_403(server: GitServer) -> None:
    server.fail_next(403)


def _fault_500(server: GitServer) -> None:
    server.fail_next(500)


def _fault_reset(server: GitServer) -> None:
    server.fail_next(0)


def _fault_moved(server: GitServer) -> None:
    server.move_branch(PROJECT, "feature")


def _fault_protected(server: GitServer) -> None:
    server.protect(PROJECT, "feature")


def _fault_stopped(server: GitServer) -> None:
    server.stop()


PUSH_FAILURES = [
    ("401", _fault_401, "auth_failure", "auth_failure", 401),
    ("403", _fault_403, "auth_failure", "auth_failure", 403),
    ("non_ff", _fault_moved, "non_fast_forward", "non_fast_forward", None),
    ("protected", _fault_protected, "protected_branch", "protected_branch", None),
    ("reset", _fault_reset, "network_error", "network_error", None),
    ("stopped", _fault_stopped, "network_error", "network_error", None),
    ("500", _fault_500, "server_error", "server_error", 500),
]


class TestPushFailures:
    @pytest.mark.parametrize(
        ("fault", "fine", "schema"),
        [(f, fine, schema) for _, f, fine, schema, _ in PUSH_FAILURES],
        ids=[case[0] for case in PUSH_FAILURES],
    )
    def test_each_failure_class_comes_from_the_server_and_is_audited(
        self,
        runner: GitRunner,
        server: GitServer,
        trail: Trail,
        tmp_path: Path,
        fault: Any,
        fine: str,
        schema: str,
    ) -> None:
        """The server produces the failure; the push is refused and classified; nothing lands."""
        dest, base, new = asyncio.run(clone_and_change(runner, server, tmp_path))
        fault(server)
        before = server.head(PROJECT, "feature")
        with pytest.raises(GitError) as raised:
            asyncio.run(
                runner.push(
                    dest,
                    "feature",
                    expected_remote_sha=base,
                    target=TARGET,
                    authorization=Approval(),
                )
            )
        assert raised.value.error_class == fine
        assert TOKEN not in f"{raised.value}{raised.value!r}"
        assert server.head(PROJECT, "feature") == before != new
        push = only(trail.entries(), PUSH_BRANCH)
        assert push["outcome"] == "failure"
        assert push["error"] == schema
        assert push["details"]["failure_class"] == fine
        assert push["error_message"].startswith(f"{fine}: git push failed")
        assert push["target"]["commit_sha"] == new

    def test_a_hanging_server_is_a_timeout_and_leaves_no_process(
        self, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        """The server never answers; the push is killed at its deadline, with its helpers."""
        slow = make_runner(trail, server.url, timeout_s=2.0)
        dest, base, _ = asyncio.run(clone_and_change(slow, server, tmp_path))
        server.hang_next(seconds=60)
        started = time.monotonic()
        with pytest.raises(GitError) as raised:
            asyncio.run(
                slow.push(
                    dest, "feature", expected_remote_sha=base, target={}, authorization=Approval()
                )
            )
        elapsed = time.monotonic() - started
        assert raised.value.error_class == "timeout"
        assert 1.5 <= elapsed < 10
        push = only(trail.entries(), PUSH_BRANCH)
        assert (push["error"], push["details"]["failure_class"]) == ("timeout", "timeout")
        assert _processes_in(dest) == []
        slow.close()

    def test_a_head_that_does_not_descend_from_the_expected_sha_never_reaches_the_server(
        self, runner: GitRunner, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        """Fast-forward only: HEAD not descending from the expected sha is refused locally."""
        dest, base, _ = asyncio.run(clone_and_change(runner, server, tmp_path))
        other = server.move_branch(PROJECT, "main")  # a commit the clone does not have
        server.reset()
        with pytest.raises(GitError) as raised:
            asyncio.run(
                runner.push(
                    dest, "feature", expected_remote_sha=other, target={}, authorization=Approval()
                )
            )
        assert raised.value.error_class == "non_fast_forward"
        assert [r for r in server.requests if r.service == "git-receive-pack"] == []
        assert base == server.head(PROJECT, "feature")

    @pytest.mark.parametrize(
        "remote",
        ["http://127.0.0.1:1/group/other.git", "http://oauth2:stolen-token-99@127.0.0.1:1/g/a.git"],
        ids=["another-repo", "userinfo"],
    )
    def test_a_remote_changed_after_the_clone_is_refused_before_any_request(
        self, runner: GitRunner, server: GitServer, trail: Trail, tmp_path: Path, remote: str
    ) -> None:
        """The push goes to the URL that was validated at clone time, or nowhere."""
        dest, base, _ = asyncio.run(clone_and_change(runner, server, tmp_path))
        subprocess.run(["git", "remote", "set-url", "origin", remote], cwd=dest, check=True)
        server.reset()
        with pytest.raises(GitError) as raised:
            asyncio.run(
                runner.push(
                    dest, "feature", expected_remote_sha=base, target={}, authorization=Approval()
                )
            )
        assert raised.value.error_class == "validation_error"
        assert server.requests == []
        assert "stolen-token-99" not in str(raised.value)
        assert b"stolen-token-99" not in trail.raw()


class TestPushAuthorization:
    def test_a_refused_approval_starts_no_git_process(
        self, runner: GitRunner, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        """verify() raising: audited as not_approved, zero processes, zero requests."""
        dest, base, new = asyncio.run(clone_and_change(runner, server, tmp_path))
        server.reset()
        refused = Approval("task-9", approved=False)
        with popen_log() as log, pytest.raises(PushNotApproved) as raised:
            asyncio.run(
                runner.push(
                    dest,
                    "feature",
                    expected_remote_sha=base,
                    target=TARGET,
                    authorization=refused,
                )
            )
        assert log.spawns == []
        assert server.requests == []
        assert refused.calls == 1
        assert raised.value.error_class == "auth_failure"
        assert server.head(PROJECT, "feature") == base != new
        push = only(trail.entries(), PUSH_BRANCH)
        assert push["outcome"] == "failure"
        assert push["error"] == "auth_failure"
        assert push["details"]["reason"] == "not_approved"
        assert push["details"]["git_commands"] == []
        assert push["details"]["task_id"] == "task-9"
        assert push["target"]["repo"] == PROJECT
        assert "no approve decision recorded for task task-9" in push["error_message"]

    def test_an_object_without_verify_is_refused_too(
        self, runner: GitRunner, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        dest, base, _ = asyncio.run(clone_and_change(runner, server, tmp_path))
        with popen_log() as log, pytest.raises(PushNotApproved):
            asyncio.run(
                runner.push(
                    dest,
                    "feature",
                    expected_remote_sha=base,
                    target={},
                    authorization=object(),  # type: ignore[arg-type]
                )
            )
        assert log.spawns == []
        assert only(trail.entries(), PUSH_BRANCH)["details"]["reason"] == "not_approved"


class TestCloneFailures:
    def test_an_unknown_branch_is_not_found_and_leaves_nothing(
        self, runner: GitRunner, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        dest = tmp_path / "clone"
        with pytest.raises(GitError) as raised:
            asyncio.run(runner.clone(server.repo_url(PROJECT), "no-such", dest, target={}))
        assert raised.value.error_class == "not_found"
        assert not dest.exists()
        clone = only(trail.entries(), CLONE_REPO)
        assert (clone["outcome"], clone["error"]) == ("failure", "not_found")
        assert clone["target"]["repo"] == PROJECT

    def test_a_wrong_token_is_an_auth_failure(
        self, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        wrong = make_runner(trail, server.url, token="gt-not-the-right-token-0000")
        with pytest.raises(GitError) as raised:
            asyncio.run(wrong.clone(server.repo_url(PROJECT), "main", tmp_path / "c", target={}))
        assert raised.value.error_class == "auth_failure"
        assert [r.authorized for r in server.requests] == [False]
        assert only(trail.entries(), CLONE_REPO)["error"] == "auth_failure"
        wrong.close()

    def test_a_refused_url_starts_no_git_process(
        self, runner: GitRunner, server: GitServer, trail: Trail, tmp_path: Path
    ) -> None:
        url = server.repo_url(PROJECT).replace("http://", f"http://oauth2:{TOKEN}@")
        with popen_log() as log, pytest.raises(GitError) as raised:
            asyncio.run(runner.clone(url, "main", tmp_path / "c", target={}))
        assert log.spawns == []
        assert raised.value.error_class == "validation_error"
        assert TOKEN not in str(raised.value)
        clone = only(trail.entries(), CLONE_REPO)
        assert (clone["error"], clone["details"]["failure_class"]) == (
            "validation_error",
            "validation_error",
        )
        assert TOKEN.encode() not in trail.raw()

    def test_a_non_empty_destination_is_refused_and_kept(
        self, runner: GitRunner, server: GitServer, tmp_path: Path
    ) -> None:
        dest = tmp_path / "busy"
        dest.mkdir()
        (dest / "keep.txt").write_text("mine\n")
        with pytest.raises(GitError, match="not an empty directory"):
            asyncio.run(runner.clone(server.repo_url(PROJECT), "main", dest, target={}))
        assert (dest / "keep.txt").read_text() == "mine\n"


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (or below)."""
    found = []
    target = str(directory.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == target or cwd.startswith(target + "/"):
            found.append(int(entry))
    return found
