"""``GitRunner``: clone, commit and push with the real ``git``, the token only in the environment.

How the token reaches git: one ``http.<GitLab origin>/.extraHeader`` entry
``Authorization: Basic base64(username:token)`` passed as
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` to the
network commands only (clone, push). Why this way:

- nothing on disk: no askpass script, no credential store, no ``.git/config``
  entry (``clone`` checks the clone's whole configuration afterwards, and the
  remote URL carries no userinfo);
- nothing in argv, which every user on the host can read in ``/proc``;
- the header is scoped to GitLab's ``scheme://host:port/`` and redirects are
  off, so it is never sent anywhere else;
- no extra round trip and no helper process, unlike ``GIT_ASKPASS``.

The token, ``username:token`` and the Basic value are registered with the
process redactor and scrubbed from everything git prints before it is used.

Audit: ``gitlab.api.clone_repo`` and ``gitlab.api.push_branch`` (target
``resource_type=repository, repo, branch, commit_sha`` plus the caller's
target), one entry per call, failures with ``details.failure_class``, and
``details.git_commands`` listing the git subcommands the step ran. A push
first awaits ``authorization.verify()``: when it raises, the entry is a
failure with ``error=auth_failure``, ``details.reason=not_approved``, and no
git process is started. Commits are local and leave no entry of their own;
the push that publishes them carries their sha.
"""

from __future__ import annotations

import base64
import re
import shutil
import tempfile
import urllib.parse
import weakref
from collections.abc import Collection, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from auditkeep import AuditCall, AuditLogger
from auditkeep.redact import register_secret
from gitlab_copilot_agent.git import process
from gitlab_copilot_agent.git.errors import (
    GIT_ERROR,
    NON_FAST_FORWARD,
    GitError,
    PushNotApproved,
    classify_output,
)
from gitlab_copilot_agent.git.remote import (
    Remote,
    gitlab_origin,
    refuse,
    validate_branch,
    validate_clone_url,
    validate_sha,
)
from gitlab_copilot_agent.scrub import scrub, scrub_then_cut, secret_forms, without_userinfo

__all__ = [
    "CLONE_REPO",
    "PUSH_BRANCH",
    "GitCredentials",
    "GitError",
    "GitRunner",
    "PushAuthorization",
    "PushNotApproved",
]

CLONE_REPO: Final = "gitlab.api.clone_repo"
PUSH_BRANCH: Final = "gitlab.api.push_branch"
CLONE_DEPTH: Final = 1

_TOKEN: Final = re.compile(r"[\x21-\x7e]+")
_USERNAME: Final = re.compile(r"[A-Za-z0-9_.@+-]{1,255}")
_TRAILER_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_PORCELAIN: Final = re.compile(r"^(?P<flag>[ +\-*=!])\t(?P<refs>[^\t]*)\t(?P<summary>.*)$")


@dataclass(frozen=True)
class GitCredentials:
    """The token git sends to GitLab (HTTP Basic, ``username:token``); never printed.

    Raises:
        ValueError: a token with whitespace, control or non-ASCII characters
            (it would break or inject into the header) or a bad username.

    .. versionadded:: 0.1.0
    """

    token: str = field(repr=False)
    username: str = "oauth2"

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not _TOKEN.fullmatch(self.token):
            raise ValueError("the git token must be printable ASCII without spaces")
        if len(self.token) < 8:
            raise ValueError("the git token is too short to be a GitLab token")
        if not _USERNAME.fullmatch(self.username):
            raise ValueError("the git username must be 1-255 of A-Z a-z 0-9 _ . @ + -")

    @property
    def basic(self) -> str:
        """The base64 of ``username:token`` (the Basic credential)."""
        return base64.b64encode(f"{self.username}:{self.token}".encode()).decode()

    def secrets(self) -> list[str]:
        """Every form the credential can take in text: token, pair, Basic value (and escapes)."""
        forms = {*secret_forms(self.token), f"{self.username}:{self.token}", self.basic}
        return sorted(forms, key=len, reverse=True)


@runtime_checkable
class PushAuthorization(Protocol):
    """Proof that a push may happen; implemented by the approval gate.

    ``verify`` raises (``PermissionError``) unless an ``approve`` decision for
    ``task_id`` was recorded. ``GitRunner.push`` awaits it before any git call.

    .. versionadded:: 0.1.0
    """

    task_id: str

    async def verify(self) -> None: ...


class GitRunner:
    """Clone, commit and push one task's repository with the real git binary.

    Args:
        audit: where ``clone_repo`` and ``push_branch`` entries go.
        gitlab_url: the configured GitLab; clone URLs must point at its host.
        credentials: the token git sends to that host only.
        allowed_insecure_hosts: hosts (``host`` or ``host:port``) that may be
            reached over plain http: the loopback git server of tests and the demo.
        timeout_s: the deadline of each git command (it is killed after).
        author_name, author_email: who the agent's commits are by.

    Raises:
        ValueError: an unusable ``gitlab_url``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        audit: AuditLogger,
        *,
        gitlab_url: str,
        credentials: GitCredentials,
        allowed_insecure_hosts: Collection[str] = (),
        timeout_s: float = 120.0,
        author_name: str = "gitlab-copilot-agent",
        author_email: str = "agent@localhost",
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        for value in (author_name, author_email):
            if not value or any(ch in value for ch in "<>\n\r\x00"):
                raise ValueError(
                    "author name and email must be non-empty, without <, > or newlines"
                )
        self._audit = audit
        self._gitlab = gitlab_origin(gitlab_url)
        self._credentials = credentials
        self._secrets = credentials.secrets()
        register_secret(*self._secrets)
        self._insecure = tuple(allowed_insecure_hosts)
        self.timeout_s = timeout_s
        self._author = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        self._home = process.make_home(Path(tempfile.mkdtemp(prefix="agent-git-home-")))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._home, True)
        self._clones: dict[Path, Remote] = {}

    def __repr__(self) -> str:
        return f"GitRunner(gitlab={self._gitlab.base!r}, timeout_s={self.timeout_s:g})"

    def close(self) -> None:
        """Remove the runner's empty HOME (also done when it is garbage-collected)."""
        self._finalizer()

    # -- the interface -----------------------------------------------------------

    def validate_clone_url(self, url: str) -> str:
        """``url`` normalised, if git may clone it; else ``GitError(validation_error)``."""
        return self._remote(url).url

    async def clone(self, url: str, branch: str, dest: Path, *, target: Mapping[str, Any]) -> str:
        """Shallow-clone ``branch`` of ``url`` into ``dest`` (absent or empty); return HEAD's sha.

        Audited as ``gitlab.api.clone_repo``. A failed clone leaves no ``dest`` behind.
        """
        entry_target = {**target, "resource_type": "repository", "branch": branch}
        details: dict[str, Any] = {"url": scrub_then_cut(without_userinfo(url), 500)}
        audited = self._audit.audited(CLONE_REPO, target=entry_target, details=details)
        with audited as call, _Step(call):
            remote = self._remote(url)
            call.target["repo"] = remote.repo
            call.details.update(url=remote.url, depth=CLONE_DEPTH)
            validate_branch(branch)
            dest = Path(dest)
            created = _prepare_destination(dest)
            try:
                sha = await self._clone_into(remote, branch, dest)
            except BaseException:
                _remove(dest, created)
                raise
            call.target["commit_sha"] = sha
            self._clones[dest.resolve()] = remote
            return sha

    async def commit(self, workdir: Path, message: str, *, trailers: Mapping[str, str]) -> str:
        """Commit every change in ``workdir`` as the agent, with ``trailers``; return the sha.

        Hooks never run. The message goes through stdin, not argv.

        Raises:
            GitError: ``validation_error`` for a bad trailer, ``git_error`` when
                there is nothing to commit or git fails.
        """
        text = _commit_message(message, trailers)
        workdir = Path(workdir)
        await self._git(["add", "--all"], workdir, what="git add")
        staged = await self._git(
            ["diff", "--cached", "--quiet"], workdir, what="git diff", check=False
        )
        if staged.returncode == 0:
            raise GitError(GIT_ERROR, "nothing to commit: the working tree has no change")
        await self._git(
            ["commit", "--quiet", "--no-verify", "--no-gpg-sign", "--file=-"],
            workdir,
            what="git commit",
            stdin=text.encode(),
            extra=self._author,
        )
        return await self._head(workdir)

    async def push(
        self,
        workdir: Path,
        branch: str,
        *,
        expected_remote_sha: str,
        target: Mapping[str, Any],
        authorization: PushAuthorization,
    ) -> str:
        """Fast-forward ``branch`` on the remote to HEAD; return the pushed sha.

        ``authorization.verify()`` is awaited first; if it raises, nothing
        runs. The remote must still be at ``expected_remote_sha`` (a lease)
        and HEAD must descend from it: no history is ever rewritten.
        Audited as ``gitlab.api.push_branch``.
        """
        workdir = Path(workdir)
        known = self._clones.get(workdir.resolve())
        entry_target: dict[str, Any] = {**target, "resource_type": "repository", "branch": branch}
        if known is not None:
            entry_target["repo"] = known.repo
        task_id = getattr(authorization, "task_id", None)
        details: dict[str, Any] = {"task_id": task_id, "expected_remote_sha": expected_remote_sha}
        audited = self._audit.audited(PUSH_BRANCH, target=entry_target, details=details)
        with audited as call, _Step(call):
            await _authorize(authorization, call)
            validate_branch(branch)
            validate_sha(expected_remote_sha, "expected_remote_sha")
            remote = await self._origin(workdir, known)
            call.target["repo"] = remote.repo
            sha = await self._head(workdir)
            call.target["commit_sha"] = sha
            await self._check_descends(workdir, expected_remote_sha)
            summary = await self._push(workdir, remote, branch, expected_remote_sha)
            call.details["remote_summary"] = summary
            return sha

    # -- steps -------------------------------------------------------------------

    def _remote(self, url: str) -> Remote:
        return validate_clone_url(url, self._gitlab, self._insecure)

    def _network_config(self, remote: Remote) -> list[tuple[str, str]]:
        config = [
            (
                f"http.{remote.origin.base}.extraHeader",
                f"Authorization: Basic {self._credentials.basic}",
            )
        ]
        if remote.origin.scheme == "http":
            config.append(("protocol.http.allow", "always"))
        return config

    async def _clone_into(self, remote: Remote, branch: str, dest: Path) -> str:
        await self._git(
            [
                "clone",
                "--quiet",
                "--no-tags",
                "--single-branch",
                f"--depth={CLONE_DEPTH}",
                f"--branch={branch}",
                "--",
                remote.url,
                str(dest),
            ],
            None,
            what="git clone",
            config=self._network_config(remote),
        )
        await self._verify_no_credentials(dest, remote)
        return await self._head(dest)

    async def _verify_no_credentials(self, dest: Path, remote: Remote) -> None:
        """The clone's configuration holds no credential and its remote no userinfo."""
        listing = await self._git(
            ["config", "--list", "--show-origin", "--includes"], dest, what="git config"
        )
        shown = listing.stdout.decode("utf-8", "replace")
        url = await self._git(["remote", "get-url", "origin"], dest, what="git remote")
        origin_url = url.stdout.decode("utf-8", "replace").strip()
        if any(s in shown for s in self._secrets) or "@" in _netloc(origin_url):
            raise GitError(GIT_ERROR, "the clone's configuration holds a credential; removed")
        if origin_url != remote.url:
            raise GitError(GIT_ERROR, "the clone's remote is not the URL that was validated")

    async def _origin(self, workdir: Path, known: Remote | None) -> Remote:
        got = await self._git(
            ["remote", "get-url", "origin"], workdir, what="git remote", check=False
        )
        if got.returncode != 0:
            # transfer.credentialsInUrl=die refuses a remote with userinfo right here.
            reason = process.short(process.failure_lines(got.stderr), 200)
            raise refuse(f"the clone's remote is unusable: {reason}")
        remote = self._remote(got.stdout.decode("utf-8", "replace").strip())
        if known is not None and remote.url != known.url:
            raise refuse("the clone's remote changed since it was cloned")
        return remote

    async def _head(self, workdir: Path) -> str:
        got = await self._git(
            ["rev-parse", "--verify", "HEAD^{commit}"], workdir, what="git rev-parse"
        )
        return got.stdout.decode().strip()

    async def _check_descends(self, workdir: Path, expected: str) -> None:
        got = await self._git(
            ["merge-base", "--is-ancestor", expected, "HEAD"],
            workdir,
            what="git merge-base",
            check=False,
        )
        if got.returncode == 1:
            raise GitError(
                NON_FAST_FORWARD, "HEAD does not descend from the expected remote commit"
            )
        if got.returncode != 0:
            raise GitError(NON_FAST_FORWARD, "the expected remote commit is not in the clone")

    async def _push(self, workdir: Path, remote: Remote, branch: str, expected: str) -> str:
        ref = f"refs/heads/{branch}"
        got = await self._git(
            [
                "push",
                "--porcelain",
                "--no-verify",
                f"--force-with-lease={ref}:{expected}",
                "--",
                remote.url,
                f"HEAD:{ref}",
            ],
            workdir,
            what="git push",
            config=self._network_config(remote),
            check=False,
        )
        out = scrub(got.stdout.decode("utf-8", "replace"), *self._secrets)
        status = _porcelain_status(out, ref)
        if got.returncode == 0 and status is not None and status[0] in " *=":
            return process.short(status[1], 120)
        text = f"{out}\n{got.stderr}"
        reason = process.failure_lines(got.stderr) or (status[1] if status else "")
        if status is not None and status[0] == "!":
            reason = f"{status[1]} | {reason}"
        raise GitError(classify_output(text), process.short(f"git push failed: {reason}"))

    async def _git(
        self,
        args: list[str],
        cwd: Path | None,
        *,
        what: str,
        config: list[tuple[str, str]] | None = None,
        extra: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> process.Completed:
        env = process.git_env(self._home, config=config or (), extra=extra, repo=cwd)
        step = _step_commands.get()
        if step is not None:
            step.append(args[0])
        done = await process.run(
            [process.git_binary(), *args],
            cwd=cwd,
            env=env,
            timeout_s=self.timeout_s,
            what=what,
            stdin=stdin,
            secrets=self._secrets,
        )
        if check and done.returncode != 0:
            reason = process.failure_lines(done.stderr) or f"exit status {done.returncode}"
            raise GitError(classify_output(done.stderr), process.short(f"{what} failed: {reason}"))
        return done


_step_commands: ContextVar[list[str] | None] = ContextVar("git_step_commands", default=None)


class _Step:
    """One audited git step: lists the git commands it runs, notes a ``GitError``'s class.

    ``details.git_commands`` names every git subcommand the step started, in
    order, so each git process can be matched to the entry that covers it.
    """

    def __init__(self, call: AuditCall) -> None:
        self._call = call
        self._token: Token[list[str] | None] | None = None

    def __enter__(self) -> None:
        commands: list[str] = []
        self._call.details["git_commands"] = commands
        self._token = _step_commands.set(commands)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            _step_commands.reset(self._token)
        if isinstance(exc, GitError):
            self._call.details["failure_class"] = exc.error_class
            self._call.fail(exc.audit_error_class, f"{exc.error_class}: {exc.reason}")


async def _authorize(authorization: object, call: AuditCall) -> None:
    verify = getattr(authorization, "verify", None)
    if verify is None:
        call.details["reason"] = "not_approved"
        raise PushNotApproved("push refused: no approval was given for this task")
    try:
        await verify()
    except Exception as exc:
        call.details["reason"] = "not_approved"
        why = scrub_then_cut(f"{type(exc).__name__}: {exc}", 200)
        raise PushNotApproved(f"push refused: the approval did not verify ({why})") from exc
    call.details["approval_verified"] = True


def _commit_message(message: str, trailers: Mapping[str, str]) -> str:
    body = message.strip()
    if not body:
        raise refuse("the commit message is empty")
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.fullmatch(key):
            raise refuse(f"trailer key {key[:64]!r} is not a git trailer token")
        if not value or any(ch in value for ch in "\r\n\x00"):
            raise refuse(f"trailer {key} must be one non-empty line")
        lines.append(f"{key}: {value}")
    return body + ("\n\n" + "\n".join(lines) if lines else "") + "\n"


def _porcelain_status(out: str, ref: str) -> tuple[str, str] | None:
    """``(flag, summary)`` of ``git push --porcelain``'s line for ``ref``."""
    for line in out.splitlines():
        found = _PORCELAIN.match(line)
        if found and found.group("refs").endswith(f":{ref}"):
            return found.group("flag"), found.group("summary")
    return None


def _prepare_destination(dest: Path) -> bool:
    """Check ``dest`` is absent or an empty directory; True when the clone will create it."""
    if dest.is_symlink():
        raise refuse("the clone destination is a symbolic link")
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise refuse("the clone destination exists and is not an empty directory")
        return False
    if not dest.parent.is_dir():
        raise refuse("the clone destination's parent directory does not exist")
    return True


def _remove(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
    elif dest.is_dir():
        for child in dest.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _netloc(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).netloc
    except ValueError:
        return ""
