"""The Jira project map (``JIRA_PROJECT_MAP`` or ``JIRA_PROJECT_MAP_FILE``): which Jira project
becomes merge requests on which GitLab project, and which statuses the agent moves issues through.

One JSON object, a Jira project key → its binding::

    {"PROJ": {"gitlab_project_id": 42, "target_branch": "main",
              "trigger_status": "Ready for Agent", "in_progress_status": "In Progress",
              "in_review_status": "In Review", "approvers": ["5b10ac8d82e05b22cc7d4ef5"]}}

``gitlab_project_id`` is required; ``target_branch`` defaults to the GitLab
project's default branch; the statuses default to ``To Do`` / ``In Progress`` /
``In Review``; ``approvers`` are Jira account ids who may approve a task by a
Jira comment (``/copilot approve <task>``) when the GitLab project's approval
policy requires an approval. Unknown keys are refused (a typo must not silently
fall back to a default). A problem is one plain message naming the key
(``PROJ.gitlab_project_id: ...``); ``settings`` prefixes the variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = ["MAX_MAP_BYTES", "JiraBinding", "MapError", "jql_quote", "parse_project_map"]

MAX_MAP_BYTES: Final = 65_536
MAX_PROJECTS: Final = 200
_PROJECT_KEY: Final = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_ACCOUNT: Final = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_BRANCH: Final = re.compile(r"[A-Za-z0-9._/-]{1,200}")
_FIELDS: Final = frozenset(
    {
        "gitlab_project_id",
        "target_branch",
        "trigger_status",
        "in_progress_status",
        "in_review_status",
        "approvers",
    }
)


_PLAIN: Final = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _name(value: str) -> str:
    """A key as a message may show it: as is when plain, else escaped and cut (one line)."""
    return value if _PLAIN.fullmatch(value) else repr(value[:40])


class MapError(ValueError):
    """The map is invalid; the message names the key (``PROJ.trigger_status: ...``)."""


@dataclass(frozen=True)
class JiraBinding:
    """One Jira project's binding to a GitLab project."""

    jira_project: str
    gitlab_project_id: int
    target_branch: str | None = None
    trigger_status: str = "To Do"
    in_progress_status: str = "In Progress"
    in_review_status: str = "In Review"
    approvers: tuple[str, ...] = ()

    def jql(self) -> str:
        """The issues waiting for the agent, oldest first."""
        return (
            f"project = {jql_quote(self.jira_project)} AND status = "
            f"{jql_quote(self.trigger_status)} ORDER BY created ASC"
        )


def jql_quote(value: str) -> str:
    """A JQL string literal (the values are validated: no quote or backslash reaches here)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_project_map(raw: str | bytes) -> tuple[JiraBinding, ...]:
    """Parse and check the whole map; ``MapError`` names the first bad key."""
    if len(raw) > MAX_MAP_BYTES:
        raise MapError(f"is larger than {MAX_MAP_BYTES} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MapError("is not valid JSON") from None
    if not isinstance(data, dict) or not data:
        raise MapError('must be a JSON object of Jira project keys, e.g. {"PROJ": {...}}')
    if len(data) > MAX_PROJECTS:
        raise MapError(f"binds more than {MAX_PROJECTS} Jira projects")
    bindings = []
    for key, value in data.items():
        if not _PROJECT_KEY.fullmatch(key):
            raise MapError(
                f"{key[:40]!r} is not a Jira project key (upper-case letters and digits)"
            )
        if not isinstance(value, dict):
            raise MapError(f"{key}: must be an object with at least gitlab_project_id")
        bindings.append(_binding(key, value))
    return tuple(bindings)


def _binding(key: str, value: dict[str, Any]) -> JiraBinding:
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise MapError(
            f"{key}.{_name(unknown[0])}: unknown key (known: {', '.join(sorted(_FIELDS))})"
        )
    project = value.get("gitlab_project_id")
    if not isinstance(project, int) or isinstance(project, bool) or not 1 <= project < 10**18:
        raise MapError(f"{key}.gitlab_project_id: required, a positive whole number")
    fields: dict[str, Any] = {"jira_project": key, "gitlab_project_id": project}
    branch = value.get("target_branch")
    if branch is not None:
        if not isinstance(branch, str) or not _BRANCH.fullmatch(branch) or ".." in branch:
            raise MapError(f"{key}.target_branch: not a branch name")
        fields["target_branch"] = branch
    for name in ("trigger_status", "in_progress_status", "in_review_status"):
        if name in value:
            fields[name] = _status(key, name, value[name])
    statuses = [fields.get(n, getattr(JiraBinding, n)) for n in ("trigger_status",
                "in_progress_status", "in_review_status")]  # fmt: skip
    if len({s.casefold() for s in statuses}) != 3:
        raise MapError(f"{key}: trigger, in-progress and in-review statuses must differ")
    approvers = value.get("approvers", [])
    if not isinstance(approvers, list) or not all(
        isinstance(a, str) and _ACCOUNT.fullmatch(a) for a in approvers
    ):
        raise MapError(f"{key}.approvers: must be a list of Jira account ids")
    fields["approvers"] = tuple(approvers)
    return JiraBinding(**fields)


def _status(key: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise MapError(f"{key}.{name}: must be a status name (1 to 100 characters)")
    if any(c in value for c in '"\\') or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise MapError(f"{key}.{name}: must not hold quotes, backslashes or control characters")
    return value.strip()
