"""``CodingTask``: one ``/copilot fix`` command, as the gate stores it while it waits.

A task id is new for every command (never derived from the MR: a second
command must never find the first one's result). The task binds what will be
done to what was asked: the instruction's SHA-256 and the MR head at request
time; the approval is for exactly that.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

from auditkeep import Actor

__all__ = ["CodingTask", "new_task_id"]


def new_task_id() -> str:
    """16 hex characters from the OS's CSPRNG: short enough to type, never reused."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class CodingTask:
    """What a ``/copilot fix`` asks for, and what it is bound to.

    Attributes:
        task_id: unique per command.
        correlation_id: the id of the webhook that carried the command; every
            US-3 entry of the task carries it.
        project_id, mr_iid: the merge request the command is on.
        source_project_id, source_branch, repo_url: where the change is pushed.
        head_sha: the MR head at request time; an approval is void once it moves.
        instruction: what to change (the command's text).
        requester, requester_id: who asked (may not approve it themselves).
        note_id: the note that holds the command.
        requested_at, expires_at: Unix seconds.
        approval_required: the project's policy when it was asked.
        lock_token: proves this task holds the MR's lock.
        actor_type, actor_id: the scope's actor when it was asked.
        issue_key: the Jira issue a Jira-triggered task implements (``workflows.jira``);
            such a task has no merge request yet (``mr_iid`` 0): it pushes to a new
            branch, and its draft MR is opened after the push.
    """

    task_id: str
    correlation_id: str
    project_id: int
    mr_iid: int
    source_project_id: int
    source_branch: str
    repo_url: str
    head_sha: str
    instruction: str
    requester: str | None
    requester_id: int | None
    note_id: int | None
    requested_at: float
    expires_at: float
    approval_required: bool
    lock_token: str
    actor_type: str = "webhook_event"
    actor_id: str = "unknown"
    issue_key: str | None = None

    @property
    def instruction_sha256(self) -> str:
        return hashlib.sha256(self.instruction.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def actor(self) -> Actor:
        return Actor(self.actor_type, self.actor_id)

    def target(self) -> dict[str, Any]:
        """The audit target of the task's own entries."""
        target: dict[str, Any] = {
            "resource_type": "coding_task",
            "task_id": self.task_id,
            "project_id": self.project_id,
        }
        if self.mr_iid:
            target["mr_iid"] = self.mr_iid
        if self.issue_key:
            target["issue_key"] = self.issue_key
        return target

    @property
    def lock_key(self) -> str:
        """What the task holds while it waits and runs: its MR, or its Jira issue."""
        from gitlab_copilot_agent.state import keys

        if self.issue_key:
            return keys.jira_lock(self.issue_key)
        return keys.mr_lock(self.project_id, self.mr_iid)

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "instruction_sha256": self.instruction_sha256}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CodingTask:
        """The task from its stored record (unknown keys ignored; a broken record raises)."""
        names = {f.name for f in fields(cls)}
        task = cls(**{k: v for k, v in record.items() if k in names})
        if not isinstance(task.task_id, str) or not isinstance(task.project_id, int):
            raise ValueError("not a coding task record")
        return task
