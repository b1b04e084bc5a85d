"""A deterministic, network-free reviewer and coder for demos and tests.

Reviews: it reads the structured diff of a ``ReviewRequest`` and flags added
lines with a handful of rules (leftover TODO markers, over-long lines, debug
prints, ``shell=True``, ``eval``, hard-coded credentials). Same input, same
review, byte for byte.

Coding: the answer is a scripted diff (``coding_script``, or the JSON file of
``OFFLINE_LLM_CODING_SCRIPT``) or a small default one; see ``offline_coding``.

Token counts are estimates (4 characters per token) and say so in the audit entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gitlab_copilot_agent.llm.base import CodingRequest, CodingResult, ReviewRequest, ReviewResult
from gitlab_copilot_agent.llm.diff import iter_diff_lines
from gitlab_copilot_agent.llm.offline_coding import default_patch, scripted_patch

OFFLINE_MODEL: Final = "offline-rules-1"
MAX_LINE_CHARS: Final = 120

_TODO: Final = re.compile(r"\b(TODO|FIXME|XXX|HACK)\b")
_PY_PRINT: Final = re.compile(r"^\s*print\(")
_JS_LOG: Final = re.compile(r"\bconsole\.(log|debug)\(")
_SHELL_TRUE: Final = re.compile(r"\bshell\s*=\s*True\b")
_EVAL: Final = re.compile(r"(?<![\w.])(eval|exec)\(")
_CREDENTIAL: Final = re.compile(
    r"\b\w*(password|passwd|secret|api_?key|token)\w*[\"']?\s*[:=]\s*[\"'][^\"']{4,}[\"']",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule hit on an added line."""

    path: str
    line: int
    message: str


def _check(path: str, text: str) -> list[str]:
    messages = []
    marker = _TODO.search(text)
    if marker:
        messages.append(f"leftover `{marker.group(1)}` marker: track it in an issue instead")
    if len(text) > MAX_LINE_CHARS:
        messages.append(f"line is {len(text)} characters long (limit {MAX_LINE_CHARS})")
    if path.endswith(".py") and _PY_PRINT.search(text):
        messages.append("debug `print()` call: use logging or remove it")
    if path.endswith(".py") and _SHELL_TRUE.search(text):
        messages.append("`shell=True` runs the command through a shell: pass an argument list")
    if path.endswith(".py") and _EVAL.search(text):
        messages.append("`eval`/`exec` on dynamic input can run arbitrary code")
    if path.endswith((".js", ".jsx", ".ts", ".tsx")) and _JS_LOG.search(text):
        messages.append("`console.log` left in: remove it before merging")
    if _CREDENTIAL.search(text):
        messages.append("looks like a hard-coded credential: load it from configuration")
    return messages


def find_issues(request: ReviewRequest) -> list[Finding]:
    """Every rule hit on the added lines of the request's diff, in diff order."""
    findings = []
    for file in request.files:
        if file.deleted_file:
            continue
        for line in iter_diff_lines(file.diff):
            if line.kind != "added" or line.new_line is None:
                continue
            for message in _check(file.path, line.text):
                findings.append(Finding(file.path, line.new_line, message))
    return findings


def render_review(request: ReviewRequest, findings: list[Finding]) -> str:
    """The review text, in the format the workflow parses (``- `path:line` — message``)."""
    added = sum(1 for f in request.files for ln in iter_diff_lines(f.diff) if ln.kind == "added")
    lines = [
        "### Automated review (offline rules)",
        "",
        f"Reviewed {len(request.files)} file(s) with {added} added line(s); "
        f"found {len(findings)} issue(s).",
    ]
    if findings:
        lines += ["", "Findings:"]
        lines += [f"- `{f.path}:{f.line}` — {f.message}" for f in findings]
    else:
        lines += ["", "No issues found by the offline rules."]
    return "\n".join(lines) + "\n"


def _estimate_tokens(*texts: str) -> int:
    return max(1, sum(len(t) for t in texts) // 4)


class OfflineBackend:
    """Reviews diffs with fixed rules; answers coding requests with scripted or default diffs.

    Args:
        model: the model name the audit entries show.
        coding_script: instruction substring → patch text (first match wins,
            ``""`` matches everything); see ``offline_coding``.

    .. versionadded:: 0.1.0
    """

    provider_name = "offline"
    supports_coding = True
    timeout_s: float | None = None

    def __init__(
        self, model: str = OFFLINE_MODEL, *, coding_script: Mapping[str, str] | None = None
    ) -> None:
        self.model = model
        self._script = dict(coding_script or {})

    def __repr__(self) -> str:
        return f"OfflineBackend(model={self.model!r})"

    async def review(self, request: ReviewRequest) -> ReviewResult:
        findings = find_issues(request)
        text = render_review(request, findings)
        return ReviewResult(
            text=text,
            model=self.model,
            prompt_tokens=_estimate_tokens(request.system_prompt, request.prompt),
            completion_tokens=_estimate_tokens(text),
            finish_reason="stop",
            model_calls=1,
            extra={"token_counts": "estimated", "findings": len(findings)},
        )

    async def code(self, request: CodingRequest) -> CodingResult:
        patch = scripted_patch(self._script, request.prompt)
        source = "scripted"
        if patch is None:
            patch = default_patch(Path(request.working_directory), request.prompt)
            source = "default"
        text = f"Offline coding answer ({source}).\n\n```diff\n{patch}```\n"
        return CodingResult(
            text=text,
            model=self.model,
            prompt_tokens=_estimate_tokens(request.system_prompt, request.prompt),
            completion_tokens=_estimate_tokens(text),
            finish_reason="stop",
            model_calls=1,
            extra={"token_counts": "estimated", "answer": source},
            patch=patch,
        )

    async def aclose(self) -> None:
        return None
