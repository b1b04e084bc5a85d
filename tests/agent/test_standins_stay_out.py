"""The production service never imports the stand-ins; the stand-ins never import the agent."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import orjson

import agent_standins
import auditkeep
import gitlab_copilot_agent

AGENT = Path(gitlab_copilot_agent.__file__).resolve().parent
STANDINS = Path(agent_standins.__file__).resolve().parent
DEMO = "demo.py"

# Every agent module but the demo command, then the serve path itself: settings,
# the composed parts (the lifespan's lazy imports included) and one request.
SERVE_PATH = r"""
import asyncio, contextlib, os, pkgutil, sys
import orjson
import gitlab_copilot_agent

names = sorted(
    m.name for m in pkgutil.walk_packages(gitlab_copilot_agent.__path__, "gitlab_copilot_agent.")
    if m.name != "gitlab_copilot_agent.demo"
)
for name in names:
    __import__(name)
from gitlab_copilot_agent.cli import build_parser
from gitlab_copilot_agent.composition import compose
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.settings import Settings

settings = Settings.from_env({
    "GITLAB_URL": "http://127.0.0.1:9",
    "GITLAB_TOKEN": "glpat-layering-0000000",
    "GITLAB_WEBHOOK_SECRET": "layering-secret",
})
build_parser().parse_args(["serve"])
app = create_app(settings)

async def main():
    async with contextlib.AsyncExitStack() as stack:
        services = await compose(settings, stack)
        await services.events.dispatch("Push Hook", {})

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "agent_standins")
sys.stdout.buffer.write(orjson.dumps({"modules": names, "standins_loaded": loaded}))
"""


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, top-level package, at module level?) for every absolute import."""
    tree = ast.parse(path.read_bytes(), str(path))
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lazy.update(id(child) for child in ast.walk(node) if child is not node)
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0], id(node) not in lazy) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0], id(node) not in lazy))
    return found


class TestStandinsStayOut:
    def test_the_serve_path_loads_no_standin(self, tmp_path: Path) -> None:
        """Importing every agent module (but ``demo``) and composing the service loads none."""
        proc = subprocess.run(
            [sys.executable, "-c", SERVE_PATH],
            capture_output=True,
            timeout=60,
            check=False,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": f"{AGENT.parent}:{Path(auditkeep.__file__).resolve().parents[1]}",
                "HOME": str(tmp_path),
                "AUDIT_LOG_ENABLED": "false",
            },
        )
        assert proc.returncode == 0, proc.stderr.decode()
        report = orjson.loads(proc.stdout)
        assert report["standins_loaded"] == []
        # The walk really covered the service.
        assert {
            "gitlab_copilot_agent.composition",
            "gitlab_copilot_agent.main",
            "gitlab_copilot_agent.api.webhooks",
            "gitlab_copilot_agent.cli",
        } <= set(report["modules"])

    def test_only_the_demo_module_imports_the_standins_and_the_cli_only_lazily(self) -> None:
        """Only ``demo.py`` imports ``agent_standins``; the CLI imports ``demo`` in a function."""
        importers = sorted(
            str(path.relative_to(AGENT))
            for path in AGENT.rglob("*.py")
            if any(name == "agent_standins" for _, name, _ in _imports(path))
        )
        assert importers == [DEMO]
        cli = ast.parse((AGENT / "cli.py").read_bytes())
        demo_imports = [
            node
            for node in ast.walk(cli)
            if isinstance(node, ast.ImportFrom) and node.module == "gitlab_copilot_agent.demo"
        ]
        assert len(demo_imports) == 1
        assert not any(node is demo_imports[0] for node in cli.body)

    def test_the_standins_do_not_import_the_agent(self) -> None:
        """The stand-ins are test support for any client, not a part of the agent."""
        offenders = [
            f"{path.name}:{line}"
            for path in sorted(STANDINS.rglob("*.py"))
            for line, name, _ in _imports(path)
            if name == "gitlab_copilot_agent"
        ]
        assert offenders == []
        assert {"base.py", "gitlab.py", "llm.py", "faults.py", "servers.py"} <= {
            p.name for p in STANDINS.glob("*.py")
        }

    def test_every_source_directory_is_a_regular_package_with_its_marker(self) -> None:
        """Each directory of .py files has __init__.py (the wheel includes it) and py.typed."""
        for root in (AGENT, STANDINS):
            directories = {p.parent for p in root.rglob("*.py") if "__pycache__" not in p.parts}
            assert sorted(str(d) for d in directories if not (d / "__init__.py").exists()) == []
            assert (root / "py.typed").exists()
