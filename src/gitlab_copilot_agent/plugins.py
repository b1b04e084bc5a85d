"""What a workflow plugs into: ``Parts`` (the built parts it may use) and ``Plugin``.

A plugin is a function ``install(parts) -> None`` that registers handlers on
``parts.events`` (event kind → handler) and ``parts.commands`` (``/copilot``
name → handler). The composition root (``composition.py``) runs the plugins
it is given, in order; the clients a plugin touches are built on first use
and closed at shutdown, and the ones no plugin touches are never built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from auditkeep.logger import AuditLogger
    from gitlab_copilot_agent.clients.gitlab import GitLabClient
    from gitlab_copilot_agent.clients.jira import JiraClient
    from gitlab_copilot_agent.commands.router import CommandRouter
    from gitlab_copilot_agent.events import EventRouter
    from gitlab_copilot_agent.identity import AgentIdentity
    from gitlab_copilot_agent.llm.base import LLMProvider
    from gitlab_copilot_agent.settings import Settings
    from gitlab_copilot_agent.state.base import StateStore
    from gitlab_copilot_agent.tasks.executor import Executor
    from gitlab_copilot_agent.workflows.coding import CodingWorkflow


class Parts(Protocol):
    """The service's parts, as the composition root offers them to plugins."""

    @property
    def settings(self) -> Settings: ...

    @property
    def audit(self) -> AuditLogger: ...

    @property
    def events(self) -> EventRouter: ...

    @property
    def commands(self) -> CommandRouter: ...

    @property
    def gitlab(self) -> GitLabClient: ...

    @property
    def llm(self) -> LLMProvider: ...

    @property
    def jira(self) -> JiraClient | None:
        """The Jira client (``JIRA_*``), None while ``JIRA_URL`` is unset; built on first use."""
        ...

    @property
    def identity(self) -> AgentIdentity: ...

    @property
    def store(self) -> StateStore:
        """The state store (Redis with ``REDIS_URL``, else this process's memory)."""
        ...

    @property
    def executor(self) -> Executor:
        """Where coding tasks run (``TASK_EXECUTOR``)."""
        ...

    @property
    def coding(self) -> CodingWorkflow:
        """The coding workflow (one per service: its task slots and running tasks are shared
        by the ``/copilot`` commands and the Jira workflow)."""
        ...

    def start_background(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` as a task for the app's lifetime; cancelled at shutdown."""
        ...


Plugin = Callable[[Parts], None]
