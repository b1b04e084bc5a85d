"""``JiraClient``: the agent's calls to the Jira Cloud REST API v3, every one audited.

One method per action; the action names are a contract (SPEC.md "Required
audit coverage", AC-1):

=======================  =========================================================
method                   audit action / target (``resource_type=issue``)
=======================  =========================================================
``search_issues``        ``jira.api.search_issues`` (one entry per page), project_key
                         when given, ``details.jql`` and ``details.page``
``get_issue``            ``jira.api.get_issue`` issue_key, project_key
``get_transitions``      ``jira.api.get_transitions`` issue_key, project_key
``transition_issue``     ``jira.api.get_transitions``, then ``jira.api.transition_issue``
                         with transition_id, transition_name, to_status
``add_comment``          ``jira.api.add_comment`` issue_key, project_key, body_chars
``list_comments``        ``jira.api.list_comments`` issue_key, project_key (one entry per page)
=======================  =========================================================

Auditing is not written here: like ``GitLabClient``, the ``httpx.AsyncClient``
sends through ``AuditedTransport`` with ``JIRA_ROUTES`` (``clients._http``), so
each attempt on the wire emits one entry; a request no route knows is audited
as ``jira.api.unmapped``. Retries, deadlines, ``Retry-After`` and error classes
are ``clients._http.send_checked``'s, the same as GitLab's: reads retried on
429/502/503/504, timeouts and network errors; writes (transitions, comments)
only on 429 and when the connection was never made.

Search uses ``POST /rest/api/3/search/jql`` (the old ``/search`` answers 410
since 2025) with ``nextPageToken`` paging, bounded by ``max_issues`` and a page
count; a server that repeats a token is an error, not a loop. **Decision: POST,
not GET**: the JQL (configured text that may name anything) travels in the
body, never in a URL, where proxies' access logs and httpx's own request log
would keep it; the POST only queries, so it is retried as a read.

**Jira Data Center** (a ``JIRA_PAT``) has no REST v3: the client speaks v2 there
(``/rest/api/2``, search by ``POST /search`` with ``startAt`` paging, comment
bodies in wiki markup, the text inside a ``{noformat}`` block: see
``wiki_document``), with the same actions and targets.

Comments are ADF documents built from plain text: one paragraph per line, each
a single ``text`` node with **no marks**, so nothing in the text (``[x](url)``,
``*bold*``, ``{code}``, HTML, JSON) becomes a link, a mark or a node; ADF is
JSON, built with orjson, so quotes and braces in the text stay text. Control
characters other than tab become U+FFFD. The text is scrubbed of every secret
and then cut to ``MAX_COMMENT_CHARS`` (Jira refuses more than 32,767). The only
link a comment can carry is the caller's ``link`` argument (the agent's own MR
URL), checked to be an http(s) URL.

**Secrets**: Basic auth (``JIRA_EMAIL`` + ``JIRA_API_TOKEN``) or a Data Center
PAT as Bearer; the header is the only place the credential travels. Error
messages from Jira's body are scrubbed whole of the token, the Basic header's
value and every registered secret before they are cut.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

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
from gitlab_copilot_agent.scrub import scrub_then_cut
from gitlab_copilot_agent.settings import JiraSettings

__all__ = [
    "JIRA_DC_ROUTES",
    "JIRA_ROUTES",
    "MAX_COMMENT_CHARS",
    "JiraClient",
    "JiraComment",
    "JiraError",
    "JiraIssue",
    "JiraTransition",
    "adf_document",
    "wiki_document",
]

API_PATH: Final = "/rest/api/3"
DC_API_PATH: Final = "/rest/api/2"
"""Jira Data Center has no REST v3 (nor ADF): its API is v2, with wiki-markup bodies."""
MAX_COMMENT_CHARS: Final = 32_000
"""The longest comment text sent (Jira's limit is 32,767 characters)."""
MAX_JQL_CHARS: Final = 4_000
MAX_PAGE_SIZE: Final = 100
MAX_ISSUES: Final = 5_000
MAX_TEXT_CHARS: Final = 100_000
"""The longest description read from an issue (its ADF flattened to text)."""
DEFAULT_FIELDS: Final = ("summary", "status", "description", "project", "reporter")
MAX_COMMENTS: Final = 5_000

_ISSUE = "/issue/{issue_key}"
JIRA_ROUTES: Final = (
    Route("GET", "/search/jql", "jira.api.search_issues", "issue"),
    Route("POST", "/search/jql", "jira.api.search_issues", "issue"),
    Route("GET", _ISSUE, "jira.api.get_issue", "issue"),
    Route("GET", f"{_ISSUE}/transitions", "jira.api.get_transitions", "issue"),
    Route("POST", f"{_ISSUE}/transitions", "jira.api.transition_issue", "issue"),
    Route("POST", f"{_ISSUE}/comment", "jira.api.add_comment", "issue"),
    Route("GET", f"{_ISSUE}/comment", "jira.api.list_comments", "issue"),
)
"""The audited Jira Cloud endpoints (paths relative to ``/rest/api/3``)."""
JIRA_DC_ROUTES: Final = (
    Route("POST", "/search", "jira.api.search_issues", "issue"),
    Route("GET", "/search", "jira.api.search_issues", "issue"),
    *(r for r in JIRA_ROUTES if not r.template.startswith("/search")),
)
"""The audited Jira Data Center endpoints (relative to ``/rest/api/2``; search is ``/search``)."""

_KEY: Final = re.compile(r"^([A-Z][A-Z0-9_]{0,49})-([1-9][0-9]{0,17})$")
# Controls (tab and newline kept), line separators and lone surrogates (not encodable).
_CONTROL: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_FIELD: Final = re.compile(r"^[A-Za-z0-9_.*-]{1,64}$")
_NOFORMAT: Final = re.compile(r"\{noformat", re.IGNORECASE)


class JiraError(ApiError):
    """A Jira call failed after its retries (``clients._http.ApiError``).

    Attributes:
        status_code: the HTTP status, or None when no answer came.
        message: Jira's ``errorMessages``/``errors``/``message``, or the body;
            never a credential.
        audit_error_class: the ``ErrorClass`` value (``auth_failure``,
            ``not_found``, ``rate_limit``, ``timeout``, ``server_error``, …).
        method, path: the request (path relative to ``/rest/api/3``).

    .. versionadded:: 0.1.0
    """

    service = "Jira"


@dataclass(frozen=True)
class JiraIssue:
    """The parts of an issue the agent uses; ``description`` is the ADF's plain text."""

    key: str
    project_key: str
    summary: str
    description: str
    status: str
    reporter_account_id: str | None = None


@dataclass(frozen=True)
class JiraComment:
    """A comment on an issue; ``text`` is its ADF body's plain text (untrusted)."""

    id: str
    author_account_id: str
    author_name: str
    text: str
    created: str


@dataclass(frozen=True)
class JiraTransition:
    """One transition offered from the issue's current status (``id`` is a string)."""

    id: str
    name: str
    to_status: str


class JiraClient(ApiClient):
    """Async client for the Jira endpoints the agent uses; every request is audited.

    Args:
        settings: the ``JIRA_*`` section (URL, credentials, timeout, retries).
        audit: the audit logger (or a callable returning it).
        transport: the inner transport (tests); default ``httpx.AsyncHTTPTransport``.
        initial_backoff_s, max_backoff_s, deadline_s: the retry policy's waits
            and budget (default: as ``GitLabClient``'s).

    Raises:
        ValueError: ``settings`` has no ``JIRA_URL`` (Jira is off).

    .. versionadded:: 0.1.0
    """

    _error_type = JiraError

    def _failure_text(self, response: httpx.Response) -> str:
        return _error_message(response)

    def __init__(
        self,
        settings: JiraSettings,
        audit: AuditLogger | Callable[[], AuditLogger],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        deadline_s: float | None = None,
    ) -> None:
        if settings.url is None:
            raise ValueError("Jira is not configured (JIRA_URL is unset)")
        # A PAT is Data Center's credential (Cloud has none): REST v2 there.
        self.data_center = settings.pat is not None
        api_path = DC_API_PATH if self.data_center else API_PATH
        api_root = settings.url.rstrip("/")
        if not api_root.endswith(api_path):
            api_root += api_path
        self.api_url = api_root
        authorization = settings.authorization()
        self._secrets = tuple(settings.secrets())
        timeout_s, max_retries = settings.timeout_s, settings.max_retries
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
        self._client = build_async_client(
            api_root,
            audit=audit,
            routes=RouteTable(
                "jira",
                JIRA_DC_ROUTES if self.data_center else JIRA_ROUTES,
                prefix=httpx.URL(api_root).path.rstrip("/"),
                # Which limit it was: the per-endpoint burst or the per-issue write limit.
                rate_limit_headers=("ratelimit-reason",),
            ),
            timeout_s=timeout_s,
            headers={
                "Authorization": authorization,
                "Accept": "application/json",
                "User-Agent": "gitlab-copilot-agent",
            },
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"JiraClient(api_url={self.api_url!r})"

    # -- actions ---------------------------------------------------------------

    async def search_issues(
        self,
        jql: str,
        *,
        fields: Sequence[str] = DEFAULT_FIELDS,
        page_size: int = 50,
        max_issues: int = 500,
        project_key: str | None = None,
    ) -> list[JiraIssue]:
        """The issues ``jql`` finds, at most ``max_issues``, following ``nextPageToken``.

        ``project_key`` (when the JQL is about one project) goes into each
        entry's target. Raises ``JiraError`` (``validation_error``) when the
        server repeats a page token or sends more pages than ``max_issues``
        can need.
        """
        if not jql.strip() or len(jql) > MAX_JQL_CHARS:
            raise ValueError(f"jql must be 1 to {MAX_JQL_CHARS} characters")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}")
        if not 1 <= max_issues <= MAX_ISSUES:
            raise ValueError(f"max_issues must be from 1 to {MAX_ISSUES}")
        wanted = set(DEFAULT_FIELDS) | set(fields)
        if not all(_FIELD.match(f) for f in wanted):
            raise ValueError("a field name has characters Jira field ids do not")
        target = {"project_key": _project_key(project_key)} if project_key else {}
        shown_jql = scrub_then_cut(jql, 300, *self._secrets)
        if self.data_center:
            return await self._search_by_offset(
                jql, sorted(wanted), page_size, max_issues, target, shown_jql
            )
        issues: list[JiraIssue] = []
        token: str | None = None
        seen: set[str] = set()
        max_pages = -(-max_issues // page_size) + 1
        for page in range(1, max_pages + 1):
            query: dict[str, Any] = {
                "jql": jql,
                "maxResults": min(page_size, max_issues - len(issues)),
                "fields": sorted(wanted),
            }
            if token is not None:
                query["nextPageToken"] = token
            response = await self._send(
                "POST",
                "/search/jql",
                json=query,
                audit_target=target,
                audit_details={"jql": shown_jql, "page": page},
                read_only=True,
            )
            body = decode_json(response)
            chunk = body.get("issues") if isinstance(body, dict) else None
            if not isinstance(chunk, list):
                raise self._unexpected(response, "an object with an issues array")
            issues.extend(_issue(item, response) for item in chunk)
            following = body.get("nextPageToken")
            if body.get("isLast") is True or not isinstance(following, str) or not following:
                return issues[:max_issues]
            if len(issues) >= max_issues:
                return issues[:max_issues]
            if following in seen or len(following) > 2_000:
                raise self._unexpected(response, "a new nextPageToken")
            seen.add(following)
            token = following
        raise JiraError(
            None,
            f"more than {max_pages} pages for {max_issues} issues",
            error_class=ErrorClass.VALIDATION_ERROR,
            method="GET",
            path="/search/jql",
        )

    async def _search_by_offset(
        self,
        jql: str,
        fields: list[str],
        page_size: int,
        max_issues: int,
        target: Mapping[str, Any],
        shown_jql: str,
    ) -> list[JiraIssue]:
        """Data Center's ``POST /rest/api/2/search``: ``startAt`` paging up to ``total``."""
        issues: list[JiraIssue] = []
        max_pages = -(-max_issues // page_size) + 1
        for page in range(1, max_pages + 1):
            response = await self._send(
                "POST",
                "/search",
                json={
                    "jql": jql,
                    "startAt": len(issues),
                    "maxResults": min(page_size, max_issues - len(issues)),
                    "fields": fields,
                },
                audit_target=target,
                audit_details={"jql": shown_jql, "page": page},
                read_only=True,
            )
            body = _object(response)
            chunk, total = body.get("issues"), body.get("total")
            if not isinstance(chunk, list):
                raise self._unexpected(response, "an object with an issues array")
            issues.extend(_issue(item, response) for item in chunk)
            if not chunk or not isinstance(total, int) or len(issues) >= min(total, max_issues):
                return issues[:max_issues]
        raise JiraError(
            None,
            f"more than {max_pages} pages for {max_issues} issues",
            error_class=ErrorClass.VALIDATION_ERROR,
            method="POST",
            path="/search",
        )

    async def get_issue(self, key: str) -> JiraIssue:
        """The issue ``key`` (summary, status, description as plain text, project)."""
        key = _issue_key(key)
        response = await self._send(
            "GET",
            f"/issue/{key}",
            params={"fields": ",".join(DEFAULT_FIELDS)},
            audit_target=_target(key),
        )
        return _issue(_object(response), response)

    async def get_transitions(self, key: str) -> list[JiraTransition]:
        """The transitions offered from the issue's current status."""
        key = _issue_key(key)
        response = await self._send("GET", f"/issue/{key}/transitions", audit_target=_target(key))
        body = _object(response)
        offered = body.get("transitions")
        if not isinstance(offered, list):
            raise self._unexpected(response, "a transitions array")
        found: list[JiraTransition] = []
        for item in offered:
            if not isinstance(item, dict):
                raise self._unexpected(response, "transition objects")
            to = _dict(item.get("to"))
            transition_id, name = item.get("id"), item.get("name")
            if not isinstance(transition_id, str | int) or not isinstance(name, str):
                raise self._unexpected(response, "transitions with an id and a name")
            to_name = to.get("name") if isinstance(to.get("name"), str) else name
            found.append(JiraTransition(str(transition_id), name[:255], str(to_name)[:255]))
        return found

    async def transition_issue(self, key: str, to_status: str) -> JiraTransition:
        """Move the issue to the status named ``to_status`` (case-insensitive).

        Looks the transition up (``jira.api.get_transitions``), matching the
        target status's name first and the transition's name second, then posts
        its id. When none leads there, nothing is posted and ``JiraError`` with
        ``audit_error_class`` ``not_found`` is raised (its message lists the
        statuses on offer); the caller audits what it does about it.
        """
        key = _issue_key(key)
        if not to_status.strip():
            raise ValueError("to_status is empty")
        wanted = to_status.strip().casefold()
        offered = await self.get_transitions(key)
        chosen = next((t for t in offered if t.to_status.casefold() == wanted), None) or next(
            (t for t in offered if t.name.casefold() == wanted), None
        )
        if chosen is None:
            on_offer = ", ".join(sorted({t.to_status for t in offered})) or "none"
            raise JiraError(
                None,
                scrub_then_cut(
                    f"no transition of {key} leads to {to_status!r} (on offer: {on_offer})",
                    500,
                    *self._secrets,
                ),
                error_class=ErrorClass.NOT_FOUND,
                method="POST",
                path=f"/issue/{key}/transitions",
            )
        await self._send(
            "POST",
            f"/issue/{key}/transitions",
            json={"transition": {"id": chosen.id}},
            audit_target={
                **_target(key),
                "transition_id": chosen.id,
                "transition_name": chosen.name,
                "to_status": chosen.to_status,
            },
        )
        return chosen

    async def add_comment(self, key: str, text: str, *, link: str | None = None) -> str:
        """Comment ``text`` (plain text, untrusted) on the issue; returns the comment id.

        ``link`` (an http(s) URL the agent made, such as its MR's ``web_url``)
        is added as a last paragraph, the only link the comment can carry.
        Not retried after a 5xx or a timeout (Jira may have posted it).
        """
        key = _issue_key(key)
        shown = scrub_then_cut(text, MAX_COMMENT_CHARS, *self._secrets)
        document: Any = (
            wiki_document(shown, link=link) if self.data_center else adf_document(shown, link=link)
        )
        response = await self._send(
            "POST",
            f"/issue/{key}/comment",
            json={"body": document},
            audit_target=_target(key),
            audit_details={"body_chars": len(text), "has_link": link is not None},
        )
        comment_id = _object(response).get("id")
        if not isinstance(comment_id, str | int) or isinstance(comment_id, bool):
            raise self._unexpected(response, "a comment id")
        return str(comment_id)

    async def list_comments(self, key: str, *, max_comments: int = 1_000) -> list[JiraComment]:
        """The issue's comments, oldest first, at most ``max_comments`` (all pages of 100)."""
        key = _issue_key(key)
        if not 1 <= max_comments <= MAX_COMMENTS:
            raise ValueError(f"max_comments must be from 1 to {MAX_COMMENTS}")
        found: list[JiraComment] = []
        # Offset paging (startAt/total): the comment API is not the search API.
        for page in range(1, -(-max_comments // MAX_PAGE_SIZE) + 2):
            response = await self._send(
                "GET",
                f"/issue/{key}/comment",
                params={
                    "startAt": len(found),
                    "maxResults": MAX_PAGE_SIZE,
                    "orderBy": "created",
                },
                audit_target=_target(key),
                audit_details={"page": page},
            )
            body = _object(response)
            chunk = body.get("comments")
            total = body.get("total")
            if not isinstance(chunk, list):
                raise self._unexpected(response, "a comments array")
            found.extend(_comment(item, response) for item in chunk)
            done = not chunk or not isinstance(total, int) or len(found) >= total
            if done or len(found) >= max_comments:
                return found[:max_comments]
        return found[:max_comments]

    # -- plumbing --------------------------------------------------------------


def adf_document(text: str, *, link: str | None = None) -> dict[str, Any]:
    """An ADF ``doc`` showing ``text`` literally: a paragraph per line, unmarked text nodes.

    Empty lines become empty paragraphs (ADF forbids empty text nodes);
    control characters other than tab, line separators and lone surrogates
    become U+FFFD. ``link`` adds a last
    paragraph whose one text node is the URL with a ``link`` mark.

    Raises:
        ValueError: ``text`` is blank and there is no link, or ``link`` is not
            an http(s) URL.
    """
    if not text.strip() and link is None:
        raise ValueError("the comment is empty")
    clean = _CONTROL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = clean.split("\n") if clean.strip() else []
    content: list[dict[str, Any]] = [
        {"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []}
        for line in lines
    ]
    if link is not None:
        content.append(
            {
                "type": "paragraph",
                "content": [
                    {
                        "type": "text",
                        "text": _http_link(link),
                        "marks": [{"type": "link", "attrs": {"href": _http_link(link)}}],
                    }
                ],
            }
        )
    return {"type": "doc", "version": 1, "content": content}


def wiki_document(text: str, *, link: str | None = None) -> str:
    """Jira Data Center's comment body: ``text`` in a ``{noformat}`` block, shown literally.

    Wiki markup would read ``*bold*``, ``[x|url]``, ``{code}``, ``!image!`` in the
    text; inside ``{noformat}`` nothing is read but the block's own end, so any
    ``{noformat`` in the text gets a zero-width space after its brace. ``link``
    adds ``[url|url]`` after the block. Controls as in ``adf_document``.

    Raises:
        ValueError: ``text`` is blank and there is no link, or ``link`` is not an
            http(s) URL (or holds ``|``, ``[`` or ``]``, which would end the link).
    """
    if not text.strip() and link is None:
        raise ValueError("the comment is empty")
    clean = _CONTROL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))
    literal = _NOFORMAT.sub(lambda found: "{\u200b" + found.group(0)[1:], clean)
    parts = [f"{{noformat}}\n{literal}\n{{noformat}}"] if clean.strip() else []
    if link is not None:
        url = _http_link(link)
        if any(c in url for c in "|[]"):
            raise ValueError("link must not contain |, [ or ]")
        parts.append(f"[{url}|{url}]")
    return "\n".join(parts)


def _http_link(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or "@" in parts.netloc
        or len(url) > 2_000
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url)
    ):
        raise ValueError("link must be an http(s) URL without credentials or spaces")
    return url


def _issue_key(key: str) -> str:
    upper = key.strip().upper()
    if not _KEY.match(upper):
        raise ValueError(f"not a Jira issue key: {key[:60]!r}")
    return upper


def _project_key(key: str) -> str:
    upper = key.strip().upper()
    if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,49}", upper):
        raise ValueError(f"not a Jira project key: {key[:60]!r}")
    return upper


def _target(key: str) -> dict[str, Any]:
    return {"project_key": key.rsplit("-", 1)[0]}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _object(response: httpx.Response) -> dict[str, Any]:
    decoded = decode_json(response)
    if not isinstance(decoded, dict):
        raise JiraError(
            response.status_code,
            "expected a JSON object in the response",
            error_class=ErrorClass.VALIDATION_ERROR,
            method=response.request.method,
            path=response.request.url.path,
        )
    return decoded


def _issue(item: Any, response: httpx.Response) -> JiraIssue:
    """A ``JiraIssue`` from Jira's issue JSON, read defensively (fields may be missing)."""
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise JiraError(
            response.status_code,
            "expected issues with a key (ask for fields, the default is id only)",
            error_class=ErrorClass.VALIDATION_ERROR,
            method=response.request.method,
            path=response.request.url.path,
        )
    key = item["key"][:120]
    fields = _dict(item.get("fields"))
    project = _dict(fields.get("project"))
    status = _dict(fields.get("status"))
    summary = fields.get("summary")
    project_key = project.get("key") if isinstance(project.get("key"), str) else None
    return JiraIssue(
        key=key,
        project_key=(project_key or key.rsplit("-", 1)[0])[:120],
        summary=summary[:1_000] if isinstance(summary, str) else "",
        description=_adf_text(fields.get("description"))[:MAX_TEXT_CHARS],
        status=str(status.get("name", ""))[:255],
        reporter_account_id=_account_id(_dict(fields.get("reporter"))),
    )


def _account_id(user: dict[str, Any]) -> str | None:
    # Cloud names users by accountId; Data Center by name/key.
    for field_name in ("accountId", "name", "key"):
        value = user.get(field_name)
        if isinstance(value, str) and value:
            return value[:128]
    return None


def _comment(item: Any, response: httpx.Response) -> JiraComment:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
        raise JiraError(
            response.status_code,
            "expected comments with an id",
            error_class=ErrorClass.VALIDATION_ERROR,
            method=response.request.method,
            path=response.request.url.path,
        )
    author = _dict(item.get("author"))
    name = author.get("displayName")
    created = item.get("created")
    return JiraComment(
        id=str(item["id"]),
        author_account_id=_account_id(author) or "",
        author_name=name[:255] if isinstance(name, str) else "",
        text=_adf_text(item.get("body"))[:MAX_TEXT_CHARS],
        created=created[:64] if isinstance(created, str) else "",
    )


def _adf_text(document: Any) -> str:
    """The plain text of an ADF document (or a v2 string), bounded in depth and size."""
    if isinstance(document, str):
        return document
    parts: list[str] = []
    size = 0
    stack: list[tuple[Any, int]] = [(document, 0)]
    # Iterative, depth-bounded: the document is the issue author's, of any shape.
    while stack and size < MAX_TEXT_CHARS:
        node, depth = stack.pop()
        if not isinstance(node, dict) or depth > 50:
            continue
        kind = node.get("type")
        if kind == "text" and isinstance(node.get("text"), str):
            parts.append(node["text"])
            size += len(node["text"])
        elif kind == "hardBreak":
            parts.append("\n")
        children = node.get("content")
        if isinstance(children, list):
            if kind in ("paragraph", "heading", "codeBlock", "listItem") and parts:
                parts.append("\n")
            stack.extend((child, depth + 1) for child in reversed(children))
    return "".join(parts).strip()


def _error_message(response: httpx.Response) -> str:
    """Jira's error text: ``errorMessages`` and ``errors``, or ``message``, or the body."""
    decoded = decode_json(response)
    if isinstance(decoded, dict):
        found: list[str] = []
        messages = decoded.get("errorMessages")
        if isinstance(messages, list):
            found += [str(m) for m in messages]
        errors = decoded.get("errors")
        if isinstance(errors, dict):
            found += [f"{k}: {v}" for k, v in errors.items()]
        if isinstance(decoded.get("message"), str):
            found.append(decoded["message"])
        if found:
            return "; ".join(found)
    text = " ".join(response.text.split())
    return text or response.reason_phrase or f"HTTP {response.status_code}"
