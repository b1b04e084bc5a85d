"""Read unified diffs (GitLab ``/diffs`` items) line by line, with new-side line numbers.

Shared by the offline reviewer (which flags added lines) and the review workflow
(which only posts inline comments on lines the diff really adds).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

_HUNK: Final = re.compile(r"^@@ -\d+(?:,\d+)? \+(?P<start>\d+)(?:,\d+)? @@")


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a hunk; ``new_line`` is None for removed lines."""

    kind: Literal["added", "removed", "context"]
    new_line: int | None
    text: str


def iter_diff_lines(diff: str) -> Iterator[DiffLine]:
    """Yield the lines of a unified diff body, numbering the new side.

    Lines before the first hunk header (``---``/``+++`` headers, ``unidiff``
    output) and ``\\ No newline at end of file`` markers are skipped.
    """
    new_line: int | None = None
    for raw in diff.splitlines():
        header = _HUNK.match(raw)
        if header is not None:
            new_line = int(header.group("start"))
            continue
        if new_line is None or raw.startswith("\\"):
            continue
        if raw.startswith("+"):
            yield DiffLine("added", new_line, raw[1:])
            new_line += 1
        elif raw.startswith("-"):
            yield DiffLine("removed", None, raw[1:])
        else:
            yield DiffLine("context", new_line, raw[1:] if raw.startswith(" ") else raw)
            new_line += 1


def added_lines(diff: str) -> dict[int, str]:
    """Map each added line's new-side number to its text."""
    return {
        line.new_line: line.text
        for line in iter_diff_lines(diff)
        if line.kind == "added" and line.new_line is not None
    }
