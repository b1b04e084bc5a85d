"""The offline provider's coding answers: scripted diffs for tests and the demo, or a default one.

A script maps instruction substrings to patch texts; the first key (in file
order) found in the prompt wins, and the key ``""`` matches every prompt. It
comes from the ``OfflineBackend(coding_script=...)`` argument or from the JSON
file named by ``OFFLINE_LLM_CODING_SCRIPT``::

    {"break the CI": "diff --git a/.gitlab-ci.yml b/.gitlab-ci.yml\\n...",
     "": "diff --git a/README.md b/README.md\\n..."}

Without a matching key the answer is a small valid diff: a new file when the
instruction names one that does not exist (```notes/todo.md``` or "a file
named notes.txt"), else one line appended to ``README.md`` (created when
missing). Files are read without following symbolic links.
"""

from __future__ import annotations

import difflib
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import orjson

from gitlab_copilot_agent.llm.coding import read_small_text

MAX_SCRIPT_BYTES: Final = 16 * 1024 * 1024
MAX_README_BYTES: Final = 1024 * 1024
_BACKTICKED: Final = re.compile(r"`([A-Za-z0-9_][A-Za-z0-9_./-]{0,200})`")
_NAMED_FILE: Final = re.compile(
    r"\bfile (?:named |called )?([A-Za-z0-9_][A-Za-z0-9_./-]{0,200}\.[A-Za-z0-9]{1,10})\b"
)
_NOT_PRINTABLE: Final = re.compile(r"[^\x20-\x7e\u00a0-\uffff]")


def load_coding_script(path: Path) -> dict[str, str]:
    """Read a coding script (a JSON object of instruction substring → patch text).

    Raises:
        ValueError: in plain words, when the file is missing, too large, not
            JSON, or not an object of strings.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if info.st_size > MAX_SCRIPT_BYTES:
        raise ValueError(f"{path} is larger than {MAX_SCRIPT_BYTES} bytes")
    try:
        with path.open("rb") as fh:
            loaded = orjson.loads(fh.read(MAX_SCRIPT_BYTES + 1))
    except (OSError, orjson.JSONDecodeError):
        raise ValueError(f"{path} is not a JSON file") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
    ):
        raise ValueError(f"{path} must hold a JSON object mapping instruction text to patch text")
    return dict(loaded)


def scripted_patch(script: Mapping[str, str], prompt: str) -> str | None:
    """The patch of the first script key found in ``prompt`` (None when none is)."""
    for key, patch in script.items():
        if key in prompt:
            return patch
    return None


def default_patch(workdir: Path, prompt: str) -> str:
    """A small diff that applies to ``workdir``: a named new file, or a line for README.md."""
    line = _summary_line(prompt)
    named = _named_new_file(workdir, prompt)
    if named is not None:
        return _new_file(named, [f"Created for: {line}"])
    readme = workdir / "README.md"
    text = read_small_text(readme, MAX_README_BYTES)
    if text is None:
        if readme.is_symlink() or readme.exists():
            return _new_file("CHANGES-BY-AGENT.md", [f"- {line}"])
        return _new_file("README.md", [f"- {line}"])
    return _append(readme.name, text, f"- {line}")


def _summary_line(prompt: str) -> str:
    first = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "change requested")
    clean = _NOT_PRINTABLE.sub(" ", first)
    return clean if len(clean) <= 120 else clean[:119] + "…"


def _named_new_file(workdir: Path, prompt: str) -> str | None:
    for pattern in (_BACKTICKED, _NAMED_FILE):
        for found in pattern.finditer(prompt):
            name = found.group(1).strip("/")
            parts = name.split("/")
            if ".." in parts or any(p.lower() == ".git" or not p for p in parts):
                continue
            if "." not in parts[-1]:
                continue  # a word in backticks, not a file name
            if not (workdir / name).exists() and not (workdir / name).is_symlink():
                return name
    return None


def _new_file(name: str, lines: list[str]) -> str:
    body = "".join(f"+{ln}\n" for ln in lines)
    count = "" if len(lines) == 1 else f",{len(lines)}"
    return (
        f"diff --git a/{name} b/{name}\n"
        "new file mode 100644\n"
        "--- /dev/null\n"
        f"+++ b/{name}\n"
        f"@@ -0,0 +1{count} @@\n"
        f"{body}"
    )


def _append(name: str, text: str, line: str) -> str:
    old = text.splitlines(keepends=True)
    new_text = (text if text.endswith("\n") or not text else text + "\n") + line + "\n"
    out = [f"diff --git a/{name} b/{name}\n"]
    for piece in difflib.unified_diff(
        old, new_text.splitlines(keepends=True), fromfile=f"a/{name}", tofile=f"b/{name}", n=3
    ):
        out.append(piece if piece.endswith("\n") else piece + "\n\\ No newline at end of file\n")
    return "".join(out)
