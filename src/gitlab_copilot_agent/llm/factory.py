"""``build_provider(settings, audit)``: the configured backend, always wrapped for auditing."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.llm.base import AuditedProvider, LLMBackend, LLMProvider
from gitlab_copilot_agent.llm.copilot_sdk import (
    SDK_DISTRIBUTION,
    SDK_VERSION,
    CopilotSDKBackend,
    sdk_client_factory,
)
from gitlab_copilot_agent.llm.offline import OfflineBackend
from gitlab_copilot_agent.llm.offline_coding import load_coding_script
from gitlab_copilot_agent.llm.openai_compat import OpenAICompatBackend
from gitlab_copilot_agent.settings import LLMSettings


def build_backend(settings: LLMSettings) -> LLMBackend:
    """The unaudited backend for ``LLM_PROVIDER`` (use ``build_provider`` in the agent).

    ``Settings.from_env`` has already refused what cannot work; the checks
    here guard callers that build ``LLMSettings`` themselves.

    Raises:
        ValueError: the configuration cannot work (the Copilot SDK extra is not
            installed, ``COPILOT_CLI_PATH`` is not an executable).
    """
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    if settings.provider == "offline":
        script = settings.offline_coding_script
        return OfflineBackend(coding_script=load_coding_script(script) if script else None)
    if settings.provider == "openai":
        if not settings.base_url:
            raise ValueError("LLM_PROVIDER=openai needs LLM_BASE_URL")
        return OpenAICompatBackend(
            settings.base_url,
            api_key,
            settings.model,
            timeout_s=settings.timeout_s,
        )
    # Fail at start, not at the first review: the extra and the CLI must be there.
    cli_path = settings.copilot_cli_path
    if cli_path is not None and not os.access(cli_path, os.X_OK):
        raise ValueError(f"COPILOT_CLI_PATH={cli_path} is not an executable file")
    if importlib.util.find_spec("copilot") is None:
        raise ValueError(
            "LLM_PROVIDER=copilot needs the Copilot SDK: "
            f"pip install 'gitlab-copilot-agent[copilot]' ({SDK_DISTRIBUTION}=={SDK_VERSION})"
        )
    github_token = settings.github_token.get_secret_value() if settings.github_token else None
    byok: dict[str, Any] | None = None
    if settings.base_url:
        # Bring your own key: the CLI calls this OpenAI-compatible endpoint itself.
        byok = {"type": "openai", "base_url": settings.base_url, "wire_api": "completions"}
        if api_key:
            byok["api_key"] = api_key
    return CopilotSDKBackend(
        model=settings.model,
        timeout_s=settings.timeout_s,
        client_factory=sdk_client_factory(cli_path=cli_path, github_token=github_token),
        byok=byok,
    )


def build_provider(settings: LLMSettings, audit: AuditLogger) -> LLMProvider:
    """The provider for ``LLM_PROVIDER``; every call it makes is audited.

    .. versionadded:: 0.1.0
    """
    return AuditedProvider(build_backend(settings), audit)
