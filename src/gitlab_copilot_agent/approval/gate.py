"""``ApprovalGate``: requests, decisions and refusals, in the state store and on the trail.

Fail-closed: a task waits for an ``approve`` unless its project's policy says
approval is not required (``APPROVAL_REQUIRED``, ``APPROVAL_EXEMPT_PROJECTS``),
and the push step itself asks the gate (``verify_push``) whether an
``approve`` decision for exactly that task, instruction and MR head was
recorded; nothing is pushed otherwise, whatever the workflow did.

Entries (target ``resource_type=coding_task, task_id, project_id, mr_iid``),
all carrying the task's correlation id (the ``/copilot fix`` webhook's), with
the webhook that caused them in ``details.trigger_correlation_id``:

- ``approval_gate.requested``: ``task_id, approval_required, approvers
  {usernames, min_access_level, self_approval}, expires_at, head_sha,
  instruction_sha256, store, key``; a failure (the store is down) says so;
- ``approval_gate.decision``: ``decision`` (``approve``|``reject``),
  ``approval_required``, ``approver``, ``approver_id``, ``approver_access_level``,
  ``decision_reason`` (``approved``, ``approval_not_required``, ``rejected``,
  ``cancelled``, ``expired``, ``head_changed``), ``head_sha`` (what the decision
  binds to), ``instruction_sha256``;
- ``approval_gate.approval_refused`` (failure, ``error: auth_failure``):
  ``reason`` (``not_an_approver``, ``self_approval``, ``expired``,
  ``head_changed``, ``unknown_task``; also ``approver_check_failed`` and
  ``state_store_unavailable``, which fail closed), the would-be ``approver``.

Order matters for the guarantee: a decision is emitted first and recorded in
the store after (with the entry's ``event_id``), so a record the push step
accepts always has its entry on the trail. A pending approval is consumed
with the store's atomic ``take``: of two concurrent approvals, one decides and
the other is refused (``unknown_task``). An approval is single-use: the push
step marks it used, so a second push for the task is refused. With
``AUDIT_LOG_ENABLED=false`` (no trail at all, which the agent warns about at
start) the gate still records and checks every decision in the store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from auditkeep import Actor, ErrorClass, Outcome
from auditkeep.context import correlation_scope, get_actor, get_correlation_id
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.approval.policy import ApprovalPolicy, ApproverCheck
from gitlab_copilot_agent.approval.task import CodingTask
from gitlab_copilot_agent.clients.gitlab import GitLabError
from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.base import StateStore, StateStoreError

__all__ = [
    "APPROVAL_REFUSED",
    "APPROVAL_REQUESTED",
    "DECISION",
    "ApprovalGate",
    "Decision",
    "Refusal",
]

APPROVAL_REQUESTED: Final = "approval_gate.requested"
DECISION: Final = "approval_gate.decision"
APPROVAL_REFUSED: Final = "approval_gate.approval_refused"


class MergeRequestAPI(Protocol):
    async def get_mr_details(self, project_id: int, mr_iid: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Decision:
    """What the gate decided for a task (also stored under ``copilot:decision:<task>``)."""

    task: CodingTask
    decision: str
    reason: str
    approver: str | None
    event_id: str

    @property
    def approved(self) -> bool:
        return self.decision == "approve"


@dataclass(frozen=True)
class Refusal:
    """An approval (or rejection) the gate refused, and why."""

    reason: str
    detail: str
    task: CodingTask | None = None
    current_head_sha: str | None = None


def iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


@contextlib.contextmanager
def task_scope(task: CodingTask) -> Iterator[str | None]:
    """Enter the task's correlation scope (the actor stays whoever caused the work now) and
    yield the id of the scope it was entered from when that is another one: the webhook
    that caused this step (``details.trigger_correlation_id``), None when it is the task's own.
    """
    outer = get_correlation_id()
    actor = get_actor() or task.actor
    with correlation_scope(actor, task.correlation_id):
        yield outer if outer != task.correlation_id else None


def _in_task(task: CodingTask) -> contextlib.AbstractContextManager[str]:
    return correlation_scope(get_actor() or task.actor, task.correlation_id)


class ApprovalGate:
    """The approval gate over a state store; see the module docstring for its entries.

    Args:
        audit: the audit logger.
        store: where pending approvals and decisions live.
        policy: who may approve.
        mrs: reads the MR head when an approval arrives.
        timeout_s: how long a request waits (``APPROVAL_TIMEOUT_S``).
        clock: Unix time (tests).
    """

    def __init__(
        self,
        audit: AuditLogger,
        store: StateStore,
        policy: ApprovalPolicy,
        mrs: MergeRequestAPI,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._audit = audit
        self._store = store
        self.policy = policy
        self._mrs = mrs
        self.timeout_s = timeout_s
        self._clock = clock

    @property
    def store(self) -> StateStore:
        return self._store

    def now(self) -> float:
        return self._clock()

    # -- requests --------------------------------------------------------------

    async def request(self, task: CodingTask) -> None:
        """Store the pending approval and emit ``approval_gate.requested``.

        Raises:
            StateStoreError: the store failed (the entry says so, as a failure).
        """
        key = keys.approval(task.task_id)
        details = {
            "task_id": task.task_id,
            "approval_required": task.approval_required,
            "approvers": self.policy.who_may_approve(),
            "expires_at": iso(task.expires_at),
            "head_sha": task.head_sha,
            "instruction_sha256": task.instruction_sha256,
            "instruction_chars": len(task.instruction),
            "requester": task.requester,
            "requester_id": task.requester_id,
            "store": self._store.kind,
            "store_key": key,
        }
        ttl = max(1.0, task.expires_at - self.now()) + keys.APPROVAL_GRACE_S
        try:
            await self._store.put(key, task.to_record(), ttl_s=ttl)
        except StateStoreError as exc:
            self._audit.emit(
                APPROVAL_REQUESTED,
                outcome=Outcome.FAILURE,
                target=task.target(),
                error=exc.audit_error_class,
                error_message=f"the pending approval could not be stored: {exc}",
                details={**details, "reason": "state_store_unavailable"},
            )
            raise
        self._audit.emit(APPROVAL_REQUESTED, target=task.target(), details=details)

    async def pending(self, task_id: str) -> CodingTask | None:
        """The task waiting for a decision, or None (decided, expired and swept, unknown)."""
        record = await self._store.get(keys.approval(task_id))
        return _task(record)

    async def pending_tasks(self) -> list[CodingTask]:
        found = []
        for key in await self._store.keys(keys.APPROVAL_PREFIX):
            task = _task(await self._store.get(key))
            if task is not None:
                found.append(task)
        return found

    async def last_decision(self, task_id: str) -> dict[str, Any] | None:
        return await self._store.get(keys.decision(task_id))

    # -- decisions -------------------------------------------------------------

    async def not_required(self, task: CodingTask) -> Decision:
        """The project needs no approval: decide ``approve`` by policy (still recorded)."""
        taken = await self._store.take(keys.approval(task.task_id))
        if taken is None:
            raise StateStoreError("the pending task vanished before its policy decision")
        return await self._decide(task, "approve", "approval_not_required", None, None, None, None)

    async def approve(
        self,
        task: CodingTask,
        *,
        approver: str | None,
        approver_id: int | None,
        trigger: str | None,
    ) -> Decision | Refusal:
        """Check and consume one approval. Call it in the task's scope (``task_scope``), so the
        members API and MR reads it makes are on the task's trail too."""
        if self.now() >= task.expires_at:
            refusal = self._refuse(
                task, "expired", approver, approver_id, "the request expired", trigger=trigger
            )
            await self.expire(task, trigger=trigger)
            return refusal
        check = await self.policy.check(task, approver, approver_id, action="approve")
        if not check.allowed:
            assert check.reason is not None
            return self._refuse(
                task, check.reason, approver, approver_id, check.detail, check, trigger=trigger
            )
        try:
            mr = await self._mrs.get_mr_details(task.project_id, task.mr_iid)
        except GitLabError as exc:
            return self._refuse(
                task,
                "approver_check_failed",
                approver,
                approver_id,
                f"the MR head could not be read: {exc.audit_error_class}",
                check,
                trigger=trigger,
            )
        head = mr.get("sha") if isinstance(mr.get("sha"), str) else None
        if head != task.head_sha:
            refusal = self._refuse(
                task,
                "head_changed",
                approver,
                approver_id,
                "the MR head moved since the request",
                check,
                current_head_sha=head,
                trigger=trigger,
            )
            taken = await self._store.take(keys.approval(task.task_id))
            if taken is not None:
                await self._decide(
                    task,
                    "reject",
                    "head_changed",
                    approver,
                    approver_id,
                    None,
                    trigger,
                    current_head_sha=head,
                )
            return refusal
        taken = await self._store.take(keys.approval(task.task_id))
        if taken is None:
            return self._refuse(
                task,
                "unknown_task",
                approver,
                approver_id,
                "already decided",
                check,
                trigger=trigger,
            )
        return await self._decide(
            task, "approve", "approved", approver, approver_id, check, trigger
        )

    async def reject(
        self,
        task: CodingTask,
        *,
        by: str | None,
        by_id: int | None,
        trigger: str | None,
        reason: str = "rejected",
        note: str | None = None,
    ) -> Decision | Refusal:
        """Reject (or cancel) a pending task: its requester or an approver may."""
        action = "cancel" if reason == "cancelled" else "reject"
        check = await self.policy.check(task, by, by_id, action="reject")
        if not check.allowed:
            assert check.reason is not None
            return self._refuse(
                task, check.reason, by, by_id, check.detail, check, action=action, trigger=trigger
            )
        taken = await self._store.take(keys.approval(task.task_id))
        if taken is None:
            return self._refuse(
                task, "unknown_task", by, by_id, "already decided", check, action=action,
                trigger=trigger,
            )  # fmt: skip
        return await self._decide(task, "reject", reason, by, by_id, check, trigger, note=note)

    async def decide_listed(
        self,
        task: CodingTask,
        *,
        decision: str,
        by: str,
        listed: bool,
        via: str,
        trigger: str | None,
        requester: str | None = None,
    ) -> Decision | Refusal:
        """A decision from outside GitLab: a Jira comment (``workflows.jira``), whose author
        is checked against a list the operator configured (``approvers`` in the Jira project
        map) — never the issue's reporter (``requester``) unless ``APPROVAL_ALLOW_SELF``.
        The decision binds to the same task, instruction and head as a GitLab approval."""
        action = "approve" if decision == "approve" else "reject"
        if self.now() >= task.expires_at:
            refusal = self._refuse(task, "expired", by, None, "the request expired",
                                   action=action, trigger=trigger)  # fmt: skip
            await self.expire(task, trigger=trigger)
            return refusal
        if (
            requester is not None
            and by == requester
            and not self.policy.settings.allow_self_approval
        ):
            return self._refuse(task, "self_approval", by, None, "the reporter may not approve",
                                action=action, trigger=trigger)  # fmt: skip
        if not listed:
            return self._refuse(task, "not_an_approver", by, None, f"not listed in {via}",
                                action=action, trigger=trigger)  # fmt: skip
        taken = await self._store.take(keys.approval(task.task_id))
        if taken is None:
            return self._refuse(task, "unknown_task", by, None, "already decided",
                                action=action, trigger=trigger)  # fmt: skip
        check = ApproverCheck(True, via=via)
        reason = "approved" if action == "approve" else "rejected"
        return await self._decide(task, action, reason, by, None, check, trigger)

    async def expire(self, task: CodingTask, *, trigger: str | None = None) -> Decision | None:
        """Close a request nobody decided in time: ``reject``/``expired`` (None if decided)."""
        taken = await self._store.take(keys.approval(task.task_id))
        if taken is None:
            return None
        return await self._decide(task, "reject", "expired", None, None, None, trigger)

    async def _decide(
        self,
        task: CodingTask,
        decision: str,
        reason: str,
        approver: str | None,
        approver_id: int | None,
        check: ApproverCheck | None,
        trigger: str | None,
        *,
        note: str | None = None,
        **extra: Any,
    ) -> Decision:
        with _in_task(task):
            key = keys.decision(task.task_id)
            details: dict[str, Any] = {
                "task_id": task.task_id,
                "decision": decision,
                "approval_required": task.approval_required,
                "approver": approver,
                "approver_id": approver_id,
                "approver_access_level": check.access_level if check else None,
                "approved_via": check.via if check and decision == "approve" else None,
                "decision_reason": reason,
                "head_sha": task.head_sha,
                "instruction_sha256": task.instruction_sha256,
                "trigger_correlation_id": trigger,
                "store": self._store.kind,
                "store_key": key,
                **extra,
            }
            if note:
                details["note"] = note[:200]
            # Emitted first, recorded second: a record the push step accepts
            # always has its entry on the trail.
            event_id = self._audit.emit(DECISION, target=task.target(), details=details)
            record = {
                "correlation_id": task.correlation_id,
                "task_id": task.task_id,
                "decision": decision,
                "decision_reason": reason,
                "approver": approver,
                "head_sha": task.head_sha,
                "instruction_sha256": task.instruction_sha256,
                "decided_at": self.now(),
                "event_id": event_id,
                # With AUDIT_LOG_ENABLED=false there is no entry (and no id) to point at.
                "audited": self._audit.enabled,
            }
            await self._store.put(key, record, ttl_s=keys.DECISION_TTL_S)
            return Decision(task, decision, reason, approver, event_id)

    def _refuse(
        self,
        task: CodingTask | None,
        reason: str,
        approver: str | None,
        approver_id: int | None,
        detail: str | None,
        check: ApproverCheck | None = None,
        *,
        action: str = "approve",
        current_head_sha: str | None = None,
        asked_task_id: str | None = None,
        trigger: str | None = None,
        correlation_id: str | None = None,
    ) -> Refusal:
        detail = detail or reason
        details: dict[str, Any] = {
            "reason": reason,
            "action": action,
            "approver": approver,
            "approver_id": approver_id,
            "approver_access_level": check.access_level if check else None,
        }
        if asked_task_id is not None:
            details["task_id"] = asked_task_id[:64]
        target: dict[str, Any] = {"resource_type": "coding_task"}
        scope: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if correlation_id is not None and task is None:
            outer = get_correlation_id()
            trigger = outer if outer != correlation_id else None
            details["trigger_correlation_id"] = trigger
            scope = correlation_scope(
                get_actor() or Actor("system", "approval-gate"), correlation_id
            )
        if task is not None:
            scope = _in_task(task)
            target = task.target()
            details.update(
                task_id=task.task_id,
                head_sha=task.head_sha,
                expires_at=iso(task.expires_at),
                requester=task.requester,
            )
        if current_head_sha is not None:
            details["current_head_sha"] = current_head_sha
        with scope:
            if task is not None:
                details["trigger_correlation_id"] = trigger
            self._audit.emit(
                APPROVAL_REFUSED,
                outcome=Outcome.FAILURE,
                target=target,
                error=ErrorClass.AUTH_FAILURE,
                error_message=f"{action} refused: {reason}",
                details=details,
            )
        return Refusal(reason, detail, task, current_head_sha)

    def refuse_unknown(
        self,
        *,
        task_id: str | None,
        approver: str | None,
        approver_id: int | None,
        action: str = "approve",
        reason: str = "unknown_task",
        detail: str = "no task waits for a decision on this merge request",
        task_correlation_id: str | None = None,
    ) -> Refusal:
        """A refusal with no pending task: in the caller's (the webhook's) scope, or in the
        scope of the task it names when that is known (a task that expired and was closed)."""
        return self._refuse(
            None,
            reason,
            approver,
            approver_id,
            detail,
            action=action,
            asked_task_id=task_id,
            correlation_id=task_correlation_id,
        )

    # -- the push step -----------------------------------------------------------

    async def verify_push(self, task_id: str, head_sha: str, instruction_sha256: str) -> None:
        """Allow one push for ``task_id`` if an ``approve`` bound to this head and
        instruction was recorded; mark it used.

        Raises:
            PermissionError: with the reason (no decision, rejected, bound to
                something else, already used, the store cannot tell).
        """
        try:
            record = await self._store.get(keys.decision(task_id))
            if record is None:
                raise PermissionError(f"no approve decision is recorded for task {task_id}")
            if record.get("decision") != "approve":
                raise PermissionError(f"task {task_id} was decided {record.get('decision')!r}")
            if (
                record.get("task_id") != task_id
                or not record.get("correlation_id")
                or (record.get("audited", True) and not record.get("event_id"))
            ):
                raise PermissionError(f"the decision record of task {task_id} is not its own")
            if record.get("head_sha") != head_sha:
                raise PermissionError("the approval is bound to another MR head")
            if record.get("instruction_sha256") != instruction_sha256:
                raise PermissionError("the approval is bound to another instruction")
            first = await self._store.put(
                keys.push_marker(task_id),
                {"correlation_id": record["correlation_id"], "task_id": task_id},
                ttl_s=keys.DECISION_TTL_S,
                only_if_absent=True,
            )
            if not first:
                raise PermissionError(f"the approval of task {task_id} was already used")
        except StateStoreError as exc:
            raise PermissionError(f"the approval cannot be verified: {exc}") from None


def _task(record: dict[str, Any] | None) -> CodingTask | None:
    if record is None:
        return None
    try:
        return CodingTask.from_record(record)
    except (TypeError, ValueError):
        return None
