"""``/copilot <command> [args]`` in MR comments: parsing, and the audit entry for each one.

The command must open the note (leading blank lines and spaces allowed); a
mention further down a comment is not a command, so quoting a command in a
reply does not run it. The command word is case-insensitive; the arguments are
the rest of that first line, and ``body`` keeps the lines after it (a longer
instruction for coding commands).

Every ``/copilot`` command — known or not — emits ``copilot.command.received``
with the command, the merge request and who asked (``initiator``); the
command router (``commands.router``) emits it first, before any call.
Which commands exist is the router's to say: they are the ones registered on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from auditkeep.logger import AuditLogger

COMMAND_RECEIVED: Final = "copilot.command.received"

_COMMAND: Final = re.compile(
    r"\A\s*/copilot(?=\s|\Z)[ \t]*(?P<name>\S+)?(?P<args>[^\n]*)(?:\n(?P<body>.*))?\Z",
    re.DOTALL | re.IGNORECASE,
)
_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class CopilotCommand:
    """A parsed ``/copilot`` command.

    Attributes:
        name: the command word, lower-cased (``""`` for a bare ``/copilot``).
        args: the rest of the first line, stripped.
        body: the lines after the first, stripped.

    .. versionadded:: 0.1.0
    """

    name: str
    args: str = ""
    body: str = ""

    @property
    def argv(self) -> list[str]:
        return self.args.split()


def parse_command(text: str | None) -> CopilotCommand | None:
    """Parse a note; None when it is not a ``/copilot`` command.

    ``/copilotx`` is not a command; ``/copilot`` alone gives name ``""``.

    .. versionadded:: 0.1.0
    """
    if not text:
        return None
    found = _COMMAND.match(text.replace("\r\n", "\n"))
    if found is None:
        return None
    name = (found.group("name") or "").lower()
    if name and not _NAME.fullmatch(name):
        # "/copilot: review", "/copilot 🚀": a command word we cannot name safely.
        name = "invalid"
    return CopilotCommand(
        name=name,
        args=(found.group("args") or "").strip(),
        body=(found.group("body") or "").strip(),
    )


def audit_command(
    audit: AuditLogger,
    command: CopilotCommand,
    *,
    known: bool,
    project_id: int | None,
    mr_iid: int | None,
    initiator: str | None,
    initiator_id: int | None,
    note_id: int | None = None,
    resource_type: str = "merge_request",
) -> str:
    """Emit ``copilot.command.received`` for a command; return the entry's id.

    The arguments are recorded by length only: a coding instruction can be long
    and may quote anything. ``known`` says whether the command router has the
    command (``details.known``); ``resource_type`` what the note is on.

    .. versionadded:: 0.1.0
    """
    target: dict[str, Any] = {"resource_type": resource_type}
    if project_id is not None:
        target["project_id"] = project_id
    if mr_iid is not None:
        target["mr_iid"] = mr_iid
    return audit.emit(
        COMMAND_RECEIVED,
        target=target,
        details={
            "command": command.name,
            "known": known,
            "args_chars": len(command.args) + len(command.body),
            "initiator": initiator,
            "initiator_id": initiator_id,
            "note_id": note_id,
        },
    )
