"""``GitServer``: a loopback git server speaking real smart HTTP, for tests and the demo.

A stand-in for GitLab's git-over-HTTPS endpoint, not GitLab: ``git
http-backend`` (git's own CGI program, the one real servers wrap) behind the
stand-ins' shared base (a uvicorn thread on a free loopback port, scripted
faults, recorded requests), so clone and push go through the real protocol
with the real git client.

- Authentication as GitLab does it: HTTP Basic with the token as password (and
  the configured username), or ``Authorization: Bearer <token>``; anything
  else gets GitLab's 401 (``HTTP Basic: Access denied``).
- ``protect(path, branch)``: a ``pre-receive`` hook refuses pushes to the
  branch with GitLab's message (``You are not allowed to push code to
  protected branches on this project.``).
- ``move_branch``: a commit made on the server, so the agent's push is no
  longer a fast-forward of what it cloned.
- ``fail_next(status)``: the next request answers 401/403/500 (GitLab's
  bodies) or, with status 0, the connection is reset; ``hang_next``: the next
  request gets no answer until the client gives up.
- ``requests``: method, path, service and whether it was authorised; the
  credential itself is never kept, not even in the base's raw record.

Repositories live as bare repositories under ``root`` (``group/proj.git``).
The setup helpers (``create_repo``...) run git synchronously: they are for
test and demo set-up, not for the request path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from agent_standins.base import Standin, as_response
from agent_standins.faults import Fault, Rendered
from agent_standins.servers import ServerHandle

__all__ = ["GitRequest", "GitServer"]

PROTECTED_MESSAGE: Final = (
    "GitLab: You are not allowed to push code to protected branches on this project."
)
_AUTH_MARK: Final = "x-standin-authorized"
_CGI_TIMEOUT_S: Final = 60.0
_SETUP_TIMEOUT_S: Final = 30.0
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_PRE_RECEIVE: Final = f"""#!/bin/sh
# Refuses updates of the branches listed in protected-branches, with GitLab's message.
list="${{GIT_DIR:-.}}/protected-branches"
status=0
while read -r old new ref; do
    branch="${{ref#refs/heads/}}"
    if [ -f "$list" ] && grep -qxF -- "$branch" "$list"; then
        echo "{PROTECTED_MESSAGE}" >&2
        status=1
    fi
done
exit $status
"""
_ERROR_TEXT: Final = {
    401: "HTTP Basic: Access denied. If a password was provided for Git authentication, the "
    "password was incorrect or you're required to use a token instead of a password.\n",
    403: "You are not allowed to push code to this project.\n",
    404: "The project you were looking for could not be found or you don't have permission "
    "to view it.\n",
    500: "Internal Server Error\n",
}


@dataclass(frozen=True)
class GitRequest:
    """One request the server received; never its credential."""

    method: str
    path: str
    service: str | None
    authorized: bool
    fault: str | None


class GitServer(Standin):
    """``git http-backend`` on ``127.0.0.1:<free port>`` with GitLab's token check.

    Args:
        root: where the bare repositories live (created if missing).
        token: the accepted token (as the Basic password or a Bearer token).
        username: the Basic username that goes with it.
    """

    def __init__(self, root: Path, *, token: str, username: str = "oauth2") -> None:
        super().__init__()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.username = username
        self._token = token
        self._basic = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()
        self._home = Path(tempfile.mkdtemp(prefix="git-standin-home-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._home, True)
        self._handle: ServerHandle | None = None
        self._moves = itertools.count(1)

    def __repr__(self) -> str:
        return f"GitServer(root={str(self.root)!r}, url={self._url_or_none()!r})"

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> GitServer:
        """Listen on a free loopback port (idempotent)."""
        if self._handle is None:
            self._handle = self.serve()
        return self

    def stop(self) -> None:
        """Stop listening; the repositories stay (a later ``start`` gets a new port)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.stop()

    def close(self) -> None:
        """Stop and remove the server's own scratch HOME."""
        self.stop()
        self._cleanup()

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the server must be started)."""
        found = self._url_or_none()
        if found is None:
            raise RuntimeError("the git server is not started")
        return found

    def _url_or_none(self) -> str | None:
        return self._handle.url if self._handle is not None else None

    # -- repositories ------------------------------------------------------------

    def repo_url(self, path: str) -> str:
        """``http://127.0.0.1:PORT/group/proj.git``."""
        return f"{self.url}/{_checked_path(path)}.git"

    def create_repo(self, path: str, files: Mapping[str, str], branch: str = "main") -> str:
        """A bare repository ``path`` (``group/proj``) whose ``branch`` holds ``files``; its sha."""
        bare = self._bare(path, must_exist=False)
        if bare.exists():
            raise FileExistsError(f"repository {path} exists")
        bare.parent.mkdir(parents=True, exist_ok=True)
        self._git(None, "init", "--bare", "--quiet", f"--initial-branch={branch}", str(bare))
        self._git(bare, "config", "http.receivepack", "true")
        self._git(bare, "config", "receive.denyNonFastForwards", "true")
        hook = bare / "hooks" / "pre-receive"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(_PRE_RECEIVE)
        hook.chmod(0o755)
        return self._commit(bare, branch, files, parent=None, message="Initial commit")

    def create_branch(self, path: str, branch: str, from_ref: str = "main") -> str:
        """Branch ``branch`` at ``from_ref``; its sha."""
        bare = self._bare(path)
        sha = self._rev(bare, from_ref)
        self._git(bare, "update-ref", f"refs/heads/{branch}", sha)
        return sha

    def head(self, path: str, branch: str) -> str:
        """The sha ``branch`` points at on the server."""
        return self._rev(self._bare(path), f"refs/heads/{branch}")

    def file_at(self, path: str, branch: str, name: str) -> str:
        """The text of ``name`` on ``branch`` (what a push delivered)."""
        bare = self._bare(path)
        return self._git(bare, "show", f"refs/heads/{branch}:{name}")

    def commit_message(self, path: str, branch: str) -> str:
        """The full message of ``branch``'s head commit (trailers included)."""
        return self._git(self._bare(path), "log", "-1", "--format=%B", f"refs/heads/{branch}")

    def protect(self, path: str, branch: str) -> None:
        """Refuse every push to ``branch`` (pre-receive hook, GitLab's message)."""
        listing = self._bare(path) / "protected-branches"
        with listing.open("a", encoding="utf-8") as fh:
            fh.write(branch + "\n")

    def move_branch(self, path: str, branch: str) -> str:
        """Commit on ``branch`` on the server (someone else pushed); the new sha."""
        bare = self._bare(path)
        parent = self._rev(bare, f"refs/heads/{branch}")
        n = next(self._moves)
        files = {f"server-change-{n}.txt": f"pushed by someone else ({n})\n"}
        return self._commit(bare, branch, files, parent=parent, message=f"Server change {n}")

    # -- faults ------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1) -> None:
        """The next ``times`` requests answer ``status`` (401/403/404/500), or reset with 0."""
        fault = Fault.reset() if status == 0 else Fault.http(status)
        self.faults.add("*", fault, times=times)

    def hang_next(self, times: int = 1, seconds: float = 120.0) -> None:
        """The next ``times`` requests get no answer until the client leaves (or ``seconds``)."""
        self.faults.add("*", Fault.slow(seconds), times=times)

    def render_error(self, fault: Fault) -> Rendered:
        status = fault.status
        body = fault.body or _ERROR_TEXT.get(status, f"HTTP {status}\n").encode()
        headers = {"content-type": fault.content_type or "text/plain; charset=utf-8"}
        if status == 401:
            headers["www-authenticate"] = 'Basic realm="GitLab"'
        return Rendered(status, {**headers, **fault.headers}, body)

    # -- requests ----------------------------------------------------------------

    @property
    def requests(self) -> list[GitRequest]:  # type: ignore[override]
        """Every request received, in order (faulted ones included); no credential."""
        found = []
        for r in super().requests:
            service = _service(r.path, r.query)
            authorized = r.headers.get(_AUTH_MARK) == "yes"
            found.append(GitRequest(r.method, r.path, service, authorized, r.fault))
        return found

    def recorded_headers(self, headers: dict[str, str]) -> dict[str, str]:
        kept = {k: v for k, v in headers.items() if k not in ("authorization", "private-token")}
        kept[_AUTH_MARK] = "yes" if self._authorized(headers.get("authorization", "")) else "no"
        return kept

    # -- the CGI -----------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        if not self._authorized(request.headers.get("authorization", "")):
            return as_response(self.render_error(Fault.http(401)))
        body = await request.body()
        env = self._cgi_env(request, len(body))
        proc = await asyncio.create_subprocess_exec(
            _git_binary(),
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(_CGI_TIMEOUT_S):
                out, _ = await proc.communicate(body)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        return _cgi_response(out)

    def _authorized(self, header: str) -> bool:
        if header.startswith("Bearer "):
            return hmac.compare_digest(header[7:].encode(), self._token.encode())
        return hmac.compare_digest(header.encode(), self._basic.encode())

    def _cgi_env(self, request: Request, length: int) -> dict[str, str]:
        client = request.client
        env = {
            "PATH": os.environ.get("PATH") or os.defpath,
            "HOME": str(self._home),
            "LANG": "C",
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": "agent-standins-git",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.url.path,
            "QUERY_STRING": request.url.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(length),
            "REMOTE_USER": self.username,
            "REMOTE_ADDR": client.host if client else "127.0.0.1",
        }
        for header, variable in (
            ("content-encoding", "HTTP_CONTENT_ENCODING"),
            ("git-protocol", "GIT_PROTOCOL"),
        ):
            if header in request.headers:
                env[variable] = request.headers[header]
        return env

    # -- set-up plumbing ---------------------------------------------------------

    def _bare(self, path: str, *, must_exist: bool = True) -> Path:
        bare = self.root / f"{_checked_path(path)}.git"
        if must_exist and not bare.is_dir():
            raise FileNotFoundError(f"no repository {path}")
        return bare

    def _rev(self, bare: Path, ref: str) -> str:
        return self._git(bare, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()

    def _commit(
        self,
        bare: Path,
        branch: str,
        files: Mapping[str, str],
        *,
        parent: str | None,
        message: str,
    ) -> str:
        """Write ``files`` on top of ``parent``'s tree as a new commit on ``branch`` (plumbing)."""
        with tempfile.TemporaryDirectory(prefix="git-standin-index-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            if parent is not None:
                self._git(bare, "read-tree", parent, env=index)
            entries = []
            for name, text in files.items():
                blob = self._git(bare, "hash-object", "-w", "--stdin", stdin=text).strip()
                entries.append(f"100644 {blob}\t{name}\n")
            self._git(
                bare, "update-index", "--add", "--index-info", env=index, stdin="".join(entries)
            )
            tree = self._git(bare, "write-tree", env=index).strip()
        args = ["commit-tree", tree, "-m", message]
        if parent is not None:
            args += ["-p", parent]
        sha = self._git(bare, *args).strip()
        self._git(bare, "update-ref", f"refs/heads/{branch}", sha)
        return sha

    def _git(
        self,
        bare: Path | None,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> str:
        full_env = {
            "PATH": os.environ.get("PATH") or os.defpath,
            "HOME": str(self._home),
            "LANG": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": "Someone Else",
            "GIT_AUTHOR_EMAIL": "someone@example.com",
            "GIT_COMMITTER_NAME": "Someone Else",
            "GIT_COMMITTER_EMAIL": "someone@example.com",
            **(env or {}),
        }
        prefix = [_git_binary()] + ([f"--git-dir={bare}"] if bare is not None else [])
        done = subprocess.run(
            [*prefix, *args],
            env=full_env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_SETUP_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"git {args[0]} failed: {done.stderr.strip()[:500]}")
        return done.stdout


def _git_binary() -> str:
    found = shutil.which("git")
    if found is None:
        raise RuntimeError("git is not installed (scripts/install-system-deps installs it)")
    return found


def _checked_path(path: str) -> str:
    segments = path.strip("/").split("/")
    if len(segments) < 2 or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ValueError(f"repository path must be namespace/project, got {path!r}")
    if any(s in (".", "..") or s.endswith(".git") for s in segments):
        raise ValueError(f"repository path must be namespace/project, got {path!r}")
    return "/".join(segments)


def _service(path: str, query: str) -> str | None:
    for part in query.split("&"):
        if part.startswith("service="):
            return part[len("service=") :]
    last = path.rsplit("/", 1)[-1]
    return last if last.startswith("git-") else None


def _cgi_response(out: bytes) -> Response:
    """Turn CGI output (headers, blank line, body) into a response."""
    head, sep, body = out.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = out.partition(b"\n\n")
    if not sep:
        return Response(b"bad gateway: no CGI headers\n", status_code=502)
    status = 200
    headers: dict[str, str] = {}
    for raw in head.decode("latin-1").splitlines():
        name, _, value = raw.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "status":
            status = int(value.split()[0])
        elif name:
            headers[name] = value
    headers.pop("content-length", None)
    return Response(body, status_code=status, headers=headers)
