"""Who may approve a coding task (``APPROVAL_*``): by username and/or GitLab access level.

Separation of duties first: the requester may not approve their own task
unless ``APPROVAL_ALLOW_SELF=true``, even when they are a listed approver or a
maintainer. Then a user named in ``APPROVAL_APPROVERS`` may approve; else, with
``APPROVAL_MIN_ACCESS_LEVEL`` (default maintainer, 40), a member whose access
level on the project reaches it, asked through GitLab's members API
(``gitlab.api.get_project_member``, audited; inherited memberships count). A
user who is not a member (404) is not an approver; a members API that fails
is ``approver_check_failed``: nobody is approved on a guess.

Rejecting (or cancelling) a task needs less: its requester may always
withdraw it, and approvers may reject it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gitlab_copilot_agent.approval.task import CodingTask
from gitlab_copilot_agent.clients.gitlab import GitLabError
from gitlab_copilot_agent.settings import ApprovalSettings

__all__ = ["ApprovalPolicy", "ApproverCheck", "MembersAPI"]


class MembersAPI(Protocol):
    async def get_project_member(self, project_id: int, user_id: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ApproverCheck:
    """The policy's answer for one user and one task.

    ``reason`` (when refused): ``self_approval``, ``not_an_approver`` or
    ``approver_check_failed``; ``via`` (when allowed): ``username``,
    ``access_level``, ``requester`` (withdrawing their own task) or ``self_allowed``.
    """

    allowed: bool
    reason: str | None = None
    via: str | None = None
    access_level: int | None = None
    detail: str | None = None


class ApprovalPolicy:
    """``APPROVAL_*`` applied to a task and a would-be approver."""

    def __init__(self, settings: ApprovalSettings, members: MembersAPI) -> None:
        self.settings = settings
        self._members = members

    def required_for(self, project_id: int) -> bool:
        return self.settings.required_for(project_id)

    def who_may_approve(self) -> dict[str, Any]:
        """For ``approval_gate.requested``: the named approvers, the level, self-approval."""
        return {
            "usernames": list(self.settings.approvers),
            "min_access_level": self.settings.min_access_level,
            "self_approval": self.settings.allow_self_approval,
        }

    def describe(self) -> str:
        """The same, in words for the reply note."""
        who = [f"@{name}" for name in self.settings.approvers]
        level = self.settings.min_access_level
        if level is not None:
            who.append(f"a project member with access level {level} or more")
        text = " or ".join(who)
        if not self.settings.allow_self_approval:
            text += " (not the requester)"
        return text

    async def check(
        self,
        task: CodingTask,
        username: str | None,
        user_id: int | None,
        *,
        action: Literal["approve", "reject"] = "approve",
    ) -> ApproverCheck:
        """May ``username`` approve (or reject) ``task``?"""
        is_requester = _same_user(task, username, user_id)
        if is_requester and action == "reject":
            return ApproverCheck(True, via="requester")
        if is_requester and not self.settings.allow_self_approval:
            return ApproverCheck(
                False, "self_approval", detail="the requester may not approve their own task"
            )
        via_self = "self_allowed" if is_requester else None
        if username is not None and username in self.settings.approvers:
            return ApproverCheck(True, via=via_self or "username")
        level_needed = self.settings.min_access_level
        if level_needed is None or user_id is None:
            return ApproverCheck(False, "not_an_approver", detail="not a listed approver")
        try:
            member = await self._members.get_project_member(task.project_id, user_id)
        except GitLabError as exc:
            if exc.status_code == 404:
                return ApproverCheck(False, "not_an_approver", detail="not a member of the project")
            return ApproverCheck(
                False,
                "approver_check_failed",
                detail=f"members API failed: {exc.audit_error_class}",
            )
        level = member.get("access_level")
        if not isinstance(level, int) or isinstance(level, bool):
            return ApproverCheck(
                False, "approver_check_failed", detail="members API gave no access level"
            )
        if level < level_needed:
            return ApproverCheck(
                False,
                "not_an_approver",
                access_level=level,
                detail=f"access level {level} is below {level_needed}",
            )
        return ApproverCheck(True, via=via_self or "access_level", access_level=level)


def _same_user(task: CodingTask, username: str | None, user_id: int | None) -> bool:
    if task.requester_id is not None and user_id is not None:
        return task.requester_id == user_id
    return username is not None and username == task.requester
