"""``serve`` and ``check-config`` as processes: every bad setting stops them before any port is
bound, with one plain line naming the variable; ``check-config`` prints what it resolved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agentproc import VALID, Served, bound, run

NEWLINE_TOKEN = "glpat-trailing-newline-0001\n"
PREFIX = "gitlab-copilot-agent: invalid configuration: "


def _not_executable(tmp: Path) -> str:
    path = tmp / "copilot"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    return str(path)


# (id, changes to the valid environment (None removes), the variable the line must name)
BAD: list[tuple[str, dict[str, str | None], str]] = [
    ("empty-token", {"GITLAB_TOKEN": ""}, "GITLAB_TOKEN"),
    ("whitespace-token", {"GITLAB_TOKEN": "   "}, "GITLAB_TOKEN"),
    ("control-char-token", {"GITLAB_TOKEN": "glpat-bell\x07-000000000"}, "GITLAB_TOKEN"),
    ("newline-token", {"GITLAB_TOKEN": NEWLINE_TOKEN}, "GITLAB_TOKEN"),
    ("spaced-token", {"GITLAB_TOKEN": " glpat-leading-space-0000"}, "GITLAB_TOKEN"),
    ("short-token", {"GITLAB_TOKEN": "abc"}, "GITLAB_TOKEN"),
    ("missing-token", {"GITLAB_TOKEN": None}, "GITLAB_TOKEN"),
    ("missing-url", {"GITLAB_URL": None}, "GITLAB_URL"),
    ("url-without-scheme", {"GITLAB_URL": "gitlab.example.com"}, "GITLAB_URL"),
    ("empty-webhook-secret", {"GITLAB_WEBHOOK_SECRET": ""}, "GITLAB_WEBHOOK_SECRET"),
    ("no-webhook-auth", {"GITLAB_WEBHOOK_SECRET": None}, "GITLAB_WEBHOOK_SECRET"),
    (
        "bad-signing-token",
        {"GITLAB_WEBHOOK_SIGNING_TOKEN": "whsec_not*base64"},
        "GITLAB_WEBHOOK_SIGNING_TOKEN",
    ),
    ("port-not-a-number", {"PORT": "eighty"}, "PORT"),
    ("port-out-of-range", {"PORT": "70000"}, "PORT"),
    ("huge-number", {"GITLAB_MAX_RETRIES": "9" * 400}, "GITLAB_MAX_RETRIES"),
    ("negative-timeout", {"GITLAB_TIMEOUT_S": "-1"}, "GITLAB_TIMEOUT_S"),
    ("bad-proxy", {"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"),
    ("unknown-provider", {"LLM_PROVIDER": "gpt"}, "LLM_PROVIDER"),
    ("openai-without-url", {"LLM_PROVIDER": "openai"}, "LLM_BASE_URL"),
    ("newline-api-key", {"LLM_API_KEY": "sk-trailing-newline-000000\n"}, "LLM_API_KEY"),
    (
        "missing-copilot-cli",
        {"LLM_PROVIDER": "copilot", "COPILOT_CLI_PATH": "/nope"},
        "COPILOT_CLI_PATH",
    ),
    (
        "non-executable-copilot-cli",
        {"LLM_PROVIDER": "copilot", "COPILOT_CLI_PATH": "{not_executable}"},
        "COPILOT_CLI_PATH",
    ),
    ("bad-log-format", {"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    # The ingress's settings (docs/ingress.md), checked the same way.
    ("allow-unsigned-not-a-flag", {"WEBHOOK_ALLOW_UNSIGNED": "maybe"}, "WEBHOOK_ALLOW_UNSIGNED"),
    (
        "allow-unsigned-without-secret",
        {
            "WEBHOOK_ALLOW_UNSIGNED": "true",
            "GITLAB_WEBHOOK_SECRET": None,
            "GITLAB_WEBHOOK_SIGNING_TOKEN": "whsec_ZTJlLXNpZ25pbmcta2V5LTMyLWJ5dGVzLWxvbmchISE=",
        },
        "WEBHOOK_ALLOW_UNSIGNED",
    ),
    ("zero-rate", {"WEBHOOK_RATE_LIMIT_PER_S": "0"}, "WEBHOOK_RATE_LIMIT_PER_S"),
    ("huge-replay-window", {"WEBHOOK_REPLAY_WINDOW_S": "9" * 400}, "WEBHOOK_REPLAY_WINDOW_S"),
    ("tiny-header-bound", {"WEBHOOK_MAX_HEADER_BYTES": "100"}, "WEBHOOK_MAX_HEADER_BYTES"),
    ("empty-body-timeout", {"WEBHOOK_BODY_TIMEOUT_S": ""}, "WEBHOOK_BODY_TIMEOUT_S"),
    ("short-metrics-token", {"METRICS_TOKEN": "short-token-1"}, "METRICS_TOKEN"),
    ("newline-metrics-token", {"METRICS_TOKEN": "metrics-token-0123456789\n"}, "METRICS_TOKEN"),
    ("metrics-port-is-port", {"METRICS_PORT": "8080"}, "METRICS_PORT"),
    ("docs-not-a-flag", {"API_DOCS_ENABLED": "sure"}, "API_DOCS_ENABLED"),
    # Jira (off unless JIRA_URL is set): one way to authenticate, named when missing.
    ("jira-without-token", {"JIRA_URL": "https://acme.atlassian.net"}, "JIRA_API_TOKEN"),
    ("jira-token-without-url", {"JIRA_PAT": "jira-dc-pat-0123456789"}, "JIRA_URL"),
    (
        "jira-newline-token",
        {
            "JIRA_URL": "https://acme.atlassian.net",
            "JIRA_EMAIL": "agent@example.com",
            "JIRA_API_TOKEN": "ATATT-trailing-newline-0000\n",
        },
        "JIRA_API_TOKEN",
    ),
    ("bad-audit-number", {"AUDIT_LOG_BUFFER_SIZE": "lots"}, "AUDIT_LOG_BUFFER_SIZE"),
    ("audit-file-missing", {"AUDIT_LOG_DESTINATION": "file"}, "AUDIT_LOG_FILE_PATH"),
    (
        "audit-file-in-missing-directory",
        {"AUDIT_LOG_DESTINATION": "file", "AUDIT_LOG_FILE_PATH": "/nonexistent/dir/audit.jsonl"},
        "AUDIT_LOG_FILE_PATH",
    ),
]


def _environment(tmp: Path, changes: dict[str, str | None]) -> dict[str, str]:
    values: dict[str, str] = dict(VALID)
    for name, value in changes.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value.replace("{not_executable}", _not_executable(tmp))
    return values


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize(("changes", "variable"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_setting_stops_before_binding_with_one_line(
    tmp_path: Path, command: str, changes: dict[str, str | None], variable: str
) -> None:
    """rc 2, exactly one stderr line naming the variable in plain words, no port bound."""
    values = _environment(tmp_path, changes)
    result = run(tmp_path, values, command)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines(keepends=True) == [result.stderr], result.stderr
    assert result.stderr.endswith("\n")
    assert result.stderr.startswith(f"{PREFIX}{variable}: "), result.stderr
    for wording in ("Traceback", "Value error", "validation error", "pydantic", "input_value"):
        assert wording not in result.stderr
    assert bound(tmp_path) == []
    for name in (
        "GITLAB_TOKEN",
        "GITLAB_WEBHOOK_SECRET",
        "LLM_API_KEY",
        "METRICS_TOKEN",
        "JIRA_API_TOKEN",
        "JIRA_PAT",
    ):
        secret = values.get(name, "").strip()
        if len(secret) >= 8:
            assert secret not in result.stderr


def test_a_metrics_port_equal_to_the_serve_port_stops_before_binding(tmp_path: Path) -> None:
    """``serve --port N`` with ``METRICS_PORT=N``: the same one line, nothing bound."""
    result = run(tmp_path, {**VALID, "METRICS_PORT": "9099"}, "serve", "--port", "9099")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{PREFIX}METRICS_PORT: must differ from the port serve listens on\n"
    assert bound(tmp_path) == []


def test_every_problem_is_named_in_the_one_line(tmp_path: Path) -> None:
    """Several bad settings, the agent's and the audit library's: all named, still one line."""
    values = _environment(
        tmp_path, {"GITLAB_TOKEN": "", "PORT": "x", "AUDIT_LOG_DESTINATION": "tape"}
    )
    result = run(tmp_path, values, "serve")
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    for variable in ("GITLAB_TOKEN: ", "PORT: ", "AUDIT_LOG_DESTINATION: "):
        assert variable in result.stderr
    assert bound(tmp_path) == []


class TestControls:
    """The detectors above can fail: a good configuration does bind, and says what it runs."""

    def test_valid_settings_bind_and_a_disabled_trail_is_announced(self, tmp_path: Path) -> None:
        """The bind marker records the listening port; AUDIT_LOG_ENABLED=false is warned about."""
        served = Served(tmp_path, {**VALID, "AUDIT_LOG_ENABLED": "false"})
        try:
            served.wait_listening()
        finally:
            returncode = served.stop()
        # uvicorn shuts down cleanly, then re-raises SIGTERM (exit status 143 to a shell).
        assert returncode in (0, -signal.SIGTERM), served.stderr()
        assert "Application shutdown complete." in served.stderr()
        assert bound(tmp_path) == [f"('127.0.0.1', {served.port})"]
        assert "AUDIT LOGGING IS DISABLED (AUDIT_LOG_ENABLED=false)" in served.stderr()
        assert "Traceback" not in served.stderr()


class TestCheckConfig:
    def test_prints_what_it_resolved_and_never_a_secret(self, tmp_path: Path) -> None:
        """Each section, secrets as "set (N chars)", URLs without userinfo, the audit summary."""
        password = "userinfo-password-7b1e"
        values = {
            **VALID,
            "GITLAB_WEBHOOK_SIGNING_TOKEN": "whsec_ZTJlLXNpZ25pbmcta2V5LTMyLWJ5dGVzLWxvbmchISE=",
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": f"https://llm-user:{password}@llm.example.com/v1/",
            "LLM_API_KEY": "llm-api-key-for-check-config",
            "TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
            "HOST": "0.0.0.0",
            "METRICS_TOKEN": "check-config-metrics-token-0001",
            "WEBHOOK_RATE_LIMIT_BURST": "0",
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(tmp_path / "audit.jsonl"),
        }
        result = run(tmp_path, values, "check-config")
        assert (result.returncode, result.stderr) == (0, "")
        out = result.stdout
        assert f"token:        set ({len(VALID['GITLAB_TOKEN'])} chars)" in out
        assert f"secret:       set ({len(VALID['GITLAB_WEBHOOK_SECRET'])} chars)" in out
        assert "signing:      set (50 chars)" in out
        assert f"api key:      set ({len(values['LLM_API_KEY'])} chars)" in out
        assert "base url:     https://llm.example.com/v1" in out
        assert "proxies:      10.0.0.0/8, 192.168.1.1/32" in out
        assert "server:         0.0.0.0:8080" in out
        assert "unsigned:     refused (missing_signature)" in out
        assert "replays:      keys kept 86400 s, at most 100000 keys" in out
        assert "rate limit:   off (WEBHOOK_RATE_LIMIT_BURST=0)" in out
        assert "deadlines:    body 10 s, headers 10 s, keep-alive 5 s" in out
        assert "connections:  at most 256, headers at most 16384 bytes" in out
        assert "metrics:      /metrics and /healthz on PORT, token set (31 chars)" in out
        assert "api docs:     off" in out
        assert f"file:         {tmp_path / 'audit.jsonl'}" in out
        assert out.endswith("configuration OK\n")
        for secret in (
            VALID["GITLAB_TOKEN"],
            VALID["GITLAB_WEBHOOK_SECRET"],
            values["LLM_API_KEY"],
            values["GITLAB_WEBHOOK_SIGNING_TOKEN"],
            values["METRICS_TOKEN"],
            password,
        ):
            assert all(secret[i : i + 8] not in out for i in range(len(secret) - 7)), secret
        assert bound(tmp_path) == []

    def test_says_when_auditing_is_disabled(self, tmp_path: Path) -> None:
        """With AUDIT_LOG_ENABLED=false the summary says no entries are written."""
        result = run(tmp_path, {**VALID, "AUDIT_LOG_ENABLED": "false"}, "check-config")
        assert result.returncode == 0
        assert "audit logging is disabled (AUDIT_LOG_ENABLED=false)" in result.stdout


def test_check_config_creates_nothing(tmp_path: Path) -> None:
    """check-config judges the audit file by its permissions: a relative path is left uncreated."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_LOG_", "GITLAB_", "LLM_"))
    }
    env.update(
        GITLAB_URL="https://gitlab.example.com",
        GITLAB_TOKEN="glpat-checkconfig-0123456789",
        GITLAB_WEBHOOK_SECRET="s3cret-checkconfig",
        AUDIT_LOG_DESTINATION="file",
        AUDIT_LOG_FILE_PATH="audit.jsonl",
        AUDIT_LOG_SPOOL_DIR=str(tmp_path / "spool"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gitlab_copilot_agent.cli import main; raise SystemExit(main())",
            "check-config",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert list(tmp_path.iterdir()) == []
