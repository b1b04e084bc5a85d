"""Executors run a coding task somewhere else than the agent's process.

``Executor`` is what the workflow calls; ``LocalExecutor`` runs each task as
``gitlab-copilot-agent run-task`` (``python -m gitlab_copilot_agent.cli
run-task``), the entry point a Kubernetes Job runs too (``tasks.kubernetes``):

- the task spec on stdin (no secret in it, none in argv);
- the environment built from scratch: ``PATH``, ``LANG``/``LC_*``/``TZ``,
  ``PYTHONPATH`` and ``VIRTUAL_ENV`` (so the same installation runs), the
  ``AUDIT_LOG_*`` settings (the task's entries go to the agent's destination;
  the file sink takes several processes), the ``OTEL_*`` settings (the task
  traces as the agent does), the correlation scope and actor, and with
  tracing on ``TRACEPARENT``/``TRACESTATE``/``BAGGAGE`` naming the agent's
  ``coding.task`` span (``auditkeep.subprocess_env``), the task settings re-encoded from the
  agent's validated ones (GitLab URL and token, LLM, ``CODING_*``, ``GIT_*``),
  and ``HOME``/``TMPDIR`` set to the task's own directory (with
  ``XDG_STATE_HOME`` kept at the agent's, so a task's audit spool is the
  agent's and survives the task's directory). Never the webhook secrets,
  never ``REDIS_URL``;
- its own session (process group), so a kill reaches git and the check
  command too;
- the channel (``tasks.channel``) on an inherited descriptor, through which
  the push step asks the approval gate and the result comes back.

The agent waits until the deadline, then kills the group (``SIGKILL``) and
reports ``timeout``; a task killed by anything else is ``killed``; a cancel
(``/copilot cancel``, shutdown) kills it and reports ``cancelled``. Either way
the workflow records ``task.finished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final, Protocol

from auditkeep.context import subprocess_env
from gitlab_copilot_agent.logs import get_logger
from gitlab_copilot_agent.settings import ExecutorSettings, Settings, task_environment
from gitlab_copilot_agent.tasks.channel import CHANNEL_FD_ENV, ParentChannel
from gitlab_copilot_agent.tasks.spec import STATUSES, TaskOutcome, TaskSpec

__all__ = ["Executor", "LocalExecutor", "PushVerifier", "result_outcome"]

_log = get_logger(__name__)

PASSTHROUGH: Final = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
# OTEL_*: the task process sets up tracing as the agent did (TRACEPARENT comes from
# subprocess_env, naming the agent's span).
PASSTHROUGH_PREFIXES: Final = ("AUDIT_LOG_", "OTEL_")
KILL_GRACE_S: Final = 5.0

PushVerifier = Callable[[str, str, str], Awaitable[None]]
"""``verify(task_id, head_sha, instruction_sha256)``: raises ``PermissionError`` to refuse."""


class Executor(Protocol):
    """Runs one coding task to its end (``LocalExecutor``, ``kubernetes.KubernetesExecutor``)."""

    @property
    def name(self) -> str:
        """``local`` or ``kubernetes`` (``task.started``'s ``executor``)."""
        ...

    async def run(self, spec: TaskSpec, *, verify_push: PushVerifier) -> TaskOutcome:
        """Run the task until it ends or its deadline passes; never raises for the task's
        own failures (they are the outcome). Cancelling the call stops the task."""
        ...

    async def cancel(self, task_id: str) -> bool:
        """Stop a running task (True if it was running)."""
        ...


class LocalExecutor:
    """Each task in its own ``run-task`` process on this machine.

    Args:
        settings: the agent's settings (the task sections are handed down).
        executor: deadline and work directory (``TASK_*``).
        base_environ: where ``PATH``, ``AUDIT_LOG_*``… come from (default ``os.environ``).
        python: the interpreter that runs the task (default: this one).

    Each task gets a directory of its own (0700) under ``TASK_WORK_DIR``: its
    ``HOME``, its clone. It is removed when the task ends, unless
    ``TASK_KEEP_WORK_DIRS=true`` (for inspection: the no-secret test searches it).
    """

    name = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        executor: ExecutorSettings | None = None,
        base_environ: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self._settings = settings
        self._executor = executor or settings.executor
        self._base = base_environ
        self._python = python
        self._keep = self._executor.keep_work_dirs
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._cancelled: set[str] = set()
        root = self._executor.work_dir or os.path.join(
            tempfile.gettempdir(), "gitlab-copilot-agent-tasks"
        )
        self.work_root = Path(root)

    def running(self) -> dict[str, int]:
        """Task id → pid of the task processes running now."""
        return {task: proc.pid for task, proc in self._running.items()}

    def environment(self, home: Path, channel_fd: int) -> dict[str, str]:
        """The task process's whole environment (see the module docstring)."""
        base = os.environ if self._base is None else self._base
        env = {
            k: v for k, v in base.items() if k in PASSTHROUGH or k.startswith(PASSTHROUGH_PREFIXES)
        }
        env.update(task_environment(self._settings))
        # The task's HOME is its own directory, removed after it: keep the audit spool's
        # default where the agent's is, so anything the task spooled is adopted, not lost.
        state = base.get("XDG_STATE_HOME") or os.path.join(
            os.path.expanduser("~"), ".local", "state"
        )
        env["XDG_STATE_HOME"] = state
        env.update(
            {
                "HOME": str(home),
                "TMPDIR": str(home),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                CHANNEL_FD_ENV: str(channel_fd),
            }
        )
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        return subprocess_env(env)

    async def run(self, spec: TaskSpec, *, verify_push: PushVerifier) -> TaskOutcome:
        self.work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix=f"task-{spec.task_id}-", dir=self.work_root))
        channel = ParentChannel(verify_push, task_id=spec.task_id)
        started = time.monotonic()
        proc: asyncio.subprocess.Process | None = None
        served: asyncio.Task[None] | None = None
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "gitlab_copilot_agent.cli",
                "run-task",
                stdin=asyncio.subprocess.PIPE,
                env=self.environment(home, channel.child_fd),
                cwd=home,
                pass_fds=(channel.child_fd,),
                start_new_session=True,
            )
            channel.child_started()
            self._running[spec.task_id] = proc
            served = asyncio.create_task(channel.serve())
            assert proc.stdin is not None
            with contextlib.suppress(ConnectionError):
                proc.stdin.write(spec.to_json())
                await proc.stdin.drain()
                proc.stdin.close()
            remaining = self._executor.timeout_s - (time.monotonic() - started)
            try:
                code = await asyncio.wait_for(proc.wait(), max(0.0, remaining))
            except TimeoutError:
                _kill_group(proc)
                await proc.wait()
                return TaskOutcome(
                    "timeout",
                    reason="deadline",
                    detail=f"no result within TASK_TIMEOUT_S={self._executor.timeout_s:g} s",
                    exit_code=proc.returncode,
                    pid=proc.pid,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(served), 5)
            return dataclasses.replace(self._outcome(spec, code, channel.result), pid=proc.pid)
        except asyncio.CancelledError:
            if proc is not None and proc.returncode is None:
                _kill_group(proc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
            raise
        finally:
            self._running.pop(spec.task_id, None)
            self._cancelled.discard(spec.task_id)
            if proc is not None:
                _kill_group(proc)  # whatever the task left behind (git, the check command)
            if served is not None:
                served.cancel()
            channel.close()
            if not self._keep:
                shutil.rmtree(home, ignore_errors=True)

    def _outcome(self, spec: TaskSpec, code: int, result: dict[str, object] | None) -> TaskOutcome:
        if spec.task_id in self._cancelled:
            return TaskOutcome("cancelled", reason="cancelled", detail="cancelled", exit_code=code)
        if code < 0:
            name = (
                signal.Signals(-code).name
                if -code in signal.Signals._value2member_map_
                else str(-code)
            )
            return TaskOutcome(
                "killed",
                reason=f"signal_{name.lower()}",
                detail=f"the task process was killed by {name}",
                exit_code=code,
            )
        return result_outcome(result, code)

    async def cancel(self, task_id: str) -> bool:
        proc = self._running.get(task_id)
        if proc is None or proc.returncode is not None:
            return False
        self._cancelled.add(task_id)
        _kill_group(proc)
        return True


def result_outcome(result: Mapping[str, object] | None, code: int | None) -> TaskOutcome:
    """The outcome a task process reported (its ``result``), whichever executor carried it."""
    if result is None:
        return TaskOutcome(
            "failed",
            reason="no_result",
            detail=f"the task process exited with code {code} without a result",
            exit_code=code,
        )
    status = str(result.get("status"))
    if status not in STATUSES:
        status = "failed"
    commit = result.get("commit_sha")
    facts = result.get("facts")
    return TaskOutcome(
        status,
        commit_sha=commit if isinstance(commit, str) and status == "pushed" else None,
        reason=_text(result.get("reason")),
        detail=_text(result.get("detail")),
        exit_code=code,
        facts=dict(facts) if isinstance(facts, dict) else {},
    )


def _text(value: object) -> str | None:
    return value[:500] if isinstance(value, str) else None


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
