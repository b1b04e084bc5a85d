"""The library is a distribution of its own: installed alone, it brings no agent.

Builds and installs ``packages/auditkeep`` into a fresh virtual environment
(pip from the package registry, as a user would), then checks what a library
user sees: the ``auditkeep`` command works, there is no
``gitlab-copilot-agent`` command, and an integration whose extra is missing
says which extra to install in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "packages" / "auditkeep"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def library_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("library-venv")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path_factory.mktemp("library-source") / "auditkeep"
    shutil.copytree(LIBRARY, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    done = subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "-q", str(source)],
        capture_output=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if done.returncode != 0:
        pytest.fail(f"pip install {LIBRARY} failed:\n{done.stderr.decode()[-2000:]}")
    return where


def run(venv_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=venv_dir)


def test_the_library_alone_has_its_command_and_no_agent(library_venv: Path) -> None:
    bin_dir = library_venv / "bin"
    helped = run(library_venv, str(bin_dir / "auditkeep"), "--help")
    assert helped.returncode == 0, helped.stderr
    assert "auditkeep" in helped.stdout
    assert not (bin_dir / "gitlab-copilot-agent").exists()
    probe = run(
        library_venv,
        str(bin_dir / "python"),
        "-c",
        "import importlib.util, sys; "
        "sys.exit(any(importlib.util.find_spec(m) for m in "
        "('gitlab_copilot_agent', 'agent_standins', 'fastapi', 'httpx')))",
    )
    assert probe.returncode == 0, "the library pulled in the agent or its dependencies"


def test_installing_leaves_the_source_tree_as_it_was() -> None:
    assert not (LIBRARY / "build").exists()


def test_a_missing_extra_is_one_line_naming_it(library_venv: Path) -> None:
    done = run(
        library_venv,
        str(library_venv / "bin" / "python"),
        "-c",
        "import auditkeep.integrations.httpx",
    )
    assert done.returncode != 0
    assert "pip install 'auditkeep[http]'" in done.stderr
    assert "ModuleNotFoundError" not in done.stderr
    assert sys.version_info >= (3, 11)
