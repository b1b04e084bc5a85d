"""Run one child process (git, or a patch check command) with a deadline and scrubbed output.

Every git command the agent runs goes through ``run``:

- the real binary, argv as a list (no shell), stdin from a pipe or
  ``/dev/null``, never a terminal;
- its own session (process group): on the deadline, or when the caller is
  cancelled, the whole group is killed (git's ``remote-https`` helper too) and
  reaped, so nothing outlives the call;
- an environment built from nothing (``git_env``): no inherited ``GIT_*``
  variable, no user or system configuration, no hooks, no prompts, English
  messages (``LANG=C``) so failures can be classified;
- stdout and stderr read with a bound (a runaway command cannot fill memory);
  stderr is scrubbed whole (the process redactor plus the caller's secrets)
  before anything else sees it, and only then may it be cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gitlab_copilot_agent.git.errors import GIT_ERROR, TIMEOUT, GitError
from gitlab_copilot_agent.scrub import scrub

MAX_STDOUT_BYTES: Final = 64 * 1024 * 1024
MAX_STDERR_BYTES: Final = 256 * 1024
REASON_CHARS: Final = 400
_REAP_S: Final = 5.0
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# Configuration every git command gets (through GIT_CONFIG_COUNT, never argv or a file):
# nothing from the repository or the server may run code or change where data goes.
BASE_CONFIG: Final[tuple[tuple[str, str], ...]] = (
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.askPass", ""),
    ("credential.helper", ""),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("advice.detachedHead", "false"),
    ("init.defaultBranch", "main"),
    ("http.followRedirects", "false"),
    ("transfer.credentialsInUrl", "die"),
    ("protocol.allow", "never"),
    ("protocol.https.allow", "always"),
)

# Let git reach the network the way the host is set up to; nothing else is inherited.
_PASSTHROUGH: Final = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "TMPDIR",
    "TZ",
)
# The host's CA settings for git itself (not for a check command).
_GIT_PASSTHROUGH: Final = ("GIT_SSL_CAINFO", "GIT_SSL_CAPATH")


@dataclass(frozen=True)
class Completed:
    """A finished process: exit status, raw stdout, and stderr already scrubbed (not cut)."""

    returncode: int
    stdout: bytes
    stderr: str


def git_binary() -> str:
    """The absolute path of ``git`` (found once per call on ``PATH``).

    Raises:
        GitError: git is not installed.
    """
    found = shutil.which("git")
    if found is None:
        raise GitError(GIT_ERROR, "git is not installed (scripts/install-system-deps installs it)")
    return found


def plain_env(home: Path) -> dict[str, str]:
    """The environment of a child that must know nothing: PATH, an empty HOME, English."""
    env = {k: os.environ[k] for k in _PASSTHROUGH if os.environ.get(k)}
    env.update(
        PATH=os.environ.get("PATH") or os.defpath,
        HOME=str(home),
        XDG_CONFIG_HOME=str(home),
        LANG="C",
        LC_ALL="C",
    )
    return env


def git_env(
    home: Path,
    *,
    config: Sequence[tuple[str, str]] = (),
    extra: Mapping[str, str] | None = None,
    repo: Path | None = None,
) -> dict[str, str]:
    """A git child's whole environment: ``plain_env`` plus git's own safety settings.

    ``config`` pairs are added after ``BASE_CONFIG`` as ``GIT_CONFIG_KEY_n`` /
    ``GIT_CONFIG_VALUE_n``: the only way a credential reaches git (an
    environment is readable only by the same user; argv is readable by all).
    With ``repo``, git may not look above it for a repository
    (``GIT_CEILING_DIRECTORIES``): a directory that is not a clone is an
    error, never some enclosing repository.
    """
    env = plain_env(home)
    if repo is not None:
        env["GIT_CEILING_DIRECTORIES"] = str(Path(repo).absolute().parent)
    env.update({k: os.environ[k] for k in _GIT_PASSTHROUGH if os.environ.get(k)})
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TEMPLATE_DIR=str(home / "templates"),
        GIT_OPTIONAL_LOCKS="0",
    )
    pairs = [*BASE_CONFIG, *config]
    env["GIT_CONFIG_COUNT"] = str(len(pairs))
    for index, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    if extra:
        env.update(extra)
    return env


def make_home(path: Path) -> Path:
    """Create the empty HOME (and the empty template directory) git children get."""
    (path / "templates").mkdir(parents=True, exist_ok=True)
    return path


def short(text: str, limit: int = REASON_CHARS) -> str:
    """Already-scrubbed text as one short line: control characters out, then cut."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def failure_lines(stderr: str) -> str:
    """The lines of git's (scrubbed) stderr that say what went wrong, most telling first."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    keep = [ln for ln in lines if ln.startswith(("fatal:", "error:", "remote:", "!"))]
    return " | ".join(keep or lines)


async def run(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout_s: float,
    what: str,
    stdin: bytes | None = None,
    secrets: Sequence[str] = (),
    max_stdout: int = MAX_STDOUT_BYTES,
) -> Completed:
    """Run ``argv`` and return how it ended; never raises for a non-zero exit.

    Args:
        what: how messages name the command (``git push``), never its arguments.
        secrets: exact values scrubbed from stderr besides what the process
            redactor knows.

    Raises:
        GitError: ``timeout`` (the group was killed), or ``git_error`` when the
            program cannot be started.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise GitError(GIT_ERROR, f"cannot start {what}: {why}") from None
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(timeout_s):
            out, err, _ = await asyncio.gather(
                _read_head(proc.stdout, max_stdout),
                _read_tail(proc.stderr, MAX_STDERR_BYTES),
                _feed(proc, stdin),
            )
            returncode = await proc.wait()
    except TimeoutError:
        await _kill(proc)
        raise GitError(TIMEOUT, f"{what} gave no result within {timeout_s:g} s; killed") from None
    except BaseException:
        # Cancelled (or anything else): the command must not outlive the call.
        await _kill(proc)
        raise
    text = scrub(err.decode("utf-8", "replace"), *secrets)
    return Completed(returncode, out, text)


async def _feed(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    if data is None or proc.stdin is None:
        return
    # The child may exit before reading everything (git apply on a corrupt patch).
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.close()
        await proc.stdin.wait_closed()


async def _read_head(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Keep the first ``limit`` bytes, drain the rest (the child never blocks on a full pipe)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Keep the last ``limit`` bytes: git says what failed at the end."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > 2 * limit:
            del kept[:-limit]
    return bytes(kept[-limit:])


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError, ProcessLookupError):
        async with asyncio.timeout(_REAP_S):
            await proc.wait()
