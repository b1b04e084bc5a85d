"""Fixtures for the git layer: a real git server on loopback, a real trail, a runner."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gitkit import FILES, PROJECT, TOKEN, USERNAME, Trail, make_runner

from agent_standins.git_server import GitServer
from gitlab_copilot_agent.git.runner import GitRunner


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    found = Trail(tmp_path)
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    """A started git server holding ``group/app`` with branches ``main`` and ``feature``."""
    with GitServer(tmp_path / "server", token=TOKEN, username=USERNAME) as git_server:
        git_server.create_repo(PROJECT, FILES)
        git_server.create_branch(PROJECT, "feature")
        git_server.reset()
        yield git_server


@pytest.fixture
def runner(trail: Trail, server: GitServer) -> Iterator[GitRunner]:
    found = make_runner(trail, server.url)
    try:
        yield found
    finally:
        found.close()
