"""Names that end up in paths: what a service name may look like.

The service name becomes a directory of the default spool
(``$XDG_STATE_HOME/auditkeep/<service>/spool``), so a ``/`` or ``..`` in it would
nest or escape that directory; blanks and control characters would make the
``service`` field of every entry unreadable. Hence one conservative pattern,
the same everywhere a service name is accepted.
"""

from __future__ import annotations

import re
from typing import Final

from auditkeep.redact import scrub_then_cut

SERVICE_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERVICE_NAME_RULE: Final = (
    "1 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
)


def service_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a service name, or None when it can."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name.strip():
        return "must not be blank"
    if SERVICE_NAME_PATTERN.fullmatch(name) is None:
        return f"{scrub_then_cut(name, 80)!r} is not a safe service name ({SERVICE_NAME_RULE})"
    return None
