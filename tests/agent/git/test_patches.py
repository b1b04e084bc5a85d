"""Patch validation against a real clone: every refusal reason from a crafted patch, none missed.

Each refusal leaves the repository exactly as it was (``git status`` clean, no
worktree left behind); a passing patch applies with ``apply_patch``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitlab_copilot_agent.git.errors import GitError
from gitlab_copilot_agent.git.patches import (
    DEFAULT_PROTECTED_PATHS,
    REASONS,
    PatchVerdict,
    apply_patch,
    patch_stats,
    validate_patch,
    working_tree_patch,
)

ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=ENV, input=stdin, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository with CI config, CODEOWNERS and two symbolic links."""
    root = tmp_path / "repo"
    outside = tmp_path / "outside"
    outside.mkdir()
    files = {
        "README.md": "# App\n",
        "src/app.py": "def main():\n    return 1\n",
        ".gitlab-ci.yml": "test:\n  script: make test\n",
        "CODEOWNERS": "* @owners\n",
        "docs/guide.md": "Guide\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "linked").symlink_to(outside)  # a directory link leading out of the repository
    (root / "alias.md").symlink_to("README.md")  # a file link inside it
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "init")
    return root


def new_file(name: str, lines: tuple[str, ...] = ("new",), mode: str = "100644") -> str:
    body = "".join(f"+{ln}\n" for ln in lines)
    return (
        f"diff --git a/{name} b/{name}\nnew file mode {mode}\n--- /dev/null\n+++ b/{name}\n"
        f"@@ -0,0 +1,{len(lines)} @@\n{body}"
    )


def edit(name: str, old: str, new: str) -> str:
    return (
        f"diff --git a/{name} b/{name}\n--- a/{name}\n+++ b/{name}\n@@ -1 +1 @@\n-{old}\n+{new}\n"
    )


VALID = (
    "diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/app.py\n"
    "@@ -1,2 +1,3 @@\n def main():\n-    return 1\n+    # the answer\n+    return 42\n"
)

CRAFTED: dict[str, list[tuple[str, str]]] = {
    "does_not_apply": [
        ("context", edit("README.md", "# Not the title", "# Title")),
        ("prose", "I changed the file as you asked.\n"),
        ("empty", ""),
        ("short hunk", VALID.replace("+    return 42\n", "")),
        ("missing file", edit("nope.md", "a", "b")),
    ],
    "path_outside_repo": [
        ("dotdot", new_file("../escape.txt")),
        ("deep dotdot", new_file("src/../../escape.txt")),
        ("absolute", "--- /dev/null\n+++ /etc/evil\n@@ -0,0 +1 @@\n+evil\n"),
        ("git dir", new_file(".git/hooks/post-checkout", ("#!/bin/sh",), "100755")),
        ("git dir any case", new_file(".GIT/config")),
        (
            "rename out",
            "diff --git a/docs/guide.md b/../guide.md\nsimilarity index 100%\n"
            "rename from docs/guide.md\nrename to ../guide.md\n",
        ),
        (
            "submodule",
            "diff --git a/vendor b/vendor\nnew file mode 160000\nindex 0000000..1111111\n"
            "--- /dev/null\n+++ b/vendor\n@@ -0,0 +1 @@\n"
            "+Subproject commit 1111111111111111111111111111111111111111\n",
        ),
    ],
    "symlink_escape": [
        ("through a dir link", new_file("linked/x.txt")),
        ("onto a file link", edit("alias.md", "README.md", "/etc/passwd")),
        ("new link", new_file("evil-link", ("/etc/passwd",), "120000")),
        (
            "mode change to link",
            "diff --git a/README.md b/README.md\nold mode 100644\nnew mode 120000\n",
        ),
    ],
    "protected_path": [
        ("ci config", edit(".gitlab-ci.yml", "test:", "deploy:")),
        ("ci include dir", new_file(".gitlab-ci/deploy.yml")),
        (
            "codeowners deleted",
            "diff --git a/CODEOWNERS b/CODEOWNERS\ndeleted file mode 100644\n--- a/CODEOWNERS\n"
            "+++ /dev/null\n@@ -1 +0,0 @@\n-* @owners\n",
        ),
        (
            "renamed onto codeowners",
            "diff --git a/docs/guide.md b/docs/CODEOWNERS\nsimilarity index 100%\n"
            "rename from docs/guide.md\nrename to docs/CODEOWNERS\n",
        ),
    ],
}
CASES = [(reason, name, patch) for reason, items in CRAFTED.items() for name, patch in items]


def validate(repo: Path, patch: str, **overrides: object) -> PatchVerdict:
    options: dict[str, object] = {
        "max_bytes": 100_000,
        "protected_paths": DEFAULT_PROTECTED_PATHS,
        "check_command": None,
        "check_timeout_s": 10.0,
        **overrides,
    }
    return asyncio.run(validate_patch(repo, patch, **options))  # type: ignore[arg-type]


def assert_untouched(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", "--ignored") == ""
    assert not (repo / ".git" / "worktrees").exists() or not any(
        (repo / ".git" / "worktrees").iterdir()
    )
    assert git(repo, "worktree", "list").count("\n") == 1


class TestVerdicts:
    def test_a_good_patch_passes_and_changes_nothing(self, repo: Path) -> None:
        verdict = validate(repo, VALID)
        assert (verdict.ok, verdict.reason, verdict.detail) == (True, None, None)
        assert verdict.paths == ("src/app.py",)
        assert verdict.stats == patch_stats(VALID)
        assert_untouched(repo)

    @pytest.mark.parametrize(
        ("reason", "name", "patch"), CASES, ids=[f"{r}-{n}" for r, n, _ in CASES]
    )
    def test_each_crafted_patch_is_refused_for_its_reason(
        self, repo: Path, reason: str, name: str, patch: str
    ) -> None:
        verdict = validate(repo, patch)
        assert (verdict.ok, verdict.reason) == (False, reason), verdict.detail
        assert verdict.detail
        assert_untouched(repo)

    def test_every_reason_has_a_crafted_patch(self) -> None:
        covered = set(CRAFTED) | {"too_large", "check_failed"}
        assert covered == set(REASONS)

    def test_too_large_is_decided_before_git_runs(self, repo: Path) -> None:
        verdict = validate(repo, VALID, max_bytes=len(VALID.encode()) - 1)
        assert (verdict.reason, verdict.detail) == (
            "too_large",
            f"{len(VALID.encode())} bytes; the limit is {len(VALID.encode()) - 1}",
        )
        assert validate(repo, VALID, max_bytes=len(VALID.encode())).ok

    def test_custom_protected_globs(self, repo: Path) -> None:
        globs = ("secrets/**", "*.pem", "src/**/*.key", "deploy/")
        for name, protected in [
            ("secrets/a/b.txt", True),
            ("key.pem", True),
            ("sub/key.pem", False),  # patterns are anchored at the repository root
            ("src/x/y/id.key", True),
            ("src/id.key", True),
            ("deploy/prod.yml", True),
            ("src/new.py", False),
        ]:
            verdict = validate(repo, new_file(name), protected_paths=globs)
            assert (verdict.reason == "protected_path") is protected, name


class TestCheckCommand:
    def test_it_runs_on_the_patched_tree_and_the_clone_stays_as_it_was(self, repo: Path) -> None:
        check = ["grep", "-q", "return 42", "src/app.py"]
        assert validate(repo, VALID, check_command=check).ok
        assert (repo / "src" / "app.py").read_text() == "def main():\n    return 1\n"
        assert_untouched(repo)

    @pytest.mark.parametrize(
        ("command", "detail"),
        [
            (
                [sys.executable, "-c", "print('3 tests failed'); raise SystemExit(3)"],
                "exit status 3",
            ),
            (["sleep", "30"], "no result within 1 s"),
            (["/nonexistent/check"], "cannot start the check command"),
        ],
        ids=["fails", "times-out", "cannot-start"],
    )
    def test_a_failing_check_refuses_the_patch(
        self, repo: Path, command: list[str], detail: str
    ) -> None:
        verdict = validate(repo, VALID, check_command=command, check_timeout_s=1.0)
        assert verdict.reason == "check_failed"
        assert verdict.detail is not None
        assert detail in verdict.detail
        assert_untouched(repo)

    def test_the_check_sees_no_credential_and_no_git_setting(
        self, repo: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GITLAB_TOKEN", "gt-check-must-not-see-this-0000")
        probe = (
            "import os, sys; bad = [k for k in os.environ if k.startswith('GIT') "
            "or 'TOKEN' in k]; print(bad); sys.exit(1 if bad else 0)"
        )
        verdict = validate(repo, VALID, check_command=[sys.executable, "-c", probe])
        assert verdict.ok, verdict.detail


class TestApply:
    def test_a_validated_patch_applies(self, repo: Path) -> None:
        asyncio.run(apply_patch(repo, VALID))
        assert (
            repo / "src" / "app.py"
        ).read_text() == "def main():\n    # the answer\n    return 42\n"

    @pytest.mark.parametrize(
        "patch",
        [new_file("../escape.txt"), new_file("linked/x.txt"), new_file(".git/x")],
        ids=["dotdot", "symlink", "git-dir"],
    )
    def test_an_escaping_patch_is_refused_even_without_validation(
        self, repo: Path, patch: str
    ) -> None:
        with pytest.raises(GitError) as raised:
            asyncio.run(apply_patch(repo, patch))
        assert raised.value.error_class == "validation_error"
        assert_untouched(repo)
        assert list((repo / "linked").iterdir()) == []

    def test_only_the_root_of_a_clone_is_a_target(self, repo: Path, tmp_path: Path) -> None:
        """A subdirectory or a plain directory is refused: git never climbs to an outer repo."""
        for target in (repo / "src", tmp_path):
            with pytest.raises(GitError, match="not the root of a git clone"):
                asyncio.run(apply_patch(target, VALID))
            with pytest.raises(GitError, match="not the root of a git clone"):
                validate(target, VALID)

    def test_a_patch_that_does_not_apply_is_a_git_error(self, repo: Path) -> None:
        with pytest.raises(GitError) as raised:
            asyncio.run(apply_patch(repo, edit("README.md", "# Other", "# Title")))
        assert raised.value.error_class == "git_error"


class TestStats:
    def test_counts_files_and_lines_and_ignores_header_lookalikes(self) -> None:
        patch = (
            "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n"
            "--- not a header\n+++ not a header either\n context\n" + new_file("b.txt", ("x", "y"))
        )
        stats = patch_stats(patch)
        assert (stats.files_changed, stats.lines_added, stats.lines_removed) == (2, 3, 1)
        assert stats.bytes == len(patch.encode())

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        edits=st.lists(
            st.tuples(
                st.sampled_from(["README.md", "src/app.py", "docs/guide.md", "new/file.txt"]),
                st.lists(st.text("abc xyz\t-+", max_size=12), max_size=6),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def test_agrees_with_git_numstat_on_real_diffs(
        self, repo: Path, edits: list[tuple[str, list[str]]]
    ) -> None:
        """Whatever git diff produces, our counts equal git apply --numstat's sums."""
        git(repo, "reset", "--quiet", "--hard")
        git(repo, "clean", "-fdq")
        for name, lines in edits:
            path = repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{ln}\n" for ln in lines))
        patch = asyncio.run(working_tree_patch(repo))
        git(repo, "reset", "--quiet", "--hard")
        git(repo, "clean", "-fdq")
        stats = patch_stats(patch)
        numstat = git(repo, "apply", "--numstat", stdin=patch) if patch else ""
        rows = [line.split("\t") for line in numstat.splitlines()]
        assert stats.files_changed == len(rows)
        assert stats.lines_added == sum(int(r[0]) for r in rows)
        assert stats.lines_removed == sum(int(r[1]) for r in rows)
        if patch:
            assert validate(repo, patch, protected_paths=()).ok
