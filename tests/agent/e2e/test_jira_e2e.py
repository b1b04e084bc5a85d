"""The Jira scenario end to end: the agent app with its Jira poller on, the Jira and GitLab
stand-ins (stand-ins: no real Jira or GitLab here), a real git server, real Redis, real task
processes. Every entry read back is validated against the JSON Schema (``validate_entries``).

- one poll cycle takes an issue to a draft MR: every entry of it — the Jira and GitLab calls,
  the gate, and the task process's clone and push — carries that cycle's correlation id and
  ``actor.type=poll_cycle``;
- a Jira ticket is not an approver: with approval required, the gate asks on the issue, a
  stranger's comment is refused, a listed approver's comment decides, and the MR only opens
  after the decision;
- two agents on one Redis, and an agent restarted mid-cycle, never take one issue twice;
- a failing step comments on the issue and leaves it where a person sees it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from codingkit import PROJECT, REPO, in_order
from jirakit import APPROVER, STRANGER, count, jira_world

from agent_standins.faults import Fault

CYCLE = (
    "poll.cycle.started",
    "jira.api.search_issues",
    "jira.issue.taken",
    "jira.api.transition_issue",
    "gitlab.api.get_project_info",
    "gitlab.api.create_branch",
    "approval_gate.requested",
    "approval_gate.decision",
    "task.started",
    "gitlab.api.clone_repo",
    "copilot.sdk.coding_request",
    "copilot.patch.generated",
    "copilot.patch.validated",
    "gitlab.api.push_branch",
    "task.result.stored",
    "task.finished",
    "gitlab.api.create_merge_request",
    "jira.api.add_comment",
    "jira.api.transition_issue",
    "jira.issue.finished",
    "poll.cycle.finished",
)
TASK_PROCESS = ("gitlab.api.clone_repo", "copilot.patch.validated", "gitlab.api.push_branch")


def test_one_cycle_takes_an_issue_to_a_draft_mr_under_its_own_correlation_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    with jira_world(tmp_path, monkeypatch, redis_url=redis_url) as world:
        world.start_agent()
        done = world.wait_for("jira.issue.finished", issue_key="PROJ-1")
        cid = done["correlation_id"]
        world.wait(lambda es: count([e for e in es if e["correlation_id"] == cid],
                                    "poll.cycle.finished") == 1)  # fmt: skip
        mine = world.entries(cid)
        assert in_order([e["action"] for e in mine], CYCLE), [e["action"] for e in mine]
        assert {e["actor"]["type"] for e in mine} == {"poll_cycle"}
        assert all(a in [e["action"] for e in mine] for a in TASK_PROCESS)
        finished = next(e for e in mine if e["action"] == "poll.cycle.finished")
        assert finished["outcome"] == "success"
        assert finished["details"]["seen"] == 1
        assert finished["details"]["started"] == 1
        assert finished["details"]["failed"] == 0
        # The decision is the policy's (this project is exempt): recorded, no approver.
        decision = next(e for e in mine if e["action"] == "approval_gate.decision")
        assert decision["details"]["decision_reason"] == "approval_not_required"
        assert decision["details"]["approver"] is None
        # The targets name the issue, the branch and the MR.
        moves = [e for e in mine if e["action"] == "jira.api.transition_issue"]
        assert [m["target"]["issue_key"] for m in moves] == ["PROJ-1", "PROJ-1"]
        llm = next(e for e in mine if e["action"] == "copilot.sdk.coding_request")
        assert llm["target"] == {"resource_type": "llm", "project_id": PROJECT,
                                 "issue_key": "PROJ-1"}  # fmt: skip
        created = next(e for e in mine if e["action"] == "gitlab.api.create_merge_request")
        assert created["target"]["source_branch"] == "agent/PROJ-1"
        assert created["target"]["target_branch"] == "main"
        assert isinstance(created["target"]["mr_iid"], int)
        assert done["target"]["mr_iid"] == created["target"]["mr_iid"]
        # The world agrees with the trail.
        assert world.jira.status_of("PROJ-1") == "In Review"
        (mr,) = world.gitlab.created_merge_requests(PROJECT)
        assert mr["draft"] is True
        assert mr["title"].startswith("Draft: PROJ-1")
        assert mr["source_branch"] == "agent/PROJ-1"
        assert any(mr["web_url"] in text for text in world.jira.comment_texts("PROJ-1"))
        message = world.git.commit_message(REPO, "agent/PROJ-1")
        assert f"Audit-Correlation-Id: {cid}" in message
        assert message.startswith("feat(PROJ-1):")


def test_with_approval_required_the_gate_asks_on_the_issue_and_only_a_listed_approver_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    with jira_world(tmp_path, monkeypatch, redis_url=redis_url, approval_exempt=False) as world:
        world.start_agent()
        requested = world.wait_for("approval_gate.requested", issue_key="PROJ-1")
        task_id, cid = requested["details"]["task_id"], requested["correlation_id"]
        assert requested["details"]["approval_required"] is True
        deadline = time.monotonic() + 10  # the request is on the trail just before the comment
        while not any(task_id in t for t in world.jira.comment_texts("PROJ-1")):
            assert time.monotonic() < deadline, world.jira.comment_texts("PROJ-1")
            time.sleep(0.02)
        world.wait_cycles()  # a few cycles: nothing happens without a decision
        assert world.gitlab.created_merge_requests(PROJECT) == []
        assert count(world.entries(), "task.started") == 0
        world.jira.add_comment_as("PROJ-1", STRANGER, "Someone", f"/copilot approve {task_id}")
        refused = world.wait_for("approval_gate.approval_refused", task_id=task_id)
        assert refused["details"]["reason"] == "not_an_approver"
        assert refused["correlation_id"] == cid
        world.jira.add_comment_as("PROJ-1", APPROVER, "Ann Approver", f"/copilot approve {task_id}")
        done = world.wait_for("jira.issue.finished", issue_key="PROJ-1")
        entries = world.entries()
        decision = next(e for e in entries if e["action"] == "approval_gate.decision")
        assert decision["details"]["decision"] == "approve"
        assert decision["details"]["approver"] == APPROVER
        assert decision["details"]["approved_via"] == "jira_project_map.approvers"
        # The task's entries keep the task's id; the cycle that read the comment is the trigger.
        trigger = decision["details"]["trigger_correlation_id"]
        assert decision["correlation_id"] == cid
        assert trigger not in (None, cid)
        assert count([e for e in entries if e["correlation_id"] == trigger], "poll.cycle.started")
        assert done["correlation_id"] == cid
        assert done["outcome"] == "success"
        created = next(e for e in entries if e["action"] == "gitlab.api.create_merge_request")
        assert created["timestamp"] > decision["timestamp"]
        assert count(entries, "task.started") == 1
        assert world.jira.status_of("PROJ-1") == "In Review"


def test_two_agents_on_one_redis_take_each_issue_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    issues = {f"PROJ-{n}": f"Change number {n}" for n in range(1, 4)}
    with jira_world(tmp_path, monkeypatch, issues=issues, redis_url=redis_url) as world:
        # Slow first transitions: the issues stay in the trigger status while one agent
        # holds them, so the other one lists them too and must be refused by the store.
        world.jira.faults.add("/issue/*/transitions", Fault.slow(1.0), method="POST", times=3)
        world.start_agent()
        world.start_agent()
        world.wait(lambda es: count(es, "jira.issue.finished") == len(issues), timeout_s=120)
        world.wait_cycles(4)  # more cycles of both agents: nothing is taken again
        entries = world.entries()
        for key in issues:
            assert count(entries, "jira.issue.taken", issue_key=key) == 1, key
            assert world.jira.status_of(key) == "In Review"
        assert count(entries, "jira.issue.skipped", reason="locked") >= 1
        assert count(entries, "task.started") == len(issues)
        branches = sorted(
            mr["source_branch"] for mr in world.gitlab.created_merge_requests(PROJECT)
        )
        assert branches == [f"agent/{key}" for key in sorted(issues)]
        actors = {e["actor"]["type"] for e in entries if e["action"].startswith("jira.")}
        assert actors == {"poll_cycle"}


def test_a_restart_mid_cycle_does_not_take_the_issue_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    extra = {"CODING_CHECK_COMMAND": "sleep 30"}  # the task is busy when the agent stops
    with jira_world(tmp_path, monkeypatch, redis_url=redis_url, extra=extra) as world:
        first = world.start_agent()
        world.wait_for("copilot.patch.generated", issue_key="PROJ-1")
        world.stop_agent(first)  # mid-cycle: the cycle and its task are cancelled, and say so
        entries = world.entries()
        cancelled = [e for e in entries if e["action"] == "poll.cycle.finished"][-1]
        assert cancelled["details"].get("cancelled") is True
        finished = next(e for e in entries if e["action"] == "task.finished")
        assert finished["details"]["status"] == "cancelled"
        assert world.jira.status_of("PROJ-1") == "In Progress"
        # The search is eventually consistent (or a person moves it back): it is listed again.
        world.jira.set_status("PROJ-1", "To Do")
        world.start_agent()
        skipped = world.wait_for("jira.issue.skipped", issue_key="PROJ-1")
        assert skipped["details"]["reason"] in ("already_taken", "locked")
        world.wait(lambda es: count(es, "jira.issue.skipped", reason="already_taken") >= 1)
        entries = world.entries()
        assert count(entries, "jira.issue.taken", issue_key="PROJ-1") == 1
        assert count(entries, "task.started") == 1
        assert world.gitlab.created_merge_requests(PROJECT) == []


def test_a_failing_step_comments_on_the_issue_and_leaves_it_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with jira_world(tmp_path, monkeypatch) as world:
        world.gitlab.faults.add("/projects/*/repository/branches", Fault.http(500), method="POST")
        world.start_agent()
        done = world.wait_for("jira.issue.finished", issue_key="PROJ-1")
        assert done["outcome"] == "failure"
        assert done["error"] == "server_error"
        assert world.jira.status_of("PROJ-1") == "In Progress"
        texts = world.jira.comment_texts("PROJ-1")
        assert any("could not finish PROJ-1" in t and done["correlation_id"] in t for t in texts)
        world.wait_cycles()  # later cycles do not take it again
        entries = world.entries()
        assert count(entries, "jira.issue.taken") == 1
        assert count(entries, "task.started") == 0
        cycle = [e for e in entries if e["correlation_id"] == done["correlation_id"]]
        finished = next(e for e in cycle if e["action"] == "poll.cycle.finished")
        assert finished["details"]["failed"] == 1


def test_the_reporter_cannot_approve_a_listed_approver_can_reject_and_nothing_is_pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with jira_world(tmp_path, monkeypatch, approval_exempt=False) as world:
        reporter = world.jira.issue("PROJ-1")["fields"]["reporter"]["accountId"]
        world.start_agent()
        requested = world.wait_for("approval_gate.requested", issue_key="PROJ-1")
        task_id = requested["details"]["task_id"]
        world.jira.add_comment_as("PROJ-1", reporter, "Reporter", f"/copilot approve {task_id}")
        refused = world.wait_for("approval_gate.approval_refused", task_id=task_id)
        assert refused["details"]["reason"] == "self_approval"
        world.jira.add_comment_as("PROJ-1", APPROVER, "Ann", f"/copilot reject {task_id} no")
        done = world.wait_for("jira.issue.finished", issue_key="PROJ-1")
        assert done["outcome"] == "failure"
        assert done["error"] == "auth_failure"
        entries = world.entries()
        decision = next(e for e in entries if e["action"] == "approval_gate.decision")
        assert decision["details"]["decision"] == "reject"
        assert decision["details"]["approver"] == APPROVER
        assert count(entries, "task.started") == 0
        assert world.gitlab.created_merge_requests(PROJECT) == []
        assert world.jira.status_of("PROJ-1") == "In Progress"
        assert any("was rejected by" in t for t in world.jira.comment_texts("PROJ-1"))


def test_an_approval_nobody_gives_expires_and_the_issue_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = {"APPROVAL_TIMEOUT_S": "1"}
    with jira_world(tmp_path, monkeypatch, approval_exempt=False, extra=extra) as world:
        world.start_agent()
        done = world.wait_for("jira.issue.finished", issue_key="PROJ-1")
        assert done["outcome"] == "failure"
        entries = world.entries()
        decision = next(e for e in entries if e["action"] == "approval_gate.decision")
        assert decision["details"]["decision_reason"] == "expired"
        assert decision["correlation_id"] == done["correlation_id"]
        assert any("in time" in t for t in world.jira.comment_texts("PROJ-1"))
        assert count(entries, "task.started") == 0


def test_a_rate_limited_search_fails_the_cycle_with_its_class_and_the_next_cycle_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with jira_world(tmp_path, monkeypatch) as world:
        world.jira.faults.add("/search/jql", Fault.http(429, retry_after_s=1), times=1)
        world.start_agent()
        world.wait_for("jira.issue.finished", issue_key="PROJ-1")
        entries = world.entries()
        first = next(e for e in entries if e["action"] == "poll.cycle.finished")
        assert first["outcome"] == "failure"
        assert first["error"] == "rate_limit"
        search = next(e for e in entries if e["action"] == "jira.api.search_issues")
        assert search["error"] == "rate_limit"
        assert search["correlation_id"] == first["correlation_id"]
        backoff = next(e for e in entries if e["action"] == "poll.backoff")
        assert backoff["details"]["delay_s"] == 0.4


def test_a_pending_approval_survives_a_restart_and_is_decided_by_the_next_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    with jira_world(tmp_path, monkeypatch, redis_url=redis_url, approval_exempt=False) as world:
        first = world.start_agent()
        requested = world.wait_for("approval_gate.requested", issue_key="PROJ-1")
        world.stop_agent(first)
        world.start_agent()
        task_id = requested["details"]["task_id"]
        world.jira.add_comment_as("PROJ-1", APPROVER, "Ann", f"/copilot approve {task_id}")
        done = world.wait_for("jira.issue.finished", issue_key="PROJ-1")
        assert done["outcome"] == "success"
        assert done["correlation_id"] == requested["correlation_id"]
        entries = world.entries()
        assert count(entries, "jira.issue.taken") == 1
        assert count(entries, "task.started") == 1
        assert len(world.gitlab.created_merge_requests(PROJECT)) == 1
