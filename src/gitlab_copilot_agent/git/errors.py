"""``GitError`` and the rules that classify what git printed.

A git failure is classified from its output (``LANG=C``, so the messages are
git's English ones) into a fine class the caller acts on:

- ``protected_branch``: the server's hook refused the update (``pre-receive
  hook declined``, GitLab's ``protected branches`` line);
- ``non_fast_forward``: the push was refused because the remote branch is not
  where the agent expected (``non-fast-forward``, ``fetch first``, ``stale
  info`` from the lease);
- ``auth_failure``: the server answered 401/403 (git asks for credentials it
  may not prompt for, ``Authentication failed``, ``returned error: 403``);
- ``not_found``: no such repository or branch;
- ``server_error``: the server answered 5xx;
- ``network_error``: no answer (refused, reset, unresolvable, hung up);
- ``timeout``: the command outlived its deadline and was killed;
- ``validation_error``: refused before git ran (a bad URL or branch name);
- ``git_error``: anything else.

Every fine class is also a class of the audit schema's ``error`` vocabulary
(``audit_error_class``), so ``query --error non_fast_forward`` finds refused
pushes; ``details.failure_class`` repeats it for readers of older trails.
"""

from __future__ import annotations

import re
from typing import Final

AUTH_FAILURE: Final = "auth_failure"
NON_FAST_FORWARD: Final = "non_fast_forward"
PROTECTED_BRANCH: Final = "protected_branch"
NETWORK_ERROR: Final = "network_error"
SERVER_ERROR: Final = "server_error"
TIMEOUT: Final = "timeout"
NOT_FOUND: Final = "not_found"
VALIDATION_ERROR: Final = "validation_error"
GIT_ERROR: Final = "git_error"

# The schema's ErrorClass for each fine class (auditkeep.errors reads ``audit_error_class``).
_AUDIT_CLASS: Final = {
    AUTH_FAILURE: "auth_failure",
    NON_FAST_FORWARD: "non_fast_forward",
    PROTECTED_BRANCH: "protected_branch",
    NETWORK_ERROR: "network_error",
    SERVER_ERROR: "server_error",
    TIMEOUT: "timeout",
    NOT_FOUND: "not_found",
    VALIDATION_ERROR: "validation_error",
    GIT_ERROR: "git_error",
}


class GitError(Exception):
    """A git step failed; ``error_class`` says how, ``reason`` says what (scrubbed, short).

    The message never holds a credential: git's output is scrubbed before it
    is cut and put here.

    .. versionadded:: 0.1.0
    """

    def __init__(self, error_class: str, reason: str) -> None:
        if error_class not in _AUDIT_CLASS:
            raise ValueError(f"unknown git error class {error_class!r}")
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason

    @property
    def audit_error_class(self) -> str:
        """The audit schema's error class for this failure."""
        return _AUDIT_CLASS[self.error_class]

    def __repr__(self) -> str:
        return f"GitError({self.error_class!r}, {self.reason!r})"


class PushNotApproved(GitError):
    """``push`` refused before any git process: the task's approval did not verify.

    .. versionadded:: 0.1.0
    """

    def __init__(self, reason: str) -> None:
        super().__init__(AUTH_FAILURE, reason)


# Checked in this order: the first rule that matches wins. A hook refusal is
# tested first because GitLab's protected-branch line also says "not allowed".
_RULES: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    (
        PROTECTED_BRANCH,
        re.compile(r"pre-receive hook declined|protected branch|hook declined", re.I),
    ),
    (
        NON_FAST_FORWARD,
        re.compile(
            r"\(non-fast-forward\)|\(fetch first\)|\(stale info\)|\(already exists\)"
            r"|updates were rejected because|denying non-fast-forward",
            re.I,
        ),
    ),
    (
        AUTH_FAILURE,
        re.compile(
            r"authentication failed|could not read (?:username|password)"
            r"|terminal prompts disabled|returned error: 40[13]\b|HTTP Basic: Access denied"
            r"|not allowed to push code|permission to .* denied",
            re.I,
        ),
    ),
    (
        NOT_FOUND,
        re.compile(
            r"repository '[^']*' not found|returned error: 404\b|could not be found"
            r"|remote branch .* not found|couldn't find remote ref|does not appear to be a git"
            r" repository",
            re.I,
        ),
    ),
    (SERVER_ERROR, re.compile(r"returned error: 5\d\d\b", re.I)),
    (
        NETWORK_ERROR,
        re.compile(
            r"could not resolve|failed to connect|connection refused|connection reset"
            r"|couldn't connect|empty reply from server|recv failure|send failure"
            r"|remote end hung up|unexpected disconnect|early eof|rpc failed"
            r"|operation timed out|network is unreachable|no route to host|\bssl\b|\btls\b"
            r"|transfer closed|unable to access",
            re.I,
        ),
    ),
)


def classify_output(text: str) -> str:
    """The fine class of a failed git command from its (scrubbed) output."""
    for error_class, pattern in _RULES:
        if pattern.search(text):
            return error_class
    return GIT_ERROR
