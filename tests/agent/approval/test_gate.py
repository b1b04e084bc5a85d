"""The approval gate on its own: a clock it is given, the memory store, a members API that
answers what the test says. Policy, expiry, binding, atomic consumption, the push check."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from redisproc import free_port

from auditkeep import Actor, correlation_scope
from auditkeep.logger import AuditLogger
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import capture_events, validate_entries
from gitlab_copilot_agent.approval import (
    ApprovalGate,
    ApprovalPolicy,
    CodingTask,
    Decision,
    Refusal,
)
from gitlab_copilot_agent.clients.gitlab import GitLabError
from gitlab_copilot_agent.settings import ApprovalSettings
from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.memory import MemoryStore
from gitlab_copilot_agent.state.redis_store import RedisStore

TASK_CID = "01a22038-3e19-7ee7-9410-213bd4b57056"
HEAD = "a" * 40


class FakeGitLab:
    """Members and the MR head, as the test sets them (unit tests only; e2e use the stand-in)."""

    def __init__(self) -> None:
        self.levels: dict[int, int] = {6: 40}
        self.head = HEAD
        self.fail_members: int | None = None

    async def get_project_member(self, project_id: int, user_id: int) -> dict[str, Any]:
        if self.fail_members is not None:
            raise GitLabError(self.fail_members, "boom")
        if user_id not in self.levels:
            raise GitLabError(404, "404 Not found")
        return {"id": user_id, "access_level": self.levels[user_id]}

    async def get_mr_details(self, project_id: int, mr_iid: int) -> dict[str, Any]:
        return {"sha": self.head}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_task(**overrides: Any) -> CodingTask:
    values: dict[str, Any] = {
        "task_id": "0123456789abcdef",
        "correlation_id": TASK_CID,
        "project_id": 42,
        "mr_iid": 7,
        "source_project_id": 42,
        "source_branch": "feature",
        "repo_url": "https://gitlab.example.com/group/app.git",
        "head_sha": HEAD,
        "instruction": "fix it",
        "requester": "jdoe",
        "requester_id": 5,
        "note_id": 1,
        "requested_at": 1_000_000.0,
        "expires_at": 1_003_600.0,
        "approval_required": True,
        "lock_token": "tok",
    }
    values.update(overrides)
    return CodingTask(**values)


@pytest.fixture
def captured() -> Iterator[tuple[AuditLogger, InMemorySink]]:
    with capture_events("gitlab-copilot-agent") as found:
        yield found


def entries(captured: tuple[AuditLogger, InMemorySink]) -> list[dict[str, Any]]:
    logger, sink = captured
    assert logger.flush(5)
    return validate_entries(sink.lines)


def gate_for(
    audit: AuditLogger, settings: ApprovalSettings | None = None, store: Any = None
) -> tuple[ApprovalGate, FakeGitLab, Clock, Any]:
    gitlab, clock = FakeGitLab(), Clock()
    store = store or MemoryStore()
    policy = ApprovalPolicy(settings or ApprovalSettings(), gitlab)
    return (
        ApprovalGate(audit, store, policy, gitlab, timeout_s=3600, clock=clock),
        gitlab,
        clock,
        store,
    )


def approve(gate: ApprovalGate, task: CodingTask, user: str, user_id: int) -> Decision | Refusal:
    async def go() -> Decision | Refusal:
        with correlation_scope(Actor("webhook_event", "approver"), TASK_CID):
            return await gate.approve(task, approver=user, approver_id=user_id, trigger=None)

    return asyncio.run(go())


class TestPolicy:
    def test_named_approvers_need_no_members_api(self, captured: Any) -> None:
        gate, gitlab, _, _ = gate_for(captured[0], ApprovalSettings(approvers=("ann",)))
        gitlab.fail_members = 500
        task = make_task()
        asyncio.run(gate.request(task))
        assert isinstance(approve(gate, task, "ann", 77), Decision)

    def test_self_approval_allowed_only_when_configured_and_still_qualified(
        self, captured: Any
    ) -> None:
        allowed = ApprovalSettings(allow_self_approval=True)
        gate, gitlab, _, _ = gate_for(captured[0], allowed)
        task = make_task()
        asyncio.run(gate.request(task))
        refused = approve(gate, task, "jdoe", 5)  # a developer: not qualified
        assert isinstance(refused, Refusal)
        assert refused.reason == "not_an_approver"
        gitlab.levels[5] = 40
        decision = approve(gate, task, "jdoe", 5)
        assert isinstance(decision, Decision)
        approved = [e for e in entries(captured) if e["action"] == "approval_gate.decision"]
        assert approved[0]["details"]["approved_via"] == "self_allowed"

    def test_a_failing_members_api_approves_nobody(self, captured: Any) -> None:
        gate, gitlab, _, _ = gate_for(captured[0])
        gitlab.fail_members = 503
        task = make_task()
        asyncio.run(gate.request(task))
        refused = approve(gate, task, "mia", 6)
        assert isinstance(refused, Refusal)
        assert refused.reason == "approver_check_failed"

    def test_level_none_and_no_approvers_is_refused_at_start(self) -> None:
        with pytest.raises(ValueError, match="nobody could approve"):
            ApprovalSettings(min_access_level=None)


class TestExpiryAndBinding:
    def test_an_approval_after_expiry_is_refused_and_closes_the_request(
        self, captured: Any
    ) -> None:
        """Past ``expires_at`` (the sweep has not run yet): refused ``expired`` and decided
        ``reject``/``expired`` at once."""
        gate, _, clock, store = gate_for(captured[0])
        task = make_task()
        asyncio.run(gate.request(task))
        clock.now = task.expires_at + 1
        refused = approve(gate, task, "mia", 6)
        assert isinstance(refused, Refusal)
        assert refused.reason == "expired"
        found = entries(captured)
        decision = next(e for e in found if e["action"] == "approval_gate.decision")
        assert decision["details"]["decision_reason"] == "expired"
        assert asyncio.run(store.get(keys.approval(task.task_id))) is None

    def test_the_decision_binds_head_and_instruction_and_is_single_use(self, captured: Any) -> None:
        gate, _, _, _ = gate_for(captured[0])
        task = make_task()
        asyncio.run(gate.request(task))
        assert isinstance(approve(gate, task, "mia", 6), Decision)
        verify = gate.verify_push
        with pytest.raises(PermissionError, match="another MR head"):
            asyncio.run(verify(task.task_id, "b" * 40, task.instruction_sha256))
        with pytest.raises(PermissionError, match="another instruction"):
            asyncio.run(verify(task.task_id, HEAD, "0" * 64))
        asyncio.run(verify(task.task_id, HEAD, task.instruction_sha256))
        with pytest.raises(PermissionError, match="already used"):
            asyncio.run(verify(task.task_id, HEAD, task.instruction_sha256))

    def test_no_decision_or_a_rejection_never_verifies(self, captured: Any) -> None:
        gate, _, _, _ = gate_for(captured[0])
        task = make_task()
        with pytest.raises(PermissionError, match="no approve decision"):
            asyncio.run(gate.verify_push(task.task_id, HEAD, task.instruction_sha256))
        asyncio.run(gate.request(task))

        async def reject() -> Decision | Refusal:
            return await gate.reject(task, by="mia", by_id=6, trigger=None)

        assert isinstance(asyncio.run(reject()), Decision)
        with pytest.raises(PermissionError, match="decided 'reject'"):
            asyncio.run(gate.verify_push(task.task_id, HEAD, task.instruction_sha256))

    def test_of_fifty_concurrent_approvals_one_decides(self, captured: Any) -> None:
        gate, _, _, _ = gate_for(captured[0])
        task = make_task()
        asyncio.run(gate.request(task))

        async def many() -> list[Decision | Refusal]:
            with correlation_scope(Actor("webhook_event", "x"), TASK_CID):
                return list(
                    await asyncio.gather(
                        *(
                            gate.approve(task, approver="mia", approver_id=6, trigger=None)
                            for _ in range(50)
                        )
                    )
                )

        results = asyncio.run(many())
        assert sum(isinstance(r, Decision) for r in results) == 1
        assert {r.reason for r in results if isinstance(r, Refusal)} == {"unknown_task"}


class TestStoreDown:
    def test_a_request_that_cannot_be_stored_is_a_failed_entry(self, captured: Any) -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1)
        gate, _, _, _ = gate_for(captured[0], store=store)
        task = make_task()
        with pytest.raises(Exception, match="redis"):
            asyncio.run(gate.request(task))
        with pytest.raises(PermissionError, match="cannot be verified"):
            asyncio.run(gate.verify_push(task.task_id, HEAD, task.instruction_sha256))
        (requested,) = entries(captured)
        assert (requested["outcome"], requested["error"]) == ("failure", "network_error")
        assert requested["details"]["reason"] == "state_store_unavailable"
