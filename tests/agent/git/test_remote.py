"""Which clone URLs and branch names git is given, and how git's failures are classified."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitlab_copilot_agent.git.errors import GitError, classify_output
from gitlab_copilot_agent.git.remote import (
    gitlab_origin,
    validate_branch,
    validate_clone_url,
    validate_sha,
)

GITLAB = gitlab_origin("https://gitlab.example.com")
PREFIXED = gitlab_origin("https://example.com/gitlab/")
TEST_HOSTS = ("127.0.0.1",)


class TestCloneUrls:
    @pytest.mark.parametrize(
        ("url", "normalised", "repo"),
        [
            (
                "https://gitlab.example.com/group/app.git",
                "https://gitlab.example.com/group/app.git",
                "group/app",
            ),
            (
                "https://GitLab.Example.com/group/app",
                "https://gitlab.example.com/group/app",
                "group/app",
            ),
            (
                "https://gitlab.example.com:443/a/b/c.git",
                "https://gitlab.example.com:443/a/b/c.git",
                "a/b/c",
            ),
            (
                "https://gitlab.example.com/group/my.app+x/",
                "https://gitlab.example.com/group/my.app+x",
                "group/my.app+x",
            ),
        ],
    )
    def test_accepted(self, url: str, normalised: str, repo: str) -> None:
        remote = validate_clone_url(url, GITLAB, ())
        assert (remote.url, remote.repo) == (normalised, repo)
        assert remote.origin.base == "https://gitlab.example.com:443/"

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("http://gitlab.example.com/group/app.git", "http is allowed only for test hosts"),
            ("ssh://git@gitlab.example.com/group/app.git", "holds credentials"),
            ("git@gitlab.example.com:group/app.git", "only https"),
            ("file:///srv/repos/app.git", "only https"),
            ("ext::sh -c touch% /tmp/pwned", "spaces"),
            ("https://oauth2:glpat-secret123456@gitlab.example.com/g/a.git", "holds credentials"),
            ("https://token@gitlab.example.com/g/a.git", "holds credentials"),
            ("https://gitlab.example.com@evil.example/g/a.git", "holds credentials"),
            ("https://evil.example/group/app.git", "is not the configured GitLab"),
            ("https://gitlab.example.com.evil.example/g/a.git", "is not the configured GitLab"),
            ("https://gitlab.example.com:8443/group/app.git", "port 8443"),
            ("https://gitlab.example.com/group/../../etc.git", "namespace/project"),
            ("https://gitlab.example.com/group/%2e%2e/x.git", "namespace/project"),
            ("https://gitlab.example.com/app.git", "namespace/project"),
            ("https://gitlab.example.com//group/app.git", "namespace/project"),
            ("https://gitlab.example.com/group/app.git?x=1", "query or fragment"),
            ("https://gitlab.example.com/group/app.git#frag", "query or fragment"),
            ("https://gitlab.example.com/group/app\n.git", "control"),
            ("https://gitlab.example.com/grüpp/app.git", "non-ASCII"),
            ("", "empty"),
            ("https://gitlab.example.com/" + "a/" * 1100 + "b.git", "longer than"),
        ],
    )
    def test_refused(self, url: str, why: str) -> None:
        with pytest.raises(GitError) as raised:
            validate_clone_url(url, GITLAB, ())
        assert raised.value.error_class == "validation_error"
        assert why in raised.value.reason
        assert "glpat-secret123456" not in raised.value.reason

    def test_gitlab_under_a_path_prefix(self) -> None:
        assert validate_clone_url("https://example.com/gitlab/g/a.git", PREFIXED, ()).repo == "g/a"
        with pytest.raises(GitError, match="not under GitLab's path /gitlab"):
            validate_clone_url("https://example.com/g/a.git", PREFIXED, ())

    def test_test_hosts_may_use_http_on_any_port_or_the_one_named(self) -> None:
        local = gitlab_origin("http://127.0.0.1:8080")
        assert validate_clone_url("http://127.0.0.1:9999/g/a.git", local, TEST_HOSTS).repo == "g/a"
        pinned = ("127.0.0.1:9999",)
        assert validate_clone_url("http://127.0.0.1:9999/g/a.git", local, pinned).repo == "g/a"
        with pytest.raises(GitError, match="port 9998"):
            validate_clone_url("http://127.0.0.1:9998/g/a.git", local, pinned)
        with pytest.raises(GitError, match="test hosts"):
            validate_clone_url("http://127.0.0.1:9999/g/a.git", local, ())
        with pytest.raises(GitError, match="not the configured GitLab"):
            validate_clone_url("http://localhost:9999/g/a.git", local, ("localhost",))

    def test_an_unusable_gitlab_url_fails_at_construction(self) -> None:
        for bad in ("gitlab.example.com", "ftp://gitlab.example.com", "https://u:p@gitlab.example"):
            with pytest.raises(ValueError, match="GitLab URL"):
                gitlab_origin(bad)


class TestBranchesAndShas:
    @pytest.mark.parametrize(
        "name", ["main", "feature/x-1", "release/1.2.3", "copilot/fix_1", "a" * 255]
    )
    def test_accepted(self, name: str) -> None:
        assert validate_branch(name) == name

    @pytest.mark.parametrize(
        "name",
        [
            "",
            "-f",
            "--upload-pack=touch",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "@",
            "a@{1}",
            "/a",
            "a/",
            "a.",
            "a//b",
            ".hidden",
            "a/.b",
            "x.lock",
            "a/b.lock/c",
            "a\x00b",
            "a\x7f",
            "a" * 256,
        ],
    )
    def test_refused(self, name: str) -> None:
        with pytest.raises(GitError) as raised:
            validate_branch(name)
        assert raised.value.error_class == "validation_error"

    @settings(max_examples=150, deadline=None)
    @given(
        st.one_of(
            st.from_regex(r"[A-Za-z0-9._/@{}~^:-]{1,20}", fullmatch=True),
            st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=24),
        )
    )
    def test_every_accepted_name_is_one_git_accepts(self, name: str) -> None:
        """Sound against git itself: what we accept, ``git check-ref-format --branch`` accepts."""
        try:
            validate_branch(name)
        except GitError:
            return
        done = subprocess.run(
            ["git", "check-ref-format", "--branch", name], capture_output=True, check=False
        )
        assert done.returncode == 0, name

    def test_shas(self) -> None:
        assert validate_sha("a" * 40, "x") == "a" * 40
        assert validate_sha("b" * 64, "x") == "b" * 64
        for bad in ("a" * 39, "A" * 40, "g" * 40, "HEAD", "a" * 40 + "\n"):
            with pytest.raises(GitError):
                validate_sha(bad, "x")


class TestClassification:
    """GitLab's and git's own messages (shared/reference/external-apis.md §4) → the fine class."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "remote: HTTP Basic: Access denied\nfatal: Authentication failed for "
                "'https://gitlab.example.com/group/app.git/'",
                "auth_failure",
            ),
            (
                "fatal: could not read Username for 'https://gitlab.example.com': "
                "terminal prompts disabled",
                "auth_failure",
            ),
            (
                "remote: You are not allowed to push code to this project.\nfatal: unable to access"
                " 'https://gitlab.example.com/g/a.git/': The requested URL returned error: 403",
                "auth_failure",
            ),
            (
                "remote: GitLab: You are not allowed to push code to protected branches on this "
                "project.\n ! [remote rejected] main -> main (pre-receive hook declined)",
                "protected_branch",
            ),
            (
                " ! [rejected]        feature -> feature (non-fast-forward)\nerror: failed to push"
                " some refs\nhint: Updates were rejected because the tip of your current branch "
                "is behind",
                "non_fast_forward",
            ),
            (" ! [rejected]        feature -> feature (fetch first)", "non_fast_forward"),
            ("!\tHEAD:refs/heads/feature\t[rejected] (stale info)", "non_fast_forward"),
            (
                "remote: The project you were looking for could not be found or you don't have "
                "permission to view it.\nfatal: repository 'https://g/a.git/' not found",
                "not_found",
            ),
            ("fatal: Remote branch nope not found in upstream origin", "not_found"),
            ("fatal: unable to access 'x': The requested URL returned error: 502", "server_error"),
            (
                "fatal: unable to access 'x': Could not resolve host: gitlab.example",
                "network_error",
            ),
            (
                "fatal: unable to access 'x': Failed to connect to 127.0.0.1 port 1: "
                "Connection refused",
                "network_error",
            ),
            (
                "fatal: unable to access 'x': Recv failure: Connection reset by peer",
                "network_error",
            ),
            ("fatal: the remote end hung up unexpectedly", "network_error"),
            ("fatal: unable to access 'x': SSL certificate problem", "network_error"),
            ("error: something else entirely", "git_error"),
        ],
    )
    def test_rules(self, text: str, expected: str) -> None:
        assert classify_output(text) == expected

    def test_audit_classes_stay_in_the_schema_vocabulary(self) -> None:
        assert GitError("non_fast_forward", "x").audit_error_class == "git_error"
        assert GitError("protected_branch", "x").audit_error_class == "git_error"
        assert GitError("auth_failure", "x").audit_error_class == "auth_failure"
        with pytest.raises(ValueError, match="unknown git error class"):
            GitError("made_up", "x")
