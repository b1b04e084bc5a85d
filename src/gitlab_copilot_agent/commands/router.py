"""The command router: ``/copilot <name>`` in a merge request note → the handler for ``name``.

``handle_note`` is the ``Note Hook`` handler. For a note that opens with
``/copilot`` it does, in this order:

1. ``copilot.command.received`` — always the first entry, before any call, so
   a command is on the trail even when GitLab cannot be reached;
2. a command written on something else than a merge request (an issue, a
   commit) is ignored (``copilot.command.ignored``, ``reason:
   not_a_merge_request``), and so are the agent's own notes (``reason:
   own_note``; asks ``GET /user`` once per process);
3. a registered command runs its handler;
4. a command that is known but cannot run yet (``unavailable``) gets
   ``copilot.command.unavailable`` with ``details.reason`` (``not_implemented``)
   and a reply note saying so;
5. anything else (an unknown word, a bare ``/copilot``) gets
   ``copilot.command.unavailable`` with ``reason: unknown_command`` and the help
   text as a reply.

Workflows plug in with ``commands.on(name, handler, summary=...)``; that
replaces an ``unavailable`` placeholder of the same name, so the coding
workflow takes over ``fix`` without touching anything else. Registering a
second real handler for one name is refused (two workflows answering one
command would both act).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.commands.parse import CopilotCommand, audit_command, parse_command
from gitlab_copilot_agent.events import Event
from gitlab_copilot_agent.identity import AgentIdentity
from gitlab_copilot_agent.payloads import integer, mapping, project_id, text

__all__ = [
    "COMMAND_IGNORED",
    "COMMAND_UNAVAILABLE",
    "CommandContext",
    "CommandHandler",
    "CommandRouter",
]

COMMAND_UNAVAILABLE: Final = "copilot.command.unavailable"
COMMAND_IGNORED: Final = "copilot.command.ignored"


@dataclass(frozen=True, slots=True)
class CommandContext:
    """A command to run: what was asked, on which merge request, by whom.

    Attributes:
        command: the parsed command.
        project_id, mr_iid: the merge request the note is on.
        note_id: the note that holds the command.
        initiator, initiator_id: who wrote it.
        payload: the whole Note Hook payload.
    """

    command: CopilotCommand
    project_id: int
    mr_iid: int
    note_id: int | None
    initiator: str | None
    initiator_id: int | None
    payload: Mapping[str, Any]


CommandHandler = Callable[[CommandContext], Awaitable[object]]


class NotesAPI(Protocol):
    """What the router needs from GitLab: posting its replies."""

    async def post_mr_note(
        self, project_id: int, mr_iid: int, body: str, *, comment_type: Literal["review", "note"]
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Command:
    summary: str
    handler: CommandHandler | None
    reason: str | None = None
    detail: str | None = None


class CommandRouter:
    """Runs ``/copilot`` commands from merge request notes.

    Args:
        audit: the audit logger.
        gitlab: posts the replies (the audited GitLab client).
        identity: the agent's own user (its notes are not commands).
    """

    def __init__(self, audit: AuditLogger, gitlab: NotesAPI, identity: AgentIdentity) -> None:
        self._audit = audit
        self._gitlab = gitlab
        self._identity = identity
        self._commands: dict[str, _Command] = {}

    # -- registration -------------------------------------------------------------

    def on(self, name: str, handler: CommandHandler, *, summary: str) -> None:
        """Run ``handler`` for ``/copilot <name>`` (replacing an ``unavailable`` placeholder)."""
        self._check_name(name)
        existing = self._commands.get(name)
        if existing is not None and existing.handler is not None:
            raise ValueError(f"/copilot {name} already has a handler")
        self._commands[name] = _Command(summary, handler)

    def unavailable(
        self, name: str, *, summary: str, detail: str, reason: str = "not_implemented"
    ) -> None:
        """Know ``/copilot <name>`` without running it: reply ``detail`` and audit ``reason``."""
        self._check_name(name)
        if name in self._commands:
            raise ValueError(f"/copilot {name} is registered already")
        self._commands[name] = _Command(summary, None, reason, detail)

    def knows(self, name: str) -> bool:
        return name in self._commands

    @property
    def names(self) -> list[str]:
        return sorted(self._commands)

    def help_text(self) -> str:
        """The reply to ``/copilot help`` and to unknown commands (never itself a command)."""
        ready = [(n, c) for n, c in sorted(self._commands.items()) if c.handler is not None]
        later = [(n, c) for n, c in sorted(self._commands.items()) if c.handler is None]
        lines = ["**Copilot commands** — write one at the start of a comment:", ""]
        lines += [f"- `/copilot {name}` — {command.summary}" for name, command in ready]
        if later:
            lines += ["", "Not available yet:", ""]
            lines += [f"- `/copilot {name}` — {command.summary}" for name, command in later]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _check_name(name: str) -> None:
        parsed = parse_command(f"/copilot {name}")
        if parsed is None or parsed.name != name or name in ("", "invalid"):
            raise ValueError(f"not a command name: {name!r} (lower-case letters, digits, - and _)")

    # -- the Note Hook handler ------------------------------------------------------

    async def handle_note(self, event: Event) -> object | None:
        """Run the command in a merge request note; None when there is nothing to run."""
        payload = event.payload
        attrs = mapping(payload.get("object_attributes"))
        if attrs.get("system"):
            return None  # GitLab's own notes ("added 1 commit") are never commands
        if attrs.get("action") not in (None, "create"):
            return None  # an edited note does not run its command again
        command = parse_command(text(attrs.get("note")))
        if command is None:
            return None
        user = mapping(payload.get("user"))
        author_id = integer(user.get("id", attrs.get("author_id")))
        on_merge_request = attrs.get("noteable_type") == "MergeRequest"
        mr_iid = integer(mapping(payload.get("merge_request")).get("iid"))
        project = project_id(payload)
        note_id = integer(attrs.get("id"))
        registered = self._commands.get(command.name)
        resource = "merge_request" if on_merge_request else _noteable(attrs.get("noteable_type"))
        # First, before any call: the trail has the command even if GitLab is down.
        audit_command(
            self._audit,
            command,
            known=registered is not None,
            project_id=project,
            mr_iid=mr_iid if on_merge_request else None,
            initiator=text(user.get("username")),
            initiator_id=author_id,
            note_id=note_id,
            resource_type=resource,
        )
        if not on_merge_request:
            target = _target(project, None, resource)
            self._emit(COMMAND_IGNORED, target, command, note_id, "not_a_merge_request")
            return None
        target = _target(project, mr_iid)
        if author_id is not None and author_id == await self._identity.user_id():
            self._emit(COMMAND_IGNORED, target, command, note_id, "own_note")
            return None
        if project is None or mr_iid is None:
            self._emit(COMMAND_IGNORED, target, command, note_id, "no_merge_request")
            return None
        context = CommandContext(
            command=command,
            project_id=project,
            mr_iid=mr_iid,
            note_id=note_id,
            initiator=text(user.get("username")),
            initiator_id=author_id,
            payload=payload,
        )
        if registered is None:
            self._emit(COMMAND_UNAVAILABLE, target, command, note_id, "unknown_command")
            shown = f"`/copilot {command.name}`" if command.name else "A bare `/copilot`"
            await self.reply(context, f"{shown} is not a command I know.\n\n{self.help_text()}")
            return None
        if registered.handler is None:
            self._emit(COMMAND_UNAVAILABLE, target, command, note_id, registered.reason)
            await self.reply(
                context,
                f"`/copilot {command.name}` cannot run yet: {registered.detail}\n\n"
                "`/copilot help` lists what works now.\n",
            )
            return None
        return await registered.handler(context)

    async def reply(self, context: CommandContext, body: str) -> None:
        """Answer the command with a note on its merge request (audited by the client)."""
        await self._gitlab.post_mr_note(
            context.project_id, context.mr_iid, body, comment_type="note"
        )

    def _emit(
        self,
        action: str,
        target: dict[str, Any],
        command: CopilotCommand,
        note_id: int | None,
        reason: str | None,
    ) -> None:
        self._audit.emit(
            action,
            target=target,
            details={"command": command.name, "reason": reason, "note_id": note_id},
        )


def _noteable(kind: Any) -> str:
    # GitLab's noteable types (Issue, Commit, Snippet, …) as resource types.
    return {"Issue": "issue", "Commit": "commit", "Snippet": "snippet"}.get(str(kind), "note")


def _target(
    project: int | None, mr_iid: int | None, resource_type: str = "merge_request"
) -> dict[str, Any]:
    target: dict[str, Any] = {"resource_type": resource_type}
    if project is not None:
        target["project_id"] = project
    if mr_iid is not None:
        target["mr_iid"] = mr_iid
    return target
