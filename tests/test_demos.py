"""The README's main job: both demos run as a new user would run them, and show their trail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditkeep.testing import read_trail, validate_entries


def run(
    module: str, *args: str, cwd: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_LOG_")}
    env.update(extra or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


class TestDemos:
    def test_agent_demo_reviews_and_prints_the_trail(self, tmp_path: Path) -> None:
        """`gitlab-copilot-agent demo` reviews the MR, refuses two deliveries, prints the trace."""
        result = run("gitlab_copilot_agent.cli", "demo", "--dir", "out", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "the agent posted 1 review note(s)" in result.stdout
        assert "missing_signature" in result.stdout
        assert "replayed" in result.stdout
        entries = validate_entries(read_trail(tmp_path / "out" / "audit.jsonl"))
        rejected = sorted(
            e["details"]["rejection_reason"]
            for e in entries
            if e["action"] == "webhook.auth.rejected"
        )
        assert rejected == ["missing_signature", "replayed"]
        review = [
            e
            for e in entries
            if e["action"] == "gitlab.api.post_mr_note" and e["target"]["comment_type"] == "review"
        ]
        assert len(review) == 1
        assert f"auditkeep trace {review[0]['correlation_id']}" in result.stdout

    def test_agent_demo_runs_the_coding_task_behind_the_approval_gate(self, tmp_path: Path) -> None:
        """The coding scenario: fix by a developer, their own approval and a non-member's
        refused, a maintainer's approval, the task in its own process, a real push to the
        git server, the result note, and ``auditkeep trace`` of the task's correlation id."""
        result = run("gitlab_copilot_agent.cli", "demo", "--dir", "out", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "state store: redis at redis://127.0.0.1:" in out
        assert "someone else must approve it" in out
        assert "@eve may not approve task" in out
        assert "pushed `" in out
        assert "Audit-Correlation-Id: " in out
        # The trail is signed (a key made for the run) and verified: the agent's chain and each
        # task process's, every one closed by its final signed checkpoint.
        assert "== auditkeep verify --public-key " in out
        verdict = out.rsplit("\nVERIFIED: ", 1)[1].split("\n", 1)[0]
        assert " chains, " in verdict, verdict
        assert " 0 problems; checked signatures;" in verdict, verdict
        assert "(exit 0)" in verdict
        entries = validate_entries(read_trail(tmp_path / "out" / "audit.jsonl"))
        refused = [e["details"]["reason"] for e in entries if e["action"].endswith("refused")]
        assert refused == ["self_approval", "not_an_approver"]
        (push,) = [
            e
            for e in entries
            if e["action"] == "gitlab.api.push_branch"
            and e["target"]["branch"] == "feature/search-docs"  # the Jira scenario pushes too
        ]
        assert push["outcome"] == "success"
        task_cid = push["correlation_id"]
        assert f"auditkeep trace {task_cid}" in out
        assert f"Audit-Correlation-Id: {task_cid}" in out
        task = [e for e in entries if e["correlation_id"] == task_cid]
        for action in ("approval_gate.decision", "task.started", "task.finished"):
            assert action in [e["action"] for e in task]
        finished = next(e for e in task if e["action"] == "task.finished")
        assert finished["outcome"] == "success"

    def test_agent_demo_takes_a_jira_issue_to_a_draft_mr_and_traces_the_cycle(
        self, tmp_path: Path
    ) -> None:
        """The Jira scenario: the poller takes the issue, the gate asks on it, a listed Jira
        approver approves, the task pushes ``agent/PROJ-7``, a draft MR opens, the issue gets
        the link and moves to In Review; ``auditkeep trace`` of the cycle shows it all."""
        result = run("gitlab_copilot_agent.cli", "demo", "--dir", "out", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "waits for approval on branch agent/PROJ-7" in out
        assert "'Draft: PROJ-7: " in out
        assert "draft=True" in out
        assert "Jira transitions: To Do -> In Progress -> In Review" in out
        entries = validate_entries(read_trail(tmp_path / "out" / "audit.jsonl"))
        (taken,) = [e for e in entries if e["action"] == "jira.issue.taken"]
        cycle = taken["correlation_id"]
        assert taken["actor"]["type"] == "poll_cycle"
        assert f"auditkeep trace {cycle}" in out
        mine = [e["action"] for e in entries if e["correlation_id"] == cycle]
        for action in ("poll.cycle.started", "approval_gate.decision", "gitlab.api.push_branch",
                       "gitlab.api.create_merge_request", "jira.issue.finished"):  # fmt: skip
            assert action in mine, action
        decision = next(e for e in entries if e["action"] == "approval_gate.decision"
                        and e["target"].get("issue_key") == "PROJ-7")  # fmt: skip
        assert decision["details"]["approver"] == "acc-mia-0006"

    def test_agent_demo_runs_the_coding_task_as_a_kubernetes_job(self, tmp_path: Path) -> None:
        """``TASK_EXECUTOR=kubernetes``: the same coding scenario through the Kubernetes API
        stand-in, with the same trail as the local executor plus the ``k8s.api.*`` calls, all
        under the task's correlation id (the pod's entries too)."""
        result = run(
            "gitlab_copilot_agent.cli", "demo", "--dir", "out", cwd=tmp_path,
            extra={"TASK_EXECUTOR": "kubernetes"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "executor: kubernetes (Jobs through the Kubernetes API stand-in" in out
        assert "pushed `" in out
        entries = validate_entries(read_trail(tmp_path / "out" / "audit.jsonl"))
        (push,) = [
            e
            for e in entries
            if e["action"] == "gitlab.api.push_branch"
            and e["target"]["branch"] == "feature/search-docs"  # the Jira scenario pushes too
        ]
        task_cid = push["correlation_id"]
        task = [e["action"] for e in entries if e["correlation_id"] == task_cid]
        for action in (
            "approval_gate.decision",
            "task.started",
            "k8s.api.create_job",
            "gitlab.api.clone_repo",
            "copilot.patch.validated",
            "gitlab.api.push_branch",
            "k8s.api.get_job",
            "k8s.api.delete_job",
            "task.result.stored",
            "task.finished",
        ):
            assert action in task, action
        # Both tasks (the /copilot fix and the Jira issue's) ran as Jobs.
        started = [e for e in entries if e["action"] == "task.started"]
        assert len(started) == 2
        assert {e["details"]["executor"] for e in started} == {"kubernetes"}
        assert f"auditkeep trace {task_cid}" in out

    def test_library_demo_writes_and_queries_its_burst(self, tmp_path: Path) -> None:
        """`auditkeep demo` writes every entry it reports and queries them back."""
        result = run("auditkeep.cli", "demo", "--dir", "lib", "--entries", "3000", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        lines = read_trail(tmp_path / "lib" / "audit.jsonl")
        assert f"wrote {len(lines)} audit entries" in result.stdout
        assert len(_entries(lines)) == 3000 + 14
        assert "== auditkeep report" in result.stdout
        # chained and signed with the key made for the run (docs/integrity.md)
        assert all(b',"chain":{"id":' in line for line in lines)
        assert (tmp_path / "lib" / "audit-signing.pem.pub").exists()


def _entries(lines: list[bytes]) -> list[bytes]:
    """The demo's own entries, without its chain's (auditkeep.chain.started/checkpoint)."""
    return [line for line in lines if b'"action":"auditkeep.chain.' not in line]


def _folder_with_a_file_of_mine(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "X"
    folder.mkdir()
    mine = folder / "important.txt"
    mine.write_text("the only copy\n")
    return folder, mine


DEMOS = [
    pytest.param(("auditkeep.cli", "demo", "--entries", "200"), id="auditkeep"),
    pytest.param(("gitlab_copilot_agent.cli", "demo"), id="gitlab-copilot-agent"),
]


class TestDemoFolders:
    @pytest.mark.parametrize("command", DEMOS)
    def test_a_folder_with_other_files_is_refused_and_left_alone(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        """`demo --dir X` with important.txt in X exits 2, names it, and X is unchanged."""
        folder, mine = _folder_with_a_file_of_mine(tmp_path)
        module, *args = command
        result = run(module, *args, "--dir", str(folder), cwd=tmp_path)
        assert result.returncode == 2
        assert "important.txt" in result.stderr
        assert "--force" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert sorted(p.name for p in folder.iterdir()) == ["important.txt"]
        assert mine.read_text() == "the only copy\n"

    @pytest.mark.parametrize("command", DEMOS)
    def test_force_writes_beside_other_files_and_keeps_them(
        self, tmp_path: Path, command: tuple[str, ...]
    ) -> None:
        """`demo --dir X --force` runs, and important.txt is still there, unchanged."""
        folder, mine = _folder_with_a_file_of_mine(tmp_path)
        module, *args = command
        result = run(module, *args, "--dir", str(folder), "--force", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert mine.read_text() == "the only copy\n"
        assert read_trail(folder / "audit.jsonl")

    def test_a_demo_folder_is_reused_and_holds_only_the_new_run(self, tmp_path: Path) -> None:
        """Run twice in the same folder, no --force: the second trail replaces the first."""
        for entries in ("300", "100"):
            result = run(
                "auditkeep.cli", "demo", "--dir", "lib", "--entries", entries, cwd=tmp_path
            )
            assert result.returncode == 0, result.stderr
        assert len(_entries(read_trail(tmp_path / "lib" / "audit.jsonl"))) == 100 + 14
