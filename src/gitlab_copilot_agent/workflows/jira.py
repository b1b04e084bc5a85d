"""The Jira workflow: a Jira issue in its trigger status becomes a draft merge request.

For each issue the Jira poller finds in a binding's trigger status (``jira_map``), in
the poll cycle's correlation scope:

1. **taken once**: the issue's lock (``copilot:lock:jira:<KEY>``, ``acquire_lock``)
   and then its dedup record (``copilot:dedup:jira:<KEY>``, set-if-absent, kept
   ``JIRA_DEDUP_TTL_S``). Both are atomic in the state store, so of two replicas —
   or a process and its restarted self — exactly one takes an issue; the other
   records ``jira.issue.skipped`` (``locked`` / ``already_taken``). The record is
   written before any side effect, so the guarantee is at-most-once: an agent that
   dies mid-issue does not retry it (the issue is in progress or carries a comment;
   a person decides). ``jira.issue.taken`` names the binding;
2. moved to the in-progress status (``jira.api.transition_issue``);
3. a new branch ``agent/<KEY>`` from the target branch (``gitlab.api.create_branch``;
   a name taken already gets ``-2``, ``-3``…): the branch is only a name at the
   target's head, nothing is pushed to it yet;
4. the approval gate: ``approval_gate.requested`` for a coding task bound to that
   head and to the issue's summary and description. **A Jira ticket is not an
   approver**: when the GitLab project's policy needs no approval
   (``APPROVAL_REQUIRED=false``, ``APPROVAL_EXEMPT_PROJECTS``) the gate records its
   policy decision; otherwise the agent asks on the issue (a comment naming the task
   and the deadline), and a Jira account listed in the binding's ``approvers``
   answers with a comment ``/copilot approve <task>`` (or ``reject``). A later
   cycle reads the comments; the gate checks the author against the list (never the
   issue's reporter) and records ``approval_gate.decision`` — or
   ``approval_gate.approval_refused`` — exactly as for a GitLab approval, in the
   task's correlation scope with the cycle that read it as ``trigger_correlation_id``;
5. the coding task (``CodingWorkflow.run_approved``: ``task.started`` … the task
   process's clone, patch, push … ``task.finished``);
6. after a push: a **draft** merge request (``gitlab.api.create_merge_request``),
   its link commented on the issue (``jira.api.add_comment``), the issue moved to
   in-review; ``jira.issue.finished`` (success).

A failure at any step after 1 comments on the issue what went wrong and where the
trail is, leaves the issue where it is (in progress, or still in the trigger status
if the first transition failed) for a person, and records ``jira.issue.finished``
(failure, with the error class). Expired approvals are closed here (the coding
workflow's sweep leaves Jira tasks alone) with a comment on the issue.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Sequence
from typing import Any, Final, Protocol

from auditkeep import Actor, ErrorClass, Outcome
from auditkeep.context import get_actor, get_correlation_id
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.approval.gate import Decision, Refusal, iso, task_scope
from gitlab_copilot_agent.approval.task import CodingTask, new_task_id
from gitlab_copilot_agent.clients.gitlab import GitLabError
from gitlab_copilot_agent.jira_map import JiraBinding
from gitlab_copilot_agent.payloads import integer, mapping, text
from gitlab_copilot_agent.pollers.base import CycleCounts
from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.base import StateStore, StateStoreError
from gitlab_copilot_agent.tasks.spec import TaskOutcome
from gitlab_copilot_agent.workflows.coding import CodingWorkflow

__all__ = ["ISSUE_FINISHED", "ISSUE_SKIPPED", "ISSUE_TAKEN", "JiraWorkflow"]

ISSUE_TAKEN: Final = "jira.issue.taken"
ISSUE_SKIPPED: Final = "jira.issue.skipped"
ISSUE_FINISHED: Final = "jira.issue.finished"
TAKE_LOCK_TTL_S: Final = 600.0
MAX_BRANCH_TRIES: Final = 20
MAX_INSTRUCTION_CHARS: Final = 20_000
APPROVERS_VIA: Final = "jira_project_map.approvers"
_ISSUE_KEY: Final = re.compile(r"[A-Z][A-Z0-9_]{0,31}-[1-9][0-9]{0,17}")
_DECISION: Final = re.compile(r"\A\s*/copilot\s+(approve|reject)\s+([0-9a-f]{16})\b", re.I)


class JiraAPI(Protocol):
    """What this workflow uses of ``clients.jira.JiraClient``."""

    async def search_issues(self, jql: str, *, project_key: str | None = None) -> Sequence[Any]: ...

    async def transition_issue(self, key: str, to_status: str) -> Any: ...

    async def add_comment(self, key: str, text: str, *, link: str | None = None) -> str: ...

    async def list_comments(self, key: str) -> Sequence[Any]: ...


class GitLabAPI(Protocol):
    async def get_project_info(self, project_id: int | str) -> dict[str, Any]: ...

    async def create_branch(self, project_id: int, *, branch: str, ref: str) -> dict[str, Any]: ...

    async def create_merge_request(
        self,
        project_id: int,
        *,
        source_branch: str,
        target_branch: str,
        title: str,
        description: str,
        draft: bool = True,
    ) -> dict[str, Any]: ...


class _Failed(Exception):
    """A step failed: what to tell the issue, and the error class for the trail."""

    def __init__(self, what: str, error: str, message: str) -> None:
        super().__init__(what)
        self.what = what
        self.error = error
        self.message = message


class JiraWorkflow:
    """Jira issues → coding tasks → draft merge requests (see the module docstring)."""

    def __init__(
        self,
        *,
        bindings: Sequence[JiraBinding],
        dedup_ttl_s: float,
        audit: AuditLogger,
        jira: JiraAPI,
        gitlab: GitLabAPI,
        store: StateStore,
        coding: CodingWorkflow,
    ) -> None:
        self._bindings = {b.jira_project: b for b in bindings}
        self._dedup_ttl_s = dedup_ttl_s
        self._audit = audit
        self._jira = jira
        self._gitlab = gitlab
        self._store = store
        self._coding = coding

    # -- the cycle -----------------------------------------------------------------

    async def cycle(self, counts: CycleCounts) -> None:
        """One poll: decisions on waiting tasks first, then every binding's trigger status.

        A search that fails raises (the cycle is a failure, its call's entry says why)."""
        await self.check_pending(counts)
        for binding in self._bindings.values():
            found = await self._jira.search_issues(binding.jql(), project_key=binding.jira_project)
            for issue in found:
                counts.seen += 1
                verdict = await self.take_up(issue, binding)
                setattr(counts, verdict, getattr(counts, verdict) + 1)

    async def take_up(self, issue: Any, binding: JiraBinding) -> str:
        """``started``, ``skipped`` or ``failed`` for one issue the search returned."""
        key = str(getattr(issue, "key", ""))
        target = _issue_target(key, binding)
        if not _ISSUE_KEY.fullmatch(key) or getattr(issue, "project_key", None) != (
            binding.jira_project
        ):
            return self._skipped(target, "not_this_binding")
        status = str(getattr(issue, "status", ""))
        if status.casefold() != binding.trigger_status.casefold():
            # The search is eventually consistent: an issue just moved may still be listed.
            return self._skipped(target, "not_in_trigger_status", status=status)
        token = secrets.token_hex(16)
        cid = get_correlation_id() or ""
        try:
            holder = await self._store.acquire_lock(
                keys.jira_lock(key),
                {"correlation_id": cid, "token": token, "issue_key": key, "state": "taking"},
                ttl_s=TAKE_LOCK_TTL_S,
            )
            if holder is not None:
                return self._skipped(
                    target, "locked", holder_correlation_id=text(holder.get("correlation_id"))
                )
            fresh = await self._store.put(
                keys.jira_seen(key),
                {"correlation_id": cid, "issue_key": key, "state": "taken"},
                ttl_s=self._dedup_ttl_s,
                only_if_absent=True,
            )
            if not fresh:
                prior = await self._store.get(keys.jira_seen(key))
                await self._release(key, token)
                return self._skipped(
                    target,
                    "already_taken",
                    prior_correlation_id=text((prior or {}).get("correlation_id")),
                )
        except StateStoreError as exc:
            # Fail closed: without the store nobody can promise "once".
            self._audit.emit(
                ISSUE_SKIPPED,
                outcome=Outcome.FAILURE,
                target=target,
                error=exc.audit_error_class,
                error_message=f"the state store is unavailable: {exc}",
                details={"reason": "state_store_unavailable", "store": self._store.kind},
            )
            return "failed"
        self._audit.emit(
            ISSUE_TAKEN,
            target=target,
            details={
                "gitlab_project_id": binding.gitlab_project_id,
                "trigger_status": binding.trigger_status,
                "store": self._store.kind,
                "store_key": keys.jira_seen(key),
                "summary": str(getattr(issue, "summary", ""))[:200],
            },
        )
        try:
            return await self._start(issue, key, binding, token)
        except _Failed as failed:
            await self._fail(key, binding, failed)
            await self._release(key, token)
            return "failed"

    async def _start(self, issue: Any, key: str, binding: JiraBinding, token: str) -> str:
        await self._call_jira(
            "it could not be moved to " + repr(binding.in_progress_status),
            self._jira.transition_issue(key, binding.in_progress_status),
        )
        project = binding.gitlab_project_id
        info = await self._call_gitlab(
            "the GitLab project could not be read", self._gitlab.get_project_info(project)
        )
        repo_url = text(info.get("http_url_to_repo"))
        target_branch = binding.target_branch or text(info.get("default_branch"))
        if not repo_url or not target_branch:
            raise _Failed(
                "the GitLab project has no repository or default branch",
                ErrorClass.VALIDATION_ERROR,
                "project without repository",
            )
        branch, head = await self._new_branch(project, key, target_branch)
        now = self._coding.gate.now()
        actor = get_actor() or Actor("poll_cycle", "jira")
        summary = str(getattr(issue, "summary", "")).strip()
        description = str(getattr(issue, "description", "") or "").strip()
        instruction = f"{summary}\n\n{description}".strip()[:MAX_INSTRUCTION_CHARS] or key
        task = CodingTask(
            task_id=new_task_id(),
            correlation_id=get_correlation_id() or "",
            project_id=project,
            mr_iid=0,
            source_project_id=project,
            source_branch=branch,
            repo_url=repo_url,
            head_sha=head,
            instruction=instruction,
            requester=text(getattr(issue, "reporter_account_id", None)),
            requester_id=None,
            note_id=None,
            requested_at=now,
            expires_at=now + self._coding.gate.timeout_s,
            approval_required=self._coding.policy.required_for(project),
            lock_token=token,
            actor_type=actor.type,
            actor_id=actor.id,
            issue_key=key,
        )
        record = {
            "correlation_id": task.correlation_id,
            "issue_key": key,
            "state": "requested",
            "task_id": task.task_id,
            "branch": branch,
            "target_branch": target_branch,
        }
        try:
            await self._store.put(keys.jira_seen(key), record, ttl_s=self._dedup_ttl_s)
            await self._coding.gate.request(task)
        except StateStoreError as exc:
            raise _Failed(
                "the agent's state store is unavailable", exc.audit_error_class, str(exc)
            ) from None
        if not task.approval_required:
            try:
                decision = await self._coding.gate.not_required(task)
            except StateStoreError as exc:
                raise _Failed(
                    "the agent's state store is unavailable", exc.audit_error_class, str(exc)
                ) from None
            return await self._run(task, decision, None, summary, target_branch, binding)
        with contextlib.suppress(StateStoreError):
            await self._store.update_lock(
                keys.jira_lock(key),
                token,
                {"correlation_id": task.correlation_id, "token": token, "issue_key": key,
                 "task_id": task.task_id, "state": "pending"},
                ttl_s=self._coding.gate.timeout_s + keys.APPROVAL_GRACE_S,
            )  # fmt: skip
        who = ", ".join(binding.approvers) or "nobody (no approvers in JIRA_PROJECT_MAP)"
        await self._comment(
            key,
            f"Coding task {task.task_id} for {key} waits for approval on branch {branch} "
            f"(from {target_branch} at {head[:12]}). An approver ({who}; not the reporter) "
            f"comments `/copilot approve {task.task_id}` or `/copilot reject {task.task_id}` "
            f"before {iso(task.expires_at)}. Audit trail: auditkeep trace {task.correlation_id}",
        )
        return "started"

    # -- decisions on waiting tasks -------------------------------------------------

    async def check_pending(self, counts: CycleCounts) -> None:
        """Read the comments of issues whose task waits; decide, run, or expire."""
        try:
            pending = [t for t in await self._coding.gate.pending_tasks() if t.issue_key]
        except StateStoreError:
            return
        for task in pending:
            binding = self._bindings.get((task.issue_key or "").rsplit("-", 1)[0])
            if binding is None:
                continue
            comments: Sequence[Any] = ()
            if self._coding.gate.now() < task.expires_at:
                try:  # in the cycle's scope: reading is the cycle's, deciding is the task's
                    comments = await self._jira.list_comments(task.issue_key or "")
                except Exception as exc:
                    if hasattr(exc, "audit_error_class"):
                        continue  # audited by the client; the next cycle reads again
                    raise
            with task_scope(task) as trigger:
                verdict = await self._decide_pending(task, binding, trigger, comments)
            if verdict is not None:
                setattr(counts, verdict, getattr(counts, verdict) + 1)

    async def _decide_pending(
        self,
        task: CodingTask,
        binding: JiraBinding,
        trigger: str | None,
        comments: Sequence[Any],
    ) -> str | None:
        key = task.issue_key or ""
        gate = self._coding.gate
        if gate.now() >= task.expires_at:
            try:
                decision = await gate.expire(task, trigger=trigger)
            except StateStoreError:
                return None
            if decision is not None:
                await self._release(key, task.lock_token)
                await self._fail(
                    key,
                    binding,
                    _Failed("nobody approved the coding task in time", ErrorClass.AUTH_FAILURE,
                            "approval expired"),
                    task_id=task.task_id,
                )  # fmt: skip
                return "failed"
            return None
        for comment in comments:
            found = _DECISION.match(str(getattr(comment, "text", "")))
            if found is None or found.group(2).lower() != task.task_id:
                continue
            comment_id = str(getattr(comment, "id", ""))
            try:
                first = await self._store.put(
                    keys.jira_comment_seen(key, comment_id),
                    {"correlation_id": task.correlation_id, "task_id": task.task_id},
                    ttl_s=keys.DECISION_TTL_S,
                    only_if_absent=True,
                )
            except StateStoreError:
                return None
            if not first:
                continue
            author = str(getattr(comment, "author_account_id", ""))
            verdict = await gate.decide_listed(
                task,
                decision=found.group(1).lower(),
                by=author,
                listed=author in binding.approvers,
                via=APPROVERS_VIA,
                trigger=trigger,
                requester=task.requester,
            )
            if isinstance(verdict, Refusal):
                await self._comment(
                    key,
                    f"The comment by {author} cannot decide coding task {task.task_id}: "
                    f"{verdict.reason.replace('_', ' ')}.",
                )
                continue
            if verdict.approved:
                summary = task.instruction.split("\n", 1)[0]
                record = await self._record(key)
                target = text(record.get("target_branch")) or binding.target_branch or ""
                return await self._run(task, verdict, trigger, summary, target, binding)
            await self._release(key, task.lock_token)
            await self._fail(
                key, binding, _Failed(f"coding task {task.task_id} was rejected by {author}",
                                      ErrorClass.AUTH_FAILURE, "rejected"),
                task_id=task.task_id,
            )  # fmt: skip
            return "failed"
        return None

    # -- the task and the merge request ----------------------------------------------

    async def _run(
        self,
        task: CodingTask,
        decision: Decision,
        trigger: str | None,
        summary: str,
        target_branch: str,
        binding: JiraBinding,
    ) -> str:
        key = task.issue_key or ""
        outcome = await self._coding.run_approved(task, decision, trigger)
        with task_scope(task):
            try:
                mr = await self._open_mr(task, outcome, summary, target_branch)
            except _Failed as failed:
                await self._fail(key, binding, failed, task_id=task.task_id)
                return "failed"
            url = text(mr.get("web_url")) or ""
            iid = integer(mr.get("iid"))
            commit = (outcome.commit_sha if outcome else None) or ""
            try:
                await self._call_jira(
                    "the merge request link could not be commented",
                    self._jira.add_comment(
                        key,
                        f"Draft merge request !{iid} opened for {key} (branch "
                        f"{task.source_branch}, commit {commit[:12]}); a person reviews it "
                        f"before it is marked ready. Audit trail: auditkeep trace "
                        f"{task.correlation_id}",
                        link=url if url.startswith(("http://", "https://")) else None,
                    ),
                )
                await self._call_jira(
                    f"it could not be moved to {binding.in_review_status!r}",
                    self._jira.transition_issue(key, binding.in_review_status),
                )
            except _Failed as failed:
                await self._fail(key, binding, failed, task_id=task.task_id, mr_iid=iid)
                return "failed"
            with contextlib.suppress(StateStoreError):
                record = await self._record(key)
                await self._store.put(
                    keys.jira_seen(key),
                    {**record, "correlation_id": task.correlation_id, "state": "in_review",
                     "mr_iid": iid},
                    ttl_s=self._dedup_ttl_s,
                )  # fmt: skip
            self._audit.emit(
                ISSUE_FINISHED,
                target={**_issue_target(key, binding), "mr_iid": iid},
                details={
                    "task_id": task.task_id,
                    "status": "in_review",
                    "branch": task.source_branch,
                    "mr_iid": iid,
                    "commit_sha": commit or None,
                    "trigger_correlation_id": trigger,
                },
            )
            return "started"

    async def _open_mr(
        self, task: CodingTask, outcome: TaskOutcome | None, summary: str, target_branch: str
    ) -> dict[str, Any]:
        if outcome is None or outcome.status != "pushed":
            status = outcome.status if outcome else "not_started"
            why = (outcome.reason or outcome.detail or "") if outcome else ""
            raise _Failed(
                f"the coding task ended without a push ({status}{': ' + why if why else ''})",
                ErrorClass.INTERNAL_ERROR if outcome is None else _task_error(outcome),
                status,
            )
        key = task.issue_key or ""
        description = (
            f"Implements Jira issue {key}: {summary[:200]}\n\n"
            f"Coding task `{task.task_id}`, commit `{(outcome.commit_sha or '')[:12]}`. "
            f"Opened as a draft: a person reviews it before it is marked ready.\n\n"
            f"Audit trail: `auditkeep trace {task.correlation_id}`"
        )
        return await self._call_gitlab(
            "the draft merge request could not be opened",
            self._gitlab.create_merge_request(
                task.project_id,
                source_branch=task.source_branch,
                target_branch=target_branch,
                title=f"{key}: {summary[:150]}",  # the client marks it "Draft: "
                description=description,
                draft=True,
            ),
        )

    async def _new_branch(self, project: int, key: str, target: str) -> tuple[str, str]:
        base = f"agent/{key}"
        for attempt in range(1, MAX_BRANCH_TRIES + 1):
            name = base if attempt == 1 else f"{base}-{attempt}"
            try:
                created = await self._gitlab.create_branch(project, branch=name, ref=target)
            except GitLabError as exc:
                if exc.status_code == 400 and "exist" in str(exc).lower():
                    continue
                raise _Failed(
                    f"the branch {name} could not be created", exc.audit_error_class, str(exc)
                ) from None
            head = text(mapping(created.get("commit")).get("id"))
            if not head:
                raise _Failed(
                    "GitLab did not say where the new branch is",
                    ErrorClass.VALIDATION_ERROR,
                    "no commit id",
                )
            return text(created.get("name")) or name, head
        raise _Failed(
            f"every branch name {base}…-{MAX_BRANCH_TRIES} is taken",
            ErrorClass.CLIENT_ERROR,
            "no free branch name",
        )

    # -- helpers ---------------------------------------------------------------------

    async def _fail(self, key: str, binding: JiraBinding, failed: _Failed, **details: Any) -> None:
        cid = get_correlation_id() or ""
        self._audit.emit(
            ISSUE_FINISHED,
            outcome=Outcome.FAILURE,
            target=_issue_target(key, binding),
            error=failed.error,
            error_message=f"{failed.what}: {failed.message}"[:500],
            details={"reason": failed.what[:200], **details},
        )
        await self._comment(
            key,
            f"The agent could not finish {key}: {failed.what}. It leaves the issue where it is "
            f"for a person to look at. Audit trail: auditkeep trace {cid}",
        )

    async def _comment(self, key: str, body: str) -> None:
        with contextlib.suppress(Exception):  # audited by the client; nothing more to do
            await self._jira.add_comment(key, body)

    async def _call_jira(self, what: str, call: Any) -> Any:
        try:
            return await call
        except Exception as exc:
            if hasattr(exc, "audit_error_class"):
                raise _Failed(what, str(exc.audit_error_class), str(exc)) from None
            raise

    async def _call_gitlab(self, what: str, call: Any) -> dict[str, Any]:
        try:
            answer = await call
        except GitLabError as exc:
            raise _Failed(what, exc.audit_error_class, str(exc)) from None
        return dict(answer) if isinstance(answer, dict) else {}

    async def _record(self, key: str) -> dict[str, Any]:
        with contextlib.suppress(StateStoreError):
            return await self._store.get(keys.jira_seen(key)) or {}
        return {}

    async def _release(self, key: str, token: str) -> None:
        with contextlib.suppress(StateStoreError):
            await self._store.release_lock(keys.jira_lock(key), token)

    def _skipped(self, target: dict[str, Any], reason: str, **details: Any) -> str:
        self._audit.emit(ISSUE_SKIPPED, target=target, details={"reason": reason, **details})
        return "skipped"


def _issue_target(key: str, binding: JiraBinding) -> dict[str, Any]:
    return {
        "resource_type": "issue",
        "issue_key": key[:64],
        "project_key": binding.jira_project,
        "project_id": binding.gitlab_project_id,
    }


def _task_error(outcome: TaskOutcome) -> str:
    reason = outcome.reason or ""
    if reason in ErrorClass._value2member_map_:
        return reason
    return ErrorClass.GIT_ERROR if outcome.status == "push_failed" else ErrorClass.INTERNAL_ERROR
