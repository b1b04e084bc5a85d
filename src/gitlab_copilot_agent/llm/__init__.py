"""LLM providers: offline rules, OpenAI-compatible HTTP, GitHub Copilot SDK; all audited.

Use ``build_provider(settings, audit)``; see ``llm.base`` for the contract and
the shared auditing wrapper.
"""

from __future__ import annotations

from gitlab_copilot_agent.llm.base import (
    CODING_REQUEST,
    RESPONSE_RECEIVED,
    REVIEW_REQUEST,
    AuditedProvider,
    CodingRequest,
    CodingResult,
    DiffFile,
    LLMBackend,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMProvider,
    LLMResponseError,
    LLMResult,
    LLMSessionError,
    LLMTimeoutError,
    ReviewRequest,
    ReviewResult,
)
from gitlab_copilot_agent.llm.factory import build_backend, build_provider

__all__ = [
    "CODING_REQUEST",
    "RESPONSE_RECEIVED",
    "REVIEW_REQUEST",
    "AuditedProvider",
    "CodingRequest",
    "CodingResult",
    "DiffFile",
    "LLMBackend",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMProvider",
    "LLMResponseError",
    "LLMResult",
    "LLMSessionError",
    "LLMTimeoutError",
    "ReviewRequest",
    "ReviewResult",
    "build_backend",
    "build_provider",
]
