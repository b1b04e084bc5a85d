"""The flat public API: ``auditkeep.__all__`` is what the README and docs may use.

Three namespaces are public beside ``auditkeep`` itself, each with its own
``__all__``: the httpx integration (an optional extra), the query tools and the
test helpers. Every other module is internal, so no README or docs example may
import from one or name one.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import auditkeep
from auditkeep._retention import ROTATED_OUT_ACTION
from auditkeep.integrity._format import ACTION_CHECKPOINT, ACTION_STARTED
from auditkeep.testing import read_trail, validate_entries

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAMESPACES = (
    "auditkeep.integrations.httpx",
    "auditkeep.query",
    "auditkeep.testing",
    # the spool's status and redelivery, and the scrubber's rules, each with an __all__
    "auditkeep.delivery",
    "auditkeep.redact",
)
PUBLIC_MODULES = ("auditkeep", *NAMESPACES)
# Dotted words in the docs that start with "auditkeep." but are no Python name:
# the actions the library itself records, and the names of its loggers (the
# `logging` names an application routes or silences).
ACTIONS = {
    ROTATED_OUT_ACTION,
    ACTION_STARTED,
    ACTION_CHECKPOINT,
    "auditkeep.delivery",
    "auditkeep.disk",
    "auditkeep.retention",
    "auditkeep.sinks.file",
}
_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_DOTTED = re.compile(r"(?<![\w./-])auditkeep(?:\.\w+)+")


def python_blocks(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, code) of every ```python block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    for found in _FENCE.finditer(text):
        yield text.count("\n", 0, found.start()) + 2, found.group(1)


def doc_imports() -> Iterator[tuple[str, str, str | None]]:
    """(where, module, name) for every auditkeep import in a docs example (name None: a module)."""
    for path in DOCS:
        for line, code in python_blocks(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("auditkeep"):
                    for alias in node.names:
                        yield where, str(node.module), alias.name
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("auditkeep"):
                            yield where, alias.name, None


def exported(module: str) -> list[str]:
    return list(getattr(importlib.import_module(module), "__all__", []))


def resolve(dotted: str) -> str | None:
    """Why ``dotted`` (auditkeep.X.Y) is no public name, or None when it is one."""
    if dotted in ACTIONS:
        return None
    for module in sorted(PUBLIC_MODULES, key=len, reverse=True):
        if dotted == module:
            return None
        if dotted.startswith(module + "."):
            name = dotted.removeprefix(module + ".").split(".")[0]
            if name in exported(module):
                return None
            return f"{name!r} is not in {module}.__all__"
    return "not under a public namespace"


class TestExports:
    @pytest.mark.parametrize("module", PUBLIC_MODULES)
    def test_every_exported_name_is_public_and_resolves(self, module: str) -> None:
        """No private name, no module, nothing from outside the package in an ``__all__``."""
        namespace = importlib.import_module(module)
        names = exported(module)
        assert names, f"{module} has no __all__"
        problems = []
        for name in names:
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                problems.append(f"{name}: private")
            elif not hasattr(namespace, name):
                problems.append(f"{name}: missing")
            elif isinstance(getattr(namespace, name), types.ModuleType):
                problems.append(f"{name}: a module")
            else:
                home = getattr(getattr(namespace, name), "__module__", "auditkeep")
                if home is not None and not str(home).startswith("auditkeep"):
                    problems.append(f"{name}: from {home}")
        assert problems == []

    def test_the_docs_import_only_exported_names(self) -> None:
        """Every ``import`` in a README/docs example names a public module and an exported name."""
        problems = [
            f"{where}: {module}{'.' + name if name else ''}"
            for where, module, name in doc_imports()
            if module not in PUBLIC_MODULES or (name is not None and name not in exported(module))
        ]
        assert problems == []

    def test_the_docs_name_only_exported_names(self) -> None:
        """Every ``auditkeep.<name>`` in README/docs prose or code is exported (or is an action)."""
        problems = [
            f"{path.relative_to(ROOT)}: {dotted}: {why}"
            for path in DOCS
            for dotted in sorted(set(_DOTTED.findall(path.read_text(encoding="utf-8"))))
            if (why := resolve(dotted)) is not None
        ]
        assert problems == []

    def test_the_library_example_imports_from_auditkeep_only(self) -> None:
        """The README's library example needs no internal module (and no namespace either)."""
        modules = {module for where, module, _ in doc_imports() if where == readme_example()[0]}
        assert modules == {"auditkeep"}

    def test_the_scan_sees_the_examples(self) -> None:
        """Guards the two tests above: they really read the README's and docs' examples."""
        found = {(module, name) for _, module, name in doc_imports()}
        assert {("auditkeep", "configure"), ("auditkeep.query", "search")} <= found
        dotted = set(_DOTTED.findall((ROOT / "README.md").read_text(encoding="utf-8")))
        assert "auditkeep.integrations.httpx.AuditedTransport" in dotted
        assert resolve("auditkeep.runtime.configure") == "'runtime' is not in auditkeep.__all__"
        assert resolve("auditkeep.exceptions.InvalidEntryError") is not None
        assert resolve("auditkeep.query.no_such_name") is not None
        assert resolve("auditkeep.configure") is None
        assert resolve(ROTATED_OUT_ACTION) is None


def readme_example() -> tuple[str, str]:
    """(where, code) of the first python block under "## Using the library"."""
    readme = ROOT / "README.md"
    section = readme.read_text(encoding="utf-8").index("## Using the library")
    for line, code in python_blocks(readme):
        if readme.read_text(encoding="utf-8").count("\n", 0, section) + 1 < line:
            return f"README.md:{line}", code
    raise AssertionError("no python block under '## Using the library'")


RUN_EXAMPLE = textwrap.dedent(
    """
    import http.server, sys, threading

    class RateLimited(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(429)
            self.send_header("retry-after", "1")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    namespace = {}
    exec(compile(sys.argv[1], "README.md", "exec"), namespace)
    namespace["post_note"](f"http://127.0.0.1:{server.server_port}/notes", "5f0c-delivery")
    assert namespace["audit"].close(5.0)
    server.shutdown()
    """
)


def test_the_readme_library_example_runs(tmp_path: Path) -> None:
    """The README's example, run as written against a loopback server answering 429.

    Its one entry is the README's JSON sample in shape: the same action, actor
    type, target, outcome, error class and status, valid against the schema.
    """
    _, code = readme_example()
    trail = tmp_path / "audit.jsonl"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(auditkeep.__file__).parents[1]),
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(trail),
        "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN_EXAMPLE, code],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr.decode()) == (0, "")
    (entry,) = validate_entries(read_trail(trail))
    sample = readme_sample()
    keys = ("action", "target", "outcome", "error", "http_status", "service")
    assert {k: entry[k] for k in keys} == {k: sample[k] for k in keys}
    assert (entry["actor"], sample["actor"]["type"]) == (
        {"type": "webhook_event", "id": "5f0c-delivery"},
        "webhook_event",
    )


def readme_sample() -> dict[str, Any]:
    """The JSON entry the README shows after the example."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```json\n", text.index("## Using the library")) + len("```json\n")
    sample: dict[str, Any] = orjson.loads(text[start : text.index("```", start)])
    return sample
