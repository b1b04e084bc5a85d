"""Coding answers: every provider returns a diff through the audit wrapper; offline is scripted.

The offline answers are checked against a real clone with the real validator:
the default diff validates and applies; a scripted diff produces each
validation refusal. The OpenAI-compatible backend is driven over a real
socket against the LLM stand-in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent_standins.llm import LLMStandin, Messages
from agent_standins.servers import run_in_thread
from auditkeep.logger import AuditLogger
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import capture_events, validate_entries
from gitlab_copilot_agent.git.patches import (
    DEFAULT_PROTECTED_PATHS,
    PatchVerdict,
    apply_patch,
    validate_patch,
)
from gitlab_copilot_agent.llm import (
    CODING_REQUEST,
    RESPONSE_RECEIVED,
    AuditedProvider,
    CodingRequest,
    CodingResult,
    build_provider,
)
from gitlab_copilot_agent.llm.coding import extract_patch, repository_context
from gitlab_copilot_agent.llm.offline import OfflineBackend
from gitlab_copilot_agent.llm.openai_compat import OpenAICompatBackend
from gitlab_copilot_agent.settings import Settings, SettingsError

API_KEY = "sk-coding-test-key-7c2e9b1d3f5a"
BASE_ENV = {
    "GITLAB_URL": "https://gitlab.example.com",
    "GITLAB_TOKEN": "glpat-coding-test-0000",
    "GITLAB_WEBHOOK_SECRET": "coding-test-secret",
}
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def clone_with(root: Path, files: dict[str, str]) -> Path:
    """A committed repository holding ``files`` (a stand-in for the task's clone)."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q"], ["add", "--all"], ["commit", "-q", "--allow-empty", "-m", "i"]):
        subprocess.run(["git", *args], cwd=root, env=GIT_ENV, check=True, capture_output=True)
    return root


def code(provider: AuditedProvider | Any, prompt: str, workdir: Path) -> CodingResult:
    async def main() -> CodingResult:
        try:
            result: CodingResult = await provider.code(
                CodingRequest(prompt=prompt, working_directory=str(workdir), project_id=1, mr_iid=2)
            )
            return result
        finally:
            await provider.aclose()

    return asyncio.run(main())


def check(repo: Path, patch: str, **overrides: Any) -> PatchVerdict:
    options: dict[str, Any] = {
        "max_bytes": 10_000,
        "protected_paths": DEFAULT_PROTECTED_PATHS,
        "check_command": None,
        "check_timeout_s": 5.0,
        **overrides,
    }
    return asyncio.run(validate_patch(repo, patch, **options))


@pytest.fixture
def captured() -> Iterator[tuple[AuditLogger, InMemorySink]]:
    with capture_events(service="gitlab-copilot-agent") as pair:
        yield pair


def coding_pair(audit: AuditLogger, sink: InMemorySink) -> tuple[dict[str, Any], dict[str, Any]]:
    assert audit.flush(5.0)
    entries = [e for e in validate_entries(sink.lines) if e["action"].startswith("copilot.sdk.")]
    assert [e["action"] for e in entries] == [CODING_REQUEST, RESPONSE_RECEIVED]
    request, response = entries
    assert request["correlation_id"] == response["correlation_id"]
    assert response["outcome"] == "success"
    return request, response


class TestOfflineDefault:
    @pytest.mark.parametrize(
        ("readme", "expected"),
        [
            ("# App\n\nText.\n", "# App\n\nText.\n- add a changelog line\n"),
            ("# App\n\nNo newline", "# App\n\nNo newline\n- add a changelog line\n"),
            ("", "- add a changelog line\n"),
            (None, "- add a changelog line\n"),
        ],
        ids=["newline", "no-newline", "empty", "missing"],
    )
    def test_appends_a_line_to_the_readme_that_validates_and_applies(
        self, tmp_path: Path, readme: str | None, expected: str
    ) -> None:
        repo = clone_with(tmp_path / "repo", {} if readme is None else {"README.md": readme})
        result = code(AuditedProvider(OfflineBackend(), _discard()), "add a changelog line", repo)
        verdict = check(repo, result.patch)
        assert verdict.ok, verdict.detail
        asyncio.run(apply_patch(repo, result.patch))
        assert (repo / "README.md").read_text() == expected

    @pytest.mark.parametrize(
        ("prompt", "created"),
        [
            ("please create `notes/todo.md` with a list", "notes/todo.md"),
            ("add a file named CHANGES.txt for the release", "CHANGES.txt"),
        ],
    )
    def test_creates_the_file_the_instruction_names(
        self, tmp_path: Path, prompt: str, created: str
    ) -> None:
        repo = clone_with(tmp_path / "repo", {"README.md": "# App\n"})
        result = code(AuditedProvider(OfflineBackend(), _discard()), prompt, repo)
        assert check(repo, result.patch).ok
        asyncio.run(apply_patch(repo, result.patch))
        assert (repo / created).read_text() == f"Created for: {prompt}\n"
        assert (repo / "README.md").read_text() == "# App\n"

    def test_never_reads_through_a_symlinked_readme(self, tmp_path: Path) -> None:
        secret = tmp_path / "outside.txt"
        secret.write_text("OUTSIDE-CONTENT\n")
        repo = clone_with(tmp_path / "repo", {"a.txt": "a\n"})
        (repo / "README.md").symlink_to(secret)
        result = code(AuditedProvider(OfflineBackend(), _discard()), "note it", repo)
        assert "OUTSIDE-CONTENT" not in result.patch
        assert "+++ b/CHANGES-BY-AGENT.md" in result.patch


SCRIPT = {
    "ci": "diff --git a/.gitlab-ci.yml b/.gitlab-ci.yml\n--- a/.gitlab-ci.yml\n"
    "+++ b/.gitlab-ci.yml\n@@ -1 +1 @@\n-test: {}\n+deploy: {}\n",
    "escape": "diff --git a/../x b/../x\nnew file mode 100644\n--- /dev/null\n+++ b/../x\n"
    "@@ -0,0 +1 @@\n+x\n",
    "link": "diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n"
    "+/etc/passwd\n",
    "stale": "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    "@@ -1 +1 @@\n-# Other\n+# New\n",
    "": "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
    "@@ -1 +1 @@\n-# App\n+# Fixed app\n",
}


class TestOfflineScripted:
    @pytest.mark.parametrize(
        ("prompt", "reason", "overrides"),
        [
            ("edit the ci", "protected_path", {}),
            ("escape please", "path_outside_repo", {}),
            ("add a link", "symlink_escape", {}),
            ("stale context", "does_not_apply", {}),
            ("anything", "too_large", {"max_bytes": 20}),
            ("anything", "check_failed", {"check_command": ["false"]}),
        ],
    )
    def test_a_scripted_answer_produces_each_refusal(
        self,
        tmp_path: Path,
        captured: tuple[AuditLogger, InMemorySink],
        prompt: str,
        reason: str,
        overrides: dict[str, Any],
    ) -> None:
        audit, sink = captured
        repo = clone_with(
            tmp_path / "repo", {"README.md": "# App\n", ".gitlab-ci.yml": "test: {}\n"}
        )
        result = code(AuditedProvider(OfflineBackend(coding_script=SCRIPT), audit), prompt, repo)
        verdict = check(repo, result.patch, **overrides)
        assert (verdict.ok, verdict.reason) == (False, reason)
        _, response = coding_pair(audit, sink)
        assert response["details"]["answer"] == "scripted"
        assert (
            response["details"]["patch_sha256"] == hashlib.sha256(result.patch.encode()).hexdigest()
        )

    def test_the_first_matching_key_wins_and_empty_matches_all(self, tmp_path: Path) -> None:
        backend = OfflineBackend(coding_script={"a": "A\n", "ab": "AB\n", "": "ANY\n"})
        repo = clone_with(tmp_path / "repo", {"README.md": "# App\n"})
        assert code(AuditedProvider(backend, _discard()), "xabx", repo).patch == "A\n"
        assert code(AuditedProvider(backend, _discard()), "zzz", repo).patch == "ANY\n"
        assert code(AuditedProvider(backend, _discard()), "", repo).patch == "ANY\n"

    def test_the_script_file_from_the_environment_reaches_the_provider(
        self, tmp_path: Path, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        audit, sink = captured
        script = tmp_path / "script.json"
        script.write_bytes(orjson.dumps(SCRIPT))
        settings = Settings.from_env({**BASE_ENV, "OFFLINE_LLM_CODING_SCRIPT": str(script)})
        assert settings.llm.offline_coding_script == script
        assert f"coding:       scripted by {script}" in settings.summary()
        repo = clone_with(tmp_path / "repo", {"README.md": "# App\n"})
        result = code(build_provider(settings.llm, audit), "fix the title", repo)
        assert result.patch == SCRIPT[""]
        assert check(repo, result.patch).ok
        request, _ = coding_pair(audit, sink)
        assert request["details"]["provider"] == "offline"

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            (None, "cannot read"),
            (b"not json", "is not a JSON file"),
            (b'["a list"]', "must hold a JSON object"),
            (b'{"key": 1}', "must hold a JSON object"),
        ],
    )
    def test_a_bad_script_fails_at_start_naming_the_variable(
        self, tmp_path: Path, content: bytes | None, problem: str
    ) -> None:
        script = tmp_path / "script.json"
        if content is not None:
            script.write_bytes(content)
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**BASE_ENV, "OFFLINE_LLM_CODING_SCRIPT": str(script)})
        text = str(raised.value)
        assert text.startswith("OFFLINE_LLM_CODING_SCRIPT: ")
        assert problem in text
        assert "\n" not in text

    def test_a_script_with_another_provider_is_refused(self, tmp_path: Path) -> None:
        script = tmp_path / "script.json"
        script.write_bytes(b"{}")
        env = {
            **BASE_ENV,
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": "https://models.example/v1",
            "OFFLINE_LLM_CODING_SCRIPT": str(script),
        }
        with pytest.raises(SettingsError, match="OFFLINE_LLM_CODING_SCRIPT: is only used when"):
            Settings.from_env(env)
        with pytest.raises(SettingsError, match="is not a regular file"):
            Settings.from_env({**BASE_ENV, "OFFLINE_LLM_CODING_SCRIPT": str(tmp_path)})


DIFF = (
    "diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/app.py\n"
    "@@ -1 +1 @@\n-VALUE = 1\n+VALUE = 2\n"
)


def answer_with_diff(messages: Messages) -> str:
    return f"Set VALUE to 2.\n\n```diff\n{DIFF}```\n"


class TestOpenAICompatCoding:
    def test_the_answer_diff_comes_back_audited_with_the_repository_in_the_prompt(
        self, tmp_path: Path, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        audit, sink = captured
        outside = tmp_path / "outside.txt"
        outside.write_text("OUTSIDE-SECRET\n")
        repo = clone_with(tmp_path / "repo", {"src/app.py": "VALUE = 1\n", "README.md": "# A\n"})
        (repo / "src" / "link.txt").symlink_to(outside)
        standin = LLMStandin(api_key=API_KEY, responder=answer_with_diff)
        with run_in_thread(standin.app) as server:
            backend = OpenAICompatBackend(f"{server.url}/v1", API_KEY, "m", timeout_s=10)
            prompt = "Set VALUE in src/app.py to 2 (see src/link.txt)"
            result = code(AuditedProvider(backend, audit), prompt, repo)
        assert result.patch == DIFF
        assert check(repo, result.patch).ok
        (completion,) = standin.completions()
        sent = completion["request"]["messages"][-1]["content"]
        assert sent.startswith(prompt)
        assert "Repository files (3):" in sent
        assert "File `src/app.py`:\n```\nVALUE = 1\n```" in sent
        assert "OUTSIDE-SECRET" not in sent  # a symlink is listed, never read
        request, response = coding_pair(audit, sink)
        assert request["target"] == {"resource_type": "llm", "project_id": 1, "mr_iid": 2}
        assert response["details"]["context_files_included"] == 1
        assert response["details"]["patch_bytes"] == len(DIFF.encode())
        assert API_KEY.encode() not in b"".join(sink.lines)


class TestExtractPatch:
    @pytest.mark.parametrize(
        ("answer", "expected"),
        [
            (f"Done.\n```diff\n{DIFF}```\nBye", DIFF),
            (f"```patch\n{DIFF}```", DIFF),
            (f"Summary first.\n{DIFF}", DIFF),
            (DIFF.rstrip("\n"), DIFF),
            (
                "--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+x\n",
                "--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+x\n",
            ),
            ("I could not do it.", ""),
            ("```python\nprint(1)\n```", ""),
        ],
    )
    def test_cases(self, answer: str, expected: str) -> None:
        assert extract_patch(answer) == expected

    def test_context_is_bounded(self, tmp_path: Path) -> None:
        repo = clone_with(tmp_path / "repo", {f"f{i}.txt": "x\n" for i in range(450)})
        (repo / "big.txt").write_text("y" * 40_000)
        context = repository_context(repo, "look at big.txt and f1.txt")
        assert context.files_listed == 400
        assert "Repository files (451, the first 400):" in context.text
        assert context.files_included == 1  # big.txt is over the per-file limit
        assert ".git" not in context.text


def _discard() -> AuditLogger:
    """A disabled logger for tests that look at the answer only."""
    return AuditLogger(InMemorySink(), service="svc", spool_dir="/nonexistent", enabled=False)
