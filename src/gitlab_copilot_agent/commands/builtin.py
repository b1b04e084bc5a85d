"""The commands every agent knows: ``help``, and the ones whose workflows come later.

``install`` wires the ``Note Hook`` to the command router and registers
``help`` (it runs: the reply lists the commands) and an ``unavailable``
placeholder for each command of a workflow not built yet, so each gets a
reply and a ``copilot.command.unavailable`` entry (``reason: not_implemented``)
instead of silence. A workflow that arrives registers its command with
``commands.on(...)``, which replaces the placeholder; nothing here changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gitlab_copilot_agent.commands.router import CommandContext

if TYPE_CHECKING:
    from gitlab_copilot_agent.plugins import Parts

COMING_LATER: Final = {
    "fix": (
        "change the merge request's code as the rest of the comment says",
        "the coding workflow is not part of this release.",
    ),
    "code": (
        "the same as `/copilot fix`",
        "the coding workflow is not part of this release.",
    ),
    "approve": (
        "approve the change the agent proposed",
        "the approval gate is not part of this release.",
    ),
    "reject": (
        "reject the change the agent proposed",
        "the approval gate is not part of this release.",
    ),
    "status": (
        "show what the agent is doing on this merge request",
        "task tracking is not part of this release.",
    ),
    "cancel": (
        "stop what the agent is doing on this merge request",
        "task tracking is not part of this release.",
    ),
}
"""Command → (summary for the help text, why it cannot run yet)."""


def install(parts: Parts) -> None:
    """Route merge request notes to the command router; register ``help`` and the placeholders."""
    router = parts.commands
    parts.events.on("Note Hook", router.handle_note)

    async def show_help(context: CommandContext) -> None:
        await router.reply(context, router.help_text())

    router.on("help", show_help, summary="show this list")
    for name, (summary, detail) in COMING_LATER.items():
        router.unavailable(name, summary=summary, detail=detail)
