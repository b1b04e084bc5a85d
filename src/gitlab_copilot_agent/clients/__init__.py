"""The agent's clients for external APIs; each audits every request it sends."""

from gitlab_copilot_agent.clients.gitlab import GitLabClient, GitLabError

__all__ = ["GitLabClient", "GitLabError"]
