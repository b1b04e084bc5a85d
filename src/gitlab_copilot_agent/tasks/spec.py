"""``TaskSpec`` (what a task process is asked to do) and ``TaskOutcome`` (how it ended).

The spec travels on the task process's stdin as one JSON object: no secret is
in it (the tokens reach the process through its environment only), and no
secret is in its argv.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

import orjson

from gitlab_copilot_agent.approval.task import CodingTask

__all__ = ["MAX_SPEC_BYTES", "TaskOutcome", "TaskSpec"]

MAX_SPEC_BYTES: Final = 1_048_576
STATUSES: Final = (
    "pushed",
    "no_changes",
    "patch_refused",
    "head_changed",
    "push_failed",
    "failed",
    "timeout",
    "killed",
    "cancelled",
)
"""How a task ends: only ``pushed`` changed the repository."""


@dataclass(frozen=True)
class TaskSpec:
    """One coding task for a task process.

    ``head_sha`` is the approved MR head: the clone must be at it, and the
    push is a fast-forward from it (else nothing is pushed).
    """

    task_id: str
    correlation_id: str
    project_id: int
    mr_iid: int
    repo_url: str
    branch: str
    head_sha: str
    instruction: str
    instruction_sha256: str
    attempt: int = 1
    issue_key: str | None = None
    """A Jira-triggered task: no MR yet (``mr_iid`` 0), ``branch`` is its new branch."""

    @classmethod
    def for_task(cls, task: CodingTask, attempt: int = 1) -> TaskSpec:
        return cls(
            task_id=task.task_id,
            correlation_id=task.correlation_id,
            project_id=task.source_project_id,
            mr_iid=task.mr_iid,
            repo_url=task.repo_url,
            branch=task.source_branch,
            head_sha=task.head_sha,
            instruction=task.instruction,
            instruction_sha256=task.instruction_sha256,
            attempt=attempt,
            issue_key=task.issue_key,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> TaskSpec:
        """Parse a spec; ``ValueError`` for anything that is not exactly one."""
        if len(raw) > MAX_SPEC_BYTES:
            raise ValueError(f"the task spec is larger than {MAX_SPEC_BYTES} bytes")
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("the task spec is not a JSON object")
        expected = {f.name: f.type for f in fields(cls)}
        missing = [n for n in expected if n not in data and n not in ("attempt", "issue_key")]
        if missing:
            raise ValueError(f"the task spec lacks {', '.join(missing)}")
        spec = cls(**{k: data[k] for k in expected if k in data})
        if spec.issue_key is not None and (
            not isinstance(spec.issue_key, str) or not 1 <= len(spec.issue_key) <= 64
        ):
            raise ValueError("the task spec's issue_key is not a Jira issue key")
        for name in ("project_id", "mr_iid", "attempt"):
            value = getattr(spec, name)
            lowest = 0 if name == "mr_iid" and spec.issue_key else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"the task spec's {name} is not a positive integer")
        for name in ("task_id", "correlation_id", "repo_url", "branch", "head_sha", "instruction"):
            if not isinstance(getattr(spec, name), str) or not getattr(spec, name):
                raise ValueError(f"the task spec's {name} is not a non-empty string")
        return spec

    def target(self) -> dict[str, Any]:
        return {"resource_type": "coding_task", **self.git_target()}

    def git_target(self) -> dict[str, Any]:
        """What the git steps' entries name (no MR for a Jira task: its issue instead)."""
        target: dict[str, Any] = {"project_id": self.project_id, "task_id": self.task_id}
        if self.mr_iid:
            target["mr_iid"] = self.mr_iid
        if self.issue_key:
            target["issue_key"] = self.issue_key
        return target


@dataclass(frozen=True)
class TaskOutcome:
    """How a task ended, as the agent records it (``task.finished``, the result, the note).

    Attributes:
        status: one of ``STATUSES``.
        commit_sha: the pushed commit (``pushed`` only).
        reason: the machine-readable cause (a patch-validation reason, a push
            failure class, ``exit_code``…), None on success.
        detail: a short, scrubbed sentence for people.
        exit_code: the task process's exit code (negative: killed by that signal).
        pid: the task process's id (local executor).
        facts: what the task process reported (patch stats, branch…).
    """

    status: str
    commit_sha: str | None = None
    reason: str | None = None
    detail: str | None = None
    exit_code: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.status in ("pushed", "no_changes")
