"""The GitHub Copilot SDK backend (``github-copilot-sdk``, the ``copilot`` extra, pinned).

The SDK runs the Copilot CLI as a child process and talks JSON-RPC to it; the
model's HTTP calls happen inside that process, invisible to Python. What this
backend can see, and what the audit wrapper records, comes from session events:

- ``assistant.usage`` (once per model API call): tokens are summed, calls counted;
- ``assistant.message``: the answer (its size and hash are audited, not its text);
- ``session.error``: the error type and status, mapped to an error class;
- ``send_and_wait`` raising ``TimeoutError``: a ``timeout`` failure (the turn is aborted).

Isolation: the CLI gets a minimal environment (``PATH``, ``HOME``, locale, proxy
and CA settings, ``COPILOT_SKIP_CLI_DOWNLOAD=1``) and never the agent's GitLab,
Jira or LLM secrets; the GitHub token reaches it through the SDK's own
``github_token`` option. Review sessions run in an empty scratch directory and
every tool permission is refused. Coding sessions run in a scratch copy of the
clone and may read and write inside it, never in its ``.git`` and nothing
else (no shell, no URLs, no MCP); the answer's patch is the copy's working
tree diff (or, when the session changed no file, the diff in its answer), so
the clone itself only changes through the task's validated ``apply_patch``.

The SDK is imported lazily, on the first request: the agent starts (and the
other providers work) without the extra installed. Tests replace the client
through ``client_factory`` with an object speaking the same session protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from gitlab_copilot_agent.git.errors import GitError
from gitlab_copilot_agent.git.patches import working_tree_patch
from gitlab_copilot_agent.llm.base import (
    CodingRequest,
    CodingResult,
    LLMError,
    LLMResponseError,
    LLMResult,
    LLMSessionError,
    LLMTimeoutError,
    ReviewRequest,
    ReviewResult,
)
from gitlab_copilot_agent.llm.coding import extract_patch

SDK_DISTRIBUTION: Final = "github-copilot-sdk"
SDK_VERSION: Final = "1.0.27"

# Variables the CLI may need to run and reach GitHub; everything else is withheld.
_PASSTHROUGH_ENV: Final = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "XDG_CACHE_HOME",
)


class CopilotSessionLike(Protocol):
    """The part of ``copilot.CopilotSession`` this backend uses."""

    @property
    def session_id(self) -> str: ...

    def on(self, handler: Callable[[Any], None]) -> Callable[[], None]: ...

    async def send_and_wait(self, prompt: str, *, timeout: float = ...) -> Any: ...

    async def abort(self) -> None: ...

    async def disconnect(self) -> None: ...


class CopilotClientLike(Protocol):
    """The part of ``copilot.CopilotClient`` this backend uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def get_auth_status(self) -> Any: ...

    async def create_session(self, **options: Any) -> Any: ...


ClientFactory = Callable[[], CopilotClientLike]


def child_env(
    cli_path: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The Copilot CLI's whole environment: an allow-list, never the agent's secrets."""
    source = os.environ if environ is None else environ
    env = {k: source[k] for k in _PASSTHROUGH_ENV if source.get(k)}
    env.setdefault("PATH", os.defpath)
    env["COPILOT_SKIP_CLI_DOWNLOAD"] = "1"
    if cli_path:
        env["COPILOT_CLI_PATH"] = cli_path
    return env


def sdk_client_factory(
    *,
    cli_path: str | None,
    github_token: str | None,
    environ: Mapping[str, str] | None = None,
    log_level: str = "error",
) -> ClientFactory:
    """A factory building a real ``copilot.CopilotClient`` (imported on first call).

    Raises (when called):
        ImportError: with install instructions, when the extra is missing.
    """

    def build() -> CopilotClientLike:
        try:
            sdk = importlib.import_module("copilot")
        except ImportError as exc:
            raise ImportError(
                f"LLM_PROVIDER=copilot needs the Copilot SDK: "
                f"pip install 'gitlab-copilot-agent[copilot]' ({SDK_DISTRIBUTION}=={SDK_VERSION})"
            ) from exc
        connection = sdk.RuntimeConnection.for_stdio(path=cli_path)
        connection.env = child_env(cli_path, environ)
        client: CopilotClientLike = sdk.CopilotClient(
            connection=connection,
            github_token=github_token,
            use_logged_in_user=False if github_token else None,
            log_level=log_level,
        )
        return client

    return build


@dataclass
class _Collector:
    """Accumulates what one request's session events say (called on the SDK's thread/loop)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_events: int = 0
    models: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    cost: float = 0.0
    last_message: str | None = None
    message_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_status: int | None = None
    tool_calls: int = 0

    def __call__(self, event: Any) -> None:
        kind = _event_type(event)
        data = getattr(event, "data", None)
        if data is None:
            return
        if kind == "assistant.usage":
            self.usage_events += 1
            self.prompt_tokens += _int(getattr(data, "input_tokens", None))
            self.completion_tokens += _int(getattr(data, "output_tokens", None))
            model = getattr(data, "model", None)
            if isinstance(model, str) and model not in self.models:
                self.models.append(model)
            reason = getattr(data, "finish_reason", None)
            if isinstance(reason, str):
                self.finish_reason = reason
            cost = getattr(data, "cost", None)
            if isinstance(cost, int | float):
                self.cost += float(cost)
        elif kind == "assistant.message" and not getattr(event, "agent_id", None):
            content = getattr(data, "content", None)
            if isinstance(content, str):
                self.last_message = content
            message_id = getattr(data, "message_id", None)
            self.message_id = message_id if isinstance(message_id, str) else self.message_id
        elif kind == "session.error":
            self.error_type = _str(getattr(data, "error_type", None))
            self.error_message = _str(getattr(data, "message", None))
            status = getattr(data, "status_code", None)
            self.error_status = status if isinstance(status, int) else None
        elif kind == "tool.execution_complete":
            self.tool_calls += 1


def _event_type(event: Any) -> str | None:
    kind = getattr(event, "type", None)
    value = getattr(kind, "value", kind)
    return value if isinstance(value, str) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _error_class(error_type: str | None, status: int | None) -> str | None:
    if status is not None:
        return None  # classify_exception maps the status itself
    kind = (error_type or "").lower()
    if "auth" in kind or "unauthor" in kind or "forbidden" in kind:
        return "auth_failure"
    if "rate" in kind or "quota" in kind:
        return "rate_limit"
    if "timeout" in kind:
        return "timeout"
    if "network" in kind or "connect" in kind:
        return "network_error"
    return "server_error"


def _decisions() -> Any:
    # The SDK's generated wire types (imported lazily: the extra is optional).
    return importlib.import_module("copilot.generated.rpc")


def _reject(feedback: str) -> Any:
    return _decisions().PermissionDecisionReject(feedback=feedback)


def _review_permissions(request: Any, invocation: Any) -> Any:
    """Review sessions only read the prompt: every tool request is refused."""
    return _reject("this is a read-only review session; no tools are allowed")


def _coding_permissions(workdir: Path) -> Callable[[Any, Any], Any]:
    """Coding sessions may read and write inside ``workdir`` (not its ``.git``); nothing else."""
    root = workdir.resolve()

    def decide(request: Any, invocation: Any) -> Any:
        kind = getattr(request, "kind", None)
        if kind in ("read", "write"):
            name = getattr(request, "file_name", None) or getattr(request, "path", None)
            if isinstance(name, str):
                target = (root / name).resolve()
                inside = target == root or root in target.parents
                if inside and ".git" not in target.relative_to(root).parts:
                    return _decisions().PermissionDecisionApproveOnce()
        return _reject(f"{kind} is not allowed: only file reads/writes in the working directory")

    return decide


class CopilotSDKBackend:
    """Reviews and coding through a Copilot CLI session.

    Args:
        model: the model to request (e.g. ``gpt-5``); BYOK requires it.
        timeout_s: how long ``send_and_wait`` may wait for one request.
        client_factory: builds the SDK client (default: ``sdk_client_factory``);
            tests inject a fake speaking the session protocol.
        byok: an SDK ``ProviderConfig`` (``type``, ``base_url``, ``api_key``) to
            use your own OpenAI-compatible endpoint instead of Copilot's models.

    .. versionadded:: 0.1.0
    """

    provider_name = "copilot"
    supports_coding = True

    def __init__(
        self,
        *,
        model: str,
        timeout_s: float = 120.0,
        client_factory: ClientFactory,
        byok: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.timeout_s: float | None = timeout_s
        self._factory = client_factory
        self._byok = dict(byok) if byok else None
        self._client: CopilotClientLike | None = None
        self._lock = asyncio.Lock()
        self._scratch: str | None = None

    def __repr__(self) -> str:
        mode = "byok" if self._byok else "copilot"
        return f"CopilotSDKBackend(model={self.model!r}, mode={mode})"

    async def review(self, request: ReviewRequest) -> ReviewResult:
        fields = await self._run(
            request.prompt,
            model=request.model or self.model,
            system_prompt=request.system_prompt,
            working_directory=self._scratch_dir(),
            permissions=_review_permissions,
        )
        return ReviewResult(**fields)

    async def code(self, request: CodingRequest) -> CodingResult:
        source = Path(request.working_directory)
        scratch = Path(tempfile.mkdtemp(prefix="copilot-coding-"))
        copy = scratch / "repo"
        try:
            await asyncio.to_thread(shutil.copytree, source, copy, symlinks=True)
            fields = await self._run(
                request.prompt,
                model=request.model or self.model,
                system_prompt=request.system_prompt,
                working_directory=str(copy),
                permissions=_coding_permissions(copy),
            )
            try:
                patch = await working_tree_patch(copy)
            except GitError as exc:
                raise LLMResponseError(f"cannot read the session's changes: {exc.reason}") from None
            fields["extra"]["patch_source"] = "working_tree" if patch else "answer"
            return CodingResult(**fields, patch=patch or extract_patch(fields["text"]))
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _scratch_dir(self) -> str:
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="copilot-review-")
        return self._scratch

    async def _ensure_client(self) -> CopilotClientLike:
        async with self._lock:
            if self._client is not None:
                return self._client
            client = self._factory()
            try:
                await client.start()
                if self._byok is None:
                    status = await client.get_auth_status()
                    if not getattr(status, "isAuthenticated", False):
                        raise LLMSessionError(
                            "the Copilot CLI is not authenticated: set GITHUB_TOKEN "
                            "(a gho_/ghu_/github_pat_ token with Copilot access)",
                            error_type="authentication",
                            error_class="auth_failure",
                        )
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.stop()
                raise
            self._client = client
            return client

    async def _run(
        self,
        prompt: str,
        *,
        model: str,
        system_prompt: str,
        working_directory: str,
        permissions: Callable[[Any, Any], Any],
    ) -> dict[str, Any]:
        client = await self._ensure_client()
        options: dict[str, Any] = {
            "on_permission_request": permissions,
            "model": model,
            "system_message": {"mode": "append", "content": system_prompt},
            "working_directory": working_directory,
        }
        if self._byok is not None:
            options["provider"] = self._byok
        session: CopilotSessionLike = await client.create_session(**options)
        collector = _Collector()
        unsubscribe = session.on(collector)
        timeout_s = self.timeout_s or 120.0
        try:
            try:
                final = await session.send_and_wait(prompt, timeout=timeout_s)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await session.abort()
                raise LLMTimeoutError(
                    f"the Copilot session gave no answer within {timeout_s:g}s"
                ) from None
            except LLMError:
                raise
            except Exception as exc:
                if collector.error_type is not None or collector.error_message is not None:
                    raise LLMSessionError(
                        f"Copilot session error ({collector.error_type}): "
                        f"{collector.error_message}",
                        error_type=collector.error_type,
                        status_code=collector.error_status,
                        error_class=_error_class(collector.error_type, collector.error_status),
                    ) from exc
                raise
        finally:
            unsubscribe()
            with contextlib.suppress(Exception):
                await session.disconnect()
        data = getattr(final, "data", None)
        content = getattr(data, "content", None)
        text = content if isinstance(content, str) else (collector.last_message or "")
        message_id = _str(getattr(data, "message_id", None)) or collector.message_id
        extra: dict[str, Any] = {
            "copilot_session": _str(getattr(session, "session_id", None)),
            "message_id": message_id,
            "mode": "byok" if self._byok else "copilot",
            "models": list(collector.models),
            "premium_requests": collector.cost,
            "tool_calls": collector.tool_calls,
        }
        usage_seen = collector.usage_events > 0
        return {
            "text": text,
            "model": collector.models[-1] if collector.models else model,
            "prompt_tokens": collector.prompt_tokens if usage_seen else None,
            "completion_tokens": collector.completion_tokens if usage_seen else None,
            "finish_reason": collector.finish_reason,
            "model_calls": collector.usage_events,
            "extra": extra,
        }


__all__ = [
    "SDK_VERSION",
    "CopilotClientLike",
    "CopilotSDKBackend",
    "CopilotSessionLike",
    "LLMResult",
    "child_env",
    "sdk_client_factory",
]
