"""``GitLabClient``: the agent's calls to the GitLab REST API v4, every one audited.

One method per action; the action names and target fields are a contract
(SPEC.md "Required audit coverage"):

=================================  ==============================================
method                             audit action / target
=================================  ==============================================
``get_mr_details``                 ``gitlab.api.get_mr_details`` merge_request
``get_mr_diff``                    ``gitlab.api.get_mr_diff`` merge_request
``list_mr_notes``                  ``gitlab.api.list_mr_notes`` merge_request
``post_mr_note``                   ``gitlab.api.post_mr_note`` merge_request + comment_type
``post_commit_discussion``         ``gitlab.api.post_commit_discussion`` commit
``get_project_info``               ``gitlab.api.get_project_info`` project
``get_current_user``               ``gitlab.api.get_current_user`` user
``get_project_member``             ``gitlab.api.get_project_member`` project_member
``create_merge_request``           ``gitlab.api.create_merge_request`` merge_request
                                   + source/target branch, draft, ``mr_iid``
``list_merge_requests``            ``gitlab.api.list_merge_requests`` merge_request
``create_branch``                  ``gitlab.api.create_branch`` branch + branch, ref
=================================  ==============================================

Targets carry ``project_id`` (an integer, or the ``group/sub/project`` path),
``mr_iid`` and ``commit_sha`` from the request path; a merge request the agent
opens gets its ``mr_iid`` from GitLab's answer (``Route.response_target``), so
the entry says which MR was created.

Auditing is not written here: the client's ``httpx.AsyncClient`` sends through
``AuditedTransport`` with ``GITLAB_ROUTES``, so each request on the wire emits
one entry, and a request no route knows is still audited as
``gitlab.api.unmapped`` (a test fails on that).

**Decision: each attempt is audited.** A retried call leaves one entry per
attempt, numbered ``details.attempt`` = 1, 2, …, each with its own status,
error class and duration: a security engineer sees every request that reached
GitLab (a 429 answered at attempt 1 and a success at attempt 2 are two facts),
which a single entry with an attempt count would hide. Paginated reads leave
one entry per page request (``details.page``).

**Retries** (see ``clients._http``): reads are retried on 429, 502, 503, 504,
timeouts and network errors; writes (notes, discussions) only on 429 and when
the connection was never made, never on a 5xx or a timeout, because GitLab may
have created the comment already and a blind retry would post it twice. Waits
use exponential backoff with jitter, at least ``Retry-After``; all attempts
share one deadline. When retries run out the call raises ``GitLabError``.

**Secrets**: the token travels only in the ``PRIVATE-TOKEN`` header, never in a
URL, an exception or an audit entry; error messages are taken from GitLab's
body, scrubbed whole (the token, every registered secret, credential shapes)
and only then cut to 500 characters (``scrub.scrub_then_cut``), so an error
body that echoes the token cannot leave part of it in a message.
"""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import httpx

from auditkeep import ErrorClass
from auditkeep.integrations.httpx import Route, RouteTable
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.clients._http import (
    ApiClient,
    ApiError,
    RetryPolicy,
    build_async_client,
    decode_json,
)

__all__ = ["GITLAB_ROUTES", "CommentType", "GitLabClient", "GitLabError", "ProjectRef"]

ProjectRef = int | str
"""A project: numeric id or ``group/sub/project`` path."""
CommentType = Literal["review", "note"]

PER_PAGE: Final = 100
MAX_PAGES: Final = 1000
_MR = "/projects/{project_id}/merge_requests/{mr_iid}"
_COMMIT_DISCUSSIONS = "/projects/{project_id}/repository/commits/{commit_sha}/discussions"

GITLAB_ROUTES: Final = (
    Route("GET", _MR, "gitlab.api.get_mr_details", "merge_request"),
    Route("GET", f"{_MR}/diffs", "gitlab.api.get_mr_diff", "merge_request"),
    Route("GET", f"{_MR}/notes", "gitlab.api.list_mr_notes", "merge_request"),
    Route("POST", f"{_MR}/notes", "gitlab.api.post_mr_note", "merge_request"),
    Route("POST", _COMMIT_DISCUSSIONS, "gitlab.api.post_commit_discussion", "commit"),
    Route("GET", "/projects/{project_id}", "gitlab.api.get_project_info", "project"),
    Route(
        "POST",
        "/projects/{project_id}/merge_requests",
        "gitlab.api.create_merge_request",
        "merge_request",
        response_target={"mr_iid": "iid"},
    ),
    Route(
        "GET",
        "/projects/{project_id}/merge_requests",
        "gitlab.api.list_merge_requests",
        "merge_request",
    ),
    Route(
        "POST", "/projects/{project_id}/repository/branches", "gitlab.api.create_branch", "branch"
    ),
    Route("GET", "/user", "gitlab.api.get_current_user", "user"),
    Route(
        "GET",
        "/projects/{project_id}/members/all/{user_id}",
        "gitlab.api.get_project_member",
        "project_member",
    ),
)
"""The audited GitLab endpoints (paths relative to the API prefix)."""

_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
# GitLab's draft title prefixes (MergeRequest::DRAFT_REGEX, without the old WIP forms).
_DRAFT = re.compile(r"^\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|draft\s)", re.IGNORECASE)
_BAD_REF_CHARS = frozenset(" ~^:?*[\\")


class GitLabError(ApiError):
    """A GitLab call failed after its retries (``clients._http.ApiError``).

    Attributes:
        status_code: the HTTP status, or None when no answer came (timeout,
            network error); auditkeep's classifier reads it.
        message: GitLab's ``message``/``error`` (string, list or object,
            flattened) or the plain-text body; never the token.
        audit_error_class: the ``ErrorClass`` value of the failure.
        method, path: the request (path relative to ``/api/v4``).

    .. versionadded:: 0.1.0
    """

    service = "GitLab"


class GitLabClient(ApiClient):
    """Async client for the GitLab endpoints the agent uses; every request is audited.

    Args:
        base_url: the instance (``https://gitlab.example.com``) or its API
            root (``…/api/v4``); a path prefix (``https://host/gitlab``) is kept.
        token: a personal, project or group access token (``api`` scope).
        audit: the audit logger (or a callable returning it).
        timeout_s: the timeout of one attempt.
        max_retries: attempts after the first, for calls that may be retried.
        transport: the inner transport (tests); default ``httpx.AsyncHTTPTransport``.
        initial_backoff_s: the first retry wait without ``Retry-After``.
        max_backoff_s: the longest such wait.
        deadline_s: the budget of one call, attempts and waits included
            (default: room for every attempt and a full backoff before each
            retry, ``(timeout_s + max_backoff_s) * max_retries + timeout_s``).

    .. versionadded:: 0.1.0
    """

    _error_type = GitLabError

    def _failure_text(self, response: httpx.Response) -> str:
        return _error_message(response)

    def __init__(
        self,
        base_url: str,
        token: str,
        audit: AuditLogger | Callable[[], AuditLogger],
        *,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        deadline_s: float | None = None,
    ) -> None:
        if not token:
            raise ValueError("a GitLab token is required")
        if token != token.strip() or any(ord(c) < 32 or ord(c) == 127 for c in token):
            # httpx would refuse the header later, quoting the value in its error.
            raise ValueError("the GitLab token has surrounding whitespace or a control character")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        api_root = base_url.rstrip("/")
        if not api_root.endswith("/api/v4"):
            api_root += "/api/v4"
        self.api_url = api_root
        self._secrets = (token,)
        self._policy = RetryPolicy(
            max_retries=max_retries,
            initial_backoff_s=initial_backoff_s,
            max_backoff_s=max(max_backoff_s, initial_backoff_s),
            deadline_s=(
                deadline_s
                if deadline_s is not None
                else (timeout_s + max_backoff_s) * max_retries + timeout_s
            ),
        )
        prefix = httpx.URL(api_root).path.rstrip("/")
        self._client = build_async_client(
            api_root,
            audit=audit,
            routes=RouteTable("gitlab", GITLAB_ROUTES, prefix=prefix),
            timeout_s=timeout_s,
            headers={
                "PRIVATE-TOKEN": token,
                "Accept": "application/json",
                "User-Agent": "gitlab-copilot-agent",
            },
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"GitLabClient(api_url={self.api_url!r})"

    # -- actions ---------------------------------------------------------------

    async def get_mr_details(self, project_id: ProjectRef, mr_iid: int) -> dict[str, Any]:
        """The merge request (``sha``, ``diff_refs``, branches, ``web_url``, …)."""
        return _object(await self._get(_mr_path(project_id, mr_iid)))

    async def get_mr_diff(self, project_id: ProjectRef, mr_iid: int) -> list[dict[str, Any]]:
        """Every changed file of the MR (``/diffs``, all pages of 100)."""
        return await self._get_all(f"{_mr_path(project_id, mr_iid)}/diffs")

    async def list_mr_notes(
        self, project_id: ProjectRef, mr_iid: int, *, sort: Literal["asc", "desc"] = "asc"
    ) -> list[dict[str, Any]]:
        """Every note of the MR by creation time (oldest first by default), system ones too."""
        if sort not in ("asc", "desc"):
            raise ValueError(f"sort must be 'asc' or 'desc', not {sort!r}")
        return await self._get_all(
            f"{_mr_path(project_id, mr_iid)}/notes",
            {"sort": sort, "order_by": "created_at"},
        )

    async def post_mr_note(
        self,
        project_id: ProjectRef,
        mr_iid: int,
        body: str,
        *,
        comment_type: CommentType,
    ) -> dict[str, Any]:
        """Create a note on the MR; ``comment_type`` says what it is for the audit trail.

        Not retried after a 5xx or a timeout (GitLab may have created it).
        """
        if comment_type not in ("review", "note"):
            raise ValueError(f"comment_type must be 'review' or 'note', not {comment_type!r}")
        _require_text(body)
        response = await self._send(
            "POST",
            f"{_mr_path(project_id, mr_iid)}/notes",
            json={"body": body},
            audit_target={"comment_type": comment_type},
            audit_details={"body_chars": len(body)},
        )
        return _object(response)

    async def post_commit_discussion(
        self,
        project_id: ProjectRef,
        commit_sha: str,
        body: str,
        *,
        path: str,
        line: int,
        base_sha: str | None = None,
        start_sha: str | None = None,
    ) -> dict[str, Any]:
        """Start a thread on line ``line`` of file ``path`` as changed by ``commit_sha``.

        This is how inline review comments are posted. The position is a
        ``text`` position on ``new_path``/``new_line`` with ``head_sha`` =
        ``commit_sha``; pass the MR's ``diff_refs`` ``base_sha`` and
        ``start_sha`` so GitLab can place it in the MR's diff.
        Not retried after a 5xx or a timeout.
        """
        _require_text(body)
        if not path or line < 1:
            raise ValueError("path must be set and line must be >= 1")
        position: dict[str, Any] = {
            "position_type": "text",
            "head_sha": commit_sha,
            "old_path": path,
            "new_path": path,
            "new_line": line,
        }
        for name, value in (("base_sha", base_sha), ("start_sha", start_sha)):
            if value is not None:
                position[name] = _sha(value)
        response = await self._send(
            "POST",
            f"/projects/{_project(project_id)}/repository/commits/{_sha(commit_sha)}/discussions",
            json={"body": body, "position": position},
            # Given explicitly: the route would read an all-digit SHA as a number.
            audit_target={"commit_sha": commit_sha},
            audit_details={"file_path": path, "line": line, "body_chars": len(body)},
        )
        return _object(response)

    async def get_project_info(self, project_id: ProjectRef) -> dict[str, Any]:
        """The project (``path_with_namespace``, ``default_branch``, ``http_url_to_repo``, …)."""
        return _object(await self._get(f"/projects/{_project(project_id)}"))

    async def get_current_user(self) -> dict[str, Any]:
        """The token's user (``id``, ``username``, ``bot``); used to skip the agent's own notes."""
        return _object(await self._get("/user"))

    async def get_project_member(self, project_id: ProjectRef, user_id: int) -> dict[str, Any]:
        """The user's membership of the project, inherited ones included (``access_level``).

        ``GET /projects/:id/members/all/:user_id``; a user who is not a member
        gets 404 (``GitLabError`` with ``status_code`` 404). The approval gate
        asks this before it lets anyone approve a coding task.
        """
        if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 1:
            raise ValueError(f"user_id must be a positive integer, not {user_id!r}")
        return _object(await self._get(f"/projects/{_project(project_id)}/members/all/{user_id}"))

    async def create_merge_request(
        self,
        project_id: ProjectRef,
        *,
        source_branch: str,
        target_branch: str,
        title: str,
        description: str = "",
        draft: bool = True,
    ) -> dict[str, Any]:
        """Open a merge request, by default a draft (``Draft: `` title prefix, as GitLab marks).

        The audit entry's target has ``mr_iid`` from GitLab's answer. Retried
        only on 429 and when the connection was never made (never twice created).
        """
        _branch(source_branch)
        _branch(target_branch)
        if source_branch == target_branch:
            raise ValueError("source_branch and target_branch are the same")
        _require_text(title)
        shown = title.strip()
        if draft and not _DRAFT.match(shown):
            shown = f"Draft: {shown}"
        response = await self._send(
            "POST",
            f"/projects/{_project(project_id)}/merge_requests",
            json={
                "source_branch": source_branch,
                "target_branch": target_branch,
                "title": shown,
                "description": description,
                "remove_source_branch": True,
            },
            audit_target={
                "source_branch": source_branch,
                "target_branch": target_branch,
                "draft": draft,
            },
            audit_details={"title_chars": len(shown), "description_chars": len(description)},
        )
        return _object(response)

    async def list_merge_requests(
        self,
        project_id: ProjectRef,
        *,
        state: Literal["opened", "closed", "merged", "locked", "all"] = "opened",
        updated_after: str | None = None,
    ) -> list[dict[str, Any]]:
        """The project's MRs in ``state``, least recently updated first (all pages).

        ``updated_after`` is an ISO 8601 time with a zone (a poller's watermark).
        """
        if state not in ("opened", "closed", "merged", "locked", "all"):
            raise ValueError(f"not a merge request state: {state!r}")
        params: dict[str, str | int] = {"state": state, "order_by": "updated_at", "sort": "asc"}
        if updated_after is not None:
            params["updated_after"] = _iso_time(updated_after)
        return await self._get_all(f"/projects/{_project(project_id)}/merge_requests", params)

    async def create_branch(
        self, project_id: ProjectRef, *, branch: str, ref: str
    ) -> dict[str, Any]:
        """Create ``branch`` at ``ref`` (a branch name or a commit SHA).

        GitLab answers 400 ``Branch already exists`` or ``Invalid reference
        name`` (``GitLabError`` with ``status_code`` 400). Not retried after a 5xx.
        """
        _branch(branch)
        _branch(ref)
        response = await self._send(
            "POST",
            f"/projects/{_project(project_id)}/repository/branches",
            json={"branch": branch, "ref": ref},
            audit_target={"branch": branch, "ref": ref},
        )
        return _object(response)

    # -- plumbing --------------------------------------------------------------

    async def _get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        audit_details: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        return await self._send("GET", path, params=params, audit_details=audit_details)

    async def _get_all(
        self, path: str, params: Mapping[str, str | int] | None = None
    ) -> list[dict[str, Any]]:
        """Follow GitLab's offset pagination (``x-next-page``, else ``Link: rel=next``)."""
        items: list[dict[str, Any]] = []
        page = 1
        for _ in range(MAX_PAGES):
            response = await self._get(
                path, {**(params or {}), "page": page, "per_page": PER_PAGE}, {"page": page}
            )
            chunk = decode_json(response)
            if not isinstance(chunk, list):
                raise self._unexpected(response, "a JSON array")
            items.extend(chunk)
            following = _next_page(response)
            if following is None or following <= page:
                return items
            page = following
        raise GitLabError(
            None,
            f"more than {MAX_PAGES} pages",
            error_class=ErrorClass.VALIDATION_ERROR,
            method="GET",
            path=path,
        )


def _project(project_id: ProjectRef) -> str:
    """The ``:id`` path segment: the number, or the URL-encoded path."""
    if isinstance(project_id, bool):
        raise TypeError("project_id must be an int or a path")
    if isinstance(project_id, int):
        if project_id < 1:
            raise ValueError("project_id must be positive")
        return str(project_id)
    segments = project_id.strip("/").split("/")
    if not project_id or any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"not a project path: {project_id!r}")
    return urllib.parse.quote(project_id.strip("/"), safe="")


def _mr_path(project_id: ProjectRef, mr_iid: int) -> str:
    if isinstance(mr_iid, bool) or not isinstance(mr_iid, int) or mr_iid < 1:
        raise ValueError(f"mr_iid must be a positive integer, not {mr_iid!r}")
    return f"/projects/{_project(project_id)}/merge_requests/{mr_iid}"


def _sha(value: str) -> str:
    if not _SHA.match(value):
        raise ValueError(f"not a commit SHA: {value!r}")
    return value


def _branch(name: str) -> str:
    """A branch name git accepts (``git check-ref-format`` rules), checked before it is sent."""
    if (
        not name
        or len(name) > 255
        or name.startswith(("-", "/"))
        or name.endswith(("/", ".", ".lock"))
        or ".." in name
        or "//" in name
        or "@{" in name
        or any(c in _BAD_REF_CHARS or ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise ValueError(f"not a valid branch name: {name[:80]!r}")
    return name


def _iso_time(value: str) -> str:
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("updated_after needs a time zone")
    return parsed.isoformat()


def _require_text(body: str) -> None:
    if not body.strip():
        raise ValueError("the comment body is empty")


def _object(response: httpx.Response) -> dict[str, Any]:
    decoded = decode_json(response)
    if not isinstance(decoded, dict):
        raise GitLabError(
            response.status_code,
            "expected a JSON object in the response",
            error_class=ErrorClass.VALIDATION_ERROR,
            method=response.request.method,
            path=response.request.url.path,
        )
    return decoded


def _next_page(response: httpx.Response) -> int | None:
    header = response.headers.get("x-next-page")
    if header is not None:
        return int(header) if header.strip().isdigit() else None
    # Keyset-style or header-stripping proxies: only the Link header is left.
    # Only its page number is used, never its URL (it may name another host).
    for link in response.headers.get("link", "").split(","):
        url, _, rel = link.partition(";")
        if 'rel="next"' in rel:
            query = urllib.parse.urlsplit(url.strip().strip("<>")).query
            page = urllib.parse.parse_qs(query).get("page", [""])[0]
            return int(page) if page.isdigit() else None
    return None


def _error_message(response: httpx.Response) -> str:
    """GitLab's error text: ``message`` (string, list or object), ``error``, or the body.

    Whole, not shortened: the caller scrubs it and then cuts it.
    """
    decoded = decode_json(response)
    if isinstance(decoded, dict):
        for key in ("message", "error_description", "error"):
            if key in decoded:
                return _flatten(decoded[key])
    text = " ".join(response.text.split())
    return text or response.reason_phrase or f"HTTP {response.status_code}"


def _flatten(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(_flatten(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    return str(value)
