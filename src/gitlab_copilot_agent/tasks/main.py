"""``gitlab-copilot-agent run-task``: the task process's entry point (local and Kubernetes).

Reads the task spec from stdin (or ``--task-file``), its settings from the
environment (``TaskSettings``: GitLab, LLM, ``CODING_*``, ``GIT_*``; never the
webhook secrets), ``AUDIT_LOG_*`` for its own audit logger (same destination
as the agent's), and re-opens the agent's correlation scope
(``AUDIT_CORRELATION_ID``, ``AUDIT_ACTOR_*``). With ``OTEL_*`` it traces as the
agent does (``gitlab_copilot_agent.tracing``) and continues the agent's trace
from ``TRACEPARENT``: its ``task.process`` span is a child of the agent's
``coding.task``. Its result goes back over the channel
(``COPILOT_TASK_CHANNEL_FD``). If the agent goes away the task stops.

In a Kubernetes Job's pod (``COPILOT_TASK_CHANNEL=redis``, ``COPILOT_TASK_ID``,
``REDIS_URL``) the spec is read from Redis and the channel runs through Redis
(``tasks.redis_channel``); the rest is the same.

Exit codes: 0 a result was produced (pushed, no change, refused, failed);
2 a bad configuration or spec (one line on stderr); 3 the agent went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from auditkeep import Actor
from auditkeep.config import AuditConfig
from auditkeep.context import correlation_scope, scope_from_env
from auditkeep.exceptions import ConfigError
from auditkeep.redact import register_secret
from gitlab_copilot_agent import tracing
from gitlab_copilot_agent.logs import configure_logging, get_logger
from gitlab_copilot_agent.scrub import userinfo_secrets
from gitlab_copilot_agent.settings import (
    SERVICE_NAME,
    RedisSettings,
    SettingsError,
    TaskSettings,
    pod_redis_settings,
)
from gitlab_copilot_agent.tasks.channel import CHANNEL_ENV, TASK_ID_ENV, ChannelClient, TaskChannel
from gitlab_copilot_agent.tasks.spec import MAX_SPEC_BYTES, TaskSpec

__all__ = ["run_task_command"]

PREFIX = "gitlab-copilot-agent run-task: "
EXIT_BAD_INPUT = 2
EXIT_AGENT_GONE = 3

_log = get_logger(__name__)


def run_task_command(task_file: str | None) -> int:
    """Run one task process; return its exit code."""
    try:
        settings = TaskSettings.from_env()
    except SettingsError as exc:
        print(f"{PREFIX}invalid configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    register_secret(*settings.secrets())
    try:
        audit_config = AuditConfig.from_env(service=SERVICE_NAME)
    except ConfigError as exc:
        print(f"{PREFIX}invalid configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    pod: RedisSettings | None = None
    spec: TaskSpec | None = None
    if os.environ.get(CHANNEL_ENV) == "redis":  # a Kubernetes Job's pod
        try:
            pod = pod_redis_settings()
        except SettingsError as exc:
            print(f"{PREFIX}invalid configuration: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        register_secret(*userinfo_secrets(pod.url))
        if not os.environ.get(TASK_ID_ENV):
            print(f"{PREFIX}invalid configuration: {TASK_ID_ENV}: required", file=sys.stderr)
            return EXIT_BAD_INPUT
    else:
        try:
            raw = (
                Path(task_file).read_bytes()
                if task_file
                else sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
            )
            spec = TaskSpec.from_json(raw)
        except (OSError, ValueError) as exc:
            print(f"{PREFIX}invalid task spec: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        tracing.configure_from_env()  # only when OTEL_* say so; else imports nothing
    except tracing.TracingError as exc:
        print(f"{PREFIX}invalid configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging(settings.logs)
    audit = audit_config.build()
    try:
        return asyncio.run(_main(spec, settings, audit, pod))
    finally:
        audit.close()  # within its shutdown_timeout_s
        tracing.shutdown()  # exports the task's spans


async def _pod_channel(pod: RedisSettings) -> tuple[TaskChannel, TaskSpec] | None:
    """The Redis channel and the spec the agent stored; None after one line on stderr."""
    from gitlab_copilot_agent.state.base import StateStoreError
    from gitlab_copilot_agent.state.redis_store import RedisStore
    from gitlab_copilot_agent.tasks.redis_channel import RedisChannelClient

    assert pod.url is not None
    task_id = os.environ[TASK_ID_ENV]
    store = RedisStore(pod.url, timeout_s=pod.timeout_s)
    channel = RedisChannelClient(
        store,
        task_id=task_id,
        correlation_id=os.environ.get("AUDIT_CORRELATION_ID") or task_id,
        ttl_s=3600,
    )
    try:
        return channel, await channel.spec()
    except (ValueError, StateStoreError) as exc:
        print(f"{PREFIX}invalid task spec: {exc}", file=sys.stderr)
        await store.aclose()
        return None


async def _main(
    spec: TaskSpec | None, settings: TaskSettings, audit: object, pod: RedisSettings | None
) -> int:
    from auditkeep.logger import AuditLogger
    from gitlab_copilot_agent.llm.factory import build_provider
    from gitlab_copilot_agent.tasks.runner import run_task

    assert isinstance(audit, AuditLogger)
    channel: TaskChannel | None
    if pod is not None:
        found = await _pod_channel(pod)
        if found is None:
            return EXIT_BAD_INPUT
        channel, spec = found
    else:
        channel = ChannelClient.from_env()
    assert spec is not None
    inherited = scope_from_env()
    scope: contextlib.AbstractContextManager[object] = inherited
    if not os.environ.get("AUDIT_CORRELATION_ID"):
        _log.warning("no AUDIT_CORRELATION_ID: the task's entries get the task's own id")
        scope = correlation_scope(Actor("system", "run-task"))
    # scope_from_env continues the agent's trace (TRACEPARENT) when tracing is on.
    with scope, tracing.span("task.process", {"task_id": spec.task_id}):
        provider = build_provider(settings.llm, audit)
        try:
            work = Path(os.environ.get("HOME") or os.getcwd())
            job = asyncio.create_task(
                run_task(
                    spec,
                    settings=settings,
                    audit=audit,
                    provider=provider,
                    channel=channel,
                    workdir=work,
                )
            )
            if channel is not None:
                await channel.start()
                gone = asyncio.create_task(channel.closed.wait())
                done, _ = await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
                if job not in done:
                    job.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await job
                    _log.warning("the agent went away; the task stopped", task_id=spec.task_id)
                    return EXIT_AGENT_GONE
                gone.cancel()
            result = await job
            if channel is not None:
                with contextlib.suppress(ConnectionError, OSError):
                    await channel.request("result", result=result)
            else:
                sys.stderr.write(f"{PREFIX}result: {result['status']}\n")
            return 0
        finally:
            await provider.aclose()
            if channel is not None:
                await channel.aclose()
