"""Decide whether a patch from the model may touch the repository, then apply it.

``validate_patch`` checks, in this order, and stops at the first refusal:

1. ``too_large``: more UTF-8 bytes than ``max_bytes`` (before any git runs);
2. ``does_not_apply``: not UTF-8, no file in it, or git cannot read it
   (``git apply --numstat``), or git reads a path its headers do not name;
3. ``path_outside_repo``: an absolute name, a ``..`` component, anything in
   ``.git`` (any case), or a submodule entry (mode 160000);
4. ``symlink_escape``: the patch creates or edits a symbolic link (mode
   120000), or a path, or one of its parents, is a symbolic link in the
   working tree (checked with ``lstat``, so a link is never followed), or the
   path resolves outside the repository;
5. ``protected_path``: a path (old or new name, so renames and deletions
   count) matches a protected glob (``*`` within a segment, ``**`` across
   segments, anchored at the repository root);
6. ``does_not_apply``: ``git apply --check`` refuses it;
7. ``check_failed``: the optional check command (an argv list, no shell),
   run in a temporary worktree of HEAD with the patch applied, with its own
   deadline and an environment that holds no credential, exits non-zero, is
   killed at the deadline, or cannot start.

The repository is never changed by ``validate_patch``; ``apply_patch``
changes it (after re-checking the paths) and is meant for a patch that passed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gitlab_copilot_agent.git import process
from gitlab_copilot_agent.git.diffparse import ParsedPatch, PatchStats, parse_patch, patch_stats
from gitlab_copilot_agent.git.errors import GIT_ERROR, VALIDATION_ERROR, GitError
from gitlab_copilot_agent.scrub import scrub

__all__ = [
    "DEFAULT_PROTECTED_PATHS",
    "REASONS",
    "PatchStats",
    "PatchVerdict",
    "apply_patch",
    "patch_stats",
    "validate_patch",
    "working_tree_patch",
]

DEFAULT_PROTECTED_PATHS: Final = (
    ".gitlab-ci.yml",
    ".gitlab-ci/**",
    "CODEOWNERS",
    ".gitlab/CODEOWNERS",
    "docs/CODEOWNERS",
)
DOES_NOT_APPLY: Final = "does_not_apply"
PATH_OUTSIDE_REPO: Final = "path_outside_repo"
SYMLINK_ESCAPE: Final = "symlink_escape"
PROTECTED_PATH: Final = "protected_path"
TOO_LARGE: Final = "too_large"
CHECK_FAILED: Final = "check_failed"
REASONS: Final = (
    DOES_NOT_APPLY,
    PATH_OUTSIDE_REPO,
    SYMLINK_ESCAPE,
    PROTECTED_PATH,
    TOO_LARGE,
    CHECK_FAILED,
)
GIT_APPLY_TIMEOUT_S: Final = 60.0
DETAIL_CHARS: Final = 400


@dataclass(frozen=True)
class PatchVerdict:
    """What ``validate_patch`` decided; ``reason`` is one of ``REASONS`` when not ``ok``.

    ``detail`` is scrubbed and short; ``paths`` are the paths the patch names.

    .. versionadded:: 0.1.0
    """

    ok: bool
    reason: str | None
    detail: str | None
    stats: PatchStats
    paths: tuple[str, ...] = ()


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


async def validate_patch(
    repo: Path,
    patch: str,
    *,
    max_bytes: int,
    protected_paths: Sequence[str],
    check_command: Sequence[str] | None,
    check_timeout_s: float,
) -> PatchVerdict:
    """Check ``patch`` against the clone at ``repo`` without changing it.

    Raises:
        GitError: ``repo`` is not the root of a clone, or git itself could not
            run (not installed, timed out); a refusal is a verdict, not an exception.

    .. versionadded:: 0.1.0
    """
    _require_clone(Path(repo))
    stats = patch_stats(patch)
    parsed = parse_patch(patch)
    paths = parsed.paths
    globs = [(p, _glob(p)) for p in protected_paths]
    try:
        if stats.bytes > max_bytes:
            raise _Refusal(TOO_LARGE, f"{stats.bytes} bytes; the limit is {max_bytes}")
        data = _encoded(patch)
        with tempfile.TemporaryDirectory(prefix="agent-patch-home-") as scratch:
            home = process.make_home(Path(scratch))
            await _check_structure(Path(repo), data, parsed, home)
            for path in paths:
                hit = next((p for p, rx in globs if rx.match(path)), None)
                if hit is not None:
                    raise _Refusal(PROTECTED_PATH, f"{path} is protected ({hit})")
            checked = await _git(
                Path(repo), ["apply", "--check", "--whitespace=nowarn"], data, home
            )
            if checked.returncode != 0:
                raise _Refusal(DOES_NOT_APPLY, process.failure_lines(checked.stderr))
            if check_command:
                await _run_check(Path(repo), data, check_command, check_timeout_s, home)
    except _Refusal as refusal:
        detail = process.short(refusal.detail or refusal.reason, DETAIL_CHARS)
        return PatchVerdict(False, refusal.reason, detail, stats, paths)
    return PatchVerdict(True, None, None, stats, paths)


async def apply_patch(repo: Path, patch: str) -> None:
    """Apply a patch that passed ``validate_patch`` to the working tree of ``repo``.

    The paths are checked again (outside the repository, through a symbolic
    link) before git runs, so a patch that skipped validation still cannot escape.

    Raises:
        GitError: ``validation_error`` when the paths are refused, ``git_error``
            when git cannot apply it.

    .. versionadded:: 0.1.0
    """
    _require_clone(Path(repo))
    data = _encoded_or_error(patch)
    with tempfile.TemporaryDirectory(prefix="agent-patch-home-") as scratch:
        home = process.make_home(Path(scratch))
        try:
            await _check_structure(Path(repo), data, parse_patch(patch), home)
        except _Refusal as refusal:
            raise GitError(VALIDATION_ERROR, f"{refusal.reason}: {refusal.detail}") from None
        done = await _git(Path(repo), ["apply", "--whitespace=nowarn"], data, home)
    if done.returncode != 0:
        raise GitError(GIT_ERROR, process.short(f"git apply failed: {done.stderr}"))


async def working_tree_patch(repo: Path, *, timeout_s: float = GIT_APPLY_TIMEOUT_S) -> str:
    """Every change in ``repo``'s working tree (new files included) as one diff against HEAD.

    Stages everything in ``repo``'s index: meant for a scratch copy (the
    Copilot SDK backend's), not for the task's clone. Binary-safe (``--binary``);
    text that is not UTF-8 survives as surrogate escapes, which validation
    then refuses.

    Raises:
        GitError: ``repo`` is not a git working tree, or git failed.

    .. versionadded:: 0.1.0
    """
    with tempfile.TemporaryDirectory(prefix="agent-patch-home-") as scratch:
        home = process.make_home(Path(scratch))
        for args in (
            ["add", "--all"],
            ["diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "--no-renames"],
        ):
            done = await process.run(
                [process.git_binary(), *args],
                cwd=Path(repo),
                env=process.git_env(home, repo=Path(repo)),
                timeout_s=timeout_s,
                what=f"git {args[0]}",
            )
            if done.returncode != 0:
                raise GitError(GIT_ERROR, process.short(f"git {args[0]} failed: {done.stderr}"))
    return done.stdout.decode("utf-8", "surrogateescape")


# -- the checks -------------------------------------------------------------------


async def _check_structure(repo: Path, data: bytes, parsed: ParsedPatch, home: Path) -> None:
    if not parsed.files:
        raise _Refusal(DOES_NOT_APPLY, "no file change found in the patch")
    numstat = await _git(repo, ["apply", "--numstat", "-z"], data, home)
    if numstat.returncode != 0:
        raise _Refusal(DOES_NOT_APPLY, process.failure_lines(numstat.stderr))
    named = set(parsed.paths)
    for path in _numstat_paths(numstat.stdout):
        if path not in named:
            raise _Refusal(DOES_NOT_APPLY, "git reads a path the patch's headers do not name")
    for change in parsed.files:
        for name in change.absolute:
            raise _Refusal(PATH_OUTSIDE_REPO, f"absolute path {name!r}")
        if "160000" in change.modes:
            raise _Refusal(PATH_OUTSIDE_REPO, "a submodule entry (mode 160000)")
    for path in parsed.paths:
        problem = _path_problem(path)
        if problem is not None:
            raise _Refusal(PATH_OUTSIDE_REPO, f"{path!r}: {problem}")
    for change in parsed.files:
        if "120000" in change.modes:
            raise _Refusal(SYMLINK_ESCAPE, f"{change.paths[0]!r}: a symbolic link (mode 120000)")
    root = repo.resolve()
    for path in parsed.paths:
        problem = _symlink_problem(root, path)
        if problem is not None:
            raise _Refusal(SYMLINK_ESCAPE, f"{path!r}: {problem}")


def _path_problem(path: str) -> str | None:
    if not path or "\x00" in path:
        return "an empty name"
    if path.startswith("/") or re.match(r"[A-Za-z]:[\\/]", path):
        return "an absolute path"
    for part in re.split(r"[/\\]", path):
        if part == "..":
            return "leaves the repository (..)"
        if part.rstrip(". ").lower() == ".git":
            return "inside .git"
    return None


def _symlink_problem(root: Path, path: str) -> str | None:
    current = root
    for part in path.split("/"):
        if part in ("", "."):
            continue
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break
        except NotADirectoryError:
            break  # a file where a directory is needed: git refuses it (does_not_apply)
        if stat.S_ISLNK(mode):
            shown = current.relative_to(root)
            return f"{shown} is a symbolic link in the working tree"
    resolved = Path(os.path.realpath(root / path))
    if resolved != root and root not in resolved.parents:
        return "resolves outside the repository"
    return None


async def _run_check(
    repo: Path, data: bytes, command: Sequence[str], timeout_s: float, home: Path
) -> None:
    """Run ``command`` in a temporary worktree of HEAD with the patch applied."""
    scratch = Path(tempfile.mkdtemp(prefix="agent-patch-check-"))
    tree = scratch / "tree"
    try:
        added = await _git(
            repo, ["worktree", "add", "--detach", "--quiet", str(tree), "HEAD"], None, home
        )
        if added.returncode != 0:
            raise GitError(GIT_ERROR, process.short(f"git worktree add failed: {added.stderr}"))
        applied = await _git(tree, ["apply", "--whitespace=nowarn"], data, home)
        if applied.returncode != 0:
            raise _Refusal(DOES_NOT_APPLY, process.failure_lines(applied.stderr))
        try:
            done = await process.run(
                list(command),
                cwd=tree,
                env=process.plain_env(home),
                timeout_s=timeout_s,
                what="the check command",
            )
        except GitError as exc:
            raise _Refusal(CHECK_FAILED, exc.reason) from None
        if done.returncode != 0:
            output = scrub(done.stdout.decode("utf-8", "replace")) + "\n" + done.stderr
            tail = " ".join(output.split())[-DETAIL_CHARS + 40 :]
            raise _Refusal(CHECK_FAILED, f"exit status {done.returncode}: {tail}")
    finally:
        await _git(repo, ["worktree", "remove", "--force", str(tree)], None, home)
        shutil.rmtree(scratch, ignore_errors=True)
        await _git(repo, ["worktree", "prune"], None, home)


# -- helpers ----------------------------------------------------------------------


async def _git(cwd: Path, args: list[str], stdin: bytes | None, home: Path) -> process.Completed:
    return await process.run(
        [process.git_binary(), *args],
        cwd=cwd,
        env=process.git_env(home, repo=cwd),
        timeout_s=GIT_APPLY_TIMEOUT_S,
        what=f"git {args[0]}",
        stdin=stdin,
    )


def _numstat_paths(out: bytes) -> list[str]:
    """Paths in ``git apply --numstat -z`` output (a rename's two names included)."""
    tokens = out.decode("utf-8", "replace").split("\x00")
    paths: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token:
            continue
        fields = token.split("\t", 2)
        if len(fields) == 3 and fields[2]:
            paths.append(fields[2])
        elif len(fields) == 3:
            paths += [t for t in tokens[i : i + 2] if t]
            i += 2
    return paths


def _glob(pattern: str) -> re.Pattern[str]:
    """A protected-path glob as a regex anchored at the repository root."""
    text = pattern.strip().lstrip("/")
    if not text:
        raise ValueError("a protected path pattern is empty")
    if text.endswith("/"):
        text += "**"
    out = []
    i = 0
    while i < len(text):
        if text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif text[i] == "*":
            out.append("[^/]*")
            i += 1
        elif text[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(text[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _require_clone(repo: Path) -> None:
    if not (repo / ".git").exists():
        raise GitError(VALIDATION_ERROR, "the patch's target is not the root of a git clone")


def _encoded(patch: str) -> bytes:
    try:
        return patch.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refusal(DOES_NOT_APPLY, "the patch is not valid UTF-8 text") from None


def _encoded_or_error(patch: str) -> bytes:
    try:
        return _encoded(patch)
    except _Refusal as refusal:
        raise GitError(VALIDATION_ERROR, refusal.detail) from None
