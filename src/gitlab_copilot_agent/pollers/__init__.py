"""The pollers: the Jira poller (``workflows.jira``) and the GitLab poller (``pollers.gitlab``),
each a ``base.CycleRunner`` with its own interval, on only when enabled (``POLL_*``).

``install`` is a plugin (``composition.DEFAULT_PLUGINS``): it builds the parts a poller
uses before starting it, so at shutdown the poller stops (its cycle in progress finishes
or is cancelled, and is audited) before the store and the clients it uses are closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gitlab_copilot_agent.logs import get_logger
from gitlab_copilot_agent.pollers.base import CycleCounts, CycleRunner

if TYPE_CHECKING:
    from gitlab_copilot_agent.plugins import Parts

__all__ = ["CycleCounts", "CycleRunner", "install"]

_log = get_logger(__name__)


def install(parts: Parts) -> None:
    """Start the enabled pollers for the app's lifetime."""
    poll = parts.settings.poll
    if (poll.jira_enabled or poll.gitlab_enabled) and parts.store.kind == "memory":
        _log.warning(
            "REDIS_URL is not set: the pollers remember what they took in this process only "
            "(another replica, or this one after a restart, may take a Jira issue, review a "
            "head or run a note again)"
        )
    if poll.jira_enabled:
        from gitlab_copilot_agent.workflows.jira import JiraWorkflow

        client = parts.jira
        if client is None:  # Settings.from_env refuses POLL_JIRA_ENABLED without JIRA_URL
            raise ValueError("POLL_JIRA_ENABLED needs JIRA_URL")

        workflow = JiraWorkflow(
            bindings=poll.jira_map,
            dedup_ttl_s=poll.jira_dedup_ttl_s,
            audit=parts.audit,
            jira=client,
            gitlab=parts.gitlab,
            store=parts.store,
            coding=parts.coding,
        )
        jira = CycleRunner(
            "jira",
            workflow.cycle,
            audit=parts.audit,
            interval_s=poll.jira_interval_s,
            max_backoff_s=poll.max_backoff_s,
            shutdown_grace_s=poll.shutdown_grace_s,
        )
        parts.start_background("poller-jira", jira.run_forever)
    if poll.gitlab_enabled:
        from gitlab_copilot_agent.pollers.gitlab import GitLabPoller

        poller = GitLabPoller(
            projects=sorted(poll.gitlab_projects),
            lookback_s=poll.gitlab_lookback_s,
            gitlab=parts.gitlab,
            store=parts.store,
            dispatch=parts.events.dispatch,
        )
        gitlab = CycleRunner(
            "gitlab",
            poller.cycle,
            audit=parts.audit,
            interval_s=poll.gitlab_interval_s,
            max_backoff_s=poll.max_backoff_s,
            shutdown_grace_s=poll.shutdown_grace_s,
        )
        parts.start_background("poller-gitlab", gitlab.run_forever)
