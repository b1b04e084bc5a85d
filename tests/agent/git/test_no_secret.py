"""The git token never leaves the environment of the network git commands.

Searched for the token, its Basic form and every 8-character piece of either:
the argv of every process started (PEP 578 hook on ``subprocess.Popen``),
every file under the clone (``.git`` included), the runner's HOME, the
clone's effective configuration, the audit file (schema-validated), the git
server's recorded requests, every exception raised, and the test's own output.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from gitkit import (
    BASIC,
    PROJECT,
    TOKEN,
    Approval,
    Trail,
    argv_text,
    files_leaking,
    leaks,
    popen_log,
)

from agent_standins.git_server import GitServer
from gitlab_copilot_agent.git.errors import GitError
from gitlab_copilot_agent.git.runner import GitCredentials, GitRunner


def test_a_whole_scenario_leaves_the_token_only_in_network_commands_environments(
    runner: GitRunner,
    server: GitServer,
    trail: Trail,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Clone, commit, push, then a 401, a 403, a protected branch and a reset: zero leaks."""
    dest = tmp_path / "clone"
    raised: list[GitError] = []

    async def scenario() -> None:
        base = await runner.clone(server.repo_url(PROJECT), "feature", dest, target={})
        for step, fault in enumerate((None, 401, 403, "protect", 0)):
            (dest / "README.md").write_text(f"step {step}\n")
            await runner.commit(dest, f"Step {step}", trailers={"Audit-Correlation-Id": "x"})
            if fault == "protect":
                server.protect(PROJECT, "feature")
            elif isinstance(fault, int):
                server.fail_next(fault)
            try:
                base = await runner.push(
                    dest, "feature", expected_remote_sha=base, target={}, authorization=Approval()
                )
            except GitError as exc:
                raised.append(exc)

    with popen_log() as log:
        asyncio.run(scenario())

    assert [e.error_class for e in raised] == [
        "auth_failure",
        "auth_failure",
        "protected_branch",
        "network_error",
    ]
    git = log.git()
    assert {s.argv[1] for s in git} >= {"clone", "push", "commit", "rev-parse", "config"}
    # argv: of every process (git client, git http-backend on the server side, anything else)
    assert leaks(argv_text(log.spawns)) == []
    assert "extraHeader" not in argv_text(log.spawns)
    assert "Authorization" not in argv_text(log.spawns)
    # environment: only clone and push ever carry the credential, and only as the header
    for spawn in git:
        env = "\n".join(f"{k}={v}" for k, v in (spawn.env or {}).items())
        network = spawn.argv[1] in ("clone", "push")
        assert bool(leaks(env)) is network, spawn.argv[:2]
        if network:
            header = [k for k, v in (spawn.env or {}).items() if BASIC in v]
            assert len(header) == 1
            assert header[0].startswith("GIT_CONFIG_VALUE_")
            assert TOKEN not in env  # only its Basic form travels
    for spawn in log.spawns:
        if "http-backend" in spawn.argv:
            assert leaks("\n".join((spawn.env or {}).values())) == []
    # files
    assert files_leaking(dest) == []
    assert files_leaking(runner._home) == []
    shown = subprocess.run(
        ["git", "config", "--list", "--show-origin"],
        cwd=dest,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"},
    ).stdout
    assert leaks(shown) == []
    assert f"remote.origin.url={server.repo_url(PROJECT)}" in shown
    # the trail, the exceptions, the server's records, the output
    entries = trail.entries("gitlab.api.")
    assert len(entries) == 1 + 5
    assert leaks(trail.raw()) == []
    assert leaks("\n".join(f"{e}{e!r}" for e in raised)) == []
    assert leaks(repr(server.requests)) == []
    raw_records = super(GitServer, server).requests  # the base's own record
    assert all("authorization" not in r.headers for r in raw_records)
    assert leaks(repr(raw_records)) == []
    out, err = capfd.readouterr()
    assert leaks(out + err) == []


def test_the_credential_is_scoped_to_the_gitlab_origin(
    runner: GitRunner, server: GitServer, tmp_path: Path
) -> None:
    """The header's config key names GitLab's scheme://host:port/ and redirects are off."""
    with popen_log() as log:
        asyncio.run(runner.clone(server.repo_url(PROJECT), "main", tmp_path / "c", target={}))
    (clone,) = log.git("clone")
    env = clone.env or {}
    keys = {env[k]: env[k.replace("KEY", "VALUE")] for k in env if k.startswith("GIT_CONFIG_KEY_")}
    header_keys = [k for k, v in keys.items() if BASIC in v]
    assert header_keys == [f"http.{server.url}/.extraHeader"]
    assert keys["http.followRedirects"] == "false"
    assert keys["core.hooksPath"] == "/dev/null"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert not any(k.startswith("GIT_") and k not in _EXPECTED_GIT_VARS for k in env)


_EXPECTED_GIT_VARS = {
    "GIT_TERMINAL_PROMPT",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_CONFIG_GLOBAL",
    "GIT_TEMPLATE_DIR",
    "GIT_OPTIONAL_LOCKS",
    "GIT_CONFIG_COUNT",
    "GIT_CEILING_DIRECTORIES",
    "GIT_SSL_CAINFO",  # the host's CA settings pass through, so https works as configured
    "GIT_SSL_CAPATH",
    *(f"GIT_CONFIG_{kind}_{i}" for kind in ("KEY", "VALUE") for i in range(32)),
}


def test_inherited_git_variables_never_reach_git(
    runner: GitRunner, server: GitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GIT_* or secret variable in the agent's environment is not passed to git."""
    monkeypatch.setenv("GIT_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("GIT_SSH_COMMAND", "touch /tmp/pwned")
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    with popen_log() as log:
        asyncio.run(runner.clone(server.repo_url(PROJECT), "main", tmp_path / "c", target={}))
    for spawn in log.git():
        env = spawn.env or {}
        assert "GIT_DIR" not in env
        assert "GIT_SSH_COMMAND" not in env
        assert "GITLAB_TOKEN" not in env


def test_credentials_never_print_and_refuse_header_injection(runner: GitRunner) -> None:
    """A token that could break the header is refused; reprs never show the token."""
    credentials = GitCredentials(TOKEN)
    for shown in (repr(credentials), str(credentials), repr(runner)):
        assert leaks(shown) == []
    for bad in (f"{TOKEN}\r\nX-Evil: 1", f" {TOKEN}", "short", f"{TOKEN}é", ""):
        with pytest.raises(ValueError, match="git token"):
            GitCredentials(bad)
    for user in ("", "a:b", "a b", "a\nb"):
        with pytest.raises(ValueError, match="git username"):
            GitCredentials(TOKEN, user)
