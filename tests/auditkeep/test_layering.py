"""The library stands alone: it never reaches into the agent or a web stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import orjson

import auditkeep

SRC = Path(auditkeep.__file__).resolve().parent
FORBIDDEN = ("gitlab_copilot_agent", "fastapi", "starlette", "httpx", "opentelemetry")
# ``auditkeep.integrations.<lib>`` is the opt-in glue for one third-party library
# and may import that library (and only that one); nothing else may.
INTEGRATIONS = "auditkeep.integrations."

IMPORT_EVERYTHING = r"""
import pkgutil, sys
import orjson
import auditkeep

def forbidden_loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2:])

names = sorted(m.name for m in pkgutil.walk_packages(auditkeep.__path__, "auditkeep."))
core = [n for n in names if not n.startswith(sys.argv[1])]
for name in core:
    __import__(name)
after_core = forbidden_loaded()
integrations = {}
for name in names:
    if name.startswith(sys.argv[1]):
        before = set(forbidden_loaded())
        __import__(name)
        integrations[name] = sorted({m.split(".")[0] for m in set(forbidden_loaded()) - before})
sys.stdout.buffer.write(
    orjson.dumps({"core": core, "after_core": after_core, "integrations": integrations})
)
"""


def _allowed(path: Path, name: str) -> bool:
    """An integration module may import the library it is named after."""
    relative = path.relative_to(SRC)
    return relative.parts[0] == "integrations" and relative.stem == name


def _module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Top-level names imported when the module runs.

    Function bodies run later, and ``if TYPE_CHECKING:`` blocks never run.
    """
    found: list[tuple[int, str]] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        pending.extend(ast.iter_child_nodes(node))
    return sorted(found)


def _all_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Every absolute import anywhere in the module, lazy ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return sorted(found)


def _isort_style(name: str) -> tuple[int, str]:
    """RUF022's order: SCREAMING_CASE constants, then CamelCase classes, then the rest."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


class TestLayering:
    def test_importing_every_module_loads_no_agent_or_web_framework(self) -> None:
        """Importing every auditkeep module loads no agent, FastAPI, Starlette, httpx or OTel.

        Only ``auditkeep.integrations.<lib>`` may load ``<lib>``, and nothing else.
        """
        proc = subprocess.run(
            [sys.executable, "-c", IMPORT_EVERYTHING, INTEGRATIONS, *FORBIDDEN],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (proc.returncode, proc.stderr.decode()) == (0, "")
        report = orjson.loads(proc.stdout)
        assert report["after_core"] == []
        assert report["integrations"] == {
            name: [name.removeprefix(INTEGRATIONS)]
            if name.removeprefix(INTEGRATIONS) in FORBIDDEN
            else []
            for name in report["integrations"]
        }
        # The walk really covered the package, not just its __init__.
        assert {"auditkeep.logger", "auditkeep.config", "auditkeep.sinks.file"} <= set(
            report["core"]
        )

    def test_no_source_file_imports_agent_or_web_framework_at_module_level(self) -> None:
        """No module under src/auditkeep imports the agent, FastAPI, Starlette or httpx on load."""
        offenders = [
            f"{path.relative_to(SRC)}:{line}: {name}"
            for path in sorted(SRC.rglob("*.py"))
            for line, name in _module_level_imports(ast.parse(path.read_bytes(), str(path)))
            if name in FORBIDDEN and not _allowed(path, name)
        ]
        assert offenders == []

    def test_no_source_file_imports_the_agent_even_lazily(self) -> None:
        """Not even a function-local import lets the library depend on the agent."""
        offenders = [
            f"{path.relative_to(SRC)}:{line}"
            for path in sorted(SRC.rglob("*.py"))
            for line, name in _all_imports(ast.parse(path.read_bytes(), str(path)))
            if name == "gitlab_copilot_agent"
        ]
        assert offenders == []

    def test_the_static_scan_sees_every_source_file(self) -> None:
        """The scan above walks the real source tree (guards against a wrong SRC path)."""
        found = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")}
        assert {"__init__.py", "logger.py", "redact.py", "sinks/file.py"} <= found

    def test_every_source_directory_is_a_regular_package(self) -> None:
        """Each directory of .py files has an __init__.py, so the walk and the wheel include it.

        ``setuptools.packages.find`` skips directories without ``__init__.py``: their modules
        work from a checkout but are missing from a built wheel.
        """
        directories = {p.parent for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}
        missing = sorted(
            str(d.relative_to(SRC.parent)) for d in directories if not (d / "__init__.py").exists()
        )
        assert missing == []


class TestExportedMembers:
    def test_all_is_sorted_and_unique(self) -> None:
        """auditkeep.__all__ has no duplicates and is in ruff's isort-style order (RUF022)."""
        assert auditkeep.__all__ == sorted(set(auditkeep.__all__), key=_isort_style)

    def test_every_exported_name_resolves(self) -> None:
        """Every name in auditkeep.__all__ is an attribute of the package."""
        missing = [name for name in auditkeep.__all__ if not hasattr(auditkeep, name)]
        assert missing == []
