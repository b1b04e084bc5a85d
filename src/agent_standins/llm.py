"""A local OpenAI-compatible chat-completions stand-in that writes deterministic reviews and diffs.

Endpoints: ``POST /v1/chat/completions`` (also ``/chat/completions``, for base
URLs that already end in ``/v1``) and ``GET /v1/models``. Authentication is
``Authorization: Bearer <api_key>`` (also ``api-key: <key>``, as Azure OpenAI
sends it), or, with ``basic_auth=(user, password)``, HTTP Basic as a
self-hosted endpoint behind an authenticating proxy takes it (httpx sends
Basic for a base URL carrying ``user:password@``); a wrong or missing key gives
401 with OpenAI's error body.

The answer is the real response shape (``id``, ``object: chat.completion``,
``created``, ``model``, ``choices[0].message``, ``finish_reason``, ``usage``).
Its content is a JSON review derived from the prompt, the same for the same
prompt::

    {"summary": "Reviewed 3 changed file(s): ...",
     "comments": [{"file": "src/search.py", "line": 5, "severity": "warning",
                   "comment": "..."}]}

The commented file and line are the first added line of the first diff hunk in
the prompt: the file comes from the nearest preceding ``diff --git a/x b/y``,
``+++ b/y``, or a ``File: y`` / ``Path: y`` / ``new_path: y`` / ``### y`` line,
and the line number from the ``@@ -a,b +c,d @@`` header. Without a hunk the
review has no comments. ``workflows.review.parse_review`` reads this JSON
shape; ``responder`` replaces the logic entirely (e.g. to answer markdown).

A coding request (a system prompt asking for a unified diff, as the agent's
coding requests do) is answered with a summary and a ```diff block that
appends one line to the first file whose text the prompt shows (``File
`README.md`:`` and a fenced copy, as the OpenAI-compatible provider sends its
repository context), or creates ``NOTES-BY-AGENT.md`` when it shows none
(``deterministic_change``).

Token usage is estimated as one token per four characters. Misbehaviour is
scripted as for the GitLab stand-in (``faults.add(path, Fault...)``) and
answered with OpenAI's shapes: 401 ``invalid_api_key``, 429
``rate_limit_exceeded`` with ``retry-after`` and ``x-ratelimit-*`` headers,
500 ``server_error``, 503 overloaded; ``Fault.slow`` delays the answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent_standins.base import Standin, as_response
from agent_standins.faults import Fault, Rendered

__all__ = [
    "DEFAULT_API_KEY",
    "LLMStandin",
    "deterministic_answer",
    "deterministic_change",
    "deterministic_review",
    "render_openai_error",
]

DEFAULT_API_KEY = "sk-standin-0123456789abcdef"
DEFAULT_MODEL = "gpt-4o-mini"

Messages = Sequence[dict[str, Any]]

_FILE_LABEL = re.compile(
    r"^(?:(?:File|Path|file|path|new_path):\s*`?(?P<label>[^\s`]+)`?"
    r"|#{2,4}\s+`?(?P<heading>[\w./-]+\.\w+)`?)\s*$"
)
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def _openai_error(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> Rendered:
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return Rendered(status, {"content-type": "application/json", **(headers or {})}, body)


def render_openai_error(fault: Fault) -> Rendered:
    """The answer an OpenAI-compatible API gives for ``fault.status`` (or ``fault.body``)."""
    status = fault.status
    if fault.body is not None:
        headers = {"content-type": fault.content_type or "application/json", **fault.headers}
        if fault.retry_after_s is not None:
            headers["retry-after"] = str(fault.retry_after_s)
        return Rendered(status, headers, fault.body)
    if fault.message is not None:
        answer = _openai_error(status, fault.message, "invalid_request_error", None)
    elif status == 401:
        answer = _openai_error(
            401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )
    elif status == 403:
        answer = _openai_error(
            403, "You are not allowed to use this model.", "invalid_request_error", None
        )
    elif status == 404:
        answer = _openai_error(
            404, "The model does not exist.", "invalid_request_error", "model_not_found"
        )
    elif status == 429:
        retry_after = fault.retry_after_s if fault.retry_after_s is not None else 1
        answer = _openai_error(
            429,
            "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
            {
                "retry-after": str(retry_after),
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{retry_after}s",
            },
        )
    elif status == 503:
        answer = _openai_error(
            503, "The engine is currently overloaded, please try again later.", "server_error", None
        )
    elif status >= 500:
        answer = _openai_error(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )
    else:
        answer = _openai_error(status, f"HTTP {status}", "invalid_request_error", None)
    headers = dict(answer.headers)
    if fault.retry_after_s is not None:
        headers["retry-after"] = str(fault.retry_after_s)
    headers.update(fault.headers)
    return Rendered(answer.status, headers, answer.body)


def _text_of(messages: Messages) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def _file_header(text: str) -> str | None:
    """The file a prompt line introduces, if it is a file header."""
    if text.startswith("+++ b/"):
        return text[len("+++ b/") :].strip() or None
    if text.startswith("diff --git "):
        return text.rsplit(" b/", 1)[-1].strip() or None
    if text.startswith(("+", "-")):
        return None
    found = _FILE_LABEL.match(text.strip())
    return (found.group("label") or found.group("heading")) if found else None


def deterministic_review(messages: Messages) -> str:
    """A JSON review naming the first added line of the first hunk in the prompt."""
    prompt = _text_of(messages)
    files: list[str] = []
    current: str | None = None
    first: tuple[str, int] | None = None
    new_line: int | None = None
    for text in prompt.splitlines():
        header = _file_header(text)
        if header is not None:
            current, new_line = header, None
            if header not in files:
                files.append(header)
            continue
        hunk = _HUNK.match(text)
        if hunk:
            new_line = int(hunk.group(1))
        elif new_line is not None and not text.startswith("-"):
            if text.startswith("+") and first is None and current is not None:
                first = (current, new_line)
            new_line += 1
    comments = []
    if first is not None:
        path, line = first
        comments.append(
            {
                "file": path,
                "line": line,
                "severity": "warning",
                "comment": f"Check the input handling added at {path}:{line} "
                "(validate and escape untrusted values).",
            }
        )
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    if files:
        summary = f"Reviewed {len(files)} changed file(s): {', '.join(files)}. (review {digest})"
    else:
        summary = f"No diff found in the prompt. (review {digest})"
    return orjson.dumps({"summary": summary, "comments": comments}).decode()


_SHOWN_FILE = re.compile(r"^File `(?P<path>[^`\n]+)`:\n```\n(?P<body>.*?)\n```$", re.M | re.S)


def deterministic_change(messages: Messages) -> str:
    """A summary and a ```diff block: one line appended to the first file the prompt shows."""
    prompt = _text_of(messages)
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    line = f"Changed by the model as asked (answer {digest})."
    shown = _SHOWN_FILE.search(prompt)
    if shown is None:
        path = "NOTES-BY-AGENT.md"
        diff = (
            f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1 @@\n+{line}\n"
        )
    else:
        path, old = shown.group("path"), shown.group("body").split("\n")
        context = "".join(f" {text}\n" for text in old)
        diff = (
            f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
            f"@@ -1,{len(old)} +1,{len(old) + 1} @@\n{context}+{line}\n"
        )
    return f"Appended one line to `{path}`.\n\n```diff\n{diff}```\n"


def deterministic_answer(messages: Messages) -> str:
    """``deterministic_change`` for coding requests, ``deterministic_review`` otherwise."""
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    if "unified diff" in system:
        return deterministic_change(messages)
    return deterministic_review(messages)


class LLMStandin(Standin):
    """An OpenAI-compatible chat-completions server with deterministic answers.

    Args:
        api_key: the accepted Bearer key.
        responder: builds the assistant's content from the request's messages
            (default: ``deterministic_answer``: a review, or a diff for a coding request).
        basic_auth: also accept HTTP Basic with this user and password.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        responder: Callable[[Messages], str] = deterministic_answer,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.responder = responder
        self._basic = (
            "Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            if basic_auth is not None
            else None
        )
        self._ids = itertools.count(1)
        self._completions: list[dict[str, Any]] = []

    def completions(self) -> list[dict[str, Any]]:
        """Each answered completion: ``{"request": <body>, "response": <body>}``."""
        with self._lock:
            return list(self._completions)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._completions.clear()

    def render_error(self, fault: Fault) -> Rendered:
        return render_openai_error(fault)

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if not self._authorized(request):
            return as_response(render_openai_error(Fault.http(401)))
        if request.method == "GET" and path in ("/v1/models", "/models"):
            return JSONResponse(
                {
                    "object": "list",
                    "data": [{"id": DEFAULT_MODEL, "object": "model", "owned_by": "standin"}],
                }
            )
        if path not in ("/v1/chat/completions", "/chat/completions") and not path.endswith(
            "/chat/completions"
        ):
            return as_response(
                _openai_error(404, f"Unknown path {path}", "invalid_request_error", None)
            )
        if request.method != "POST":
            return as_response(
                _openai_error(405, "Method not allowed", "invalid_request_error", None)
            )
        return await self._complete(request)

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if self._basic is not None and hmac.compare_digest(auth.encode(), self._basic.encode()):
            return True
        key = (
            auth[len("Bearer ") :] if auth.startswith("Bearer ") else request.headers.get("api-key")
        )
        return key is not None and hmac.compare_digest(key.encode(), self.api_key.encode())

    async def _complete(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return as_response(
                _openai_error(
                    400, "We could not parse the JSON body.", "invalid_request_error", None
                )
            )
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return as_response(
                _openai_error(
                    400, "'messages' is a required property", "invalid_request_error", None
                )
            )
        if body.get("stream"):
            return as_response(
                _openai_error(
                    400, "This stand-in does not stream.", "invalid_request_error", "unsupported"
                )
            )
        content = self.responder(messages)
        prompt_tokens = max(1, len(_text_of(messages)) // 4)
        completion_tokens = max(1, len(content) // 4)
        response = {
            "id": f"chatcmpl-standin-{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or DEFAULT_MODEL),
            "system_fingerprint": "fp_standin",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        with self._lock:
            self._completions.append({"request": body, "response": response})
        return JSONResponse(response)
