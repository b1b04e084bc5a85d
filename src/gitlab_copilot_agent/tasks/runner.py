"""What a task process does (``gitlab-copilot-agent run-task``): from the clone to the push.

In order, every step on the trail in the task's correlation scope (handed
down in ``AUDIT_CORRELATION_ID``), target ``coding_task`` for the task's own
entries:

1. ``gitlab.api.clone_repo``: the MR's source branch, shallow; its head must
   be the approved one (else ``head_changed``, and nothing else runs);
2. ``copilot.sdk.coding_request`` / ``copilot.sdk.response_received``: the
   model proposes a unified diff (every provider, through the auditing wrapper);
3. ``copilot.patch.generated``: ``files_changed, lines_added, lines_removed,
   patch_sha256, bytes`` (and the paths);
4. ``copilot.patch.validated``: success, or a failure with ``details.reason``
   ``does_not_apply``, ``path_outside_repo``, ``symlink_escape``,
   ``protected_path``, ``too_large`` or ``check_failed`` (nothing is pushed);
5. the patch is applied and committed as the agent, with the trailers
   ``Audit-Correlation-Id: <id>`` and ``Copilot-Task-Id: <task>``, so the
   commit in GitLab leads back to the trail;
6. ``gitlab.api.push_branch``: a fast-forward from the approved head only,
   after the push step asked the approval gate (through the channel) whether
   an ``approve`` for this task, instruction and head was recorded.

The result goes back to the agent over the channel; the agent stores it,
posts the note and records ``task.finished``. With tracing on, each step is a
span (``task.clone``, ``task.code``, ``task.validate``, ``task.commit``,
``task.push``) under the process's ``task.process``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from auditkeep import ErrorClass, Outcome
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.git.errors import GitError, PushNotApproved
from gitlab_copilot_agent.git.patches import apply_patch, patch_stats, validate_patch
from gitlab_copilot_agent.git.runner import GitCredentials, GitRunner
from gitlab_copilot_agent.llm.base import CodingRequest, LLMError, LLMProvider
from gitlab_copilot_agent.settings import TaskSettings
from gitlab_copilot_agent.tasks.channel import TaskChannel
from gitlab_copilot_agent.tasks.spec import TaskSpec
from gitlab_copilot_agent.tracing import span

__all__ = [
    "PATCH_GENERATED",
    "PATCH_VALIDATED",
    "ChannelAuthorization",
    "coding_prompt",
    "run_task",
]

PATCH_GENERATED: Final = "copilot.patch.generated"
PATCH_VALIDATED: Final = "copilot.patch.validated"


class ChannelAuthorization:
    """``PushAuthorization`` for a task process: asks the agent's approval gate.

    Refuses (``PermissionError``) when there is no channel (``run-task``
    started by something else than its agent), when the agent is gone, or
    when the gate has no ``approve`` bound to this task, instruction and head.
    """

    def __init__(self, channel: TaskChannel | None, spec: TaskSpec) -> None:
        self.task_id = spec.task_id
        self._channel = channel
        self._spec = spec

    async def verify(self) -> None:
        if self._channel is None:
            raise PermissionError("no approval gate to ask: run-task was started without its agent")
        try:
            answer = await self._channel.request(
                "verify_push",
                task_id=self._spec.task_id,
                head_sha=self._spec.head_sha,
                instruction_sha256=self._spec.instruction_sha256,
            )
        except (ConnectionError, OSError):
            raise PermissionError("the agent is gone: the approval cannot be verified") from None
        if answer.get("ok") is not True:
            raise PermissionError(str(answer.get("error") or "the approval gate refused the push"))


@dataclass
class _Result:
    status: str
    reason: str | None = None
    detail: str | None = None
    commit_sha: str | None = None

    def as_dict(self, facts: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "commit_sha": self.commit_sha,
            "facts": facts,
        }


def coding_prompt(spec: TaskSpec) -> str:
    """What the model is asked (the instruction; the provider adds the repository's context)."""
    if spec.issue_key:
        return (
            f"Implement Jira issue {spec.issue_key} on the branch `{spec.branch}`.\n\n"
            f"{spec.instruction}\n"
        )
    return (
        f"Change the source branch `{spec.branch}` of merge request !{spec.mr_iid} as follows.\n\n"
        f"{spec.instruction}\n"
    )


def commit_message(spec: TaskSpec) -> str:
    first = spec.instruction.strip().splitlines()[0] if spec.instruction.strip() else "change"
    title = first if len(first) <= 60 else first[:59] + "…"
    if spec.issue_key:
        return f"feat({spec.issue_key}): {title}\n\nRequested in Jira issue {spec.issue_key}.\n"
    return f"copilot: {title}\n\nRequested in merge request !{spec.mr_iid}.\n"


async def run_task(
    spec: TaskSpec,
    *,
    settings: TaskSettings,
    audit: AuditLogger,
    provider: LLMProvider,
    channel: TaskChannel | None,
    workdir: Path,
) -> dict[str, Any]:
    """Run one task to its result (the dict the agent receives); failures are results."""
    coding = settings.coding
    git = GitRunner(
        audit,
        gitlab_url=settings.gitlab.url,
        credentials=GitCredentials(settings.gitlab.token.get_secret_value()),
        allowed_insecure_hosts=coding.git_http_hosts,
        timeout_s=coding.git_timeout_s,
        author_name=coding.git_author_name,
        author_email=coding.git_author_email,
    )
    facts: dict[str, Any] = {"branch": spec.branch}
    try:
        result = await _steps(
            spec, settings, audit, provider, channel, git, workdir / "repo", facts
        )
    finally:
        git.close()
    return result.as_dict(facts)


async def _steps(
    spec: TaskSpec,
    settings: TaskSettings,
    audit: AuditLogger,
    provider: LLMProvider,
    channel: TaskChannel | None,
    git: GitRunner,
    repo: Path,
    facts: dict[str, Any],
) -> _Result:
    coding = settings.coding
    git_target = spec.git_target()
    try:
        with span("task.clone"):
            cloned = await git.clone(spec.repo_url, spec.branch, repo, target=git_target)
    except GitError as exc:
        return _Result("failed", exc.error_class, f"clone failed: {exc.reason}")
    facts["cloned_sha"] = cloned
    if cloned != spec.head_sha:
        return _Result(
            "head_changed",
            "head_changed",
            f"the branch is at {cloned[:12]}, not at the approved {spec.head_sha[:12]}",
        )
    try:
        with span("task.code"):
            answer = await provider.code(
                CodingRequest(
                    prompt=coding_prompt(spec),
                    working_directory=str(repo),
                    project_id=spec.project_id,
                    mr_iid=spec.mr_iid or None,  # a Jira task has no MR yet
                    issue_key=spec.issue_key,
                )
            )
    except (LLMError, NotImplementedError, TimeoutError, ConnectionError) as exc:
        return _Result("failed", "llm_error", f"the model did not answer: {type(exc).__name__}")
    patch = getattr(answer, "patch", "") or ""
    if not patch.strip():
        return _Result("no_changes", "no_diff", "the model proposed no change")
    stats = patch_stats(patch)
    facts.update(
        files_changed=stats.files_changed,
        lines_added=stats.lines_added,
        lines_removed=stats.lines_removed,
        patch_sha256=stats.patch_sha256,
    )
    target = spec.target()
    audit.emit(
        PATCH_GENERATED,
        target=target,
        details={
            "task_id": spec.task_id,
            "files_changed": stats.files_changed,
            "lines_added": stats.lines_added,
            "lines_removed": stats.lines_removed,
            "patch_sha256": stats.patch_sha256,
            "bytes": stats.bytes,
        },
    )
    try:
        with span("task.validate"):
            verdict = await validate_patch(
                repo,
                patch,
                max_bytes=coding.max_patch_bytes,
                protected_paths=_protected(settings),
                check_command=coding.check_command,
                check_timeout_s=coding.check_timeout_s,
            )
    except GitError as exc:
        audit.emit(
            PATCH_VALIDATED,
            outcome=Outcome.FAILURE,
            target=target,
            error=exc.audit_error_class,
            error_message=f"validation could not run: {exc.reason}",
            details={"task_id": spec.task_id, "outcome": "error", "reason": exc.error_class},
        )
        return _Result("failed", exc.error_class, f"patch validation could not run: {exc.reason}")
    checks = ["size", "paths", "symlinks", "protected_paths", "git_apply_check"]
    if coding.check_command:
        checks.append("check_command")
    if not verdict.ok:
        audit.emit(
            PATCH_VALIDATED,
            outcome=Outcome.FAILURE,
            target=target,
            error=ErrorClass.VALIDATION_ERROR,
            error_message=f"patch refused: {verdict.reason}",
            details={
                "task_id": spec.task_id,
                "outcome": "refused",
                "reason": verdict.reason,
                "detail": verdict.detail,
                "paths": list(verdict.paths)[:50],
                "patch_sha256": stats.patch_sha256,
            },
        )
        return _Result("patch_refused", verdict.reason, verdict.detail)
    audit.emit(
        PATCH_VALIDATED,
        target=target,
        details={
            "task_id": spec.task_id,
            "outcome": "valid",
            "checks": checks,
            "paths": list(verdict.paths)[:50],
            "patch_sha256": stats.patch_sha256,
        },
    )
    try:
        with span("task.commit"):
            await apply_patch(repo, patch)
            commit = await git.commit(
                repo,
                commit_message(spec),
                trailers={
                    "Audit-Correlation-Id": spec.correlation_id,
                    "Copilot-Task-Id": spec.task_id,
                },
            )
    except GitError as exc:
        return _Result("failed", exc.error_class, f"the patch could not be committed: {exc.reason}")
    facts["commit_sha"] = commit
    try:
        with span("task.push"):
            pushed = await git.push(
                repo,
                spec.branch,
                expected_remote_sha=spec.head_sha,
                target=git_target,
                authorization=ChannelAuthorization(channel, spec),
            )
    except PushNotApproved as exc:
        return _Result("push_failed", "not_approved", exc.reason)
    except GitError as exc:
        return _Result("push_failed", exc.error_class, exc.reason)
    return _Result("pushed", None, None, pushed)


def _protected(settings: TaskSettings) -> tuple[str, ...]:
    from gitlab_copilot_agent.git.patches import DEFAULT_PROTECTED_PATHS

    paths = settings.coding.protected_paths
    return DEFAULT_PROTECTED_PATHS if paths is None else paths
