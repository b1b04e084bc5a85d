"""The coding workflow: ``/copilot fix`` → approval → a task process → a push → the result note.

Commands (``install`` registers them on the command router, which has
already audited each one as ``copilot.command.received`` and ignored the
agent's own notes; a command must open the note, so a quoted ``> /copilot``
never runs):

- ``fix <instructions>`` (alias ``code``): reads the MR (head, source branch,
  clone URL), takes the MR's lock (one coding task per MR at a time; a second
  command gets a reply naming the task that holds it), and asks the approval
  gate (``approval_gate.requested``). A project whose policy needs no
  approval goes straight on; otherwise the task waits for ``approve``.
- ``approve [task]``: the gate checks the approver, the expiry and the MR head
  and consumes the pending approval atomically; the task then runs.
- ``reject [task] [reason]``, ``cancel``: the requester or an approver closes a
  pending task (``cancel`` also stops a running one).
- ``status``: what holds the MR, and the last result.

Correlation: the task's correlation id is the ``fix`` webhook's. A later
webhook (the ``approve`` note) leaves its own entries (``webhook.auth.validated``,
``copilot.command.received``) under its own id; once the task is found,
everything it causes — the members API check, refusals, the decision, and the
whole task — runs in the task's scope, with the approving webhook's id in
``details.trigger_correlation_id``. ``auditkeep trace <task's id>`` is then the
whole story from the comment to the push.

Task lifecycle entries (target ``coding_task``): ``task.started`` (``task_id,
executor, attempt``), then the task process's own (``gitlab.api.clone_repo`` …
``gitlab.api.push_branch``, see ``tasks.runner``), then here
``task.result.stored`` (``store, key, task_id``), the result note
(``gitlab.api.post_mr_note``, ``comment_type=note``) and ``task.finished``
(``outcome, status, duration_ms, commit_sha``) — recorded whatever happened
to the task process (failed, killed, timed out, cancelled).

Redis unavailable: a ``fix`` fails closed (``approval_gate.requested``
failure, a reply), an ``approve`` is refused (``state_store_unavailable``);
nothing is pushed. Reviews do not use the store and go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from auditkeep import Actor, ErrorClass, Outcome
from auditkeep.context import correlation_scope, get_actor, get_correlation_id
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent import tracing
from gitlab_copilot_agent.approval.gate import (
    ApprovalGate,
    Decision,
    Refusal,
    iso,
    task_scope,
)
from gitlab_copilot_agent.approval.policy import ApprovalPolicy
from gitlab_copilot_agent.approval.task import CodingTask, new_task_id
from gitlab_copilot_agent.clients.gitlab import GitLabClient, GitLabError
from gitlab_copilot_agent.commands.router import COMMAND_IGNORED, CommandContext, CommandRouter
from gitlab_copilot_agent.logs import get_logger
from gitlab_copilot_agent.payloads import integer, text
from gitlab_copilot_agent.settings import Settings
from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.base import StateStore, StateStoreError
from gitlab_copilot_agent.tasks.executor import Executor
from gitlab_copilot_agent.tasks.spec import TaskOutcome, TaskSpec

if TYPE_CHECKING:
    from gitlab_copilot_agent.plugins import Parts

__all__ = [
    "TASK_FINISHED",
    "TASK_RESULT_STORED",
    "TASK_STARTED",
    "CodingWorkflow",
    "install",
]

TASK_STARTED: Final = "task.started"
TASK_RESULT_STORED: Final = "task.result.stored"
TASK_FINISHED: Final = "task.finished"
RUN_LOCK_TTL_S: Final = 120.0
"""A running task's MR lock lives this long unless renewed (every third of it)."""
EXPIRY_ACTOR: Final = Actor("system", "approval-expiry")
_TASK_ID: Final = re.compile(r"[0-9a-f]{16}")
_ERROR_OF_STATUS: Final = {
    "timeout": ErrorClass.TIMEOUT,
    "killed": ErrorClass.INTERNAL_ERROR,
    "cancelled": ErrorClass.INTERNAL_ERROR,
    "patch_refused": ErrorClass.VALIDATION_ERROR,
    "head_changed": ErrorClass.GIT_ERROR,
}


@dataclass
class _Running:
    task: CodingTask
    cancelled_by: str | None = None


class CodingWorkflow:
    """The ``/copilot`` coding commands and the task lifecycle (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        audit: AuditLogger,
        gitlab: GitLabClient,
        store: StateStore,
        executor: Executor,
        router: CommandRouter,
    ) -> None:
        self._settings = settings
        self._audit = audit
        self._gitlab = gitlab
        self._store = store
        self._executor = executor
        self._router = router
        self.policy = ApprovalPolicy(settings.approval, gitlab)
        self.gate = ApprovalGate(
            audit, store, self.policy, gitlab, timeout_s=settings.approval.timeout_s
        )
        self._slots = asyncio.Semaphore(settings.executor.max_concurrent)
        self._running: dict[str, _Running] = {}
        self._runs: set[asyncio.Task[None]] = set()

    # -- commands ----------------------------------------------------------------

    async def fix(self, context: CommandContext) -> CodingTask | None:
        """``/copilot fix <instructions>``: request a coding task on the MR."""
        instruction = "\n".join(
            part for part in (context.command.args, context.command.body) if part
        ).strip()
        if not instruction:
            self._ignored(context, "empty_instruction")
            await self._reply(
                context,
                f"`/copilot {context.command.name}` needs instructions, e.g. "
                "`/copilot fix handle an empty search term`.",
            )
            return None
        if not await self._first_sighting(context):
            return None
        try:
            mr = await self._gitlab.get_mr_details(context.project_id, context.mr_iid)
            source_project = integer(mr.get("source_project_id")) or context.project_id
            project = await self._gitlab.get_project_info(source_project)
        except GitLabError:
            await self._reply(context, "I could not read this merge request; nothing was started.")
            return None
        head, branch = text(mr.get("sha")), text(mr.get("source_branch"))
        repo_url = text(project.get("http_url_to_repo"))
        if mr.get("state") != "opened" or not head or not branch or not repo_url:
            self._ignored(context, "merge_request_not_open")
            await self._reply(context, "This merge request is not open; nothing was started.")
            return None
        now = self.gate.now()
        actor = get_actor() or Actor("webhook_event", "unknown")
        task = CodingTask(
            task_id=new_task_id(),
            correlation_id=get_correlation_id() or "",
            project_id=context.project_id,
            mr_iid=context.mr_iid,
            source_project_id=source_project,
            source_branch=branch,
            repo_url=repo_url,
            head_sha=head,
            instruction=instruction,
            requester=context.initiator,
            requester_id=context.initiator_id,
            note_id=context.note_id,
            requested_at=now,
            expires_at=now + self._settings.approval.timeout_s,
            approval_required=self.policy.required_for(context.project_id),
            lock_token=secrets.token_hex(16),
            actor_type=actor.type,
            actor_id=actor.id,
        )
        lock = keys.mr_lock(task.project_id, task.mr_iid)
        try:
            holder = await self._store.acquire_lock(
                lock,
                _lock_value(task, "pending"),
                ttl_s=self._settings.approval.timeout_s + keys.APPROVAL_GRACE_S,
            )
        except StateStoreError as exc:
            await self._store_down(context, exc, task)
            return None
        if holder is not None:
            self._ignored(context, "task_in_progress", running_task_id=text(holder.get("task_id")))
            await self._reply(context, _busy(holder))
            return None
        try:
            await self.gate.request(task)
        except StateStoreError as exc:
            await self._release(task)
            await self._reply(context, _store_down_text(exc))
            return None
        if not task.approval_required:
            decision = await self.gate.not_required(task)
            await self._run(task, decision, None)
            return task
        await self._reply(
            context,
            f"Coding task `{task.task_id}` waits for approval: {self.policy.describe()} can "
            f"reply `/copilot approve {task.task_id}` (or `/copilot reject {task.task_id}`) "
            f"before {iso(task.expires_at)}. It applies to head `{task.head_sha[:12]}`; "
            "if the branch moves first, the request is void.",
        )
        return task

    async def approve(self, context: CommandContext) -> None:
        """``/copilot approve [task]``."""
        if not await self._first_sighting(context):
            return
        asked = _task_arg(context)
        task = await self._find(context, asked, action="approve")
        if task is None:
            return
        with task_scope(task) as trigger:
            verdict = await self.gate.approve(
                task,
                approver=context.initiator,
                approver_id=context.initiator_id,
                trigger=trigger,
            )
            if isinstance(verdict, Refusal):
                await self._refused(context, verdict)
                return
            await self._run(task, verdict, trigger)

    async def reject(self, context: CommandContext) -> None:
        """``/copilot reject [task] [reason]``."""
        if not await self._first_sighting(context):
            return
        asked = _task_arg(context)
        words = context.command.argv[1:] if asked else context.command.argv
        note = " ".join(words + ([context.command.body] if context.command.body else []))
        task = await self._find(context, asked, action="reject")
        if task is None:
            return
        with task_scope(task) as trigger:
            verdict = await self.gate.reject(
                task,
                by=context.initiator,
                by_id=context.initiator_id,
                trigger=trigger,
                note=note or None,
            )
            if isinstance(verdict, Refusal):
                await self._refused(context, verdict)
                return
            await self._release(task)
            await self._reply(
                context,
                f"Coding task `{task.task_id}` was rejected by @{context.initiator}; "
                "nothing will be pushed.",
            )

    async def cancel(self, context: CommandContext) -> None:
        """``/copilot cancel``: withdraw the MR's pending task, or stop its running one."""
        if not await self._first_sighting(context):
            return
        try:
            holder = await self._store.get(keys.mr_lock(context.project_id, context.mr_iid))
        except StateStoreError as exc:
            await self._reply(context, _store_down_text(exc))
            return
        task_id = text((holder or {}).get("task_id"))
        running = self._running.get(task_id or "")
        if running is not None:
            with task_scope(running.task):
                check = await self.policy.check(
                    running.task, context.initiator, context.initiator_id, action="reject"
                )
            if not check.allowed:
                await self._reply(context, f"You cannot cancel task `{task_id}`: {check.detail}.")
                return
            running.cancelled_by = context.initiator
            await self._executor.cancel(running.task.task_id)
            await self._reply(context, f"Stopping coding task `{task_id}`…")
            return
        if holder is not None and holder.get("state") == "running":
            await self._reply(
                context, f"Coding task `{task_id}` runs in another agent process; it cannot be "
                "cancelled from here.",
            )  # fmt: skip
            return
        task = await self._find(context, task_id, action="cancel")
        if task is None:
            return
        with task_scope(task) as trigger:
            verdict = await self.gate.reject(
                task,
                by=context.initiator,
                by_id=context.initiator_id,
                trigger=trigger,
                reason="cancelled",
            )
            if isinstance(verdict, Refusal):
                await self._refused(context, verdict)
                return
            await self._release(task)
            await self._reply(context, f"Coding task `{task.task_id}` was cancelled.")

    async def status(self, context: CommandContext) -> None:
        """``/copilot status``: what holds the MR, and the last result."""
        try:
            holder = await self._store.get(keys.mr_lock(context.project_id, context.mr_iid))
            last = await self._store.get(keys.mr_last_result(context.project_id, context.mr_iid))
        except StateStoreError as exc:
            await self._reply(context, _store_down_text(exc))
            return
        lines = [_busy(holder) if holder else "No coding task holds this merge request."]
        if last:
            commit = text(last.get("commit_sha"))
            lines.append(
                f"Last task `{last.get('task_id')}`: {last.get('status')}"
                + (f", commit `{commit[:12]}`" if commit else "")
                + f" (trace: `auditkeep trace {last.get('correlation_id')}`)."
            )
        await self._reply(context, "\n\n".join(lines))

    # -- the task ------------------------------------------------------------------

    async def run_approved(
        self, task: CodingTask, decision: Decision, trigger: str | None = None
    ) -> TaskOutcome | None:
        """Run an approved task (``workflows.jira`` too) and return how it ended (None only
        when it could not start)."""
        return await self._run(task, decision, trigger)

    async def _run(
        self, task: CodingTask, decision: Decision, trigger: str | None
    ) -> TaskOutcome | None:
        """Run an approved task in its own process and record how it ended."""
        # The span first: the task's scope then names its correlation id on it.
        with tracing.span("coding.task", {"task_id": task.task_id}), task_scope(task):
            lock = task.lock_key
            with contextlib.suppress(StateStoreError):
                await self._store.update_lock(
                    lock, task.lock_token, _lock_value(task, "running"), ttl_s=RUN_LOCK_TTL_S
                )
            running = _Running(task)
            self._running[task.task_id] = running
            renewer = asyncio.create_task(self._renew(task))
            started = time.monotonic()
            spec = TaskSpec.for_task(task)
            outcome: TaskOutcome | None = None
            try:
                async with self._slots:
                    self._audit.emit(
                        TASK_STARTED,
                        target=task.target(),
                        details={
                            "task_id": task.task_id,
                            "executor": self._executor.name,
                            "attempt": spec.attempt,
                            "decision_event_id": decision.event_id,
                            "approved_by": decision.approver,
                            "trigger_correlation_id": trigger,
                        },
                    )
                    try:
                        outcome = await self._executor.run(spec, verify_push=self.gate.verify_push)
                    except asyncio.CancelledError:
                        outcome = TaskOutcome(
                            "cancelled", reason="shutdown", detail="the agent stopped"
                        )
                        raise
                    except Exception as exc:  # noqa: BLE001 - recorded as the task's outcome
                        outcome = TaskOutcome(
                            "failed",
                            reason="executor_error",
                            detail=f"the task could not run: {type(exc).__name__}",
                        )
            finally:
                renewer.cancel()
                if outcome is not None:
                    if running.cancelled_by and outcome.status == "cancelled":
                        outcome = TaskOutcome(
                            "cancelled",
                            reason="cancelled",
                            detail=f"cancelled by @{running.cancelled_by}",
                            exit_code=outcome.exit_code,
                            pid=outcome.pid,
                        )
                    await self._finish(task, decision, outcome, started, trigger)
                self._running.pop(task.task_id, None)
                await self._release(task)
            return outcome

    async def _finish(
        self,
        task: CodingTask,
        decision: Decision,
        outcome: TaskOutcome,
        started: float,
        trigger: str | None,
    ) -> None:
        duration_ms = (time.monotonic() - started) * 1000
        result = {
            "correlation_id": task.correlation_id,
            "task_id": task.task_id,
            "project_id": task.project_id,
            "mr_iid": task.mr_iid,
            "status": outcome.status,
            "commit_sha": outcome.commit_sha,
            "reason": outcome.reason,
            "detail": outcome.detail,
            "exit_code": outcome.exit_code,
            "approved_by": decision.approver,
            "finished_at": time.time(),
            "facts": outcome.facts,
        }
        key = keys.result(task.task_id)
        try:
            try:
                await self._store.put(key, result, ttl_s=keys.RESULT_TTL_S)
                if task.mr_iid:
                    await self._store.put(
                        keys.mr_last_result(task.project_id, task.mr_iid),
                        result,
                        ttl_s=keys.RESULT_TTL_S,
                    )
            except StateStoreError as exc:
                self._audit.emit(
                    TASK_RESULT_STORED,
                    outcome=Outcome.FAILURE,
                    target=task.target(),
                    error=exc.audit_error_class,
                    error_message=f"the result could not be stored: {exc}",
                    details={"store": self._store.kind, "store_key": key, "task_id": task.task_id},
                )
            else:
                self._audit.emit(
                    TASK_RESULT_STORED,
                    target=task.target(),
                    details={
                        "store": self._store.kind,
                        "store_key": key,
                        "task_id": task.task_id,
                        "status": outcome.status,
                    },
                )
            if task.mr_iid:  # a Jira task has no MR yet: workflows.jira reports on the issue
                with contextlib.suppress(GitLabError):
                    await self._gitlab.post_mr_note(
                        task.project_id,
                        task.mr_iid,
                        _result_text(task, outcome),
                        comment_type="note",
                    )
        finally:
            failed = not outcome.succeeded
            self._audit.emit(
                TASK_FINISHED,
                outcome=Outcome.FAILURE if failed else Outcome.SUCCESS,
                target=task.target(),
                error=_error_of(outcome) if failed else None,
                error_message=(
                    f"{outcome.status}: {outcome.reason or ''} {outcome.detail or ''}".strip()
                    if failed
                    else None
                ),
                duration_ms=duration_ms,
                details={
                    "task_id": task.task_id,
                    "outcome": "success" if not failed else "failure",
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "commit_sha": outcome.commit_sha,
                    "exit_code": outcome.exit_code,
                    "pid": outcome.pid,
                    "executor": self._executor.name,
                    "trigger_correlation_id": trigger,
                },
            )

    async def _renew(self, task: CodingTask) -> None:
        lock = task.lock_key
        while True:
            await asyncio.sleep(RUN_LOCK_TTL_S / 3)
            try:
                held = await self._store.update_lock(
                    lock, task.lock_token, _lock_value(task, "running"), ttl_s=RUN_LOCK_TTL_S
                )
            except StateStoreError:
                continue
            if not held:
                _log.warning("a running task lost its MR lock", task_id=task.task_id)

    # -- the expiry sweep ---------------------------------------------------------

    def sweep_interval_s(self) -> float:
        return min(30.0, max(0.1, self._settings.approval.timeout_s / 4))

    async def sweep_forever(self) -> None:
        """Close expired requests (``reject``/``expired`` and a reply) until cancelled."""
        try:
            await self._store.ping()
        except StateStoreError as exc:
            _log.warning(
                "the state store does not answer: coding commands fail closed until it does; "
                "reviews go on",
                store=self._store.kind,
                error=str(exc),
            )
        while True:
            await asyncio.sleep(self.sweep_interval_s())
            await self.sweep()

    async def sweep(self) -> int:
        """One pass; returns how many requests it closed."""
        try:
            pending = await self.gate.pending_tasks()
        except StateStoreError:
            return 0
        closed = 0
        for task in pending:
            if task.issue_key or self.gate.now() < task.expires_at:
                continue  # Jira tasks are expired by workflows.jira, which reports on the issue
            with correlation_scope(EXPIRY_ACTOR, task.correlation_id):
                try:
                    decision = await self.gate.expire(task)
                except StateStoreError:
                    continue
                if decision is None:
                    continue
                closed += 1
                await self._release(task)
                with contextlib.suppress(GitLabError):
                    await self._gitlab.post_mr_note(
                        task.project_id, task.mr_iid, _expired_text(task), comment_type="note"
                    )
        return closed

    # -- helpers --------------------------------------------------------------------

    async def _find(
        self, context: CommandContext, asked: str | None, *, action: str
    ) -> CodingTask | None:
        """The pending task the command is about (the one named, else the MR's), or None after
        refusing (``unknown_task``, ``expired``, ``state_store_unavailable``) and replying."""
        try:
            task_id = asked
            if task_id is None:
                holder = await self._store.get(keys.mr_lock(context.project_id, context.mr_iid))
                task_id = text((holder or {}).get("task_id"))
            task = await self.gate.pending(task_id) if task_id else None
            prior = await self.gate.last_decision(task_id) if task_id and not task else None
        except StateStoreError as exc:
            self.gate.refuse_unknown(
                task_id=asked,
                approver=context.initiator,
                approver_id=context.initiator_id,
                action=action,
                reason="state_store_unavailable",
                detail="the state store is unavailable",
            )
            await self._reply(context, _store_down_text(exc))
            return None
        if task is not None and (task.project_id, task.mr_iid) == (
            context.project_id,
            context.mr_iid,
        ):
            return task
        if prior is not None:
            # A task that was decided already: the late attempt goes on the task's own trail.
            expired = prior.get("decision_reason") == "expired"
            refusal = self.gate.refuse_unknown(
                task_id=task_id,
                approver=context.initiator,
                approver_id=context.initiator_id,
                action=action,
                reason="expired" if expired else "unknown_task",
                detail="the request expired"
                if expired
                else f"already decided: {prior.get('decision')} ({prior.get('decision_reason')})",
                task_correlation_id=text(prior.get("correlation_id")),
            )
        else:
            refusal = self.gate.refuse_unknown(
                task_id=task_id,
                approver=context.initiator,
                approver_id=context.initiator_id,
                action=action,
            )
        await self._refused(context, refusal, task_id=task_id)
        return None

    async def _first_sighting(self, context: CommandContext) -> bool:
        """False (and ``copilot.command.ignored``/``duplicate_note``) for a redelivered note."""
        if context.note_id is None:
            return True
        try:
            fresh = await self._store.put(
                keys.note_seen(context.project_id, context.note_id),
                {"correlation_id": get_correlation_id() or "", "note_id": context.note_id},
                ttl_s=keys.DEDUP_TTL_S,
                only_if_absent=True,
            )
        except (StateStoreError, ValueError):
            return True  # the command itself then meets the store's failure and fails closed
        if not fresh:
            self._ignored(context, "duplicate_note")
        return fresh

    async def _store_down(
        self, context: CommandContext, exc: StateStoreError, task: CodingTask
    ) -> None:
        self._audit.emit(
            "approval_gate.requested",
            outcome=Outcome.FAILURE,
            target=task.target(),
            error=exc.audit_error_class,
            error_message=f"no coding task without the state store: {exc}",
            details={
                "task_id": task.task_id,
                "approval_required": task.approval_required,
                "reason": "state_store_unavailable",
                "store": self._store.kind,
            },
        )
        await self._reply(context, _store_down_text(exc))

    async def _refused(
        self, context: CommandContext, refusal: Refusal, *, task_id: str | None = None
    ) -> None:
        task = refusal.task
        shown = f"`{task.task_id}`" if task else (f"`{task_id}`" if task_id else "")
        who = self.policy.describe()
        texts = {
            "self_approval": f"@{context.initiator}, you asked for task {shown}: someone else "
            f"must approve it ({who}).",
            "not_an_approver": f"@{context.initiator} may not approve task {shown}: {who} may.",
            "expired": f"Task {shown} expired; nothing will be pushed. Ask again with "
            "`/copilot fix`.",
            "head_changed": f"The merge request's head moved since task {shown} was requested "
            f"(to `{(refusal.current_head_sha or '?')[:12]}`): the request is void and nothing "
            "will be pushed. Ask again with `/copilot fix`.",
            "unknown_task": f"No coding task {shown + ' ' if shown else ''}waits for a decision "
            "on this merge request.",
            "approver_check_failed": "I could not check who may approve; nothing was approved. "
            "Try again.",
            "state_store_unavailable": _store_down_text(None),
        }
        if refusal.reason in ("expired", "head_changed") and task is not None:
            await self._release(task)
        await self._reply(context, texts.get(refusal.reason, f"Refused: {refusal.reason}."))

    def _ignored(self, context: CommandContext, reason: str, **details: Any) -> None:
        self._audit.emit(
            COMMAND_IGNORED,
            target={
                "resource_type": "merge_request",
                "project_id": context.project_id,
                "mr_iid": context.mr_iid,
            },
            details={
                "command": context.command.name,
                "reason": reason,
                "note_id": context.note_id,
                **details,
            },
        )

    async def _release(self, task: CodingTask) -> None:
        with contextlib.suppress(StateStoreError):
            await self._store.release_lock(task.lock_key, task.lock_token)

    async def _reply(self, context: CommandContext, body: str) -> None:
        with contextlib.suppress(GitLabError):
            await self._router.reply(context, body)


def _task_arg(context: CommandContext) -> str | None:
    argv = context.command.argv
    return argv[0].lower() if argv and _TASK_ID.fullmatch(argv[0].lower()) else None


def _lock_value(task: CodingTask, state: str) -> dict[str, Any]:
    return {
        "correlation_id": task.correlation_id,
        "token": task.lock_token,
        "task_id": task.task_id,
        "state": state,
        "requester": task.requester,
        "since": time.time(),
        "expires_at": task.expires_at,
    }


def _busy(holder: dict[str, Any]) -> str:
    task_id = holder.get("task_id") or "?"
    who = f" (asked by @{holder['requester']})" if holder.get("requester") else ""
    if holder.get("state") == "running":
        return (
            f"Coding task `{task_id}`{who} is running on this merge request; one task at a "
            "time. `/copilot status` shows it, `/copilot cancel` stops it."
        )
    expires = holder.get("expires_at")
    until = f" until {iso(expires)}" if isinstance(expires, int | float) else ""
    return (
        f"Coding task `{task_id}`{who} waits for approval on this merge request{until}; one "
        "task at a time. `/copilot approve`, `/copilot reject` or `/copilot cancel` it first."
    )


def _store_down_text(exc: StateStoreError | None) -> str:
    return (
        "The agent's state store is unavailable, so coding tasks and approvals are refused "
        "for now (nothing will be pushed). Reviews go on. Try again later."
    )


def _expired_text(task: CodingTask) -> str:
    return (
        f"Coding task `{task.task_id}` expired without an approval; nothing will be pushed. "
        "Ask again with `/copilot fix`."
    )


def _result_text(task: CodingTask, outcome: TaskOutcome) -> str:
    trace = f"\n\nAudit trail: `auditkeep trace {task.correlation_id}`"
    if outcome.status == "pushed" and outcome.commit_sha:
        files = outcome.facts.get("files_changed")
        changed = f" ({files} file(s) changed)" if isinstance(files, int) else ""
        return (
            f"Coding task `{task.task_id}` pushed `{outcome.commit_sha[:12]}` to "
            f"`{task.source_branch}`{changed}.{trace}"
        )
    if outcome.status == "no_changes":
        return f"Coding task `{task.task_id}` finished without a change to push.{trace}"
    why = outcome.reason or outcome.status
    detail = f": {outcome.detail}" if outcome.detail else ""
    return (
        f"Coding task `{task.task_id}` ended without a push ({outcome.status}, {why}){detail}."
        f"{trace}"
    )


def _error_of(outcome: TaskOutcome) -> ErrorClass:
    if outcome.status in _ERROR_OF_STATUS:
        return _ERROR_OF_STATUS[outcome.status]
    reason = outcome.reason or ""
    if reason in ErrorClass._value2member_map_:
        return ErrorClass(reason)
    if outcome.status == "push_failed":
        return ErrorClass.AUTH_FAILURE if reason == "not_approved" else ErrorClass.GIT_ERROR
    return ErrorClass.INTERNAL_ERROR


_log = get_logger(__name__)


def install(parts: Parts) -> None:
    """Register ``fix``/``code``, ``approve``, ``reject``, ``status``, ``cancel``; start the
    approval expiry sweep."""
    router = parts.commands
    workflow = parts.coding
    router.on(
        "fix",
        workflow.fix,
        summary="change the merge request's code as the rest of the comment says",
    )
    router.on("code", workflow.fix, summary="the same as `/copilot fix`")
    router.on(
        "approve",
        workflow.approve,
        summary="approve a coding task (an approver, not its requester)",
    )
    router.on("reject", workflow.reject, summary="reject a coding task, optionally saying why")
    router.on("status", workflow.status, summary="show the coding task on this merge request")
    router.on(
        "cancel", workflow.cancel, summary="withdraw or stop the coding task on this merge request"
    )
    parts.start_background("approval-expiry", workflow.sweep_forever)
    approval = parts.settings.approval
    if not approval.required:
        _log.warning(
            "APPROVAL_REQUIRED=false: coding tasks push without anyone's approval "
            "(the policy decision is still recorded for each task)"
        )
    elif approval.exempt_projects:
        _log.warning(
            "coding tasks push without approval on these projects (APPROVAL_EXEMPT_PROJECTS)",
            projects=sorted(approval.exempt_projects),
        )
