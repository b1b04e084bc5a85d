"""``/copilot`` commands: parsing and their audit entry (``parse``), the router (``router``),
and the commands every agent knows (``builtin``)."""

from gitlab_copilot_agent.commands.parse import (
    COMMAND_RECEIVED,
    CopilotCommand,
    audit_command,
    parse_command,
)

__all__ = ["COMMAND_RECEIVED", "CopilotCommand", "audit_command", "parse_command"]
