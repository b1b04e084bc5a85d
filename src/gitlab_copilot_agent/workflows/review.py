"""The merge-request review workflow.

Triggers (``install`` plugs them into the routers):

- a Merge Request Hook with action ``open`` or ``reopen``, or ``update`` when it
  carries ``oldrev`` (new commits; title/description edits have none);
- the ``/copilot review`` command (the command router has already audited it
  and ignored system notes and the agent's own).

Steps: fetch the MR (head sha), list its notes, fetch the diff, ask the LLM,
post the review as one MR note (``comment_type="review"``) and an inline commit
discussion for each finding that points at a line the diff adds.

Skipping what was already reviewed: the review note ends with a hidden marker
``<!-- copilot-review sha=<head sha> -->``. A hook for a head sha that already
has a marker written by the agent's own user posts nothing (the marker in
someone else's comment does not count, so nobody can silence reviews by pasting
it). An explicit ``/copilot review`` reviews again, once per command note: the
note id is recorded in a second marker so a redelivered hook does not post twice.

Every GitLab and LLM call is audited by the client and the provider; this
module adds ``copilot.review.skipped`` (with the reason) when it decides not to
post, so a trace always says why a webhook ended without a review.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.commands.router import CommandContext
from gitlab_copilot_agent.events import Event
from gitlab_copilot_agent.identity import AgentIdentity
from gitlab_copilot_agent.llm.base import DiffFile, LLMProvider, ReviewRequest
from gitlab_copilot_agent.llm.diff import added_lines
from gitlab_copilot_agent.payloads import integer, mapping, project_id

if TYPE_CHECKING:
    from gitlab_copilot_agent.plugins import Parts

REVIEW_SKIPPED: Final = "copilot.review.skipped"
MARKER_PREFIX: Final = "<!-- copilot-review sha="
_MARKER: Final = re.compile(r"<!-- copilot-review sha=(?P<sha>[0-9a-f]{7,64}) -->")
_REQUEST_MARKER: Final = re.compile(r"<!-- copilot-review-request note=(?P<note>\d+) -->")
_FINDING: Final = re.compile(
    r"^\s*(?:[-*•]|\d+[.)])\s+\**`?(?P<path>[^\s`*]+?):(?P<line>\d+)(?:-\d+)?`?\**"
    r"\s*(?:[—–:-]+\s*)?(?P<message>\S.*)$"
)
_FENCE: Final = re.compile(r"\A```(?:json)?\s*\n(?P<body>.*)\n```\Z", re.DOTALL)
MAX_DESCRIPTION_CHARS: Final = 2000


class GitLabAPI(Protocol):
    """The GitLab client methods this workflow uses (``clients.gitlab.GitLabClient``)."""

    async def get_mr_details(self, project_id: int, mr_iid: int) -> dict[str, Any]: ...

    async def get_mr_diff(self, project_id: int, mr_iid: int) -> list[dict[str, Any]]: ...

    async def list_mr_notes(self, project_id: int, mr_iid: int) -> list[dict[str, Any]]: ...

    async def post_mr_note(
        self, project_id: int, mr_iid: int, body: str, *, comment_type: Literal["review", "note"]
    ) -> dict[str, Any]: ...

    async def post_commit_discussion(
        self,
        project_id: int,
        commit_sha: str,
        body: str,
        *,
        path: str,
        line: int,
        base_sha: str | None = None,
        start_sha: str | None = None,
    ) -> dict[str, Any]: ...

    async def get_current_user(self) -> dict[str, Any]: ...

    async def get_project_info(self, project_id: int | str) -> dict[str, Any]: ...


def review_marker(sha: str) -> str:
    """The hidden marker that ends a review note for ``sha``."""
    return f"{MARKER_PREFIX}{sha} -->"


@dataclass(frozen=True, slots=True)
class InlineFinding:
    """A model finding on a line of the new side of the diff."""

    path: str
    line: int
    message: str


@dataclass
class ReviewOutcome:
    """What one review run did (for callers and tests; the trail has the same facts)."""

    status: Literal["posted", "skipped"]
    project_id: int
    mr_iid: int
    head_sha: str | None = None
    reason: str | None = None
    note_id: int | None = None
    inline_posted: list[InlineFinding] = field(default_factory=list)
    inline_rejected: list[InlineFinding] = field(default_factory=list)


def parse_review(text: str) -> tuple[str, list[InlineFinding]]:
    """The review as markdown, and its findings in order, without duplicates.

    Two answer shapes are understood: markdown with ``- `path:line` — message``
    lines (what the system prompt asks for), and a JSON object
    ``{"summary": ..., "comments": [{"file"|"path", "line", "comment"|"body"}]}``
    (optionally in a code fence), which is rendered as markdown.
    """
    structured = _json_review(text)
    if structured is not None:
        return structured
    seen: set[tuple[str, int]] = set()
    findings: list[InlineFinding] = []
    for raw in text.splitlines():
        found = _FINDING.match(raw)
        if found is None:
            continue
        _add_finding(
            findings, seen, found.group("path"), found.group("line"), found.group("message")
        )
    return text, findings


def _add_finding(
    findings: list[InlineFinding], seen: set[tuple[str, int]], path: Any, line: Any, message: Any
) -> None:
    if not isinstance(path, str) or not path or not isinstance(message, str) or not message.strip():
        return
    try:
        number = int(line)
    except (TypeError, ValueError):
        return
    clean = path.strip().removeprefix("./").lstrip("/")
    if number < 1 or (clean, number) in seen:
        return
    seen.add((clean, number))
    findings.append(InlineFinding(clean, number, message.strip()))


def _json_review(text: str) -> tuple[str, list[InlineFinding]] | None:
    raw = text.strip()
    fenced = _FENCE.match(raw)
    if fenced is not None:
        raw = fenced.group("body").strip()
    if not raw.startswith("{"):
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    comments = data.get("comments") or data.get("findings") or []
    findings: list[InlineFinding] = []
    seen: set[tuple[str, int]] = set()
    lines = [str(data.get("summary") or "").strip()]
    for item in comments if isinstance(comments, list) else []:
        if not isinstance(item, dict):
            continue
        message = item.get("comment") or item.get("body") or item.get("message")
        before = len(findings)
        _add_finding(
            findings, seen, item.get("file") or item.get("path"), item.get("line"), message
        )
        if len(findings) > before:
            f = findings[-1]
            severity = item.get("severity")
            label = f"**{severity}** " if isinstance(severity, str) and severity else ""
            lines.append(f"- `{f.path}:{f.line}` — {label}{f.message}")
    if len(lines) > 1:
        lines.insert(1, "")
        lines.insert(2, "Findings:")
    return "\n".join(lines).strip(), findings


def diff_files(diffs: Sequence[Mapping[str, Any]]) -> tuple[list[DiffFile], list[str]]:
    """Reviewable files of a GitLab ``/diffs`` answer, and the paths left out (too large)."""
    files, omitted = [], []
    for item in diffs:
        path = str(item.get("new_path") or item.get("old_path") or "")
        diff = item.get("diff") or ""
        if not path:
            continue
        if item.get("too_large") or item.get("collapsed") or not isinstance(diff, str) or not diff:
            if item.get("too_large") or item.get("collapsed"):
                omitted.append(path)
            continue
        files.append(
            DiffFile(
                path=path,
                diff=diff,
                old_path=str(item.get("old_path") or path),
                new_file=bool(item.get("new_file")),
                deleted_file=bool(item.get("deleted_file")),
            )
        )
    return files, omitted


def build_review_prompt(
    mr: Mapping[str, Any], files: Sequence[DiffFile], omitted: Sequence[str], max_chars: int
) -> tuple[str, list[DiffFile]]:
    """The user prompt, and the files that fit in ``max_chars`` (the rest are named only)."""
    description = str(mr.get("description") or "")[:MAX_DESCRIPTION_CHARS]
    head = [
        f"Merge request !{mr.get('iid', '?')}: {mr.get('title', '')}",
        f"Branches: {mr.get('source_branch', '?')} -> {mr.get('target_branch', '?')}",
        "",
        "Description:",
        description or "(none)",
        "",
        "Diff:",
    ]
    parts = ["\n".join(head)]
    used = len(parts[0])
    included: list[DiffFile] = []
    left_out = list(omitted)
    for file in files:
        old = file.old_path or file.path
        block = f"--- a/{old}\n+++ b/{file.path}\n{file.diff.rstrip()}\n"
        if used + len(block) > max_chars:
            left_out.append(file.path)
            continue
        parts.append(block)
        used += len(block)
        included.append(file)
    if left_out:
        parts.append("Not shown (too large): " + ", ".join(left_out))
    return "\n".join(parts), included


def _neutralise(text: str) -> str:
    # Model output must not forge our markers or hide text in HTML comments.
    return text.replace("<!--", "&lt;!--")


class ReviewWorkflow:
    """Reviews merge requests; one instance per process, shared by all deliveries.

    Args:
        gitlab: the audited GitLab client.
        llm: the audited LLM provider.
        audit: the audit logger (for skip entries).
        identity: the agent's own user (shared with the command router; by
            default one of its own over ``gitlab``).
        max_inline_comments: the most inline discussions one review posts.
        max_prompt_chars: the diff budget of one prompt.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        gitlab: GitLabAPI,
        llm: LLMProvider,
        audit: AuditLogger,
        *,
        identity: AgentIdentity | None = None,
        max_inline_comments: int = 20,
        max_prompt_chars: int = 100_000,
    ) -> None:
        self._gitlab = gitlab
        self._llm = llm
        self._audit = audit
        self._identity = identity if identity is not None else AgentIdentity(gitlab)
        self._max_inline = max_inline_comments
        self._max_prompt_chars = max_prompt_chars

    async def on_merge_request(self, event: Event) -> ReviewOutcome | None:
        """Review on open/reopen, and on update with new commits (``oldrev``)."""
        attrs = mapping(event.payload.get("object_attributes"))
        action = attrs.get("action")
        if action not in ("open", "reopen", "update"):
            return None
        if action == "update" and not attrs.get("oldrev"):
            return None
        if attrs.get("state") not in (None, "opened"):
            return None
        project = project_id(event.payload)
        mr_iid = integer(attrs.get("iid"))
        if project is None or mr_iid is None:
            return None
        return await self.review(project, mr_iid, trigger=f"merge_request.{action}")

    async def on_review_command(self, context: CommandContext) -> ReviewOutcome:
        """``/copilot review``: review again, once per command note."""
        return await self.review(
            context.project_id,
            context.mr_iid,
            trigger="command.review",
            request_note_id=context.note_id,
        )

    async def review(
        self,
        project_id: int,
        mr_iid: int,
        *,
        trigger: str,
        request_note_id: int | None = None,
    ) -> ReviewOutcome:
        """Review the MR's current head unless it (or this command) was already answered."""
        gitlab = self._gitlab
        mr = await gitlab.get_mr_details(project_id, mr_iid)
        refs = mr.get("diff_refs") or {}
        head_sha = refs.get("head_sha") or mr.get("sha")
        if not isinstance(head_sha, str) or not head_sha:
            return self._skip(project_id, mr_iid, None, trigger, "no_head_sha")
        notes = await gitlab.list_mr_notes(project_id, mr_iid)
        own_id = await self._identity.user_id()
        done = _answered(notes, own_id)
        if request_note_id is not None:
            if request_note_id in done.request_notes:
                return self._skip(project_id, mr_iid, head_sha, trigger, "command_already_answered")
        elif head_sha in done.shas:
            return self._skip(project_id, mr_iid, head_sha, trigger, "already_reviewed")

        # The project's current view (path, visibility) for the note; also
        # confirms the token can still see the project before the LLM is paid.
        project = await gitlab.get_project_info(project_id)
        diffs = await gitlab.get_mr_diff(project_id, mr_iid)
        files, omitted = diff_files(diffs)
        if not files:
            return self._skip(project_id, mr_iid, head_sha, trigger, "no_reviewable_changes")
        prompt, included = build_review_prompt(mr, files, omitted, self._max_prompt_chars)
        result = await self._llm.review(
            ReviewRequest(
                prompt=prompt, files=tuple(included), project_id=project_id, mr_iid=mr_iid
            )
        )

        commentable = {f.path: added_lines(f.diff) for f in included if not f.deleted_file}
        valid: list[InlineFinding] = []
        rejected: list[InlineFinding] = []
        review_text, findings = parse_review(result.text)
        for finding in findings:
            path = _diff_path(finding.path, commentable)
            fits = path is not None and finding.line in commentable[path]
            if path is not None and fits and len(valid) < self._max_inline:
                valid.append(InlineFinding(path, finding.line, finding.message))
            else:
                rejected.append(finding)

        body = self._note_body(
            review_text,
            result.model,
            head_sha,
            request_note_id,
            len(valid),
            str(project.get("path_with_namespace") or project_id),
        )
        note = await gitlab.post_mr_note(project_id, mr_iid, body, comment_type="review")
        outcome = ReviewOutcome(
            "posted",
            project_id,
            mr_iid,
            head_sha=head_sha,
            note_id=note.get("id") if isinstance(note.get("id"), int) else None,
            inline_rejected=rejected,
        )
        for finding in valid:
            try:
                await gitlab.post_commit_discussion(
                    project_id,
                    head_sha,
                    f"**Copilot review:** {_neutralise(finding.message)}",
                    path=finding.path,
                    line=finding.line,
                    base_sha=_str_or_none(refs.get("base_sha")),
                    start_sha=_str_or_none(refs.get("start_sha")),
                )
            except Exception:  # noqa: BLE001 - audited by the client; the others still go out
                outcome.inline_rejected.append(finding)
            else:
                outcome.inline_posted.append(finding)
        return outcome

    def _note_body(
        self,
        text: str,
        model: str,
        head_sha: str,
        request_note_id: int | None,
        inline: int,
        project_path: str,
    ) -> str:
        lines = [
            "## Copilot review",
            "",
            _neutralise(text.strip()) or "_The model returned an empty review._",
            "",
            "---",
            f"<sub>Reviewed commit {head_sha[:12]} of {_neutralise(project_path)} with `{model}`; "
            f"{inline} inline comment(s).</sub>",
            "",
            review_marker(head_sha),
        ]
        if request_note_id is not None:
            lines.append(f"<!-- copilot-review-request note={request_note_id} -->")
        return "\n".join(lines) + "\n"

    def _skip(
        self, project_id: int, mr_iid: int, head_sha: str | None, trigger: str, reason: str
    ) -> ReviewOutcome:
        self._audit.emit(
            REVIEW_SKIPPED,
            target={"resource_type": "merge_request", "project_id": project_id, "mr_iid": mr_iid},
            details={"reason": reason, "head_sha": head_sha, "trigger": trigger},
        )
        return ReviewOutcome("skipped", project_id, mr_iid, head_sha=head_sha, reason=reason)


@dataclass(frozen=True)
class _Answered:
    shas: frozenset[str]
    request_notes: frozenset[int]


def _answered(notes: Sequence[Mapping[str, Any]], own_id: int | None) -> _Answered:
    """Head shas and command notes the agent's own review notes already answer."""
    shas: set[str] = set()
    requests: set[int] = set()
    for note in notes:
        author = note.get("author") or {}
        if note.get("system") or own_id is None or author.get("id") != own_id:
            continue
        body = str(note.get("body") or "")
        shas.update(m.group("sha") for m in _MARKER.finditer(body))
        requests.update(int(m.group("note")) for m in _REQUEST_MARKER.finditer(body))
    return _Answered(frozenset(shas), frozenset(requests))


def _diff_path(path: str, known: Mapping[str, Any]) -> str | None:
    """The diff's path for a model's path (which may carry git's ``a/``/``b/`` prefix)."""
    if path in known:
        return path
    if path.startswith(("a/", "b/")) and path[2:] in known:
        return path[2:]
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def install(parts: Parts) -> None:
    """Plug the review workflow in: merge request events, and ``/copilot review``."""
    workflow = ReviewWorkflow(parts.gitlab, parts.llm, parts.audit, identity=parts.identity)
    parts.events.on("Merge Request Hook", workflow.on_merge_request)
    parts.commands.on(
        "review",
        workflow.on_review_command,
        summary="review the merge request's latest commit again",
    )
