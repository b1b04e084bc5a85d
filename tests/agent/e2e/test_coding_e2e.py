"""US-3 end to end: ``/copilot fix`` → approval → a task process → a real push → the result note.

Real sockets (the agent on uvicorn, the GitLab stand-in), a real git server (``git
http-backend``), a real redis-server, real ``run-task`` child processes writing to the same
audit file; the trail read back and validated against the JSON Schema.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from codingkit import (
    BRANCH,
    DEV,
    FILES,
    MAINTAINER,
    MR,
    OUTSIDER,
    OWNER,
    PROJECT,
    REPO,
    REPORTER,
    US3,
    World,
    actions,
    coding_world,
    in_order,
    patch_appending,
)
from redisproc import free_port

from agent_standins.faults import Fault

CHILD_ACTIONS = {
    "gitlab.api.clone_repo",
    "copilot.sdk.coding_request",
    "copilot.sdk.response_received",
    "copilot.patch.generated",
    "copilot.patch.validated",
    "gitlab.api.push_branch",
}
EXEMPT = {"APPROVAL_EXEMPT_PROJECTS": str(PROJECT)}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[World]:
    with coding_world(tmp_path, monkeypatch, redis_url=redis_url) as found:
        yield found


def one(entries: list[dict[str, Any]], action: str) -> dict[str, Any]:
    found = [e for e in entries if e["action"] == action]
    assert len(found) == 1, (action, actions(entries))
    return found[0]


def task_pids() -> list[int]:
    """``run-task`` processes started by this test process (the agent runs in it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and b"run-task" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class TestTheWholeStory:
    def test_one_command_one_correlation_id_from_comment_to_push(
        self, world: World, redis_url: str
    ) -> None:
        """Every US-3 step in order under the fix webhook's id (the task process's entries
        too), with its contract fields; the approving webhook keeps its own id for its own
        entries and is named in ``trigger_correlation_id``; the commit carries the trailer;
        the Redis result carries the correlation id."""
        before = world.head()
        cid = world.note("/copilot fix add a line about search to the README", note_id=2001)
        task_id = world.requested_task(cid)
        approver_cid = world.note(f"/copilot approve {task_id}", MAINTAINER, note_id=2002)
        world.wait_for("task.finished", cid)
        entries = world.entries(cid)
        assert in_order(actions(entries), US3), actions(entries)
        everything = world.entries()
        for entry in everything:
            if entry["action"] in CHILD_ACTIONS or entry["action"].startswith(
                ("task.", "approval")
            ):
                assert entry["correlation_id"] == cid, entry
        assert actions(world.entries(approver_cid)) == [
            "webhook.auth.validated",
            "copilot.command.received",
        ]
        after = world.head()
        assert after != before

        received = next(e for e in entries if e["action"] == "copilot.command.received")
        assert received["target"] == {
            "resource_type": "merge_request",
            "project_id": PROJECT,
            "mr_iid": MR,
        }
        assert {k: received["details"][k] for k in ("command", "initiator", "initiator_id")} == {
            "command": "fix",
            "initiator": DEV["username"],
            "initiator_id": DEV["id"],
        }
        assert received["details"]["note_id"] == 2001
        requested = one(entries, "approval_gate.requested")["details"]
        assert requested["task_id"] == task_id
        assert requested["approval_required"] is True
        assert requested["approvers"] == {
            "usernames": [],
            "min_access_level": 40,
            "self_approval": False,
        }
        assert requested["expires_at"].endswith("Z")
        assert requested["head_sha"] == before
        decision = one(entries, "approval_gate.decision")
        assert {
            k: decision["details"][k]
            for k in (
                "decision",
                "approval_required",
                "approver",
                "decision_reason",
                "head_sha",
                "trigger_correlation_id",
                "task_id",
            )
        } == {
            "decision": "approve",
            "approval_required": True,
            "approver": MAINTAINER["username"],
            "decision_reason": "approved",
            "head_sha": before,
            "trigger_correlation_id": approver_cid,
            "task_id": task_id,
        }
        assert decision["details"]["approver_access_level"] == 40
        assert decision["actor"]["type"] == "webhook_event"
        started = one(entries, "task.started")["details"]
        assert (started["task_id"], started["executor"], started["attempt"]) == (
            task_id,
            "local",
            1,
        )
        assert started["trigger_correlation_id"] == approver_cid
        clone = one(entries, "gitlab.api.clone_repo")
        assert (clone["target"]["repo"], clone["target"]["branch"]) == (REPO, BRANCH)
        assert clone["target"]["commit_sha"] == before
        assert clone["outcome"] == "success"
        assert one(entries, "copilot.sdk.coding_request")["target"]["resource_type"] == "llm"
        generated = one(entries, "copilot.patch.generated")["details"]
        assert (
            generated["files_changed"],
            generated["lines_added"],
            generated["lines_removed"],
        ) == (
            1,
            1,
            0,
        )
        assert len(generated["patch_sha256"]) == 64
        assert generated["bytes"] > 0
        validated = one(entries, "copilot.patch.validated")
        assert (validated["outcome"], validated["details"]["outcome"]) == ("success", "valid")
        push = one(entries, "gitlab.api.push_branch")
        assert push["outcome"] == "success"
        assert (push["target"]["repo"], push["target"]["branch"], push["target"]["commit_sha"]) == (
            REPO,
            BRANCH,
            after,
        )
        stored = one(entries, "task.result.stored")["details"]
        assert stored == {
            "store": "redis",
            "store_key": f"copilot:result:{task_id}",
            "task_id": task_id,
            "status": "pushed",
        }
        notes = [e for e in entries if e["action"] == "gitlab.api.post_mr_note"]
        assert notes[-1]["target"]["comment_type"] == "note"
        finished = one(entries, "task.finished")
        assert finished["outcome"] == "success"
        assert finished["details"]["commit_sha"] == after
        assert finished["duration_ms"] > 0
        # The commit in GitLab leads back to the trail.
        message = world.git.commit_message(REPO, BRANCH)
        assert f"Audit-Correlation-Id: {cid}" in message
        assert f"Copilot-Task-Id: {task_id}" in message
        # The stored result carries the correlation id.
        with redis.Redis.from_url(redis_url) as client:
            result = json.loads(client.get(f"copilot:result:{task_id}") or b"{}")
        assert (result["correlation_id"], result["status"], result["commit_sha"]) == (
            cid,
            "pushed",
            after,
        )
        assert f"pushed `{after[:12]}`" in world.notes()[-1]
        assert f"auditkeep trace {cid}" in world.notes()[-1]

    def test_every_push_follows_an_approve_decision_for_its_task(self, world: World) -> None:
        """Across a run with refusals and a push: each successful push_branch has an earlier
        approval_gate.decision approve with the same task id."""
        cid = world.note("/copilot fix mention search in the README")
        task_id = world.requested_task(cid)
        world.note(f"/copilot approve {task_id}", DEV)
        world.note(f"/copilot approve {task_id}", OUTSIDER)
        world.note(f"/copilot approve {task_id}", OWNER)
        world.wait_for("task.finished", cid)
        entries = world.entries()
        for index, entry in enumerate(entries):
            if entry["action"] == "gitlab.api.push_branch" and entry["outcome"] == "success":
                task = entry["details"]["task_id"]
                assert any(
                    e["action"] == "approval_gate.decision"
                    and e["details"]["task_id"] == task
                    and e["details"]["decision"] == "approve"
                    for e in entries[:index]
                )


class TestRefusedApprovals:
    def _refusal(self, world: World, cid: str, reason: str) -> dict[str, Any]:
        return world.wait_for("approval_gate.approval_refused", cid, reason=reason)

    def _no_push(self, world: World, before: str) -> None:
        assert world.pushes() == []
        assert world.head() == before
        assert "gitlab.api.push_branch" not in actions(world.entries())

    def test_self_approval_is_refused(self, world: World) -> None:
        """The requester cannot approve their own task, even as a project member."""
        before = world.head()
        cid = world.note("/copilot fix tweak the README")
        task_id = world.requested_task(cid)
        trigger = world.note(f"/copilot approve {task_id}", DEV)
        refused = self._refusal(world, cid, "self_approval")
        assert (refused["outcome"], refused["error"]) == ("failure", "auth_failure")
        assert refused["details"]["approver"] == DEV["username"]
        assert refused["details"]["trigger_correlation_id"] == trigger
        assert refused["details"]["task_id"] == task_id
        world.wait_note("someone else must approve")
        self._no_push(world, before)

    @pytest.mark.parametrize(
        ("user", "detail"),
        [(OUTSIDER, "not a member of the project"), (REPORTER, "access level 20 is below 40")],
    )
    def test_a_non_approver_is_refused_after_a_members_api_check(
        self, world: World, user: dict[str, Any], detail: str
    ) -> None:
        """A non-member (404) and a reporter (20 < 40): not_an_approver, the members API call
        on the task's trail."""
        before = world.head()
        cid = world.note("/copilot fix tweak the README")
        task_id = world.requested_task(cid)
        world.note(f"/copilot approve {task_id}", user)
        refused = self._refusal(world, cid, "not_an_approver")
        assert refused["details"]["approver"] == user["username"]
        member = [e for e in world.entries(cid) if e["action"] == "gitlab.api.get_project_member"]
        assert member[-1]["target"]["user_id"] == user["id"]
        if user is OUTSIDER:
            assert (member[-1]["outcome"], member[-1]["error"]) == ("failure", "not_found")
        else:
            assert refused["details"]["approver_access_level"] == 20
        self._no_push(world, before)
        # The request is still pending: a maintainer can still approve it.
        world.note(f"/copilot approve {task_id}", MAINTAINER)
        assert world.wait_for("task.finished", cid)["outcome"] == "success"

    def test_an_expired_request_is_closed_and_a_late_approval_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """APPROVAL_TIMEOUT_S=1: the sweep decides reject/expired and replies; a later approve
        is refused ``expired``; nothing is pushed."""
        with coding_world(
            tmp_path, monkeypatch, redis_url=redis_url, extra={"APPROVAL_TIMEOUT_S": "1"}
        ) as world:
            before = world.head()
            cid = world.note("/copilot fix tweak the README")
            task_id = world.requested_task(cid)
            decision = world.wait_for("approval_gate.decision", cid)
            assert (decision["details"]["decision"], decision["details"]["decision_reason"]) == (
                "reject",
                "expired",
            )
            assert decision["actor"] == {"type": "system", "id": "approval-expiry"}
            world.wait_note("expired without an approval")
            world.note(f"/copilot approve {task_id}", MAINTAINER)
            refused = self._refusal(world, cid, "expired")
            assert refused["outcome"] == "failure"
            self._no_push(world, before)

    def test_a_moved_head_voids_the_request(self, world: World) -> None:
        """The branch moves before the approval: refused ``head_changed``, decision reject,
        nothing pushed by the agent; the MR is free for a new request."""
        cid = world.note("/copilot fix tweak the README")
        task_id = world.requested_task(cid)
        moved = world.git.move_branch(REPO, BRANCH)
        world.note(f"/copilot approve {task_id}", MAINTAINER)
        refused = self._refusal(world, cid, "head_changed")
        assert refused["details"]["current_head_sha"] == moved
        decision = world.wait_for("approval_gate.decision", cid)
        assert decision["details"]["decision_reason"] == "head_changed"
        assert world.pushes() == []
        assert world.head() == moved
        assert "task.started" not in actions(world.entries(cid))
        again = world.note("/copilot fix tweak the README again")
        assert world.requested_task(again) != task_id  # a new id for every command

    def test_approve_with_nothing_pending_is_unknown_task(self, world: World) -> None:
        cid = world.note("/copilot approve 0123456789abcdef", MAINTAINER)
        refused = self._refusal(world, cid, "unknown_task")
        assert refused["details"]["task_id"] == "0123456789abcdef"
        world.wait_note("waits for a decision")

    def test_two_concurrent_approvals_run_the_task_once(self, world: World) -> None:
        """Two maintainers approve at the same moment: one decision, one refusal
        (``unknown_task``), one task process, one push."""
        before = world.head()
        cid = world.note("/copilot fix tweak the README")
        task_id = world.requested_task(cid)
        barrier = threading.Barrier(2)

        def approve(user: dict[str, Any]) -> None:
            barrier.wait()
            world.note(f"/copilot approve {task_id}", user)

        threads = [threading.Thread(target=approve, args=(u,)) for u in (MAINTAINER, OWNER)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        world.wait_for("task.finished", cid)
        world.wait_for("approval_gate.approval_refused", cid, reason="unknown_task")
        entries = world.entries(cid)
        decisions = [e for e in entries if e["action"] == "approval_gate.decision"]
        assert [d["details"]["decision"] for d in decisions] == ["approve"]
        assert actions(entries).count("task.started") == 1
        assert actions(entries).count("gitlab.api.push_branch") == 1
        assert len(world.pushes()) == 1
        assert world.head() != before

    def test_a_rejected_task_never_pushes(self, world: World) -> None:
        before = world.head()
        cid = world.note("/copilot fix tweak the README")
        task_id = world.requested_task(cid)
        world.note(f"/copilot reject {task_id} not like this", MAINTAINER)
        decision = world.wait_for("approval_gate.decision", cid)
        assert (decision["details"]["decision"], decision["details"]["note"]) == (
            "reject",
            "not like this",
        )
        world.note(f"/copilot approve {task_id}", OWNER)
        world.wait_for("approval_gate.approval_refused", cid, reason="unknown_task")
        time.sleep(0.5)
        self._no_push(world, before)
        assert "task.started" not in actions(world.entries(cid))


class TestOneTaskPerMergeRequest:
    def test_a_second_command_is_told_what_holds_the_mr(self, world: World) -> None:
        first = world.note("/copilot fix tweak the README")
        task_id = world.requested_task(first)
        second = world.note("/copilot fix something else")
        ignored = world.wait_for("copilot.command.ignored", second, reason="task_in_progress")
        assert ignored["details"]["running_task_id"] == task_id
        world.wait_note(f"Coding task `{task_id}` (asked by @jdoe) waits for approval")
        assert "approval_gate.requested" not in actions(world.entries(second))
        world.note("/copilot status", MAINTAINER)
        busy = "waits for approval on this merge request"
        world.wait(lambda _: sum(busy in n for n in world.notes()) == 2)  # the reply, the status

    def test_the_lock_is_renewed_while_the_task_runs_then_released(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """With a 0.6 s lock TTL and a task of 2+ s, a second command during the run is told the
        task is running (renewal kept the lock); after it, status shows the result."""
        from gitlab_copilot_agent.workflows import coding

        monkeypatch.setattr(coding, "RUN_LOCK_TTL_S", 0.6)
        extra = {**EXEMPT, "CODING_CHECK_COMMAND": "sleep 2"}
        with coding_world(tmp_path, monkeypatch, redis_url=redis_url, extra=extra) as world:
            cid = world.note("/copilot fix add a line about search to the README")
            world.wait_for("copilot.patch.generated", cid)
            time.sleep(0.8)  # past one TTL: only renewal keeps the lock
            second = world.note("/copilot fix something else")
            world.wait_for("copilot.command.ignored", second, reason="task_in_progress")
            world.wait_note("is running on this merge request")
            finished = world.wait_for("task.finished", cid)
            world.note("/copilot status")
            status = world.wait_note("Last task")
            assert status.startswith("No coding task holds this merge request.")
            assert f"{finished['details']['task_id']}`: pushed" in status
            assert f"auditkeep trace {cid}" in status

    def test_cancel_withdraws_a_pending_task(self, world: World) -> None:
        cid = world.note("/copilot fix tweak the README")
        world.requested_task(cid)
        world.note("/copilot cancel", DEV)
        decision = world.wait_for("approval_gate.decision", cid)
        assert (decision["details"]["decision"], decision["details"]["decision_reason"]) == (
            "reject",
            "cancelled",
        )
        world.wait_note("was cancelled")
        assert world.pushes() == []

    def test_a_redelivered_note_is_not_a_second_command(self, world: World) -> None:
        world.note("/copilot fix tweak the README", note_id=3001)
        again = world.note("/copilot fix tweak the README", note_id=3001)
        assert world.wait_for("copilot.command.ignored", again)["details"]["reason"] == (
            "duplicate_note"
        )

    def test_quoted_commands_and_the_agents_own_notes_do_nothing(self, world: World) -> None:
        world.note("> /copilot fix quoted in a reply")
        own = world.note("/copilot fix from the bot", {"id": 99, "username": "bot", "name": "b"})
        world.wait_for("copilot.command.ignored", own, reason="own_note")
        time.sleep(0.3)
        assert "approval_gate.requested" not in actions(world.entries())


class TestPatchValidation:
    CASES: ClassVar[dict[str, str]] = {
        "does_not_apply": patch_appending("README.md", "# Not the README\n", "x"),
        "path_outside_repo": (
            "diff --git a/../outside.txt b/../outside.txt\nnew file mode 100644\n"
            "--- /dev/null\n+++ b/../outside.txt\n@@ -0,0 +1 @@\n+escaped\n"
        ),
        "symlink_escape": (
            "diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n"
            "@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n"
        ),
        "protected_path": patch_appending(
            ".gitlab-ci.yml", FILES[".gitlab-ci.yml"], "  allow_failure: true"
        ),
        "too_large": patch_appending("README.md", FILES["README.md"], "y" * 400),
        "check_failed": patch_appending("README.md", FILES["README.md"], "fine"),
    }

    @pytest.mark.parametrize("reason", sorted(CASES))
    def test_each_refusal_reason_is_audited_and_nothing_is_pushed(
        self, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """A crafted model answer per reason: copilot.patch.validated failure with the reason,
        no push_branch, no receive-pack on the server, task.finished failure."""
        extra = dict(EXEMPT)
        if reason == "too_large":
            extra["CODING_MAX_PATCH_BYTES"] = "200"
        if reason == "check_failed":
            extra["CODING_CHECK_COMMAND"] = "sh -c 'echo checks failed >&2; exit 3'"
        with coding_world(
            tmp_path, monkeypatch, redis_url=redis_url, extra=extra, script={"": self.CASES[reason]}
        ) as world:
            before = world.head()
            cid = world.note("/copilot fix whatever the model says")
            finished = world.wait_for("task.finished", cid)
            entries = world.entries(cid)
            validated = one(entries, "copilot.patch.validated")
            assert (validated["outcome"], validated["error"]) == ("failure", "validation_error")
            assert validated["details"]["reason"] == reason
            assert "gitlab.api.push_branch" not in actions(entries)
            assert (finished["outcome"], finished["details"]["status"]) == (
                "failure",
                "patch_refused",
            )
            assert finished["details"]["reason"] == reason
            assert world.pushes() == []
            assert world.head() == before
            decision = one(entries, "approval_gate.decision")["details"]
            assert (decision["approval_required"], decision["decision_reason"]) == (
                False,
                "approval_not_required",
            )
            assert reason in world.notes()[-1]


class TestPushFailures:
    def _run(self, world: World, prepare: Any = None) -> dict[str, Any]:
        cid = world.note("/copilot fix add a line about search to the README")
        if prepare is not None:
            world.wait_for("copilot.patch.generated", cid)
            prepare(world)
        return world.wait_for("task.finished", cid)

    @pytest.mark.parametrize(
        ("failure_class", "error"),
        [
            ("auth_failure", "auth_failure"),
            ("network_error", "network_error"),
            ("protected_branch", "protected_branch"),
            ("non_fast_forward", "non_fast_forward"),
        ],
    )
    def test_each_push_failure_class_from_the_git_server_is_audited(
        self,
        failure_class: str,
        error: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        redis_url: str,
    ) -> None:
        """401 on the push, a reset connection, the pre-receive hook, a branch moved under
        the task: push_branch failure with its class; the branch holds no commit of ours."""
        extra = dict(EXEMPT)
        if failure_class == "non_fast_forward":
            extra["CODING_CHECK_COMMAND"] = "sleep 2"
        with coding_world(tmp_path, monkeypatch, redis_url=redis_url, extra=extra) as world:
            prepare = None
            if failure_class == "auth_failure":
                world.git.faults.add("*/git-receive-pack", Fault.http(401), method="POST")
            elif failure_class == "network_error":
                world.git.faults.add("*/git-receive-pack", Fault.reset(), method="POST")
            elif failure_class == "protected_branch":
                world.git.protect(REPO, BRANCH)
            else:
                prepare = lambda w: w.git.move_branch(REPO, BRANCH)  # noqa: E731
            before = world.head()
            finished = self._run(world, prepare)
            cid = finished["correlation_id"]
            push = one(world.entries(cid), "gitlab.api.push_branch")
            assert (push["outcome"], push["error"]) == ("failure", error)
            assert push["details"]["failure_class"] == failure_class
            assert (finished["outcome"], finished["details"]["status"]) == (
                "failure",
                "push_failed",
            )
            assert finished["details"]["reason"] == failure_class
            if failure_class != "non_fast_forward":
                assert world.head() == before
            assert "Copilot-Task-Id" not in world.git.commit_message(REPO, BRANCH)


class TestTheTaskProcess:
    def test_killing_the_task_process_mid_task_is_a_failure_without_push(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """SIGKILL to run-task while its check command runs: task.finished failure
        (``killed``), no push, the MR free again."""
        extra = {**EXEMPT, "CODING_CHECK_COMMAND": "sleep 30"}
        with coding_world(tmp_path, monkeypatch, redis_url=redis_url, extra=extra) as world:
            before = world.head()
            cid = world.note("/copilot fix add a line about search to the README")
            world.wait_for("copilot.patch.generated", cid)
            pids = task_pids()
            assert len(pids) == 1
            os.kill(pids[0], signal.SIGKILL)
            finished = world.wait_for("task.finished", cid)
            assert (finished["outcome"], finished["details"]["status"]) == ("failure", "killed")
            assert finished["details"]["exit_code"] == -signal.SIGKILL
            assert "gitlab.api.push_branch" not in actions(world.entries(cid))
            assert world.pushes() == []
            assert world.head() == before
            assert task_pids() == []
            again = world.note("/copilot fix once more")  # the MR is free again
            world.wait_for("copilot.patch.generated", again)
            world.note("/copilot cancel", DEV)
            assert world.wait_for("task.finished", again)["details"]["status"] == "cancelled"

    def test_a_task_past_its_deadline_is_killed_and_recorded(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        extra = {**EXEMPT, "CODING_CHECK_COMMAND": "sleep 30", "TASK_TIMEOUT_S": "3"}
        with coding_world(tmp_path, monkeypatch, redis_url=redis_url, extra=extra) as world:
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert (finished["outcome"], finished["error"]) == ("failure", "timeout")
            assert finished["details"]["status"] == "timeout"
            assert world.pushes() == []
            assert task_pids() == []

    def test_cancel_stops_a_running_task(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        extra = {**EXEMPT, "CODING_CHECK_COMMAND": "sleep 30"}
        with coding_world(tmp_path, monkeypatch, redis_url=redis_url, extra=extra) as world:
            cid = world.note("/copilot fix add a line about search to the README")
            world.wait_for("copilot.patch.generated", cid)
            world.note("/copilot cancel", DEV)
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["status"] == "cancelled"
            assert finished["details"]["reason"] == "cancelled"
            assert world.pushes() == []


class TestStateStore:
    def test_a_pending_approval_survives_an_agent_restart(self, world: World) -> None:
        """Requested on one agent, approved on the next (same Redis): the task runs."""
        cid = world.note("/copilot fix tweak the README")
        task_id = world.requested_task(cid)
        world.restart()
        world.note(f"/copilot approve {task_id}", MAINTAINER)
        assert world.wait_for("task.finished", cid)["outcome"] == "success"

    def test_redis_down_fails_closed_and_reviews_go_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """REDIS_URL at a closed port: fix is refused (requested failure), approve refused
        (state_store_unavailable), nothing pushed; a merge request event is still reviewed."""
        dead = f"redis://127.0.0.1:{free_port()}/0"
        with coding_world(
            tmp_path, monkeypatch, redis_url=dead, extra={"REDIS_TIMEOUT_S": "1"}
        ) as world:
            cid = world.note("/copilot fix tweak the README")
            failed = world.wait_for("approval_gate.requested", cid)
            assert (failed["outcome"], failed["error"]) == ("failure", "network_error")
            approve = world.note("/copilot approve 0123456789abcdef", MAINTAINER)
            refused = world.wait_for("approval_gate.approval_refused", approve)
            assert refused["details"]["reason"] == "state_store_unavailable"
            world.wait_note("state store is unavailable")
            body = orjson.dumps(
                {
                    "object_kind": "merge_request",
                    "project": {"id": PROJECT},
                    "object_attributes": {"iid": MR, "action": "open", "state": "opened"},
                }
            )
            answer = world.client.post(
                "/webhook",
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-gitlab-event": "Merge Request Hook",
                    "x-gitlab-token": "coding-e2e-webhook-secret-41",
                    "x-gitlab-event-uuid": str(uuid.uuid4()),
                },
            )
            review_cid = answer.json()["correlation_id"]
            note = world.wait_for("gitlab.api.post_mr_note", review_cid)
            assert note["target"]["comment_type"] == "review"
            assert world.pushes() == []

    def test_the_memory_store_runs_the_whole_scenario_in_one_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without REDIS_URL the task process still asks the agent's gate (over its channel)."""
        with coding_world(tmp_path, monkeypatch) as world:
            cid = world.note("/copilot fix tweak the README")
            task_id = world.requested_task(cid)
            world.note(f"/copilot approve {task_id}", MAINTAINER)
            finished = world.wait_for("task.finished", cid)
            assert finished["outcome"] == "success"
            stored = one(world.entries(cid), "task.result.stored")
            assert stored["details"]["store"] == "memory"
