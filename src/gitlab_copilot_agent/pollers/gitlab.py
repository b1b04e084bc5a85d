"""The GitLab poller: for instances whose webhooks cannot reach the agent.

Each cycle, for each project of ``POLL_GITLAB_PROJECTS``:

1. the open merge requests updated since the project's watermark
   (``gitlab.api.list_merge_requests`` with ``updated_after``; the first cycle
   looks back ``POLL_GITLAB_LOOKBACK_S``);
2. an MR whose head sha this poller has not dispatched yet
   (``copilot:poll:review:<p>:<mr>:<sha>``, set-if-absent) goes to the review
   workflow as a ``Merge Request Hook`` — so an MR is reviewed once per head
   sha, across restarts and replicas (and the review's own marker in the MR's
   notes still stops a second review of a head the webhook already reviewed);
   a review that failed (the LLM or GitLab failed: its entries say how) drops
   the marker, so a later cycle tries that head again (counted ``failed``);
3. its notes (``gitlab.api.list_mr_notes``): each ``/copilot`` note not
   dispatched yet (``copilot:poll:note:<p>:<note>``, set-if-absent) goes to the
   command router as a ``Note Hook`` — so a command runs once per note id (and a
   ``fix`` the webhook already ran is refused by the coding workflow's own
   ``note_seen`` check);
4. the watermark moves to the time the listing started (an MR updated while
   the cycle ran is listed again next time; the markers make that harmless).

A listing that fails fails the cycle (the call's entry says why) and leaves
that project's watermark where it was. Items are counted: ``seen`` (MRs and
command notes), ``started`` (dispatched), ``skipped`` (dispatched before).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from auditkeep.context import get_correlation_id
from gitlab_copilot_agent.commands.parse import parse_command
from gitlab_copilot_agent.payloads import integer, mapping, text
from gitlab_copilot_agent.pollers.base import CycleCounts
from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.base import StateStore

__all__ = ["GitLabPoller"]

MR_HOOK: Final = "Merge Request Hook"
NOTE_HOOK: Final = "Note Hook"
REVIEW_MARK_TTL_S: Final = 7 * 86_400

Dispatch = Callable[[str, Mapping[str, Any]], Awaitable[object]]


class GitLabAPI(Protocol):
    async def list_merge_requests(
        self,
        project_id: int,
        *,
        state: Literal["opened", "closed", "merged", "locked", "all"] = "opened",
        updated_after: str | None = None,
    ) -> list[dict[str, Any]]: ...

    async def list_mr_notes(self, project_id: int, mr_iid: int) -> list[dict[str, Any]]: ...


class GitLabPoller:
    """One ``cycle`` = every configured project once (see the module docstring)."""

    def __init__(
        self,
        *,
        projects: Sequence[int],
        lookback_s: float,
        gitlab: GitLabAPI,
        store: StateStore,
        dispatch: Dispatch,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._projects = sorted(projects)
        self._lookback_s = lookback_s
        self._gitlab = gitlab
        self._store = store
        self._dispatch = dispatch
        self._clock = clock

    async def cycle(self, counts: CycleCounts) -> None:
        for project in self._projects:
            await self._project(project, counts)

    async def _project(self, project: int, counts: CycleCounts) -> None:
        key = keys.poll_watermark(f"gitlab:{project}")
        mark = await self._store.get(key)
        since = text((mark or {}).get("updated_after")) or _iso(self._clock() - self._lookback_s)
        listed_at = _iso(self._clock())
        for mr in await self._gitlab.list_merge_requests(
            project, state="opened", updated_after=since
        ):
            iid, sha = integer(mr.get("iid")), text(mr.get("sha"))
            if iid is None:
                continue
            counts.seen += 1
            marker = keys.poll_review_seen(project, iid, sha) if sha else None
            if marker is not None and await self._first(marker, ttl=None):
                results = await self._dispatch(MR_HOOK, _mr_payload(project, mr))
                if isinstance(results, list) and results and all(r is None for r in results):
                    # The review failed (its calls say why): a later cycle tries this head again.
                    await self._store.delete(marker)
                    counts.failed += 1
                else:
                    counts.started += 1
            else:
                counts.skipped += 1
            for note in await self._gitlab.list_mr_notes(project, iid):
                note_id = integer(note.get("id"))
                if note_id is None or note.get("system") or not _is_command(note):
                    continue
                counts.seen += 1
                if await self._first(keys.poll_note_seen(project, note_id), ttl=keys.DEDUP_TTL_S):
                    await self._dispatch(NOTE_HOOK, _note_payload(project, mr, note))
                    counts.started += 1
                else:
                    counts.skipped += 1
        await self._store.put(
            key,
            {"correlation_id": get_correlation_id() or "", "updated_after": listed_at},
            ttl_s=keys.WATERMARK_TTL_S,
        )

    async def _first(self, key: str, *, ttl: float | None) -> bool:
        return await self._store.put(
            key,
            {"correlation_id": get_correlation_id() or ""},
            ttl_s=ttl if ttl is not None else REVIEW_MARK_TTL_S,
            only_if_absent=True,
        )


def _is_command(note: Mapping[str, Any]) -> bool:
    return parse_command(text(note.get("body"))) is not None


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _mr_payload(project: int, mr: Mapping[str, Any]) -> dict[str, Any]:
    """What the review workflow reads of a Merge Request Hook (the poller found the MR open)."""
    return {
        "object_kind": "merge_request",
        "project": {"id": project},
        "object_attributes": {
            "iid": mr.get("iid"),
            "action": "open",
            "state": "opened",
            "target_project_id": project,
        },
        "source": "poller",
    }


def _note_payload(project: int, mr: Mapping[str, Any], note: Mapping[str, Any]) -> dict[str, Any]:
    """A Note Hook as GitLab would send it for ``note`` (the command router's fields)."""
    author = mapping(note.get("author"))
    return {
        "object_kind": "note",
        "user": {"id": author.get("id"), "username": author.get("username")},
        "project_id": project,
        "project": {"id": project},
        "object_attributes": {
            "id": note.get("id"),
            "note": note.get("body"),
            "noteable_type": "MergeRequest",
            "author_id": author.get("id"),
            "system": False,
            "action": "create",
        },
        "merge_request": {"iid": mr.get("iid"), "state": "opened", "target_project_id": project},
        "source": "poller",
    }
