"""The fault suite's laboratory: small real filesystems that fill up, and child emitters.

A ``FaultLab`` mounts tmpfs filesystems of a few MiB (root only: the tests that
need one skip with the reason otherwise; CI runs as root), fills them to the
last byte and frees them again, and runs ``emitter.py`` children configured by
``AUDIT_LOG_*`` alone. Everything it starts it stops, and it unmounts what it
mounted, in reverse order.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

EMITTER = Path(__file__).with_name("emitter.py")


class SmallFs:
    """A mounted tmpfs of a fixed size, which ``fill`` makes completely full."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fillers: list[Path] = []

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave_bytes: int = 0) -> None:
        """Write a filler file until the filesystem refuses the last byte, then give back
        ``leave_bytes`` (page-rounded), so that the next writes run out of space part-way."""
        path = self.root / f"filler-{len(self._fillers)}"
        self._fillers.append(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
                data = b"\0" * chunk
                with contextlib.suppress(OSError):
                    while True:
                        if os.write(fd, data) < chunk:
                            break
            assert self.free_bytes() == 0
            if leave_bytes:
                os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave_bytes))
        finally:
            os.close(fd)

    def free(self) -> None:
        """Delete every filler: the space returns at once."""
        for path in self._fillers:
            path.unlink()
        self._fillers.clear()


class Emitter:
    """A child process emitting through the public API, driven one command at a time."""

    def __init__(self, env: dict[str, str], out_dir: Path, name: str) -> None:
        self.fallback_path = out_dir / f"{name}.fallback.jsonl"
        self.stderr_path = out_dir / f"{name}.stderr.txt"
        read_fd, write_fd = os.pipe()
        with open(self.fallback_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(EMITTER), str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env=env,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        self._replies = read_fd
        self._pending = b""
        self.slowest_emit_s = 0.0

    def call(self, command: str, timeout_s: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([self._replies], [], [], timeout_s)
            chunk = os.read(self._replies, 1 << 20) if ready else b""
            if not chunk:
                raise AssertionError(
                    f"emitter gave no answer to {command!r}: {self.stderr_path.read_text()}"
                )
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def emit(self, phase: str, count: int) -> list[str]:
        reply = self.call(f"emit {phase} {count}")
        ids: list[str] = reply["ids"]
        assert len(ids) == count
        self.slowest_emit_s = max(self.slowest_emit_s, float(reply["slowest_emit_s"]))
        return ids

    def flush(self, timeout_s: float) -> tuple[bool, float]:
        reply = self.call(f"flush {timeout_s}", timeout_s + 30)
        return bool(reply["ok"]), float(reply["elapsed"])

    def cpu_while_idle(self, seconds: float) -> float:
        return float(self.call(f"cpu {seconds}", seconds + 30)["cpu"])

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.call("metrics").items()}

    def close(self, timeout_s: float) -> bool:
        ok = bool(self.call(f"close {timeout_s}", timeout_s + 30)["ok"])
        assert self.proc.wait(30) == 0, self.stderr_path.read_text()
        return ok

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        self.kill()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(OSError):
            os.close(self._replies)

    def fallback_ids(self) -> list[str]:
        return event_ids(self.fallback_path.read_bytes().splitlines())

    def stderr(self) -> str:
        return self.stderr_path.read_text()


class FaultLab:
    """Owns the filesystems and processes of one test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._stack = contextlib.ExitStack()

    def small_fs(self, name: str, size: str) -> SmallFs:
        """Mount a tmpfs of ``size`` (like ``2m``) at ``tmp_path/name``."""
        if os.geteuid() != 0:
            pytest.skip(
                "a real full filesystem needs root to mount a small tmpfs (CI runs as root)"
            )
        root = self.tmp_path / name
        root.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        self._stack.callback(
            subprocess.run, ["umount", "--lazy", str(root)], capture_output=True, check=False
        )
        return SmallFs(root)

    def emitter(self, name: str, **settings: str) -> Emitter:
        """Start a child configured by ``AUDIT_LOG_<KEY>=value`` for each setting."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_LOG_")}
        env.update({f"AUDIT_LOG_{key.upper()}": value for key, value in settings.items()})
        child = Emitter(env, self.tmp_path, name)
        self._stack.callback(child.stop)
        return child

    def close(self) -> None:
        self._stack.close()

    @staticmethod
    def event_ids(lines: Iterable[bytes]) -> list[str]:
        return event_ids(lines)

    @staticmethod
    def segment_sizes(spool_base: Path) -> list[int]:
        return segment_sizes(spool_base)


def event_ids(lines: Iterable[bytes]) -> list[str]:
    """The event_id of every line; each line must be one whole JSON object."""
    ids: list[str] = []
    for line in lines:
        if line:
            ids.append(orjson.loads(line)["event_id"])
    return ids


def segment_sizes(spool_base: Path) -> list[int]:
    return [p.stat().st_size for p in spool_base.rglob("*.seg")]
