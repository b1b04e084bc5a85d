"""Which remotes git may talk to, and which branch names and commits it may be given.

A clone URL is accepted only when it points at the configured GitLab:

- ``https``; plain ``http`` only for a host listed in ``allowed_insecure_hosts``
  (the loopback git server of the tests and the demo), optionally ``host:port``;
- no userinfo (``user:token@``): a credential in a URL ends up in argv,
  ``.git/config`` and error messages; the token travels in the environment;
- the host is GitLab's; for ``https`` the port is too (an allowed test host
  may use any port, or the one its entry names);
- a path under GitLab's own path prefix with at least ``namespace/project``,
  each segment made of GitLab's path characters (no ``.``/``..`` segment, no
  percent-encoding that could hide one), no query and no fragment.

Everything is checked on the text before git sees it; the refusal message
shows the URL without userinfo, scrubbed and cut.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from gitlab_copilot_agent.git.errors import VALIDATION_ERROR, GitError
from gitlab_copilot_agent.scrub import scrub_then_cut, without_userinfo

MAX_URL_CHARS: Final = 2048
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]*")
_PRINTABLE: Final = re.compile(r"[\x21-\x7e]+")
_SHA: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BAD_REF_CHARS: Final = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port of a server, plus GitLab's path prefix (``""`` at the root)."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @property
    def base(self) -> str:
        """``scheme://host:port/``: the scope of the credential (``http.<base>.extraHeader``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"


@dataclass(frozen=True)
class Remote:
    """A validated remote: the URL git is given, its origin, and the project path."""

    url: str
    origin: Origin
    repo: str


def refuse(message: str) -> GitError:
    return GitError(VALIDATION_ERROR, message)


def _shown(url: str) -> str:
    return repr(scrub_then_cut(without_userinfo(url), 200))


def gitlab_origin(gitlab_url: str) -> Origin:
    """Parse the configured GitLab URL.

    Raises:
        ValueError: not an ``http(s)://host[:port][/prefix]`` URL without userinfo.
    """
    try:
        parts = urllib.parse.urlsplit(gitlab_url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("the GitLab URL is not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("the GitLab URL must be http(s)://host[:port][/path]")
    if "@" in parts.netloc:
        raise ValueError("the GitLab URL must not hold credentials")
    return Origin(
        scheme,
        parts.hostname.lower(),
        port or _DEFAULT_PORTS[scheme],
        parts.path.rstrip("/"),
    )


def _insecure_rules(allowed: Collection[str]) -> dict[str, int | None]:
    """``{"127.0.0.1": None, "localhost": 8080}``: host, and the one port it may use."""
    rules: dict[str, int | None] = {}
    for entry in allowed:
        text = entry.strip().lower()
        host, port = text, None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        elif text.count(":") == 1:
            name, _, digits = text.partition(":")
            if digits.isdigit():
                host, port = name, int(digits)
        rules[host] = port
    return rules


def validate_clone_url(url: str, gitlab: Origin, allowed_insecure_hosts: Collection[str]) -> Remote:
    """The ``Remote`` for ``url``, or ``GitError(validation_error)`` saying why not."""
    if not isinstance(url, str) or not url:
        raise refuse("clone URL refused: empty")
    if len(url) > MAX_URL_CHARS:
        raise refuse(f"clone URL refused: longer than {MAX_URL_CHARS} characters")
    if not _PRINTABLE.fullmatch(url):
        raise refuse("clone URL refused: spaces, control or non-ASCII characters")
    try:
        parts = urllib.parse.urlsplit(url)
        explicit_port = parts.port
    except ValueError:
        raise refuse(f"clone URL refused: not a URL: {_shown(url)}") from None
    if "@" in parts.netloc:
        raise refuse(
            "clone URL refused: it holds credentials (user:token@); "
            f"the token is sent by the agent itself: {_shown(url)}"
        )
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    insecure = _insecure_rules(allowed_insecure_hosts)
    if scheme == "http":
        if host not in insecure:
            raise refuse(f"clone URL refused: http is allowed only for test hosts: {_shown(url)}")
    elif scheme != "https":
        raise refuse(f"clone URL refused: only https is allowed: {_shown(url)}")
    if not host:
        raise refuse(f"clone URL refused: no host: {_shown(url)}")
    if host != gitlab.host:
        raise refuse(
            f"clone URL refused: host {host!r} is not the configured GitLab's ({gitlab.host!r})"
        )
    port = explicit_port or _DEFAULT_PORTS[scheme]
    if host in insecure:
        if insecure[host] is not None and port != insecure[host]:
            raise refuse(f"clone URL refused: port {port} is not the allowed one for {host}")
    elif port != gitlab.port:
        raise refuse(f"clone URL refused: port {port} is not the configured GitLab's")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise refuse(f"clone URL refused: a query or fragment: {_shown(url)}")
    repo = _project_path(parts.path, gitlab.prefix, url)
    netloc = parts.netloc.lower()
    return Remote(
        url=f"{scheme}://{netloc}{parts.path.rstrip('/')}",
        origin=Origin(scheme, host, port, gitlab.prefix),
        repo=repo,
    )


def _project_path(path: str, prefix: str, url: str) -> str:
    if not path.startswith(prefix + "/"):
        raise refuse(f"clone URL refused: not under GitLab's path {prefix or '/'}: {_shown(url)}")
    rest = path[len(prefix) + 1 :].rstrip("/")
    if rest.endswith(".git"):
        rest = rest[: -len(".git")]
    segments = rest.split("/")
    if len(segments) < 2 or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise refuse(
            "clone URL refused: the path must be namespace/project in GitLab's path "
            f"characters: {_shown(url)}"
        )
    return rest


def validate_branch(name: str) -> str:
    """``name`` if git would accept it as a branch (``git check-ref-format`` rules), else refuse.

    A name starting with ``-`` is refused too: it could read as an option.
    """
    problem = _branch_problem(name) if isinstance(name, str) else "not text"
    if problem is not None:
        raise refuse(f"branch name refused: {problem}")
    return name


def _branch_problem(name: str) -> str | None:
    if not name or len(name) > 255:
        return "empty or longer than 255 characters"
    if _BAD_REF_CHARS.search(name):
        return "spaces, control characters or one of ~^:?*[\\"
    if name.startswith(("-", "/")) or name.endswith(("/", ".")) or name == "@":
        return "starts with - or /, ends with / or ., or is @"
    if ".." in name or "@{" in name or "//" in name:
        return "contains .., @{ or //"
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return "a component starts with . or ends with .lock"
    return None


def validate_sha(sha: str, what: str) -> str:
    """A full commit id (40 or 64 lowercase hex digits), or refuse."""
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise refuse(f"{what} must be a full commit id (40 or 64 hex digits)")
    return sha
