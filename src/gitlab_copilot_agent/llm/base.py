"""The LLM provider contract, and the one place every LLM call is audited.

Three layers:

- ``LLMBackend``: talks to one kind of model endpoint (offline rules, an
  OpenAI-compatible HTTP API, the GitHub Copilot SDK). Backends do no auditing.
- ``AuditedProvider``: wraps any backend and records, for every call,
  ``copilot.sdk.review_request`` / ``copilot.sdk.coding_request`` before it and
  ``copilot.sdk.response_received`` after it (success, failure or timeout).
  The prompt and the response are described by their size and SHA-256 only:
  their text never reaches the trail.
- ``LLMProvider``: what workflows use. ``build_provider`` in ``llm.factory``
  always returns an ``AuditedProvider``, so no call path can skip the trail.

Coding requests are answered by every backend with a unified diff
(``CodingResult.patch``, see ``llm.coding``); no backend writes to the clone,
the task validates and applies the diff itself. A backend that declares
``supports_coding = False`` gets ``NotImplementedError`` before anything is
sent, and nothing is audited because nothing left the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from auditkeep import Actor, AuditLogger, correlation_scope, get_correlation_id

REVIEW_REQUEST: Final = "copilot.sdk.review_request"
CODING_REQUEST: Final = "copilot.sdk.coding_request"
RESPONSE_RECEIVED: Final = "copilot.sdk.response_received"
LLM_ACTIONS: Final = (REVIEW_REQUEST, CODING_REQUEST, RESPONSE_RECEIVED)

DEFAULT_REVIEW_SYSTEM_PROMPT: Final = (
    "You are a meticulous senior engineer reviewing a GitLab merge request. "
    "Write a short summary, then list concrete findings, one per line, exactly as\n"
    "- `path/to/file:LINE` — what is wrong and how to fix it\n"
    "where LINE is a line number on the new side of the diff (an added line). "
    "Only point at lines that appear in the diff. If there is nothing to fix, say so."
)
DEFAULT_CODING_SYSTEM_PROMPT: Final = (
    "You are a careful software engineer. Make the smallest change that does what "
    "is asked, inside the repository only. Answer with a short summary of the change, "
    "then the whole change as one unified diff in git's format (paths relative to the "
    "repository root with a/ and b/ prefixes, exact hunk line counts) in a single "
    "```diff fenced block. Do not touch CI configuration or CODEOWNERS."
)


# -- requests and results ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffFile:
    """One file of a merge request diff, as the model sees it.

    .. versionadded:: 0.1.0
    """

    path: str
    diff: str
    old_path: str | None = None
    new_file: bool = False
    deleted_file: bool = False


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    """Ask the model to review a change.

    Args:
        prompt: the user prompt (instructions and the diff).
        files: the diff, structured (the offline backend reviews these).
        model: override the backend's default model.
        system_prompt: the system prompt.
        project_id, mr_iid: the merge request, recorded as the audit target.

    .. versionadded:: 0.1.0
    """

    prompt: str
    files: tuple[DiffFile, ...] = ()
    model: str | None = None
    system_prompt: str = DEFAULT_REVIEW_SYSTEM_PROMPT
    project_id: int | None = None
    mr_iid: int | None = None


@dataclass(frozen=True, slots=True)
class CodingRequest:
    """Ask the model to change files in ``working_directory``.

    .. versionadded:: 0.1.0
    """

    prompt: str
    working_directory: str
    model: str | None = None
    system_prompt: str = DEFAULT_CODING_SYSTEM_PROMPT
    project_id: int | None = None
    mr_iid: int | None = None
    issue_key: str | None = None


@dataclass(frozen=True, slots=True)
class LLMResult:
    """What came back from the model.

    Token counts are None when the endpoint did not report them.
    ``model_calls`` counts the model API calls behind the answer (an agent
    runtime may make several). ``extra`` holds backend-specific, non-secret
    facts for the audit entry (session id, message id, ...).

    .. versionadded:: 0.1.0
    """

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    model_calls: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


@dataclass(frozen=True, slots=True)
class ReviewResult(LLMResult):
    """The model's review (markdown text)."""


@dataclass(frozen=True, slots=True)
class CodingResult(LLMResult):
    """The model's answer (``text``) and the change it proposes as a unified diff (``patch``).

    ``patch`` is "" when the answer holds no diff. It has not been validated:
    ``gitlab_copilot_agent.git.patches.validate_patch`` decides whether it may apply.
    """

    patch: str = ""


# -- errors ------------------------------------------------------------------


class LLMError(Exception):
    """Base of the errors LLM backends raise.

    ``status_code`` (when the endpoint answered) and ``audit_error_class``
    let ``auditkeep.classify_exception`` record the right class.
    Messages never contain the prompt or credentials.

    .. versionadded:: 0.1.0
    """

    audit_error_class: str | None = None

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMHTTPError(LLMError):
    """The endpoint answered with an error status (401, 429, 5xx, ...)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.error_type = error_type
        self.retry_after = retry_after


class LLMTimeoutError(LLMError, TimeoutError):
    """No answer within the configured timeout."""

    audit_error_class = "timeout"


class LLMConnectionError(LLMError, ConnectionError):
    """The endpoint could not be reached."""

    audit_error_class = "network_error"


class LLMResponseError(LLMError):
    """The endpoint answered 2xx with something that is not a usable completion."""

    audit_error_class = "server_error"


class LLMSessionError(LLMError):
    """An agent runtime (Copilot CLI) reported an error for the request."""

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        status_code: int | None = None,
        error_class: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.error_type = error_type
        if error_class is not None:
            self.audit_error_class = error_class


# -- the contracts -------------------------------------------------------------


@runtime_checkable
class LLMProvider(Protocol):
    """What workflows call. Every implementation handed out is audited.

    ``code`` returns the proposed change as a diff (``CodingResult.patch``);
    it raises ``NotImplementedError`` only for a backend that declares
    ``supports_coding = False`` (none of the built-in ones).

    .. versionadded:: 0.1.0
    """

    @property
    def provider_name(self) -> str: ...

    @property
    def supports_coding(self) -> bool: ...

    async def review(self, request: ReviewRequest) -> ReviewResult: ...

    async def code(self, request: CodingRequest) -> CodingResult: ...

    async def aclose(self) -> None: ...


class LLMBackend(Protocol):
    """One kind of model endpoint; wrapped by ``AuditedProvider``, never used bare.

    .. versionadded:: 0.1.0
    """

    provider_name: str
    model: str
    supports_coding: bool
    timeout_s: float | None

    async def review(self, request: ReviewRequest) -> ReviewResult: ...

    async def code(self, request: CodingRequest) -> CodingResult: ...

    async def aclose(self) -> None: ...


# -- the shared auditing wrapper ---------------------------------------------

R = TypeVar("R", bound=LLMResult)
_LLM_ACTOR: Final = Actor("system", "llm-provider")


def text_digest(text: str) -> str:
    """SHA-256 of the UTF-8 text, hex: lets an auditor match a prompt without storing it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class AuditedProvider:
    """Audits every call of a backend; the only ``LLMProvider`` the agent builds.

    Entries (both inside the caller's correlation scope; a new scope is opened
    when there is none, so the pair always shares one ``correlation_id``):

    - before: ``copilot.sdk.review_request`` or ``copilot.sdk.coding_request``,
      target ``{resource_type: llm, project_id, mr_iid[, issue_key]}``, details
      ``provider, model, prompt_chars, prompt_sha256, system_prompt_sha256,
      timeout_s, llm_call_id``;
    - after: ``copilot.sdk.response_received`` with the outcome, the error class
      on failure (``timeout``, ``auth_failure``, ``rate_limit``, ...; a cancelled
      request is ``timeout`` with ``details.cancelled: true``), the
      duration, the HTTP status when there was one, and details ``model,
      prompt_tokens, completion_tokens, total_tokens, response_chars,
      response_sha256, finish_reason, model_calls, llm_call_id`` plus the
      backend's ``extra``; a coding answer adds ``patch_bytes`` and
      ``patch_sha256`` (the diff it proposes, never its text).

    .. versionadded:: 0.1.0
    """

    def __init__(self, backend: LLMBackend, audit: AuditLogger) -> None:
        self._backend = backend
        self._audit = audit

    def __repr__(self) -> str:
        b = self._backend
        return f"AuditedProvider({b.provider_name}, model={b.model!r})"

    @property
    def backend(self) -> LLMBackend:
        return self._backend

    @property
    def provider_name(self) -> str:
        return self._backend.provider_name

    @property
    def supports_coding(self) -> bool:
        return self._backend.supports_coding

    async def review(self, request: ReviewRequest) -> ReviewResult:
        target = _target(request.project_id, request.mr_iid)
        return await self._call(
            REVIEW_REQUEST,
            target,
            request.prompt,
            request.system_prompt,
            request.model,
            lambda: self._backend.review(request),
        )

    async def code(self, request: CodingRequest) -> CodingResult:
        if not self._backend.supports_coding:
            raise NotImplementedError(
                f"the {self._backend.provider_name} provider does not answer coding requests"
            )
        target = _target(request.project_id, request.mr_iid)
        if request.issue_key:
            target["issue_key"] = request.issue_key
        return await self._call(
            CODING_REQUEST,
            target,
            request.prompt,
            request.system_prompt,
            request.model,
            lambda: self._backend.code(request),
        )

    async def aclose(self) -> None:
        await self._backend.aclose()

    async def _call(
        self,
        action: str,
        target: dict[str, Any],
        prompt: str,
        system_prompt: str,
        model: str | None,
        send: Callable[[], Awaitable[R]],
    ) -> R:
        backend = self._backend
        model = model or backend.model
        scope: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext()
            if get_correlation_id() is not None
            else correlation_scope(_LLM_ACTOR)
        )
        with scope:
            call_id = str(uuid.uuid4())
            common = {"provider": backend.provider_name, "llm_call_id": call_id}
            self._audit.emit(
                action,
                target=target,
                details={
                    **common,
                    "model": model,
                    "prompt_chars": len(prompt),
                    "prompt_sha256": text_digest(prompt),
                    "system_prompt_chars": len(system_prompt),
                    "system_prompt_sha256": text_digest(system_prompt),
                    "timeout_s": backend.timeout_s,
                },
            )
            # audited(): the library's one way to audit a call, so a cancelled
            # or failed request gets its response entry, and a logger closed
            # meanwhile never replaces the caller's exception.
            async with self._audit.audited(
                RESPONSE_RECEIVED, target=target, details={**common, "model": model}
            ) as call:
                result = await send()
                call.details = {
                    **dict(result.extra),
                    **common,
                    "model": result.model,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "total_tokens": result.total_tokens,
                    "response_chars": len(result.text),
                    "response_sha256": text_digest(result.text),
                    "finish_reason": result.finish_reason,
                    "model_calls": result.model_calls,
                    **_patch_details(result),
                }
            return result


def _patch_details(result: LLMResult) -> dict[str, Any]:
    if not isinstance(result, CodingResult):
        return {}
    raw = result.patch.encode("utf-8", "surrogatepass")
    return {"patch_bytes": len(raw), "patch_sha256": hashlib.sha256(raw).hexdigest()}


def _target(project_id: int | None, mr_iid: int | None) -> dict[str, Any]:
    target: dict[str, Any] = {"resource_type": "llm"}
    if project_id is not None:
        target["project_id"] = project_id
    if mr_iid is not None:
        target["mr_iid"] = mr_iid
    return target
