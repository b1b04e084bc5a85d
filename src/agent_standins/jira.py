"""A local Jira Cloud stand-in that speaks the real REST v3 shapes the agent uses.

Endpoints (under ``/rest/api/3``):

- ``GET|POST /search/jql`` — JQL search with ``nextPageToken`` paging: the
  answer is ``{"issues": [...], "nextPageToken": "…", "isLast": false}``, the
  token absent and ``isLast`` true on the last page; no ``total``. Default
  ``fields`` is ``id`` only, as on Jira Cloud. The JQL understood is the part
  the agent writes: clauses ``project = X``, ``project IN (A, B)``,
  ``status = "Name"``, ``status IN (...)``, ``key = K`` joined by ``AND``,
  an optional ``ORDER BY`` (ignored); anything else is a 400 as Jira answers a
  JQL error.
- ``GET|POST /search`` and ``POST /search/id`` — **410 Gone** with Jira's
  "migrate to /rest/api/3/search/jql" message (removed in 2025).
- ``GET /issue/{key}`` — ``{id, key, self, fields{summary, status, description
  (ADF), project, issuetype, labels, created, updated}}``; 404 with Jira's
  "Issue does not exist or you do not have permission to see it." otherwise.
- ``GET /issue/{key}/transitions`` — ``{"expand": "transitions", "transitions":
  [{"id": "21", "name": "In Progress", "to": {...}, ...}]}``; ids are strings.
- ``POST /issue/{key}/transitions`` ``{"transition": {"id": "21"}}`` — **204**
  with an empty body (a bare ``Response``, not ``JSONResponse(None)``, which
  would send ``null``); an id not offered is 400.
- ``POST /issue/{key}/comment`` ``{"body": <ADF doc>}`` — **201** + the comment;
  a plain-string body, an invalid ADF document or more than 32,767 characters
  of text is 400 with Jira's ``errors.comment`` message.
- ``GET /issue/{key}/comment`` — ``{"startAt", "maxResults", "total",
  "comments": [...]}``, oldest first, offset paging (``startAt``, ``maxResults``
  up to 100).

``JiraStandin(data_center=True)`` is Jira Data Center instead (REST v2 under
``/rest/api/2``: ``/search`` with ``startAt``/``total``, wiki-markup strings
for descriptions and comments; no v3 and no ``/search/jql``).

Authentication: ``Authorization: Basic base64(email:api_token)`` (Cloud) or
``Authorization: Bearer <pat>`` (Data Center personal access token); anything
else gets Jira's 401 ``{"message": "Client must be authenticated to access this
resource.", "status-code": 401}``. The recorded requests keep only the scheme
of the ``Authorization`` header (``Basic [checked]``), so a stand-in's memory
never holds the token either.

The workflow is one list of statuses (default To Do → In Progress → In Review
→ Done) and, as in Jira's simplified workflows, every status can move to every
other one: transition ``"<10 * (n + 1) + 1>"`` goes to status ``n``.

Scripting misbehaviour (see ``agent_standins.faults``)::

    jira = JiraStandin(email="agent@example.com", token="ATATT...")
    jira.add_issue("PROJ-1", summary="Add search", description="...", status="To Do")
    jira.faults.add("/issue/PROJ-1", Fault.http(404))
    jira.faults.add("/search/jql", Fault.http(429, retry_after_s=1), times=1)
    jira.faults.add("/issue/*/comment", Fault.http(503), method="POST")
    jira.faults.add("/issue/PROJ-1/transitions", Fault.slow(3.0))
    jira.faults.add("/issue/PROJ-1", Fault.echo_header(401, "authorization", offset=480))
    with jira.serve() as server: ...
    jira.issue("PROJ-1")["status"], jira.comments("PROJ-1"), jira.requests

Error bodies follow Jira: ``{"errorMessages": [...], "errors": {}}`` for 400,
403, 404, 410 and 5xx; 401 as above; 429 with ``Retry-After`` (default 1 s),
``X-RateLimit-Limit``/``-Remaining``/``-Reset`` and ``RateLimit-Reason:
jira-burst-based``; 502/504 an HTML page from the edge.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent_standins.base import Standin, match_route, path_of, route
from agent_standins.faults import Fault, Rendered

__all__ = [
    "AGENT_ACCOUNT_ID",
    "DEFAULT_EMAIL",
    "DEFAULT_STATUSES",
    "DEFAULT_TOKEN",
    "JiraStandin",
    "adf_text",
    "render_jira_error",
]

API_PREFIX: Final = "/rest/api/3"
DC_API_PREFIX: Final = "/rest/api/2"
DEFAULT_EMAIL: Final = "agent@example.com"
DEFAULT_TOKEN: Final = "ATATT3xFfGF0-standin-5e1a9c7b2d4f"  # noqa: S105 - the stand-in's fake token
DEFAULT_STATUSES: Final = ("To Do", "In Progress", "In Review", "Done")
AGENT_ACCOUNT_ID: Final = "5b10ac8d82e05b22cc7d4ef5"
"""The accountId of the comments the agent posts (the API token's user)."""
MAX_RESULTS: Final = 100
"""The largest page the stand-in serves when fields are asked for (Jira's own cap varies)."""
MAX_COMMENT_CHARS: Final = 32_767
REMOVED_MESSAGE: Final = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
    "A full migration guideline is available at "
    "https://developer.atlassian.com/changelog/#CHANGE-2046"
)
_NOT_FOUND: Final = "Issue does not exist or you do not have permission to see it."
_UNAUTHENTICATED: Final = "Client must be authenticated to access this resource."
_BASE_URL: Final = "http://jira.standin"
_KEY: Final = re.compile(r"^([A-Z][A-Z0-9_]{0,19})-([1-9][0-9]{0,8})$")
_INLINE: Final = frozenset({"text", "hardBreak", "mention", "emoji", "inlineCard"})
_BLOCK: Final = frozenset(
    {
        "paragraph",
        "heading",
        "codeBlock",
        "blockquote",
        "bulletList",
        "orderedList",
        "listItem",
        "rule",
        "panel",
    }
)
_MARKS: Final = frozenset(
    {"strong", "em", "code", "link", "strike", "underline", "subsup", "textColor"}
)


def _now() -> str:
    # Jira's own format: 2026-05-01T10:00:00.000+0000
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def adf_text(document: Any) -> str:
    """The plain text of an ADF document: paragraphs joined by newlines (for assertions)."""
    if not isinstance(document, dict):
        return ""
    if document.get("type") == "text":
        return str(document.get("text", ""))
    if document.get("type") == "hardBreak":
        return "\n"
    parts = [adf_text(child) for child in document.get("content", []) or []]
    joiner = "\n" if document.get("type") == "doc" else ""
    return joiner.join(parts)


def _doc(text: str) -> dict[str, Any]:
    paragraphs = [
        {"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []}
        for line in text.split("\n")
    ]
    return {"type": "doc", "version": 1, "content": paragraphs}


def adf_problem(document: Any, *, max_chars: int = MAX_COMMENT_CHARS) -> str | None:
    """Why ``document`` is not a comment body Jira accepts, or None when it is."""
    if not isinstance(document, dict):
        return "Comment body is not valid!"
    if document.get("type") != "doc" or document.get("version") != 1:
        return "Comment body is not valid!"
    content = document.get("content")
    if not isinstance(content, list):
        return "Comment body is not valid!"
    chars = [0]
    for node in content:
        problem = _node_problem(node, block=True, chars=chars, depth=1)
        if problem is not None:
            return problem
    if chars[0] > max_chars:
        return (
            f"The entered text is too long. It exceeds the allowed limit of {max_chars:,} "
            "characters."
        )
    return None


def _node_problem(node: Any, *, block: bool, chars: list[int], depth: int) -> str | None:
    if depth > 20 or not isinstance(node, dict):
        return "Comment body is not valid!"
    kind = node.get("type")
    allowed = _BLOCK | _INLINE if block else _INLINE
    if kind not in allowed:
        return "Comment body is not valid!"
    if kind == "text":
        text = node.get("text")
        if not isinstance(text, str) or not text:
            return "Comment body is not valid!"
        chars[0] += len(text)
        for mark in node.get("marks", []) or []:
            if not isinstance(mark, dict) or mark.get("type") not in _MARKS:
                return "Comment body is not valid!"
            if mark["type"] == "link":
                href = (mark.get("attrs") or {}).get("href")
                if not isinstance(href, str) or not href:
                    return "Comment body is not valid!"
        return None
    children = node.get("content", [])
    if not isinstance(children, list):
        return "Comment body is not valid!"
    inner_block = kind not in ("paragraph", "heading", "codeBlock")
    for child in children:
        problem = _node_problem(child, block=inner_block, chars=chars, depth=depth + 1)
        if problem is not None:
            return problem
    return None


_GATEWAY_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>{status} {phrase}</title></head>"
    "<body><h1>{status} {phrase}</h1><p>The Atlassian edge could not reach Jira.</p></body></html>"
)


def render_jira_error(fault: Fault) -> Rendered:
    """The answer Jira Cloud gives for ``fault.status`` (or ``fault.body`` as given)."""
    status = fault.status
    headers: dict[str, str] = {}
    if fault.body is not None:
        body = fault.body
        headers["content-type"] = fault.content_type or "application/json"
    elif status == 401:
        message = fault.message if fault.message is not None else _UNAUTHENTICATED
        body = orjson.dumps({"message": message, "status-code": 401})
        headers["content-type"] = "application/json;charset=UTF-8"
    elif status == 429:
        retry_after = fault.retry_after_s if fault.retry_after_s is not None else 1
        reset = datetime.now(UTC) + timedelta(seconds=retry_after)
        body = orjson.dumps(
            {"errorMessages": [fault.message or "Rate limit exceeded."], "errors": {}}
        )
        headers.update(
            {
                "content-type": "application/json;charset=UTF-8",
                "retry-after": _seconds(retry_after),
                "x-ratelimit-limit": "100",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
                "ratelimit-reason": "jira-burst-based",
            }
        )
    elif status in (502, 504) and fault.message is None:
        body = _GATEWAY_PAGE.format(status=status, phrase=_phrase(status)).encode()
        headers["content-type"] = "text/html; charset=utf-8"
    else:
        default = {
            403: "You do not have the permission to perform this action.",
            404: _NOT_FOUND,
            410: REMOVED_MESSAGE,
        }.get(status, f"{_phrase(status)}")
        body = orjson.dumps({"errorMessages": [fault.message or default], "errors": {}})
        headers["content-type"] = "application/json;charset=UTF-8"
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


async def _search_request(
    request: Request, invalid: str
) -> tuple[dict[str, Any], list[Any] | None] | Response:
    """A search's parameters (a POST's JSON body or a GET's query) and its ``fields``, or the
    400 Jira answers (``invalid``: the version's wording) for a body that is no JSON object."""
    if request.method != "POST":
        params: dict[str, Any] = dict(request.query_params)
        return params, params["fields"].split(",") if "fields" in params else None
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _errors(400, invalid)
    if not isinstance(body, dict):
        return _errors(400, invalid)
    raw_fields = body.get("fields")
    return body, raw_fields if isinstance(raw_fields, list) else None


def _errors(status: int, *messages: str, **errors: str) -> JSONResponse:
    return JSONResponse({"errorMessages": list(messages), "errors": errors}, status_code=status)


@dataclass
class _Issue:
    id: str
    key: str
    project: str
    summary: str
    description: str
    status: str
    initial_status: str
    labels: list[str]
    created: str
    updated: str
    reporter: tuple[str, str]
    comments: list[dict[str, Any]] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)


class _JqlError(ValueError):
    pass


_CLAUSE: Final = re.compile(
    r"""\s*(?P<field>project|status|key)\s*(?:(?P<eq>=)\s*(?P<value>"[^"]*"|'[^']*'|[\w.-]+)
        |\s+in\s*\((?P<values>[^)]*)\))\s*""",
    re.IGNORECASE | re.VERBOSE,
)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _parse_jql(jql: str) -> list[tuple[str, set[str]]]:
    """The clauses of the JQL the stand-in understands: (field, allowed values, lower-case)."""
    where = re.split(r"\border\s+by\b", jql, maxsplit=1, flags=re.IGNORECASE)[0]
    clauses: list[tuple[str, set[str]]] = []
    if not where.strip():
        return clauses
    for part in re.split(r"\s+and\s+", where.strip(), flags=re.IGNORECASE):
        found = _CLAUSE.fullmatch(part)
        if found is None:
            raise _JqlError(f"Error in the JQL Query: the stand-in cannot read {part.strip()!r}.")
        if found["eq"]:
            values = {_unquote(found["value"]).lower()}
        else:
            values = {_unquote(v).lower() for v in found["values"].split(",") if v.strip()}
        clauses.append((found["field"].lower(), values))
    return clauses


class JiraStandin(Standin):
    """An in-memory Jira Cloud: issues, a workflow, posted comments kept for assertions, faults.

    Args:
        email: the account's email for Basic auth.
        token: its API token (Basic auth's password).
        pat: a Data Center personal access token accepted as ``Bearer`` (None: Bearer refused).
        statuses: the workflow's statuses, in order.
        project_names: display names by project key (default: the key).
        data_center: be Jira Data Center instead: REST v2 under ``/rest/api/2``
            (no v3, no ``/search/jql``), ``POST|GET /search`` with ``startAt``/
            ``total`` paging, descriptions and comment bodies as wiki-markup
            strings (an ADF object is a 400), Bearer PATs and Basic
            ``username:password`` (``email``/``token`` here).
    """

    def __init__(
        self,
        *,
        email: str = DEFAULT_EMAIL,
        token: str = DEFAULT_TOKEN,
        pat: str | None = None,
        statuses: Sequence[str] = DEFAULT_STATUSES,
        project_names: Mapping[str, str] | None = None,
        data_center: bool = False,
    ) -> None:
        self.data_center = data_center
        self.api_prefix = DC_API_PREFIX if data_center else API_PREFIX
        super().__init__(prefix=self.api_prefix)
        if not statuses:
            raise ValueError("a workflow needs at least one status")
        self.email = email
        self.token = token
        self.pat = pat
        self.statuses = tuple(statuses)
        self.project_names = dict(project_names or {})
        self._issues: dict[str, _Issue] = {}
        self._issue_ids = itertools.count(10001)
        self._comment_ids = itertools.count(20001)
        searches = (
            [route("GET", "/search", self._search_v2), route("POST", "/search", self._search_v2)]
            if data_center
            else [
                route("GET", "/search/jql", self._search),
                route("POST", "/search/jql", self._search),
                route("GET", "/search", self._removed),
                route("POST", "/search", self._removed),
                route("POST", "/search/id", self._removed),
            ]
        )
        self._routes = [
            *searches,
            route("GET", "/issue/{key}", self._get_issue),
            route("GET", "/issue/{key}/transitions", self._get_transitions),
            route("POST", "/issue/{key}/transitions", self._do_transition),
            route("POST", "/issue/{key}/comment", self._add_comment),
            route("GET", "/issue/{key}/comment", self._list_comments),
        ]

    # -- test and demo API ----------------------------------------------------

    def render_error(self, fault: Fault) -> Rendered:
        return render_jira_error(fault)

    def recorded_headers(self, headers: dict[str, str]) -> dict[str, str]:
        kept = dict(headers)
        if "authorization" in kept:
            scheme = kept["authorization"].split(" ", 1)[0]
            kept["authorization"] = f"{scheme} [checked]"
        return kept

    def reset(self) -> None:
        """Forget faults, recorded requests, posted comments and transitions.

        Issues and the comments of ``add_comment_as`` (test setup) are kept.
        """
        super().reset()
        with self._lock:
            for issue in self._issues.values():
                issue.comments[:] = [c for c in issue.comments if c.get("_seeded")]
                issue.history.clear()
                issue.status = issue.initial_status

    def add_issue(
        self,
        key: str,
        *,
        summary: str = "An issue",
        description: str = "",
        status: str | None = None,
        labels: Sequence[str] = (),
        reporter: tuple[str, str] = ("5b10a2844c20165700ede21g", "Jane Reporter"),
    ) -> dict[str, Any]:
        """Add (or replace) an issue; its project is the key's prefix. Returns its JSON.

        ``reporter`` is (accountId, displayName).
        """
        found = _KEY.match(key)
        if found is None:
            raise ValueError(f"not a Jira issue key: {key!r}")
        state = status or self.statuses[0]
        self._status_index(state)
        now = _now()
        issue = _Issue(
            id=str(next(self._issue_ids)),
            key=key,
            project=found.group(1),
            summary=summary,
            description=description,
            status=state,
            initial_status=state,
            labels=list(labels),
            created=now,
            updated=now,
            reporter=reporter,
        )
        with self._lock:
            self._issues[key] = issue
        return self._issue_json(issue, None)

    def issue(self, key: str) -> dict[str, Any]:
        """The issue as ``GET /issue/{key}`` returns it (all fields)."""
        with self._lock:
            return self._issue_json(self._issues[key], None)

    def status_of(self, key: str) -> str:
        with self._lock:
            return self._issues[key].status

    def set_status(self, key: str, status: str) -> None:
        """Move an issue without the API (a human did it)."""
        self._status_index(status)
        with self._lock:
            self._issues[key].status = status

    def transitions_done(self, key: str) -> list[tuple[str, str]]:
        """(from, to) of each transition made through the API, oldest first."""
        with self._lock:
            return list(self._issues[key].history)

    def add_comment_as(self, key: str, account_id: str, name: str, text: str) -> dict[str, Any]:
        """A comment by someone else (a human answering the agent); kept by ``reset()``."""
        body: Any = text if self.data_center else _doc(text)
        comment = self._comment_json(self._issues[key], body, _user(account_id, name))
        comment["_seeded"] = True
        with self._lock:
            self._issues[key].comments.append(comment)
        return _public(comment)

    def comments(self, key: str) -> list[dict[str, Any]]:
        """Comments posted through the API, oldest first (``body`` is the ADF sent)."""
        with self._lock:
            return [_public(c) for c in self._issues[key].comments if not c.get("_seeded")]

    def comment_texts(self, key: str) -> list[str]:
        """The plain text of each posted comment (Data Center: the wiki markup as sent)."""
        return [
            c["body"] if isinstance(c["body"], str) else adf_text(c["body"])
            for c in self.comments(key)
        ]

    # -- the API ---------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        path = path_of(request)
        if not path.startswith(self.api_prefix + "/"):
            return _errors(404, "Not found")
        if not self._authenticated(request.headers.get("authorization", "")):
            return JSONResponse(
                {"message": _UNAUTHENTICATED, "status-code": 401},
                status_code=401,
                headers={"www-authenticate": 'OAuth realm="https%3A%2F%2Fjira.standin"'},
            )
        return await match_route(
            self._routes,
            request,
            path[len(self.api_prefix) :],
            not_found=lambda: _errors(404, "null for uri: " + path),
            not_allowed=lambda: _errors(405, "Method Not Allowed"),
        )

    def _authenticated(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            expected = f"{self.email}:{self.token}"
            return hmac.compare_digest(decoded.encode(), expected.encode())
        if scheme.lower() == "bearer" and self.pat is not None:
            return hmac.compare_digest(value.strip().encode(), self.pat.encode())
        return False

    def _status_index(self, name: str) -> int:
        lowered = [s.lower() for s in self.statuses]
        if name.lower() not in lowered:
            raise ValueError(f"{name!r} is not a status of the workflow {self.statuses}")
        return lowered.index(name.lower())

    def _status_json(self, name: str) -> dict[str, Any]:
        index = self._status_index(name)
        category = (
            ("new", "To Do", 2)
            if index == 0
            else ("done", "Done", 3)
            if index == len(self.statuses) - 1
            else ("indeterminate", "In Progress", 4)
        )
        status_id = str(10000 + index)
        return {
            "self": f"{_BASE_URL}/rest/api/3/status/{status_id}",
            "description": "",
            "iconUrl": f"{_BASE_URL}/images/icons/statuses/generic.png",
            "name": self.statuses[index],
            "id": status_id,
            "statusCategory": {
                "self": f"{_BASE_URL}/rest/api/3/statuscategory/{category[2]}",
                "id": category[2],
                "key": category[0],
                "colorName": "blue-gray",
                "name": category[1],
            },
        }

    def _issue_json(self, issue: _Issue, fields: set[str] | None) -> dict[str, Any]:
        everything: dict[str, Any] = {
            "summary": issue.summary,
            "status": self._status_json(issue.status),
            "description": (
                (issue.description if self.data_center else _doc(issue.description))
                if issue.description
                else None
            ),
            "project": {
                "self": f"{_BASE_URL}/rest/api/3/project/{issue.project}",
                "id": str(10000 + sum(map(ord, issue.project))),
                "key": issue.project,
                "name": self.project_names.get(issue.project, issue.project),
                "projectTypeKey": "software",
            },
            "issuetype": {"id": "10001", "name": "Task", "subtask": False},
            "labels": list(issue.labels),
            "assignee": None,
            "reporter": _user(*issue.reporter),
            "created": issue.created,
            "updated": issue.updated,
        }
        chosen = (
            everything
            if fields is None or "*all" in fields
            else {k: v for k, v in everything.items() if k in fields}
        )
        return {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog",
            "id": issue.id,
            "self": f"{_BASE_URL}/rest/api/3/issue/{issue.id}",
            "key": issue.key,
            "fields": chosen,
        }

    def _issue(self, key: str) -> _Issue | None:
        with self._lock:
            found = self._issues.get(key.upper())
            if found is None:  # by id, as Jira accepts issueIdOrKey
                found = next((i for i in self._issues.values() if i.id == key), None)
            return found

    async def _removed(self, request: Request) -> Response:
        return _errors(410, REMOVED_MESSAGE)

    async def _search(self, request: Request) -> Response:
        read = await _search_request(
            request, "Invalid request payload. Refer to the REST API documentation."
        )
        if isinstance(read, Response):
            return read
        params, field_list = read
        jql = params.get("jql", "")
        if not isinstance(jql, str):
            return _errors(400, "The JQL query is not valid.")
        try:
            clauses = _parse_jql(jql)
        except _JqlError as exc:
            return _errors(400, str(exc))
        if not clauses:
            # Jira Cloud refuses unbounded queries on /search/jql.
            return _errors(
                400, "Unbounded JQL queries are not allowed here. Please add a search restriction."
            )
        try:
            max_results = int(params.get("maxResults", 50))
            offset = _decode_token(params.get("nextPageToken"))
        except (TypeError, ValueError):
            return _errors(400, "The value of nextPageToken or maxResults is not valid.")
        max_results = max(1, min(MAX_RESULTS, max_results))
        with self._lock:
            matching = [i for i in self._issues.values() if self._matches(i, clauses)]
            matching.sort(key=lambda i: int(i.id), reverse=True)  # ORDER BY created DESC
            page = matching[offset : offset + max_results]
            fields = {f.strip() for f in field_list} if field_list is not None else None
            if fields is None or fields <= {"id"}:
                issues: list[dict[str, Any]] = [{"id": i.id} for i in page]
            else:
                issues = [self._issue_json(i, fields) for i in page]
        answer: dict[str, Any] = {"issues": issues}
        if offset + max_results < len(matching):
            answer["nextPageToken"] = _encode_token(offset + max_results)
            answer["isLast"] = False
        else:
            answer["isLast"] = True
        return JSONResponse(answer)

    async def _search_v2(self, request: Request) -> Response:
        """Data Center's search: ``startAt``/``maxResults``/``total``, all fields by default."""
        read = await _search_request(request, "Invalid request payload.")
        if isinstance(read, Response):
            return read
        params, field_list = read
        jql = params.get("jql", "")
        try:
            clauses = _parse_jql(jql if isinstance(jql, str) else "")
            start = max(0, int(params.get("startAt", 0)))
            size = max(1, min(MAX_RESULTS, int(params.get("maxResults", 50))))
        except _JqlError as exc:
            return _errors(400, str(exc))
        except (TypeError, ValueError):
            return _errors(400, "The value of startAt or maxResults is not valid.")
        with self._lock:
            matching = [i for i in self._issues.values() if self._matches(i, clauses)]
            matching.sort(key=lambda i: int(i.id), reverse=True)
            fields = {f.strip() for f in field_list} if field_list is not None else None
            page = [self._issue_json(i, fields) for i in matching[start : start + size]]
        return JSONResponse(
            {"startAt": start, "maxResults": size, "total": len(matching), "issues": page}
        )

    def _matches(self, issue: _Issue, clauses: list[tuple[str, set[str]]]) -> bool:
        for name, values in clauses:
            have = {"project": issue.project, "status": issue.status, "key": issue.key}[name]
            if have.lower() not in values:
                return False
        return True

    async def _get_issue(self, request: Request, key: str) -> Response:
        issue = self._issue(key)
        if issue is None:
            return _errors(404, _NOT_FOUND)
        raw = request.query_params.get("fields")
        fields = {f.strip() for f in raw.split(",")} if raw else None
        with self._lock:
            return JSONResponse(self._issue_json(issue, fields))

    def _transitions(self, issue: _Issue) -> list[dict[str, Any]]:
        return [
            {
                "id": str(10 * (n + 1) + 1),
                "name": name,
                "to": self._status_json(name),
                "hasScreen": False,
                "isGlobal": True,
                "isInitial": False,
                "isAvailable": True,
                "isConditional": False,
                "isLooped": False,
            }
            for n, name in enumerate(self.statuses)
            if name.lower() != issue.status.lower()
        ]

    async def _get_transitions(self, request: Request, key: str) -> Response:
        issue = self._issue(key)
        if issue is None:
            return _errors(404, _NOT_FOUND)
        with self._lock:
            return JSONResponse({"expand": "transitions", "transitions": self._transitions(issue)})

    async def _do_transition(self, request: Request, key: str) -> Response:
        issue = self._issue(key)
        if issue is None:
            return _errors(404, _NOT_FOUND)
        try:
            params = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _errors(400, "Invalid request payload. Refer to the REST API documentation.")
        transition = params.get("transition") if isinstance(params, dict) else None
        wanted = transition.get("id") if isinstance(transition, dict) else None
        if not isinstance(wanted, str | int):
            return _errors(400, "Missing 'transition' identifier")
        with self._lock:
            offered = {t["id"]: t for t in self._transitions(issue)}
            chosen = offered.get(str(wanted))
            if chosen is None:
                return _errors(400, f"Transition id '{wanted}' is not valid for this issue.")
            issue.history.append((issue.status, chosen["to"]["name"]))
            issue.status = chosen["to"]["name"]
            issue.updated = _now()
        return Response(status_code=204)

    async def _add_comment(self, request: Request, key: str) -> Response:
        issue = self._issue(key)
        if issue is None:
            return _errors(404, _NOT_FOUND)
        try:
            params = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _errors(400, "Invalid request payload. Refer to the REST API documentation.")
        body = params.get("body") if isinstance(params, dict) else None
        if self.data_center:
            problem = _wiki_problem(body)
        else:
            problem = adf_problem(body)
            if problem is None and not isinstance(body, dict):
                problem = "Comment body is not valid!"
        if problem is not None:
            return _errors(400, comment=problem)
        comment = self._comment_json(issue, body, _user(AGENT_ACCOUNT_ID, "Copilot Agent"))
        with self._lock:
            issue.comments.append(comment)
        return JSONResponse(comment, status_code=201)

    def _comment_json(self, issue: _Issue, body: Any, author: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        comment_id = str(next(self._comment_ids))
        return {
            "self": f"{_BASE_URL}/rest/api/3/issue/{issue.id}/comment/{comment_id}",
            "id": comment_id,
            "author": author,
            "body": body,
            "updateAuthor": author,
            "created": now,
            "updated": now,
            "jsdPublic": True,
        }

    async def _list_comments(self, request: Request, key: str) -> Response:
        issue = self._issue(key)
        if issue is None:
            return _errors(404, _NOT_FOUND)
        try:
            start = max(0, int(request.query_params.get("startAt", "0")))
            size = max(1, min(MAX_RESULTS, int(request.query_params.get("maxResults", "50"))))
        except ValueError:
            return _errors(400, "The value of startAt or maxResults is not valid.")
        with self._lock:
            everything = [_public(c) for c in issue.comments]
        if request.query_params.get("orderBy", "created").startswith("-"):
            everything.reverse()
        return JSONResponse(
            {
                "startAt": start,
                "maxResults": size,
                "total": len(everything),
                "comments": everything[start : start + size],
            }
        )


def _wiki_problem(body: Any) -> str | None:
    if not isinstance(body, str) or not body.strip():
        return "Comment body can not be empty!"
    if len(body) > MAX_COMMENT_CHARS:
        return (
            f"The entered text is too long. It exceeds the allowed limit of "
            f"{MAX_COMMENT_CHARS:,} characters."
        )
    return None


def _user(account_id: str, name: str) -> dict[str, Any]:
    return {
        "self": f"{_BASE_URL}/rest/api/3/user?accountId={account_id}",
        "accountId": account_id,
        "displayName": name,
        "active": True,
        "accountType": "atlassian",
    }


def _public(comment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in comment.items() if not k.startswith("_")}


def _encode_token(offset: int) -> str:
    # Opaque to the client, as Jira's are.
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset, "v": 1})).decode().rstrip("=")


def _decode_token(token: object) -> int:
    if token in (None, ""):
        return 0
    if not isinstance(token, str) or len(token) > 200:
        raise ValueError("bad token")
    padded = token + "=" * (-len(token) % 4)
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, orjson.JSONDecodeError):
        raise ValueError("bad token") from None
    offset = decoded.get("o") if isinstance(decoded, dict) else None
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("bad token")
    return offset
