"""Only the delivery package touches spool segments, ack files, dead letters and locks.

A static scan of every module under ``src/`` (the library, the agent, the stand-ins):
outside ``auditkeep/delivery/`` no module imports ``fcntl``, calls ``flock``/``lockf``,
or spells a spool suffix (``.seg``, ``.ack``) or the ``dead-letters`` folder in code;
inside it, only ``_files.py`` does (one lock helper, one place for the names). The
delivery package's private modules are not imported from outside, except the lock
helper by the file sink and the forward seal (their multi-process locks).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import auditkeep
import gitlab_copilot_agent

SRC = Path(auditkeep.__file__).resolve().parent.parent
AGENT_SRC = Path(gitlab_copilot_agent.__file__).resolve().parent.parent
DELIVERY = Path("auditkeep", "delivery")
FILES = DELIVERY / "_files.py"
NAMES = re.compile(r"\.(?:seg|ack)\b|dead-letters")
# (importing module, private delivery module, names) allowed from outside the package.
ALLOWED_PRIVATE = {
    (Path("auditkeep", "sinks", "file.py"), "auditkeep.delivery._files", ("held",)),
    # the forward seal's state file, shared by processes (auditkeep.integrity.seal)
    (Path("auditkeep", "integrity", "seal.py"), "auditkeep.delivery._files", ("locked",)),
}


def _standalone_strings(tree: ast.AST) -> set[int]:
    """ids of string constants that are statements of their own (docstrings): never run."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def offences(root: Path) -> list[str]:
    """Every place under ``root`` that touches delivery's files or locks outside its home."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        inside = relative.is_relative_to(DELIVERY)
        home = relative == FILES
        tree = ast.parse(path.read_bytes(), str(path))
        docs = _standalone_strings(tree)
        for node in ast.walk(tree):
            where = f"{relative}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
                private = node.module.startswith("auditkeep.delivery._")
                imported = tuple(sorted(alias.name for alias in node.names))
                if (
                    private
                    and not inside
                    and (relative, node.module, imported) not in (ALLOWED_PRIVATE)
                ):
                    found.append(f"{where}: imports {node.module} ({', '.join(imported)})")
            else:
                names = []
            if not home and any(name.split(".")[0] == "fcntl" for name in names):
                found.append(f"{where}: imports fcntl")
            if not home and isinstance(node, ast.Attribute) and node.attr in ("flock", "lockf"):
                found.append(f"{where}: calls {node.attr}")
            if (
                not home
                and isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and NAMES.search(node.value)
            ):
                found.append(f"{where}: spells {NAMES.findall(node.value)[0]!r}")
    return sorted(found, key=lambda text: (text.split(":")[0], int(text.split(":")[1]), text))


class TestDeliveryOwnsItsFiles:
    def test_no_module_outside_the_delivery_package_touches_its_files_or_locks(self) -> None:
        """fcntl, flock, .seg/.ack and dead-letters appear only in auditkeep/delivery/_files.py."""
        assert offences(SRC) == []
        # and nothing in the agent's distribution either
        assert offences(AGENT_SRC) == []

    def test_the_scan_sees_the_places_it_guards(self) -> None:
        """The scan walks the real tree, and would see each kind of offence."""
        found = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")}
        assert {"auditkeep/delivery/_files.py", "auditkeep/sinks/file.py"} <= found
        files = (SRC / FILES).read_text()
        assert "import fcntl" in files
        assert '".seg"' in files
        assert '"dead-letters"' in files

    def test_the_scan_names_an_offending_module(self, tmp_path: Path) -> None:
        """A module elsewhere that flocks, or spells a segment name, is named with its line."""
        (tmp_path / "auditkeep" / "delivery").mkdir(parents=True)
        (tmp_path / "auditkeep" / "delivery" / "_files.py").write_text('import fcntl\nS = ".seg"\n')
        (tmp_path / "auditkeep" / "delivery" / "status.py").write_text(
            '"""Reads *.seg files."""\nGLOB = "*.seg"\n'
        )
        (tmp_path / "auditkeep" / "stray.py").write_text(
            "import fcntl\n"
            "def f(fd):\n"
            "    fcntl.flock(fd, 2)\n"
            "    return base / 'dead-letters' / f'{name}.ack'\n"
            "from auditkeep.delivery._records import scan_segment\n"
        )
        assert offences(tmp_path) == [
            "auditkeep/delivery/status.py:2: spells '.seg'",
            "auditkeep/stray.py:1: imports fcntl",
            "auditkeep/stray.py:3: calls flock",
            "auditkeep/stray.py:4: spells '.ack'",
            "auditkeep/stray.py:4: spells 'dead-letters'",
            "auditkeep/stray.py:5: imports auditkeep.delivery._records (scan_segment)",
        ]
