"""Read a unified diff's file headers and count its lines, the way ``git apply`` reads them.

Hand-written because no maintained Python library parses git's extended
headers (modes, renames, copies, C-quoted names) the way git does, and the
validator must know every path a patch names, in every header that names one:
``diff --git a/X b/Y``, ``--- X`` / ``+++ Y``, ``rename from/to``, ``copy
from/to``. ``git apply --numstat`` then says which paths git itself reads, and
the validator refuses a patch whose paths git reads differently.

Hunks are consumed by their line counts (``@@ -a,b +c,d @@``), as git does,
so an added line that looks like a header (``+++ b/x``) is counted as content.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Final

_HUNK: Final = re.compile(r"^@@ -\d{1,10}(?:,(\d{1,10}))? \+\d{1,10}(?:,(\d{1,10}))? @@")
_MODE_LINE: Final = re.compile(
    r"^(?:old mode|new mode|deleted file mode|new file mode) ([0-7]{6})\s*$"
)
_INDEX_MODE: Final = re.compile(r"^index [0-9a-f]+\.\.[0-9a-f]+ ([0-7]{6})\s*$")
_NAMED: Final = ("rename from ", "rename to ", "copy from ", "copy to ")
_ESCAPES: Final = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


@dataclass
class FileChange:
    """One file section of a patch: the paths it names, absolute names, modes it sets."""

    paths: list[str] = field(default_factory=list)
    absolute: list[str] = field(default_factory=list)
    modes: set[str] = field(default_factory=set)
    binary: bool = False
    git_header: bool = False
    saw_names: bool = False

    def name(self, raw: str, *, prefixed: bool) -> None:
        """Record a name as written (``prefixed``: it carries git's ``a/``/``b/`` component)."""
        if raw == "/dev/null":
            return
        if prefixed:
            if raw.startswith("/"):
                self.absolute.append(raw)
            head, slash, rest = raw.partition("/")
            raw = rest if slash else head
        if raw.startswith("/"):
            self.absolute.append(raw)
        if raw not in self.paths:
            self.paths.append(raw)


@dataclass(frozen=True)
class ParsedPatch:
    """Every file section, and the added/removed line counts."""

    files: tuple[FileChange, ...]
    lines_added: int
    lines_removed: int

    @property
    def paths(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for change in self.files:
            seen.update(dict.fromkeys(change.paths))
        return tuple(seen)


@dataclass(frozen=True)
class PatchStats:
    """Size and shape of a patch, as ``copilot.patch.generated`` records it.

    .. versionadded:: 0.1.0
    """

    files_changed: int
    lines_added: int
    lines_removed: int
    patch_sha256: str
    bytes: int


def patch_stats(patch: str) -> PatchStats:
    """Files, added and removed lines, SHA-256 and UTF-8 size of ``patch``; never raises.

    .. versionadded:: 0.1.0
    """
    raw = patch.encode("utf-8", "surrogatepass")
    parsed = parse_patch(patch)
    return PatchStats(
        files_changed=len(parsed.files),
        lines_added=parsed.lines_added,
        lines_removed=parsed.lines_removed,
        patch_sha256=hashlib.sha256(raw).hexdigest(),
        bytes=len(raw),
    )


def parse_patch(text: str) -> ParsedPatch:
    """The file sections of a unified diff (git's extended format or the traditional one)."""
    files: list[FileChange] = []
    added = removed = 0
    current: FileChange | None = None
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].removesuffix("\r")
        i += 1
        if line.startswith("diff --git "):
            current = FileChange(git_header=True)
            files.append(current)
            for name in _git_header_names(line[len("diff --git ") :]):
                current.name(name, prefixed=True)
            continue
        if line.startswith("--- ") and i < len(lines) and lines[i].startswith("+++ "):
            if current is None or current.saw_names or not current.git_header:
                current = FileChange()
                files.append(current)
            current.saw_names = True
            for header in (line, lines[i].removesuffix("\r")):
                current.name(_traditional_name(header[4:]), prefixed=True)
            i += 1
            continue
        hunk = _HUNK.match(line)
        if hunk is not None and current is not None:
            old_left = int(hunk.group(1) or 1)
            new_left = int(hunk.group(2) or 1)
            while i < len(lines) and (old_left > 0 or new_left > 0):
                body = lines[i]
                first = body[:1]
                if first in (" ", ""):
                    old_left, new_left = old_left - 1, new_left - 1
                elif first == "-":
                    old_left, removed = old_left - 1, removed + 1
                elif first == "+":
                    new_left, added = new_left - 1, added + 1
                elif first != "\\":
                    break  # a short hunk: git refuses it; its next line is read as a header
                i += 1
            continue
        if current is None:
            continue
        for prefix in _NAMED:
            if line.startswith(prefix):
                current.name(_unquoted(line[len(prefix) :]), prefixed=False)
        mode = _MODE_LINE.match(line) or _INDEX_MODE.match(line)
        if mode is not None:
            current.modes.add(mode.group(1))
        if line == "GIT binary patch" or (line.startswith("Binary files ") and "differ" in line):
            current.binary = True
    return ParsedPatch(tuple(files), added, removed)


def _traditional_name(rest: str) -> str:
    """The name of a ``---``/``+++`` header: quoted, or up to a tab (GNU diff adds a date)."""
    if rest.startswith('"'):
        return _unquoted(rest)
    return rest.split("\t", 1)[0].rstrip()


def _git_header_names(rest: str) -> list[str]:
    """The two names of ``diff --git a/X b/Y`` (either may be C-quoted)."""
    if rest.startswith('"'):
        first, after = _quoted_prefix(rest)
        second = after.lstrip(" ")
        return [first, _unquoted(second) if second.startswith('"') else second]
    if rest.endswith('"'):
        start = rest.rfind(' "')
        if start > 0:
            return [rest[:start], _unquoted(rest[start + 1 :])]
    # Unquoted with spaces is ambiguous; git takes the split where both names agree.
    candidates = [m.start() for m in re.finditer(r" (?=[^ ]+/)", rest)]
    for cut in candidates:
        left, right = rest[:cut], rest[cut + 1 :]
        if left.partition("/")[2] == right.partition("/")[2]:
            return [left, right]
    if candidates:
        return [rest[: candidates[0]], rest[candidates[0] + 1 :]]
    return [rest]


def _unquoted(text: str) -> str:
    text = text.rstrip()
    if not text.startswith('"'):
        return text
    name, _ = _quoted_prefix(text)
    return name


def _quoted_prefix(text: str) -> tuple[str, str]:
    """Decode a C-quoted string at the start of ``text``; return it and what follows."""
    out = bytearray()
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return out.decode("utf-8", "replace"), text[i + 1 :]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = re.match(r"[0-7]{1,3}", text[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(0), 8) & 0xFF)
                i += 1 + len(octal.group(0))
                continue
        out += ch.encode("utf-8", "surrogatepass")
        i += 1
    return out.decode("utf-8", "replace"), ""
