"""A local GitLab stand-in that speaks the real REST v4 shapes the agent uses.

Endpoints (under ``/api/v4``; ``:id`` is a numeric id or a URL-encoded path,
matched on the raw path, so an unencoded ``group/app`` gives 404 as on GitLab):

- ``GET /user`` — the token's user (a bot).
- ``GET /projects/:id`` — project info.
- ``GET /projects/:id/merge_requests/:iid`` — MR details with ``sha`` and ``diff_refs``.
- ``GET /projects/:id/merge_requests/:iid/diffs`` — bare JSON array, paginated.
- ``GET|POST /projects/:id/merge_requests/:iid/notes`` — list (paginated, system
  notes included, ``sort``/``order_by``) and create (201 + note object).
- ``GET|POST /projects/:id/repository/commits/:sha/discussions`` — list and create
  (201 + discussion); a ``position`` must name a changed file and a line of its diff,
  else 400 ``line_code can't be blank`` as on GitLab.
- ``GET|POST /projects/:id/merge_requests`` — list (``state`` opened/closed/merged/
  locked/all, ``updated_after``, ``order_by`` created_at/updated_at, ``sort``;
  paginated) and create (201 + MR; a ``Draft:``/``[Draft]``/``(Draft)``/``Draft -``
  title prefix makes it a draft, as on GitLab; 409 when an open MR already has
  the same source and target branch; 400 for a source branch the project lacks).
- ``POST /projects/:id/repository/branches`` (``branch``, ``ref``) — 201 + the
  branch; 400 ``Branch already exists`` / ``Invalid reference name``. With a
  git server (``add_project(..., git=server)``), the branch is made there, and
  MRs created through the API take their head from it.
- ``GET /projects/:id/members/all/:user_id`` — a member (direct or inherited) with
  its ``access_level`` (10 guest … 50 owner); 404 ``{"message":"404 Not found"}``
  for anyone else, as GitLab answers.

A merge request can live on a real git server (``agent_standins.git_server``):
``add_project(..., http_url_to_repo=server.repo_url(path))`` and
``add_merge_request(..., head=lambda: server.head(path, branch))`` make the MR's
``sha`` and ``diff_refs.head_sha`` the branch's real head at every request, so a
push to (or a move of) the branch is what GitLab reports next.

Authentication: ``PRIVATE-TOKEN`` (or ``Authorization: Bearer``) must equal
the configured token; a missing or wrong one gives 401
``{"message":"401 Unauthorized"}``, an empty one 404, like GitLab.
Lists carry GitLab's pagination headers (``x-page``, ``x-per-page``,
``x-next-page`` (empty on the last page), ``x-prev-page``, ``x-total``,
``x-total-pages``, ``Link``); ``per_page`` defaults to 20 and is capped at 100.

Scripting misbehaviour (see ``agent_standins.faults``)::

    gl = GitLabStandin(token="glpat-...")
    gl.faults.add("/projects/42/merge_requests/7", Fault.http(404))
    gl.faults.add("/user", Fault.http(429, retry_after_s=1), times=1)   # then recovers
    gl.faults.add("*/diffs", Fault.http(503), times=2)
    gl.faults.add("/projects/42", Fault.slow(3.0))
    gl.faults.add("*/notes", Fault.reset(), method="POST")
    gl.faults.add("/user", Fault.echo_header(401, "private-token", offset=480))
    with gl.serve() as server: ...
    gl.posted_notes(42, 7), gl.commit_discussions(), gl.requests

Error bodies follow GitLab: 401 ``{"message":"401 Unauthorized"}``, 403
``{"message":"403 Forbidden"}``, 404 ``{"message":"404 Project Not Found"}``,
429 plain-text ``Retry later`` with ``Retry-After`` (default 1 s) and the
``RateLimit-*`` headers, 500/503 ``{"message":"500 Internal Server Error"}``…,
502/504 an HTML gateway page. A fault with its own ``body`` is sent as given;
one with a ``message`` (``Fault.echo_header``) gets ``{"message": <it>}``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent_standins.base import Standin, match_route, path_of, route
from agent_standins.faults import Fault, Rendered

__all__ = [
    "DEFAULT_MR_IID",
    "DEFAULT_PROJECT_ID",
    "DEFAULT_PROJECT_PATH",
    "DEFAULT_TOKEN",
    "BranchHost",
    "GitLabStandin",
    "diff_file",
    "render_gitlab_error",
]

API_PREFIX = "/api/v4"
DEFAULT_TOKEN = "glpat-standin-0123456789abcdef"  # noqa: S105 - a fake token for the stand-in
DEFAULT_PROJECT_ID = 42
DEFAULT_PROJECT_PATH = "group/app"
DEFAULT_MR_IID = 7
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def _sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def diff_file(
    path: str,
    added: Sequence[str],
    *,
    removed: Sequence[str] = (),
    start_line: int = 1,
    new_file: bool = False,
    old_path: str | None = None,
) -> dict[str, Any]:
    """One entry of the ``/diffs`` array: a single hunk removing ``removed`` and adding ``added``.

    The added lines are new lines ``start_line`` … ``start_line + len(added) - 1``.
    """
    old_start = 0 if new_file else start_line
    hunk = [f"@@ -{old_start},{len(removed)} +{start_line},{len(added)} @@"]
    hunk += [f"-{line}" for line in removed] + [f"+{line}" for line in added]
    return {
        "old_path": old_path or path,
        "new_path": path,
        "a_mode": "0" if new_file else "100644",
        "b_mode": "100644",
        "diff": "\n".join(hunk) + "\n",
        "new_file": new_file,
        "renamed_file": old_path is not None and old_path != path,
        "deleted_file": False,
        "generated_file": False,
        "collapsed": False,
        "too_large": False,
    }


def new_lines_of(diff: str) -> set[int]:
    """The new-side line numbers a diff shows (added and context lines)."""
    lines: set[int] = set()
    current: int | None = None
    for text in diff.splitlines():
        found = _HUNK.match(text)
        if found:
            current = int(found.group(3))
            continue
        if current is None or text.startswith(("-", "\\")):
            continue
        lines.add(current)
        current += 1
    return lines


_GATEWAY_PAGE = (
    "<!DOCTYPE html><html><head><title>GitLab is not responding ({status})</title></head>"
    "<body><h1>{status}</h1><p>Whoops, GitLab is taking too much time to respond.</p>"
    "</body></html>"
)


def render_gitlab_error(fault: Fault) -> Rendered:
    """The answer GitLab gives for ``fault.status`` (or ``fault.body`` as given)."""
    status = fault.status
    headers: dict[str, str] = {}
    if fault.body is not None:
        body = fault.body
        headers["content-type"] = fault.content_type or "application/json"
        if fault.retry_after_s is not None:
            headers["retry-after"] = _seconds(fault.retry_after_s)
    elif status == 429:
        retry_after = fault.retry_after_s if fault.retry_after_s is not None else 1
        reset = int(time.time() + retry_after)
        body = b"Retry later\n"
        headers.update(
            {
                "content-type": "text/plain",
                "retry-after": _seconds(retry_after),
                "ratelimit-name": "throttle_authenticated_api",
                "ratelimit-limit": "2000",
                "ratelimit-observed": "2001",
                "ratelimit-remaining": "0",
                "ratelimit-reset": str(reset),
                "ratelimit-resettime": formatdate(reset, usegmt=True),
            }
        )
    elif fault.message is not None:
        body = orjson.dumps({"message": fault.message})
        headers["content-type"] = "application/json"
    elif status in (502, 504):
        body = _GATEWAY_PAGE.format(status=status).encode()
        headers["content-type"] = "text/html; charset=utf-8"
    else:
        message = {
            401: "401 Unauthorized",
            403: "403 Forbidden",
            404: "404 Project Not Found",
        }.get(status, f"{status} {_phrase(status)}")
        body = orjson.dumps({"message": message})
        headers["content-type"] = "application/json"
    if fault.retry_after_s is not None and "retry-after" not in headers:
        headers["retry-after"] = _seconds(fault.retry_after_s)
    headers.update(fault.headers)
    return Rendered(status, headers, body)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _message(status: int, text: str | list[str]) -> JSONResponse:
    return JSONResponse({"message": text}, status_code=status)


class GitLabStandin(Standin):
    """An in-memory GitLab: seeded data, posted notes kept for assertions, scripted faults.

    Args:
        token: the only accepted token.
        seed: create the default project (42, ``group/app``) and MR !7 with
            three changed files.
    """

    def __init__(self, token: str = DEFAULT_TOKEN, *, seed: bool = True) -> None:
        super().__init__(prefix=API_PREFIX)
        self.token = token
        self.user: dict[str, Any] = {
            "id": 99,
            "username": "project_42_bot_copilot",
            "name": "Copilot Review Bot",
            "state": "active",
            "locked": False,
            "bot": True,
            "avatar_url": None,
            "web_url": "http://gitlab.standin/project_42_bot_copilot",
        }
        self._ids = itertools.count(1001)
        self._projects: dict[int, dict[str, Any]] = {}
        self._mrs: dict[tuple[int, int], dict[str, Any]] = {}
        self._diffs: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self._notes: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self._discussions: list[dict[str, Any]] = []
        self._members: dict[tuple[int, int], dict[str, Any]] = {}
        self._heads: dict[tuple[int, int], Callable[[], str]] = {}
        self._created_mrs: set[tuple[int, int]] = set()
        self._set_updated_at: dict[tuple[int, int], str] = {}  # by the test API, kept by reset()
        self._branches: dict[int, dict[str, str]] = {}
        self._git: dict[int, tuple[BranchHost, str]] = {}
        self._routes = [
            route("GET", "/projects/{id}/members/all/{user_id}", self._get_member),
            route("GET", "/user", self._get_user),
            route("GET", "/projects/{id}", self._get_project),
            route("GET", "/projects/{id}/merge_requests", self._list_mrs),
            route("POST", "/projects/{id}/merge_requests", self._create_mr),
            route("POST", "/projects/{id}/repository/branches", self._create_branch),
            route("GET", "/projects/{id}/merge_requests/{iid}", self._get_mr),
            route("GET", "/projects/{id}/merge_requests/{iid}/diffs", self._get_diffs),
            route("GET", "/projects/{id}/merge_requests/{iid}/notes", self._list_notes),
            route("POST", "/projects/{id}/merge_requests/{iid}/notes", self._create_note),
            route(
                "GET", "/projects/{id}/repository/commits/{sha}/discussions", self._list_discussions
            ),
            route(
                "POST",
                "/projects/{id}/repository/commits/{sha}/discussions",
                self._create_discussion,
            ),
        ]
        if seed:
            self.seed_default()

    # -- test and demo API ----------------------------------------------------

    def render_error(self, fault: Fault) -> Rendered:
        return render_gitlab_error(fault)

    def reset(self) -> None:
        """Forget faults, recorded requests and what was posted; keep the seeded data."""
        super().reset()
        with self._lock:
            for key, notes in self._notes.items():
                self._notes[key] = [n for n in notes if n.get("_seeded")]
            self._discussions.clear()
            for key in self._created_mrs:
                for table in (self._mrs, self._diffs, self._notes, self._heads):
                    table.pop(key, None)
            self._created_mrs.clear()
            self._branches.clear()
            for key, updated_at in self._set_updated_at.items():  # notes posted since bump it
                if key in self._mrs:
                    self._mrs[key]["updated_at"] = updated_at

    def seed_default(self) -> None:
        """Project 42 ``group/app`` with MR !7 (three files) and two existing notes."""
        self.add_project(DEFAULT_PROJECT_ID, DEFAULT_PROJECT_PATH)
        self.add_merge_request(
            DEFAULT_PROJECT_ID,
            DEFAULT_MR_IID,
            title="Add search",
            description="Closes PROJ-12",
            source_branch="feature/search",
            files=[
                diff_file(
                    "src/search.py",
                    [
                        "import subprocess",
                        "",
                        "",
                        "def search(term):",
                        '    return subprocess.run(f"grep -r {term} .", shell=True)',
                    ],
                    new_file=True,
                ),
                diff_file(
                    "src/app.py",
                    ["from search import search", "ROUTES = {'/search': search}"],
                    removed=["ROUTES = {}"],
                    start_line=3,
                ),
                diff_file("README.md", ["## Search", "", "GET /search?q=term"], start_line=10),
            ],
        )
        self.add_note(DEFAULT_PROJECT_ID, DEFAULT_MR_IID, "added 1 commit", system=True)
        self.add_note(DEFAULT_PROJECT_ID, DEFAULT_MR_IID, "Please take a look.", author_id=5)
        self.add_member(DEFAULT_PROJECT_ID, 5, "jdoe", 30, name="Jane Doe")

    def add_member(
        self,
        project_id: int,
        user_id: int,
        username: str,
        access_level: int,
        *,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Make ``username`` a member of the project (10 guest, 20 reporter, 30 developer,
        40 maintainer, 50 owner); the members API then reports it."""
        member = {
            "id": user_id,
            "username": username,
            "name": name or username,
            "state": "active",
            "avatar_url": None,
            "web_url": f"http://gitlab.standin/{username}",
            "access_level": access_level,
            "created_at": "2026-01-01T00:00:00.000Z",
            "expires_at": None,
            "membership_state": "active",
        }
        with self._lock:
            self._members[(project_id, user_id)] = member
        return member

    def add_project(
        self,
        project_id: int,
        path_with_namespace: str,
        *,
        default_branch: str = "main",
        http_url_to_repo: str | None = None,
        git: BranchHost | None = None,
        repo_path: str | None = None,
    ) -> dict[str, Any]:
        """A project; with ``git`` (a ``GitServer``) its branches live in repository
        ``repo_path`` (default ``path_with_namespace``) there, and the branches API
        creates them there."""
        web_url = f"http://gitlab.standin/{path_with_namespace}"
        if git is not None:
            with self._lock:
                self._git[project_id] = (git, repo_path or path_with_namespace)
        project = {
            "id": project_id,
            "name": path_with_namespace.rsplit("/", 1)[-1],
            "path": path_with_namespace.rsplit("/", 1)[-1],
            "path_with_namespace": path_with_namespace,
            "name_with_namespace": path_with_namespace.replace("/", " / "),
            "default_branch": default_branch,
            "visibility": "private",
            "web_url": web_url,
            "http_url_to_repo": http_url_to_repo or f"{web_url}.git",
            "ssh_url_to_repo": f"git@gitlab.standin:{path_with_namespace}.git",
            "created_at": "2026-01-01T00:00:00.000Z",
            "last_activity_at": "2026-05-01T10:00:00.000Z",
            "permissions": {
                "project_access": {"access_level": 30, "notification_level": 3},
                "group_access": None,
            },
        }
        with self._lock:
            self._projects[project_id] = project
        return project

    def add_merge_request(
        self,
        project_id: int,
        iid: int,
        *,
        files: Sequence[dict[str, Any]],
        title: str = "Change",
        description: str = "",
        source_branch: str = "feature",
        target_branch: str = "main",
        head_sha: str | None = None,
        head: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Add an MR whose diff is ``files`` (``diff_file(...)`` entries).

        Its ``sha`` (= ``diff_refs.head_sha``) is ``head_sha`` or derived from
        the project and iid; with ``head`` (the source branch's head on a git
        server) it is asked at each request. Commit discussions are accepted
        on its refs.
        """
        project = self._projects[project_id]
        head_now = head() if head is not None else None
        head_sha = head_sha or head_now
        head_ref = head_sha or _sha(project_id, iid, "head")
        base = _sha(project_id, iid, "base")
        mr = {
            "id": project_id * 1000 + iid,
            "iid": iid,
            "project_id": project_id,
            "title": title,
            "description": description,
            "state": "opened",
            "created_at": "2026-05-01T10:00:00.000Z",
            "updated_at": "2026-05-01T10:00:00.000Z",
            "target_branch": target_branch,
            "source_branch": source_branch,
            "source_project_id": project_id,
            "target_project_id": project_id,
            "author": {"id": 5, "username": "jdoe", "name": "Jane Doe", "state": "active"},
            "draft": False,
            "work_in_progress": False,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "sha": head_ref,
            "merge_commit_sha": None,
            "squash_commit_sha": None,
            "user_notes_count": 0,
            "references": {
                "short": f"!{iid}",
                "relative": f"!{iid}",
                "full": f"{project['path_with_namespace']}!{iid}",
            },
            "web_url": f"{project['web_url']}/-/merge_requests/{iid}",
            "diff_refs": {"base_sha": base, "head_sha": head_ref, "start_sha": base},
            "changes_count": str(len(files)),
            "prepared_at": "2026-05-01T10:00:01.000Z",
        }
        with self._lock:
            self._mrs[(project_id, iid)] = mr
            self._set_updated_at[(project_id, iid)] = str(mr["updated_at"])
            if head is not None:
                self._heads[(project_id, iid)] = head
            else:
                self._heads.pop((project_id, iid), None)
            self._diffs[(project_id, iid)] = [dict(f) for f in files]
            self._notes.setdefault((project_id, iid), [])
        return mr

    def add_note(
        self, project_id: int, iid: int, body: str, *, system: bool = False, author_id: int = 5
    ) -> dict[str, Any]:
        """A pre-existing note (kept by ``reset()``)."""
        author = {"id": author_id, "username": "jdoe", "name": "Jane Doe", "state": "active"}
        note = self._note(project_id, iid, body, author, system=system)
        note["_seeded"] = True
        with self._lock:
            self._notes[(project_id, iid)].append(note)
        return note

    def merge_request(self, project_id: int, iid: int) -> dict[str, Any]:
        """The MR as ``GET .../merge_requests/:iid`` returns it (``sha``, ``diff_refs``, …)."""
        with self._lock:
            mr = dict(self._mrs[(project_id, iid)])
            head = self._heads.get((project_id, iid))
        return _with_head(mr, head)

    def created_merge_requests(self, project_id: int) -> list[dict[str, Any]]:
        """MRs opened through the API in this project, in order of creation."""
        with self._lock:
            keys = sorted(k for k in self._created_mrs if k[0] == project_id)
            found = [(dict(self._mrs[k]), self._heads.get(k)) for k in keys]
        return [_with_head(mr, head) for mr, head in found]

    def touch_merge_request(self, project_id: int, iid: int, updated_at: str | None = None) -> None:
        """Set the MR's ``updated_at`` (default now): someone changed it (kept by ``reset()``,
        which undoes only what notes posted through the API did)."""
        with self._lock:
            stamp = updated_at or _now()
            self._mrs[(project_id, iid)]["updated_at"] = stamp
            self._set_updated_at[(project_id, iid)] = stamp

    def set_merge_request_state(self, project_id: int, iid: int, state: str) -> None:
        """``opened``, ``closed``, ``merged`` or ``locked``; touches ``updated_at``."""
        if state not in ("opened", "closed", "merged", "locked"):
            raise ValueError(f"not a merge request state: {state!r}")
        with self._lock:
            stamp = _now()
            self._mrs[(project_id, iid)].update({"state": state, "updated_at": stamp})
            self._set_updated_at[(project_id, iid)] = stamp

    def branches(self, project_id: int) -> dict[str, str]:
        """Branches created through the API on a project without a git server: name -> sha."""
        with self._lock:
            return dict(self._branches.get(project_id, {}))

    def posted_notes(self, project_id: int, iid: int) -> list[dict[str, Any]]:
        """Notes created through the API on this MR, oldest first."""
        with self._lock:
            notes = self._notes.get((project_id, iid), [])
            return [_public(n) for n in notes if not n.get("_seeded")]

    def commit_discussions(self) -> list[dict[str, Any]]:
        """Commit discussions created through the API, oldest first (with ``project_id``)."""
        with self._lock:
            return [dict(d) for d in self._discussions]

    # -- the API ---------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        path = path_of(request)
        if not path.startswith(API_PREFIX + "/"):
            return JSONResponse({"error": "404 Not Found"}, status_code=404)
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        return await match_route(self._routes, request, path[len(API_PREFIX) :])

    def _authenticate(self, request: Request) -> Response | None:
        token = request.headers.get("private-token")
        if token is None:
            auth = request.headers.get("authorization", "")
            token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if token is None:
            return _message(401, "401 Unauthorized")
        if token == "":
            return _message(404, "404 Not Found")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return _message(401, "401 Unauthorized")
        return None

    def _project(self, raw_id: str) -> dict[str, Any] | None:
        ref = urllib.parse.unquote(raw_id)
        with self._lock:
            if ref.isdigit():
                return self._projects.get(int(ref))
            return next(
                (p for p in self._projects.values() if p["path_with_namespace"] == ref), None
            )

    def _mr(self, raw_id: str, raw_iid: str) -> dict[str, Any] | Response:
        """The MR, or GitLab's 404 answer."""
        project = self._project(raw_id)
        if project is None:
            return _message(404, "404 Project Not Found")
        with self._lock:
            mr = self._mrs.get((project["id"], int(raw_iid))) if raw_iid.isdigit() else None
        return mr if mr is not None else _message(404, "404 Not found")

    async def _get_user(self, request: Request) -> Response:
        return JSONResponse(self.user)

    async def _get_project(self, request: Request, id: str) -> Response:
        project = self._project(id)
        if project is None:
            return _message(404, "404 Project Not Found")
        return JSONResponse(project)

    async def _get_mr(self, request: Request, id: str, iid: str) -> Response:
        mr = self._mr(id, iid)
        if isinstance(mr, Response):
            return mr
        with self._lock:
            user_notes = sum(
                1 for n in self._notes[(mr["project_id"], mr["iid"])] if not n["system"]
            )
            head = self._heads.get((mr["project_id"], mr["iid"]))
        return JSONResponse(_with_head({**mr, "user_notes_count": user_notes}, head))

    async def _list_mrs(self, request: Request, id: str) -> Response:
        project = self._project(id)
        if project is None:
            return _message(404, "404 Project Not Found")
        query = request.query_params
        state = query.get("state", "all")
        if state != "all" and state not in _MR_STATES:
            return JSONResponse({"error": "state does not have a valid value"}, status_code=400)
        after = _parse_time(query.get("updated_after"))
        if after is False:
            return JSONResponse({"error": "updated_after is invalid"}, status_code=400)
        order = query.get("order_by", "created_at")
        if order not in ("created_at", "updated_at"):
            return JSONResponse({"error": "order_by does not have a valid value"}, status_code=400)
        with self._lock:
            found = [
                _with_head(dict(mr), self._heads.get(key))
                for key, mr in self._mrs.items()
                if key[0] == project["id"]
                and (state == "all" or mr["state"] == state)
                and (after is None or _parse_time(mr["updated_at"]) > after)  # type: ignore[operator]
            ]
        found.sort(
            key=lambda mr: (mr[order], mr["iid"]), reverse=query.get("sort", "desc") != "asc"
        )
        return _paginated(request, found)

    async def _create_mr(self, request: Request, id: str) -> Response:
        project = self._project(id)
        if project is None:
            return _message(404, "404 Project Not Found")
        params = await _params(request)
        for name in ("source_branch", "target_branch", "title"):
            value = params.get(name)
            if not isinstance(value, str) or not value.strip():
                return JSONResponse({"error": f"{name} is missing"}, status_code=400)
        source, target = params["source_branch"], params["target_branch"]
        pid = project["id"]
        for branch in (source, target):
            if not self._branch_exists(pid, branch, project["default_branch"]):
                return _message(400, [f"{_branch_label(branch, source)} branch does not exist"])
        with self._lock:
            duplicate = next(
                (
                    mr["iid"]
                    for key, mr in self._mrs.items()
                    if key[0] == pid
                    and mr["state"] == "opened"
                    and (mr["source_branch"], mr["target_branch"]) == (source, target)
                ),
                None,
            )
            iid = max((key[1] for key in self._mrs if key[0] == pid), default=0) + 1
        if duplicate is not None:
            return _message(
                409,
                [f"Another open merge request already exists for this source branch: !{duplicate}"],
            )
        git = self._git.get(pid)
        head = (lambda: git[0].head(git[1], source)) if git is not None else None
        mr = self.add_merge_request(
            pid,
            iid,
            files=[],
            title=params["title"].strip(),
            description=str(params.get("description") or ""),
            source_branch=source,
            target_branch=target,
            head=head,
            head_sha=None if head is not None else self.branches(pid).get(source),
        )
        now = _now()
        with self._lock:
            self._created_mrs.add((pid, iid))
            stored = self._mrs[(pid, iid)]
            draft = bool(_DRAFT.match(stored["title"]))
            stored.update(
                {
                    "draft": draft,
                    "work_in_progress": draft,
                    "created_at": now,
                    "updated_at": now,
                    "author": {k: self.user.get(k) for k in ("id", "username", "name", "state")},
                    "force_remove_source_branch": bool(params.get("remove_source_branch")),
                }
            )
            mr = _with_head(dict(stored), self._heads.get((pid, iid)))
        return JSONResponse(mr, status_code=201)

    def _branch_exists(self, project_id: int, branch: str, default_branch: str) -> bool:
        git = self._git.get(project_id)
        if git is not None:
            try:
                git[0].head(git[1], branch)
            except Exception:  # noqa: BLE001 - any failure to resolve means "no such branch"
                return False
            return True
        with self._lock:
            known = self._branches.get(project_id, {})
            has_mr = any(
                mr["source_branch"] == branch or mr["target_branch"] == branch
                for key, mr in self._mrs.items()
                if key[0] == project_id
            )
        return branch == default_branch or branch in known or has_mr

    async def _create_branch(self, request: Request, id: str) -> Response:
        project = self._project(id)
        if project is None:
            return _message(404, "404 Project Not Found")
        params = await _params(request)
        branch, ref = params.get("branch"), params.get("ref")
        if not isinstance(branch, str) or not branch:
            return JSONResponse({"error": "branch is missing"}, status_code=400)
        if not isinstance(ref, str) or not ref:
            return JSONResponse({"error": "ref is missing"}, status_code=400)
        pid = project["id"]
        if self._branch_exists(pid, branch, project["default_branch"]):
            return _message(400, "Branch already exists")
        git = self._git.get(pid)
        if git is not None:
            try:
                sha = git[0].create_branch(git[1], branch, ref)
            except Exception:  # noqa: BLE001 - git's refusal is GitLab's 400
                return _message(400, "Invalid reference name: " + ref)
        else:
            if not self._branch_exists(pid, ref, project["default_branch"]) and not _SHA.match(ref):
                return _message(400, "Invalid reference name: " + ref)
            sha = _sha(pid, branch, ref)
            with self._lock:
                self._branches.setdefault(pid, {})[branch] = sha
        return JSONResponse(
            {
                "name": branch,
                "commit": {
                    "id": sha,
                    "short_id": sha[:8],
                    "created_at": _now(),
                    "parent_ids": [],
                    "title": "Initial commit",
                    "message": "Initial commit",
                    "author_name": "Jane Doe",
                    "author_email": "jdoe@example.com",
                    "web_url": f"{project['web_url']}/-/commit/{sha}",
                },
                "merged": False,
                "protected": False,
                "developers_can_push": False,
                "developers_can_merge": False,
                "can_push": True,
                "default": False,
                "web_url": f"{project['web_url']}/-/tree/{branch}",
            },
            status_code=201,
        )

    async def _get_member(self, request: Request, id: str, user_id: str) -> Response:
        project = self._project(id)
        if project is None:
            return _message(404, "404 Project Not Found")
        with self._lock:
            member = self._members.get((project["id"], int(user_id))) if user_id.isdigit() else None
        if member is None:
            return _message(404, "404 Not found")
        return JSONResponse(member)

    async def _get_diffs(self, request: Request, id: str, iid: str) -> Response:
        mr = self._mr(id, iid)
        if isinstance(mr, Response):
            return mr
        with self._lock:
            diffs = list(self._diffs[(mr["project_id"], mr["iid"])])
        return _paginated(request, diffs)

    async def _list_notes(self, request: Request, id: str, iid: str) -> Response:
        mr = self._mr(id, iid)
        if isinstance(mr, Response):
            return mr
        key = "updated_at" if request.query_params.get("order_by") == "updated_at" else "id"
        with self._lock:
            notes = sorted(
                (_public(n) for n in self._notes[(mr["project_id"], mr["iid"])]),
                key=lambda n: (n[key], n["id"]),
                reverse=request.query_params.get("sort", "desc") != "asc",
            )
        return _paginated(request, notes)

    async def _create_note(self, request: Request, id: str, iid: str) -> Response:
        mr = self._mr(id, iid)
        if isinstance(mr, Response):
            return mr
        params = await _params(request)
        body = params.get("body")
        if not isinstance(body, str) or not body.strip():
            return JSONResponse({"error": "body is missing"}, status_code=400)
        note = self._note(mr["project_id"], mr["iid"], body, self.user, system=False)
        note["internal"] = bool(params.get("internal", False))
        with self._lock:
            self._notes[(mr["project_id"], mr["iid"])].append(note)
            # A new note touches its MR, as on GitLab (what a poller's updated_after sees).
            self._mrs[(mr["project_id"], mr["iid"])]["updated_at"] = note["created_at"]
        return JSONResponse(_public(note), status_code=201)

    def _note(
        self, project_id: int, iid: int, body: str, author: dict[str, Any], *, system: bool
    ) -> dict[str, Any]:
        now = _now()
        return {
            "id": next(self._ids),
            "type": None,
            "body": body,
            "attachment": None,
            "author": {k: author.get(k) for k in ("id", "username", "name", "state")},
            "created_at": now,
            "updated_at": now,
            "system": system,
            "noteable_id": project_id * 1000 + iid,
            "noteable_type": "MergeRequest",
            "noteable_iid": iid,
            "project_id": project_id,
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }

    def _commit_files(self, project_id: int, sha: str) -> list[dict[str, Any]] | None:
        """The diff of the MRs whose refs include ``sha`` (None: unknown commit)."""
        with self._lock:
            found = [
                self._diffs[key]
                for key, mr in self._mrs.items()
                if key[0] == project_id
                and any(ref.startswith(sha) for ref in mr["diff_refs"].values())
            ]
        return [f for files in found for f in files] if found else None

    async def _list_discussions(self, request: Request, id: str, sha: str) -> Response:
        project = self._project(id)
        if project is None:
            return _message(404, "404 Project Not Found")
        if self._commit_files(project["id"], sha) is None:
            return _message(404, "404 Commit Not Found")
        with self._lock:
            found = [
                {k: v for k, v in d.items() if k not in ("project_id", "commit_sha")}
                for d in self._discussions
                if d["project_id"] == project["id"] and d["commit_sha"] == sha
            ]
        return _paginated(request, found)

    async def _create_discussion(self, request: Request, id: str, sha: str) -> Response:
        project = self._project(id)
        if project is None:
            return _message(404, "404 Project Not Found")
        files = self._commit_files(project["id"], sha) if _SHA.match(sha) else None
        if files is None:
            return _message(404, "404 Commit Not Found")
        params = await _params(request)
        body = params.get("body")
        if not isinstance(body, str) or not body.strip():
            return JSONResponse({"error": "body is missing"}, status_code=400)
        position = params.get("position")
        if position is not None:
            problem = _position_problem(position, files)
            if problem is not None:
                return _message(400, f"400 Bad request - Note {{:line_code=>[{problem!r}]}}")
        note = self._note(project["id"], 0, body, self.user, system=False)
        note.update(
            {
                "type": "DiffNote" if position else "DiscussionNote",
                "noteable_type": "Commit",
                "noteable_id": None,
                "noteable_iid": None,
                "commit_id": sha,
                "position": position,
            }
        )
        discussion = {
            "id": _sha("discussion", note["id"]),
            "individual_note": False,
            "notes": [note],
        }
        with self._lock:
            self._discussions.append({**discussion, "project_id": project["id"], "commit_sha": sha})
        return JSONResponse(discussion, status_code=201)


class BranchHost(Protocol):
    """Where a project's branches live (``agent_standins.git_server.GitServer`` is one)."""

    def create_branch(self, path: str, branch: str, from_ref: str = "main") -> str: ...

    def head(self, path: str, branch: str) -> str: ...


# GitLab's MergeRequest draft prefixes (the WIP forms are gone since 16.0).
_DRAFT = re.compile(r"^\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|draft\s)\s*", re.IGNORECASE)
_MR_STATES = ("opened", "closed", "merged", "locked")


def _with_head(mr: dict[str, Any], head: Callable[[], str] | None) -> dict[str, Any]:
    """The MR with its source branch's live head (a git server's), when it has one."""
    if head is None:
        return mr
    sha = head()
    return {**mr, "sha": sha, "diff_refs": {**mr["diff_refs"], "head_sha": sha}}


def _parse_time(value: str | None) -> datetime | bool | None:
    """An ISO 8601 time (None when absent, False when unreadable)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _branch_label(branch: str, source: str) -> str:
    return "Source" if branch == source else "Target"


def _public(note: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in note.items() if not k.startswith("_")}


def _position_problem(position: Any, files: Iterable[dict[str, Any]]) -> str | None:
    if not isinstance(position, dict) or position.get("position_type") != "text":
        return "position_type must be text"
    path, line = position.get("new_path"), position.get("new_line")
    try:
        line_no = int(line) if line is not None else None
    except (TypeError, ValueError):
        line_no = None
    for entry in files:
        if entry["new_path"] == path:
            if line_no is not None and line_no in new_lines_of(entry["diff"]):
                return None
            break
    return "can't be blank"


async def _params(request: Request) -> dict[str, Any]:
    """Grape reads JSON, form and query parameters alike."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    raw = await request.body()
    if "json" in content_type and raw:
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return params
        if isinstance(decoded, dict):
            params.update(decoded)
    elif raw:
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
        params.update({k: v[-1] for k, v in form.items()})
    return params


def _paginated(request: Request, items: list[dict[str, Any]]) -> Response:
    query = request.query_params
    try:
        page = max(1, int(query.get("page", "1")))
        per_page = min(MAX_PER_PAGE, max(1, int(query.get("per_page", str(DEFAULT_PER_PAGE)))))
    except ValueError:
        return JSONResponse({"error": "page is invalid"}, status_code=400)
    total = len(items)
    total_pages = max(1, -(-total // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    next_page = page + 1 if page < total_pages else None
    prev_page = page - 1 if page > 1 else None
    base = (
        f"{request.url.scheme}://{request.url.netloc}{request.scope.get('raw_path', b'').decode()}"
    )
    base = base.split("?", 1)[0]

    def link(target: int) -> str:
        params = {k: v for k, v in query.items() if k != "page"}
        params.update({"page": str(target), "per_page": str(per_page)})
        return f"<{base}?{urllib.parse.urlencode(params)}>"

    links = []
    if prev_page:
        links.append(f'{link(prev_page)}; rel="prev"')
    if next_page:
        links.append(f'{link(next_page)}; rel="next"')
    links += [f'{link(1)}; rel="first"', f'{link(total_pages)}; rel="last"']
    headers = {
        "x-page": str(page),
        "x-per-page": str(per_page),
        "x-next-page": str(next_page or ""),
        "x-prev-page": str(prev_page or ""),
        "x-total": str(total),
        "x-total-pages": str(total_pages),
        "link": ", ".join(links),
    }
    return JSONResponse(chunk, headers=headers)
