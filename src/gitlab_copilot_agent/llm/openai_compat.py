"""OpenAI-compatible Chat Completions (OpenAI, GitHub Models, Azure OpenAI, Ollama, vLLM).

``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>``
(omitted when no key is configured, as Ollama needs none). Failures become
``LLMError`` subclasses that carry ``status_code`` or ``audit_error_class``, so
the audit wrapper records ``auth_failure``, ``rate_limit``, ``server_error``,
``timeout`` or ``network_error``. Their messages hold the endpoint's error
text with the API key scrubbed out, never the request.

Coding requests are chat completions too: the prompt gets the repository's
file list and the text of the files the instruction names
(``llm.coding.repository_context``), and the diff is taken from the answer
(``extract_patch``); the endpoint never touches the clone.

No retries here: a review is cheap to re-trigger (``/copilot review``) and a
silent retry would hide rate limits from the trail. The API key is kept in a
holder whose ``repr`` is redacted and is set per request, not on the client.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import httpx

from auditkeep.context import correlation_headers
from gitlab_copilot_agent.llm.base import (
    CodingRequest,
    CodingResult,
    LLMConnectionError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    ReviewRequest,
    ReviewResult,
)
from gitlab_copilot_agent.llm.coding import extract_patch, repository_context
from gitlab_copilot_agent.scrub import scrub_then_cut, without_userinfo

_MAX_ERROR_CHARS: Final = 300


class _Key:
    """Holds the API key; prints as ``[REDACTED]`` in reprs, tracebacks and debuggers."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def __repr__(self) -> str:
        return "[REDACTED]" if self._value else "None"

    __str__ = __repr__

    def reveal(self) -> str | None:
        return self._value


class OpenAICompatBackend:
    """Chat Completions over httpx.

    Args:
        base_url: e.g. ``https://models.github.ai/inference`` or ``http://localhost:11434/v1``.
        api_key: the Bearer key (None: no ``Authorization`` header).
        model: the default model.
        timeout_s: the whole-request timeout (connect is capped at 10 s).
        max_tokens, temperature: sampling parameters sent with each request.
        transport: an httpx transport (tests).

    .. versionadded:: 0.1.0
    """

    provider_name = "openai"
    supports_coding = True

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        *,
        timeout_s: float = 120.0,
        max_tokens: int = 2000,
        temperature: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.timeout_s: float | None = timeout_s
        self._base_url = base_url.rstrip("/")
        # What messages and reprs show: never the userinfo of the URL.
        self._shown_url = without_userinfo(self._base_url)
        self._key = _Key(api_key)
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatBackend(base_url={self._shown_url!r}, model={self.model!r})"

    async def review(self, request: ReviewRequest) -> ReviewResult:
        body = await self._complete(
            request.model or self.model, request.system_prompt, request.prompt
        )
        return ReviewResult(**_parse_completion(body, request.model or self.model))

    async def code(self, request: CodingRequest) -> CodingResult:
        model = request.model or self.model
        context = repository_context(Path(request.working_directory), request.prompt)
        body = await self._complete(
            model, request.system_prompt, f"{request.prompt}\n\n{context.text}"
        )
        fields = _parse_completion(body, model)
        fields["extra"].update(
            context_files_listed=context.files_listed,
            context_files_included=context.files_included,
            context_chars=len(context.text),
        )
        return CodingResult(**fields, patch=extract_patch(fields["text"]))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _complete(self, model: str, system_prompt: str, prompt: str) -> dict[str, Any]:
        headers = {"Accept": "application/json", **correlation_headers()}
        key = self._key.reveal()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload = {
            "model": model,
            "messages": [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": prompt},
            ],
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
            "stream": False,
        }
        url = f"{self._base_url}/chat/completions"
        try:
            # httpx timeouts are per operation; this bounds the whole request.
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.post(url, json=payload, headers=headers)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise LLMTimeoutError(
                f"no answer from {self._shown_url} within {self.timeout_s:g}s "
                f"({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            detail = scrub_then_cut(str(exc), _MAX_ERROR_CHARS, self._key.reveal())
            raise LLMConnectionError(
                f"cannot reach {self._shown_url}: {type(exc).__name__}: {detail}"
            ) from None
        if response.status_code >= 400:
            raise self._http_error(response)
        try:
            body = response.json()
        except ValueError:
            raise LLMResponseError(
                f"HTTP {response.status_code} with a body that is not JSON",
                status_code=response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise LLMResponseError("the completion is not a JSON object")
        return body

    def _http_error(self, response: httpx.Response) -> LLMHTTPError:
        status = response.status_code
        message: str = response.reason_phrase or "error"
        error_type: str | None = None
        try:
            body = response.json()
        except ValueError:
            text = response.text.strip()
            if text:
                message = text
        else:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                raw_type = error.get("type") or error.get("code")
                error_type = str(raw_type) if raw_type is not None else None
            elif isinstance(error, str):
                message = error
            elif isinstance(body, dict) and "message" in body:
                message = str(body["message"])
        message = scrub_then_cut(message, _MAX_ERROR_CHARS, self._key.reveal())
        return LLMHTTPError(
            f"HTTP {status} from the chat completions endpoint: {message}",
            status_code=status,
            error_type=error_type,
            retry_after=response.headers.get("retry-after"),
        )


def _parse_completion(body: dict[str, Any], requested_model: str) -> dict[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LLMResponseError("the completion has no choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise LLMResponseError("the completion's message content is not text")
    raw_usage = body.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    extra: dict[str, Any] = {}
    if isinstance(body.get("id"), str):
        extra["completion_id"] = body["id"]
    return {
        "text": content or "",
        "model": str(body.get("model") or requested_model),
        "prompt_tokens": _int_or_none(usage.get("prompt_tokens")),
        "completion_tokens": _int_or_none(usage.get("completion_tokens")),
        "finish_reason": choice.get("finish_reason")
        if isinstance(choice.get("finish_reason"), str)
        else None,
        "model_calls": 1,
        "extra": extra,
    }


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
