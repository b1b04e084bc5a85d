"""The GitLab Copilot merge-request agent (placeholder until its own issue lands)."""

__version__ = "0.1.0"
