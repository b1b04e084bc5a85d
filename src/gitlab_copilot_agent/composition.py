"""The composition root: every part of the service built from settings, closed in reverse.

``compose(settings, stack)`` is the one place that knows how the parts fit:

1. the configured secrets are registered with the redactor (audit entries and
   operational logs are both scrubbed with it);
2. the audit logger: the process's, from ``auditkeep.configure()`` (the one
   documented way to build it, from ``AUDIT_LOG_*``), unless one is given —
   closed last, so everything the others do at shutdown is audited;
3. the plugins run (``DEFAULT_PLUGINS``: the built-in commands, then the review
   workflow). Each registers handlers on the event router and the command
   router and takes the clients it needs from ``Parts``; a client is built the
   first time a plugin asks for it (the GitLab client, the LLM provider) and
   its ``aclose`` goes on the stack, so a client no plugin uses is never built;
4. the dispatcher, over the event router — drained first at shutdown;
5. the webhook route's configuration and its state (replay guard, rate
   limiter: ``WebhookConfig.from_settings``), fresh for each start.

Everything that needs closing is pushed on the ``contextlib.AsyncExitStack``
as it is built, so shutdown closes in reverse order of construction and one
failure does not skip the rest. The state store (Redis or memory) and the
task executor are parts like the clients, built when the coding workflow
first asks; a plugin's background loops (the approval expiry sweep) are
cancelled before the store they use is closed. With ``TASK_EXECUTOR=kubernetes``
the executor is the ``KubernetesExecutor`` over the Redis store. The next parts
(pollers, Jira) are built here the same way, and their workflows are plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry

import auditkeep
from auditkeep import AuditLogger, register_secret
from gitlab_copilot_agent import pollers
from gitlab_copilot_agent.api.deps import Services
from gitlab_copilot_agent.api.webhooks import WebhookConfig
from gitlab_copilot_agent.clients.gitlab import GitLabClient
from gitlab_copilot_agent.clients.jira import JiraClient
from gitlab_copilot_agent.commands import builtin
from gitlab_copilot_agent.commands.router import CommandRouter
from gitlab_copilot_agent.dispatcher import Dispatcher
from gitlab_copilot_agent.events import EventRouter
from gitlab_copilot_agent.identity import AgentIdentity
from gitlab_copilot_agent.llm.base import LLMProvider
from gitlab_copilot_agent.llm.factory import build_provider
from gitlab_copilot_agent.logs import get_logger
from gitlab_copilot_agent.plugins import Plugin
from gitlab_copilot_agent.settings import SERVICE_NAME, Settings
from gitlab_copilot_agent.state.base import StateStore, build_store
from gitlab_copilot_agent.tasks.executor import Executor, LocalExecutor
from gitlab_copilot_agent.workflows import coding, review

__all__ = ["DEFAULT_PLUGINS", "DRAIN_TIMEOUT_S", "compose"]

DEFAULT_PLUGINS: Final[tuple[Plugin, ...]] = (
    builtin.install,
    review.install,
    coding.install,
    pollers.install,
)
"""What the service runs: ``/copilot`` commands (help and placeholders), the review, then the
coding tasks and their approval gate (``fix``, ``approve``, ``reject``, ``status``, ``cancel``),
then the pollers that are enabled (``POLL_*``: Jira issues → draft MRs, GitLab MRs and notes)."""

DRAIN_TIMEOUT_S: Final = 30.0
"""How long shutdown waits for deliveries in flight (uvicorn's graceful shutdown is 30 s)."""

_log = get_logger(__name__)


class _Parts:
    """``plugins.Parts``: the clients are built on first use, their closing pushed on the stack."""

    def __init__(
        self, settings: Settings, audit: AuditLogger, stack: contextlib.AsyncExitStack
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.events = EventRouter()
        self._stack = stack

    @cached_property
    def gitlab(self) -> GitLabClient:
        gitlab = self.settings.gitlab
        client = GitLabClient(
            gitlab.url,
            gitlab.token.get_secret_value(),
            self.audit,
            timeout_s=gitlab.timeout_s,
            max_retries=gitlab.max_retries,
        )
        self._stack.push_async_callback(client.aclose)
        return client

    @cached_property
    def jira(self) -> JiraClient | None:
        """The Jira client, or None while ``JIRA_URL`` is unset."""
        if not self.settings.jira.enabled:
            return None
        client = JiraClient(self.settings.jira, self.audit)
        self._stack.push_async_callback(client.aclose)
        return client

    @cached_property
    def llm(self) -> LLMProvider:
        provider = build_provider(self.settings.llm, self.audit)
        self._stack.push_async_callback(provider.aclose)
        return provider

    @cached_property
    def identity(self) -> AgentIdentity:
        return AgentIdentity(self.gitlab)

    @cached_property
    def commands(self) -> CommandRouter:
        return CommandRouter(self.audit, self.gitlab, self.identity)

    @cached_property
    def store(self) -> StateStore:
        store = build_store(self.settings.redis)
        self._stack.push_async_callback(store.aclose)
        if store.kind == "memory":
            _log.warning(
                "REDIS_URL is not set: pending approvals, task locks and results are kept in "
                "this process's memory only (single process: another replica does not see "
                "them, a restart forgets them)"
            )
        return store

    @cached_property
    def executor(self) -> Executor:
        if self.settings.executor.kind == "kubernetes":
            return self._kubernetes_executor()
        return LocalExecutor(self.settings)

    @cached_property
    def coding(self) -> coding.CodingWorkflow:
        return coding.CodingWorkflow(
            settings=self.settings,
            audit=self.audit,
            gitlab=self.gitlab,
            store=self.store,
            executor=self.executor,
            router=self.commands,
        )

    # -- TASK_EXECUTOR=kubernetes: each task a Job; its pod talks to the agent through Redis --
    def _kubernetes_executor(self) -> Executor:
        from gitlab_copilot_agent.state.redis_store import RedisStore
        from gitlab_copilot_agent.tasks.kubernetes import KubernetesExecutor

        store = self.store
        assert isinstance(store, RedisStore)  # the settings refuse kubernetes without REDIS_URL
        executor = KubernetesExecutor(self.settings, self.audit, store)
        self._stack.push_async_callback(executor.close)
        return executor

    def start_background(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.get_running_loop().create_task(_background(name, run), name=name)

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop)

    def command_names(self) -> list[str]:
        """The registered commands, without building the router (and GitLab) if no plugin did."""
        router = vars(self).get("commands")  # where cached_property keeps a built value
        return router.names if isinstance(router, CommandRouter) else []


async def _background(name: str, run: Callable[[], Awaitable[None]]) -> None:
    try:
        await run()
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a background loop's crash is logged, not silent
        _log.exception("background task failed", task=name)


async def compose(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    *,
    audit: AuditLogger | None = None,
    registry: CollectorRegistry | None = None,
    plugins: Sequence[Plugin] | None = None,
) -> Services:
    """Build the service's parts; everything built is closed by ``stack``, in reverse.

    Args:
        settings: validated settings.
        stack: closes what is built here when the app stops.
        audit: an audit logger to use (it is flushed, not closed, at the end);
            by default the process logger is built (``auditkeep.configure()``,
            from ``AUDIT_LOG_*``) and closed.
        registry: the Prometheus registry ``/metrics`` serves (default: the global one).
        plugins: the workflows to plug in (default ``DEFAULT_PLUGINS``); tests
            of the ingress alone pass their own.
    """
    register_secret(*settings.secrets())
    if audit is None:
        # uvicorn owns SIGTERM and the lifespan closes the logger (the stack below).
        audit = auditkeep.configure(service=SERVICE_NAME, handle_sigterm=False)
        stack.push_async_callback(audit.aclose)  # within its shutdown_timeout_s
    else:
        stack.push_async_callback(audit.aflush)
    if not audit.enabled:
        _log.warning(
            "AUDIT LOGGING IS DISABLED (AUDIT_LOG_ENABLED=false): this agent writes no audit "
            "entries; unset AUDIT_LOG_ENABLED to audit what it does"
        )
    parts = _Parts(settings, audit, stack)
    for plugin in DEFAULT_PLUGINS if plugins is None else plugins:
        plugin(parts)
    dispatcher = Dispatcher(parts.events.dispatch)
    stack.push_async_callback(dispatcher.drain, DRAIN_TIMEOUT_S)
    _log.info(
        "agent ready",
        events=parts.events.kinds,
        commands=parts.command_names(),
        llm_provider=settings.llm.provider,
        audit_enabled=audit.enabled,
    )
    return Services(
        audit=audit,
        dispatcher=dispatcher,
        events=parts.events,
        webhook=WebhookConfig.from_settings(settings.webhook),
        registry=registry if registry is not None else REGISTRY,
    )
