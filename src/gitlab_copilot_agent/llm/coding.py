"""What a coding answer is made of: the repository context a text-only model gets, and the diff.

Every provider answers a coding request with a unified diff
(``CodingResult.patch``) that the task validates and applies itself; no
provider writes to the clone. A chat model sees the repository only through
``repository_context`` (the file list, and the text of the files the
instruction names); ``extract_patch`` takes the diff out of its answer.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAX_LISTED_FILES: Final = 400
MAX_FILE_BYTES: Final = 32 * 1024
MAX_CONTEXT_BYTES: Final = 96 * 1024

_FENCED: Final = re.compile(r"```(?:diff|patch|udiff)[^\n]*\n(.*?)^```", re.S | re.M)
_DIFF_START: Final = re.compile(r"^(?:diff --git |--- (?:a/|/dev/null))", re.M)


@dataclass(frozen=True)
class RepositoryContext:
    """The text added to a coding prompt, and what it holds (for the audit entry)."""

    text: str
    files_listed: int
    files_included: int


def extract_patch(answer: str) -> str:
    """The unified diff in a model's answer: the first ```diff block, else from the first header.

    Returns "" when the answer holds no diff.
    """
    fenced = _FENCED.search(answer)
    if fenced is not None:
        body = fenced.group(1)
    else:
        start = _DIFF_START.search(answer)
        if start is None:
            return ""
        body = answer[start.start() :]
    return body if body.endswith("\n") else body + "\n"


def repository_context(workdir: Path, instruction: str) -> RepositoryContext:
    """The file list of ``workdir``, and the text of the small files ``instruction`` names.

    Symbolic links are listed but never followed; ``.git`` is skipped.
    """
    files = _tracked_like_files(workdir)
    listed = files[:MAX_LISTED_FILES]
    shown = f", the first {len(listed)}" if len(files) > len(listed) else ""
    parts = [f"Repository files ({len(files)}{shown}):", *listed]
    budget = MAX_CONTEXT_BYTES
    included = 0
    for name in files:
        if name not in instruction:
            continue
        text = read_small_text(workdir / name)
        if text is None or len(text) > budget:
            continue
        budget -= len(text)
        included += 1
        parts += ["", f"File `{name}`:", "```", text.rstrip("\n"), "```"]
    return RepositoryContext("\n".join(parts) + "\n", len(listed), included)


def _tracked_like_files(workdir: Path) -> list[str]:
    found: list[str] = []
    for top, dirs, names in os.walk(workdir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel = Path(top).relative_to(workdir)
        found += [str(rel / n) if str(rel) != "." else n for n in sorted(names)]
        if len(found) > 10 * MAX_LISTED_FILES:
            break
    return sorted(found)


def read_small_text(path: Path, limit: int = MAX_FILE_BYTES) -> str | None:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; None otherwise.

    Opened with ``O_NOFOLLOW`` and checked on the open descriptor, so a
    symbolic link (even one swapped in after a check) is never read through.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        try:
            return fh.read(limit + 1).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
