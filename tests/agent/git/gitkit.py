"""Shared pieces of the git-layer tests: fixtures, the token, a real trail, argv capture, leaks.

Test modules import this with their own directory put on ``sys.path``.

Argv capture uses a PEP 578 audit hook on ``subprocess.Popen`` (asyncio's
subprocesses raise it too). A hook cannot be removed once added, so one hook
is installed on first import and records only while a ``popen_log()`` block
is open.
"""

from __future__ import annotations

import base64
import contextlib
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent_standins.git_server import GitServer
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.git.runner import GitCredentials, GitRunner

# No vendor prefix on purpose: the redactor's token shapes cannot hide a leak;
# only the runner's own scrubbing and the env-only design keep it out.
TOKEN = "gt7f3a9c1e5b2d8f4a6c0e9b1d3f5a7c2e"
USERNAME = "oauth2"
BASIC = base64.b64encode(f"{USERNAME}:{TOKEN}".encode()).decode()
PROJECT = "group/app"
FILES = {"README.md": "# App\n\nA small app.\n", "src/app.py": "print('hi')\n"}


@dataclass(frozen=True)
class Spawn:
    """One ``subprocess.Popen`` audit event: the program, its argv, its cwd and environment."""

    executable: str
    argv: tuple[str, ...]
    cwd: str | None
    env: dict[str, str] | None

    @property
    def is_git(self) -> bool:
        return Path(self.argv[0]).name == "git" if self.argv else False


@dataclass
class PopenLog:
    spawns: list[Spawn] = field(default_factory=list)

    def git(self, subcommand: str | None = None) -> list[Spawn]:
        found = [s for s in self.spawns if s.is_git]
        if subcommand is None:
            return found
        return [s for s in found if subcommand in s.argv[1:3]]


_active: list[PopenLog] = []
_lock = threading.Lock()


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "subprocess.Popen" or not _active:
        return
    executable, argv, cwd, env = args
    argv_list = [argv] if isinstance(argv, str | bytes) else list(argv)
    spawn = Spawn(
        str(executable),
        tuple(str(a) for a in argv_list),
        str(cwd) if cwd is not None else None,
        {str(k): str(v) for k, v in env.items()} if env is not None else None,
    )
    with _lock:
        for log in _active:
            log.spawns.append(spawn)


sys.addaudithook(_hook)


@contextlib.contextmanager
def popen_log() -> Iterator[PopenLog]:
    """Record every process this interpreter starts inside the block (any thread)."""
    log = PopenLog()
    with _lock:
        _active.append(log)
    try:
        yield log
    finally:
        with _lock:
            _active.remove(log)


def fragments(secret: str, size: int = 8) -> set[str]:
    """Every ``size``-character piece of ``secret``."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


SECRET_FRAGMENTS = fragments(TOKEN) | fragments(BASIC) | {f"{USERNAME}:{TOKEN}"}


def leaks(text: str | bytes, pieces: set[str] = SECRET_FRAGMENTS) -> list[str]:
    """The pieces of the credential found in ``text`` (bytes read as latin-1)."""
    blob = text.decode("latin-1") if isinstance(text, bytes) else text
    return sorted(p for p in pieces if p in blob)


def files_leaking(root: Path) -> list[str]:
    """Every file under ``root`` (``.git`` included) that holds a piece of the credential."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and leaks(path.read_bytes()):
            found.append(str(path.relative_to(root)))
    return found


class Trail:
    """A real audit logger writing JSON lines to a file, read back and schema-validated.

    Its redactor is a fresh one that knows no secret: a clean trail then
    proves the code never handed the credential to the logger.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "audit.jsonl"
        self.logger = AuditLogger(
            FileSink(self.path, max_bytes=0),
            service="gitlab-copilot-agent",
            spool_dir=directory / "spool",
            metrics=AuditMetrics(CollectorRegistry()),
            redactor=SecretRedactor(),
        )

    def entries(self, action_prefix: str = "") -> list[dict[str, Any]]:
        assert self.logger.flush(5.0)
        entries = validate_entries(read_trail(self.path))
        return [e for e in entries if e["action"].startswith(action_prefix)]

    def raw(self) -> bytes:
        assert self.logger.flush(5.0)
        return b"\n".join(read_trail(self.path))

    def close(self) -> None:
        self.logger.close()


@dataclass
class Approval:
    """A ``PushAuthorization`` whose verdict the test chooses; counts its calls."""

    task_id: str = "task-1"
    approved: bool = True
    calls: int = 0

    async def verify(self) -> None:
        self.calls += 1
        if not self.approved:
            raise PermissionError(f"no approve decision recorded for task {self.task_id}")


def make_runner(
    trail: Trail, server_url: str, *, token: str = TOKEN, timeout_s: float = 30.0
) -> GitRunner:
    """A runner for the loopback git server (plain http allowed for 127.0.0.1 only)."""
    return GitRunner(
        trail.logger,
        gitlab_url=server_url,
        credentials=GitCredentials(token, USERNAME),
        allowed_insecure_hosts=["127.0.0.1"],
        timeout_s=timeout_s,
    )


def argv_text(spawns: Sequence[Spawn]) -> str:
    return "\n".join(" ".join(s.argv) for s in spawns)


# -- fixtures (conftest.py loads them) --------------------------------------------


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
