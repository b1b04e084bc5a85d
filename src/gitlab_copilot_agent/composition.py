"""The composition root: every part of the service built from settings, closed in reverse.

``compose(settings, stack)`` is the one place that knows how the parts fit:

1. the configured secrets are registered with the redactor (audit entries and
   operational logs are both scrubbed with it);
2. the audit logger (``AuditConfig.from_env(...).build()``, unless one is
   given) — closed last, so everything the others do at shutdown is audited;
3. the plugins run (``DEFAULT_PLUGINS``: the built-in commands, then the review
   workflow). Each registers handlers on the event router and the command
   router and takes the clients it needs from ``Parts``; a client is built the
   first time a plugin asks for it (the GitLab client, the LLM provider) and
   its ``aclose`` goes on the stack, so a client no plugin uses is never built;
4. the dispatcher, over the event router — drained first at shutdown;
5. the webhook route's configuration.

Everything that needs closing is pushed on the ``contextlib.AsyncExitStack``
as it is built, so shutdown closes in reverse order of construction and one
failure does not skip the rest. The next parts (executor, Redis, pollers,
Jira) are built here the same way, and their workflows are plugins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import cached_property
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry

from auditrail.config import AuditConfig
from auditrail.logger import AuditLogger
from auditrail.redact import register_secret
from gitlab_copilot_agent.api.deps import Services
from gitlab_copilot_agent.api.webhooks import WebhookConfig
from gitlab_copilot_agent.clients.gitlab import GitLabClient
from gitlab_copilot_agent.commands import builtin
from gitlab_copilot_agent.commands.router import CommandRouter
from gitlab_copilot_agent.dispatcher import Dispatcher
from gitlab_copilot_agent.events import EventRouter
from gitlab_copilot_agent.identity import AgentIdentity
from gitlab_copilot_agent.llm.base import LLMProvider
from gitlab_copilot_agent.llm.factory import build_provider
from gitlab_copilot_agent.logs import get_logger
from gitlab_copilot_agent.plugins import Plugin
from gitlab_copilot_agent.settings import SERVICE_NAME, Settings, WebhookSettings
from gitlab_copilot_agent.webhook_auth import ReplayGuard, signing_key
from gitlab_copilot_agent.workflows import review

__all__ = ["DEFAULT_PLUGINS", "DRAIN_TIMEOUT_S", "compose", "webhook_config"]

DEFAULT_PLUGINS: Final[tuple[Plugin, ...]] = (builtin.install, review.install)
"""What the service runs: ``/copilot`` commands (help and placeholders), then the review."""

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

    def command_names(self) -> list[str]:
        """The registered commands, without building the router (and GitLab) if no plugin did."""
        router = vars(self).get("commands")  # where cached_property keeps a built value
        return router.names if isinstance(router, CommandRouter) else []


def webhook_config(settings: WebhookSettings) -> WebhookConfig:
    """What ``POST /webhook`` needs to authenticate and bound deliveries."""
    return WebhookConfig(
        secret=settings.secret.get_secret_value() if settings.secret else None,
        signing_key=(
            signing_key(settings.signing_token.get_secret_value())
            if settings.signing_token
            else None
        ),
        max_body_bytes=settings.max_body_bytes,
        tolerance_s=settings.timestamp_tolerance_s,
        trusted_proxies=list(settings.trusted_proxies),
        replay_guard=ReplayGuard(window_s=2 * settings.timestamp_tolerance_s),
    )


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
            by default one is built from ``AUDIT_LOG_*`` and closed.
        registry: the Prometheus registry ``/metrics`` serves (default: the global one).
        plugins: the workflows to plug in (default ``DEFAULT_PLUGINS``); tests
            of the ingress alone pass their own.
    """
    register_secret(*settings.secrets())
    if audit is None:
        audit = AuditConfig.from_env(service=SERVICE_NAME).build()
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
        webhook=webhook_config(settings.webhook),
        registry=registry if registry is not None else REGISTRY,
    )
