"""Run ``gitlab-copilot-agent`` as a real process, with a clean environment, and watch it bind.

Test modules import this with their own directory put on ``sys.path`` (pytest
runs in importlib mode, so tests are not packages).

The child runs ``cli.main`` under a wrapper that records every
``socket.bind`` to a marker file before binding: a test can then tell "exited
before it ever bound a port" from "bound, then failed".
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Final

import auditkeep
import gitlab_copilot_agent

SRC: Final = Path(gitlab_copilot_agent.__file__).resolve().parents[1]
LIBRARY_SRC: Final = Path(auditkeep.__file__).resolve().parents[1]

CHILD: Final = r"""
import os, socket, sys
_marker = os.environ.pop("AGENT_TEST_BIND_MARKER")
_bind = socket.socket.bind
def _recording_bind(self, address):
    with open(_marker, "a") as f:
        f.write(repr(address) + "\n")
    return _bind(self, address)
socket.socket.bind = _recording_bind
from gitlab_copilot_agent.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

VALID: Final = {
    "GITLAB_URL": "http://127.0.0.1:9",
    "GITLAB_TOKEN": "glpat-process-test-000000",
    "GITLAB_WEBHOOK_SECRET": "process-test-webhook-secret",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(tmp: Path, values: Mapping[str, str]) -> dict[str, str]:
    """Only what the child needs: no GITLAB_/LLM_/AUDIT_ variable leaks in from the test run."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # Both source trees: a checkout's library, not another installed one.
        "PYTHONPATH": os.pathsep.join((str(SRC), str(LIBRARY_SRC))),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "AUDIT_LOG_SPOOL_DIR": str(tmp / "spool"),
        "AGENT_TEST_BIND_MARKER": str(tmp / "bound"),
        **values,
    }


def bound(tmp: Path) -> list[str]:
    """The addresses the child bound, in order."""
    marker = tmp / "bound"
    return marker.read_text().splitlines() if marker.exists() else []


def run(tmp: Path, values: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command to its end (a refused configuration exits by itself)."""
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        env=environment(tmp, values),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Served:
    """``serve`` running in the background; ``stop()`` sends SIGTERM and collects its output."""

    def __init__(self, tmp: Path, values: Mapping[str, str]) -> None:
        self.tmp = tmp
        self.port = free_port()
        self._out: IO[str] = (tmp / "stdout.txt").open("w+")
        self._err: IO[str] = (tmp / "stderr.txt").open("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, "serve"],
            env=environment(tmp, {"PORT": str(self.port), "LOG_FORMAT": "json", **values}),
            stdout=self._out,
            stderr=self._err,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.returncode: int | None = None

    def wait_listening(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited ({self.process.returncode}): {self.stderr()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"serve did not listen within {timeout_s} s: {self.stderr()}")

    def stop(self, timeout_s: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.returncode = self.process.wait(10)
        self._out.close()
        self._err.close()
        return self.returncode

    def stdout(self) -> str:
        return (self.tmp / "stdout.txt").read_text()

    def stderr(self) -> str:
        return (self.tmp / "stderr.txt").read_text()
