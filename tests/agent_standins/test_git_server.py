"""The git server stand-in: GitLab's token check, real smart HTTP, faults, no credential kept."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_standins.git_server import PROTECTED_MESSAGE, GitServer

TOKEN = "gt-standin-token-5e1d0c9b8a7f"
PROJECT = "group/app"
PLAIN_GIT = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "srv", token=TOKEN) as git_server:
        git_server.create_repo(PROJECT, {"README.md": "hello\n", "src/a.py": "x = 1\n"})
        yield git_server


def info_refs(server: GitServer, authorization: str | None) -> httpx.Response:
    headers = {"authorization": authorization} if authorization else {}
    return httpx.get(
        f"{server.repo_url(PROJECT)}/info/refs",
        params={"service": "git-upload-pack"},
        headers=headers,
    )


class TestAuthentication:
    @pytest.mark.parametrize(
        "authorization",
        [None, basic("oauth2", "wrong-token"), basic("someone", TOKEN), "Bearer nope", "Token x"],
        ids=["none", "wrong-password", "wrong-user", "wrong-bearer", "other-scheme"],
    )
    def test_anything_but_the_token_gets_gitlabs_401(
        self, server: GitServer, authorization: str | None
    ) -> None:
        response = info_refs(server, authorization)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Basic realm="GitLab"'
        assert response.text.startswith("HTTP Basic: Access denied")
        assert [r.authorized for r in server.requests] == [False]

    @pytest.mark.parametrize("authorization", [basic("oauth2", TOKEN), f"Bearer {TOKEN}"])
    def test_the_token_as_basic_password_or_bearer_is_served_by_http_backend(
        self, server: GitServer, authorization: str
    ) -> None:
        response = info_refs(server, authorization)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-git-upload-pack-advertisement"
        assert b"# service=git-upload-pack" in response.content
        (request,) = server.requests
        assert (request.method, request.service, request.authorized) == (
            "GET",
            "git-upload-pack",
            True,
        )

    def test_no_record_keeps_the_credential(self, server: GitServer) -> None:
        info_refs(server, basic("oauth2", TOKEN))
        info_refs(server, f"Bearer {TOKEN}")
        raw = super(GitServer, server).requests
        assert all("authorization" not in r.headers for r in raw)
        encoded = base64.b64encode(f"oauth2:{TOKEN}".encode()).decode()
        for shown in (repr(raw), repr(server.requests)):
            assert TOKEN not in shown
            assert encoded not in shown


class TestRepositories:
    def test_the_real_git_client_clones_with_the_token_in_a_header(
        self, server: GitServer, tmp_path: Path
    ) -> None:
        header = basic("oauth2", TOKEN)
        env = {
            **PLAIN_GIT,
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: {header}",
        }
        dest = tmp_path / "clone"
        subprocess.run(
            ["git", "clone", "--quiet", server.repo_url(PROJECT), str(dest)],
            env=env,
            check=True,
            capture_output=True,
            timeout=30,
        )
        assert (dest / "src" / "a.py").read_text() == "x = 1\n"
        assert all(r.authorized for r in server.requests)

    def test_move_branch_commits_on_top_and_create_branch_forks(self, server: GitServer) -> None:
        first = server.head(PROJECT, "main")
        assert server.create_branch(PROJECT, "feature") == first
        moved = server.move_branch(PROJECT, "feature")
        assert moved != first
        assert server.head(PROJECT, "feature") == moved
        assert server.head(PROJECT, "main") == first
        parent = subprocess.run(
            ["git", f"--git-dir={server.root / 'group/app.git'}", "rev-parse", f"{moved}^"],
            env=PLAIN_GIT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert parent == first
        assert server.file_at(PROJECT, "feature", "README.md") == "hello\n"

    def test_protect_refuses_a_push_with_gitlabs_message(
        self, server: GitServer, tmp_path: Path
    ) -> None:
        env = {
            **PLAIN_GIT,
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {TOKEN}",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
        dest = tmp_path / "clone"

        def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
            )

        assert run("clone", "-q", server.repo_url(PROJECT), str(dest)).returncode == 0
        (dest / "README.md").write_text("changed\n")
        assert run("commit", "-qam", "c", cwd=dest).returncode == 0
        server.protect(PROJECT, "main")
        refused = run("push", "origin", "main", cwd=dest)
        assert refused.returncode != 0
        assert PROTECTED_MESSAGE in refused.stderr
        assert "pre-receive hook declined" in refused.stderr
        accepted = run("push", "origin", "main:other", cwd=dest)
        assert accepted.returncode == 0, accepted.stderr

    def test_bad_repository_paths_are_refused(self, server: GitServer) -> None:
        for bad in ("app", "../x/y", "group/app.git", "group/.hidden/x", "a b/c"):
            with pytest.raises(ValueError, match="namespace/project"):
                server.repo_url(bad)
        with pytest.raises(FileExistsError):
            server.create_repo(PROJECT, {})


class TestFaults:
    def test_fail_next_answers_in_gitlabs_shape_then_recovers(self, server: GitServer) -> None:
        good = basic("oauth2", TOKEN)
        server.fail_next(403)
        server.fail_next(500)
        forbidden = info_refs(server, good)
        broken = info_refs(server, good)
        recovered = info_refs(server, good)
        assert (forbidden.status_code, forbidden.text) == (
            403,
            "You are not allowed to push code to this project.\n",
        )
        assert broken.status_code == 500
        assert recovered.status_code == 200
        assert [r.fault for r in server.requests] == ["http", "http", None]

    def test_fail_next_zero_resets_the_connection(self, server: GitServer) -> None:
        server.fail_next(0)
        with pytest.raises(httpx.TransportError):
            info_refs(server, basic("oauth2", TOKEN))
        assert info_refs(server, basic("oauth2", TOKEN)).status_code == 200

    def test_hang_next_answers_nothing_until_the_client_leaves(self, server: GitServer) -> None:
        server.hang_next(seconds=30)
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{server.repo_url(PROJECT)}/info/refs", timeout=0.5)

    def test_stop_then_start_again_on_a_new_port(self, server: GitServer) -> None:
        old = server.url
        server.stop()
        with pytest.raises(RuntimeError, match="not started"):
            _ = server.url
        with pytest.raises(httpx.ConnectError):
            httpx.get(old)
        server.start()
        assert info_refs(server, f"Bearer {TOKEN}").status_code == 200
