"""``Settings.from_env``: sections, one-line errors in the agent's words, the secrets' forms."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkeep.redact import default_redactor
from auditkeep.testing import isolated_secrets
from gitlab_copilot_agent.settings import LogSettings, Settings, SettingsError

VALID = {
    "GITLAB_URL": "https://gitlab.example.com/",
    "GITLAB_TOKEN": "glpat-settings-test-0000",
    "GITLAB_WEBHOOK_SECRET": "settings-test-secret",
}
VARIABLES = [
    *VALID,
    "GITLAB_WEBHOOK_SIGNING_TOKEN",
    "GITLAB_TIMEOUT_S",
    "GITLAB_MAX_RETRIES",
    "WEBHOOK_MAX_BODY_BYTES",
    "WEBHOOK_TIMESTAMP_TOLERANCE_S",
    "TRUSTED_PROXIES",
    "LLM_PROVIDER",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "LLM_MODEL",
    "LLM_TIMEOUT_S",
    "GITHUB_TOKEN",
    "OFFLINE_LLM_CODING_SCRIPT",
    "HOST",
    "PORT",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "WEBHOOK_ALLOW_UNSIGNED",
    "WEBHOOK_REPLAY_WINDOW_S",
    "WEBHOOK_REPLAY_MAX_IDS",
    "WEBHOOK_BODY_TIMEOUT_S",
    "WEBHOOK_HEADER_TIMEOUT_S",
    "WEBHOOK_RATE_LIMIT_BURST",
    "WEBHOOK_RATE_LIMIT_PER_S",
    "WEBHOOK_RATE_LIMIT_SOURCES",
    "WEBHOOK_MAX_CONNECTIONS",
    "WEBHOOK_KEEPALIVE_TIMEOUT_S",
    "WEBHOOK_MAX_HEADER_BYTES",
    "METRICS_TOKEN",
    "METRICS_PORT",
    "API_DOCS_ENABLED",
    "REDIS_URL",
    "REDIS_TIMEOUT_S",
    "APPROVAL_REQUIRED",
    "APPROVAL_EXEMPT_PROJECTS",
    "APPROVAL_APPROVERS",
    "APPROVAL_MIN_ACCESS_LEVEL",
    "APPROVAL_ALLOW_SELF",
    "APPROVAL_TIMEOUT_S",
    "TASK_EXECUTOR",
    "TASK_TIMEOUT_S",
    "TASK_WORK_DIR",
    "TASK_MAX_CONCURRENT",
    "TASK_KEEP_WORK_DIRS",
    "CODING_MAX_PATCH_BYTES",
    "CODING_PROTECTED_PATHS",
    "CODING_CHECK_COMMAND",
    "CODING_CHECK_TIMEOUT_S",
    "GIT_TIMEOUT_S",
    "GIT_ALLOWED_HTTP_HOSTS",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "JIRA_URL",
    "JIRA_EMAIL",
    "JIRA_API_TOKEN",
    "JIRA_PAT",
    "JIRA_TIMEOUT_S",
    "JIRA_MAX_RETRIES",
    "K8S_NAMESPACE",
    "K8S_IMAGE",
    "K8S_COMMAND",
    "K8S_SECRET_NAME",
    "K8S_SERVICE_ACCOUNT",
    "K8S_KUBECONFIG",
    "K8S_CPU_REQUEST",
    "K8S_CPU_LIMIT",
    "K8S_MEMORY_REQUEST",
    "K8S_MEMORY_LIMIT",
    "K8S_RUN_AS_USER",
    "K8S_TTL_AFTER_FINISHED_S",
    "K8S_API_TIMEOUT_S",
    "K8S_POLL_MAX_S",
]


class TestSections:
    def test_defaults_and_sections(self) -> None:
        """Each part reads its own section; defaults as documented in the README."""
        loaded = Settings.from_env(VALID)
        assert loaded.gitlab.url == "https://gitlab.example.com"
        assert (loaded.gitlab.timeout_s, loaded.gitlab.max_retries) == (30.0, 3)
        assert (loaded.webhook.max_body_bytes, loaded.webhook.timestamp_tolerance_s) == (
            1_048_576,
            300,
        )
        assert loaded.webhook.trusted_proxies == ()
        assert (loaded.llm.provider, loaded.llm.model, loaded.llm.timeout_s) == (
            "offline",
            "gpt-4o-mini",
            120.0,
        )
        assert (loaded.server.host, loaded.server.port) == ("127.0.0.1", 8080)
        assert (loaded.logs.format, loaded.logs.level) == ("auto", "info")

    def test_ingress_defaults_are_the_documented_ones(self) -> None:
        """docs/ingress.md's defaults: webhook bounds in ``webhook``, listeners in ``server``."""
        loaded = Settings.from_env(VALID)
        webhook, server = loaded.webhook, loaded.server
        assert webhook.allow_unsigned is False
        assert (webhook.replay_window_s, webhook.replay_max_ids, webhook.replay_keep_s) == (
            86_400,
            100_000,
            86_400,
        )
        assert (webhook.body_timeout_s, webhook.header_timeout_s) == (10.0, 10.0)
        assert (
            webhook.rate_limit_burst,
            webhook.rate_limit_per_s,
            webhook.rate_limit_sources,
        ) == (60, 1.0, 10_000)
        assert (
            webhook.max_connections,
            webhook.keepalive_timeout_s,
            webhook.max_header_bytes,
        ) == (256, 5, 16_384)
        assert (server.metrics_token, server.metrics_port, server.api_docs_enabled) == (
            None,
            None,
            False,
        )

    def test_ingress_values_are_read_and_checked(self) -> None:
        """Flags in their usual spellings; the replay window never under twice the tolerance."""
        loaded = Settings.from_env(
            {
                **VALID,
                "WEBHOOK_ALLOW_UNSIGNED": " TRUE ",
                "API_DOCS_ENABLED": "off",
                "WEBHOOK_REPLAY_WINDOW_S": "10",
                "WEBHOOK_RATE_LIMIT_PER_S": "0.5",
                "METRICS_PORT": "9100",
            }
        )
        assert (loaded.webhook.allow_unsigned, loaded.server.api_docs_enabled) == (True, False)
        assert loaded.webhook.replay_keep_s == 600
        assert (loaded.webhook.rate_limit_per_s, loaded.server.metrics_port) == (0.5, 9100)
        with pytest.raises(SettingsError) as raised:
            Settings.from_env(
                {**VALID, "WEBHOOK_ALLOW_UNSIGNED": "yes please", "METRICS_PORT": "8080"}
            )
        assert raised.value.problems == {
            "WEBHOOK_ALLOW_UNSIGNED": "must be true or false, got 'yes please'",
            "METRICS_PORT": "must differ from PORT",
        }

    def test_only_upper_case_variable_names_are_read(self) -> None:
        """``gitlab_url`` is not ``GITLAB_URL``; a field name cannot be set from the environment."""
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**VALID, "GITLAB_URL": "x", "url": "https://other"} | {})
        assert list(raised.value.problems) == ["GITLAB_URL"]
        env = {k.lower(): v for k, v in VALID.items()}
        with pytest.raises(SettingsError) as missing:
            Settings.from_env(env)
        assert set(missing.value.problems) == {
            "GITLAB_URL",
            "GITLAB_TOKEN",
            "GITLAB_WEBHOOK_SECRET",
        }

    def test_code_may_build_a_section_by_field_name_and_typos_are_refused(self) -> None:
        """``LogSettings(level="debug")`` works; an unknown field is an error, not ignored."""
        assert LogSettings(level="debug").level == "debug"
        with pytest.raises(ValueError, match="formt"):
            LogSettings(formt="json")  # type: ignore[call-arg]

    def test_values_are_normalised(self) -> None:
        """Surrounding spaces of non-secrets, choices' case, proxies as networks."""
        loaded = Settings.from_env(
            {
                **VALID,
                "PORT": " 9000 ",
                "LLM_PROVIDER": "OpenAI",
                "LLM_BASE_URL": "http://llm:8000/v1/",
                "TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7",
                "LOG_LEVEL": "WARNING",
            }
        )
        assert loaded.server.port == 9000
        assert (loaded.llm.provider, loaded.llm.base_url) == ("openai", "http://llm:8000/v1")
        assert [str(n) for n in loaded.webhook.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32"]
        assert loaded.logs.level == "warning"


class TestSecrets:
    def test_every_form_is_listed_for_the_redactor(self) -> None:
        """Values, their Python-escaped forms, the signing key, URL userinfo and its Basic form."""
        quoted = 'secret-with-"quote"-and-\\-backslash'
        key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
        loaded = Settings.from_env(
            {
                **VALID,
                "GITLAB_WEBHOOK_SECRET": quoted,
                "GITLAB_WEBHOOK_SIGNING_TOKEN": f"whsec_{key}",
                "LLM_PROVIDER": "openai",
                "LLM_BASE_URL": "https://bot:pa%40ss-word-9@llm.example.com/v1",
            }
        )
        found = set(loaded.secrets())
        assert {VALID["GITLAB_TOKEN"], quoted, quoted.replace("\\", "\\\\")} <= found
        assert key in found
        assert {"pa%40ss-word-9", "pa@ss-word-9", "bot:pa%40ss-word-9"} <= found
        assert base64.b64encode(b"bot:pa@ss-word-9").decode() in found
        assert "bot" not in found  # a user name alone is no secret

    def test_the_metrics_token_is_a_secret_with_its_own_bounds(self) -> None:
        """Listed for the redactor, shown by length; under 16 visible characters refused."""
        token = "metrics-token-0123456789"
        loaded = Settings.from_env({**VALID, "METRICS_TOKEN": token})
        assert token in loaded.secrets()
        assert f"token set ({len(token)} chars)" in loaded.summary()
        assert token not in loaded.summary()
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**VALID, "METRICS_TOKEN": "short-token-1"})
        assert raised.value.problems == {
            "METRICS_TOKEN": "must be 16 to 256 visible ASCII characters (no spaces or newlines)"
        }
        assert "short-token-1" not in default_redactor.redact("printed: short-token-1")

    def test_a_refused_secret_is_still_registered(self) -> None:
        """A token refused for its trailing newline cannot be printed later, in any form."""
        token = "glpat-refused-newline-4e2a9\n"
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**VALID, "GITLAB_TOKEN": token})
        assert "control character" in raised.value.problems["GITLAB_TOKEN"]
        assert token.strip() not in str(raised.value)
        shown = default_redactor.redact(f"Illegal header value {token.encode()!r} / {token!r}")
        assert "refused-newline" not in shown

    def test_summary_shows_secrets_only_by_length(self) -> None:
        """``check-config``'s view: ``set (N chars)``, never a value or a fragment."""
        text = Settings.from_env(VALID).summary()
        assert f"token:        set ({len(VALID['GITLAB_TOKEN'])} chars)" in text
        assert "signing:      not set" in text
        for value in (VALID["GITLAB_TOKEN"], VALID["GITLAB_WEBHOOK_SECRET"]):
            assert all(value[i : i + 8] not in text for i in range(len(value) - 7))


class TestErrors:
    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(VARIABLES),
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(["", " ", "\n", "-1", "9" * 40, "1e309", "nan", "http://"]),
            ),
            max_size=6,
        )
    )
    def test_any_environment_loads_or_fails_with_one_line_in_our_words(
        self, changes: dict[str, str]
    ) -> None:
        """Nothing but ``SettingsError``; its text is one line naming variables, no pydantic."""
        with isolated_secrets():  # a refused random value is registered: not for later tests
            error = _load({**VALID, **changes})
        if error is None:
            return
        text = str(error)
        assert "\n" not in text
        assert "\r" not in text
        assert error.problems
        assert set(error.problems) <= set(VARIABLES)
        for wording in ("Value error", "validation error", "Input should", "pydantic"):
            assert wording not in text
        shown_elsewhere = {v for k, v in changes.items() if k not in SECRETS}
        for name in SECRETS:
            value = changes.get(name, "").strip()
            if len(value) >= 8 and not any(value in other for other in shown_elsewhere):
                assert value not in text


SECRETS = ("GITLAB_TOKEN", "GITLAB_WEBHOOK_SECRET", "LLM_API_KEY", "GITHUB_TOKEN", "METRICS_TOKEN")


def _load(env: dict[str, str]) -> SettingsError | None:
    try:
        Settings.from_env(env)
    except SettingsError as exc:
        return exc
    return None


class TestCodingSections:
    def test_defaults_fail_closed(self) -> None:
        """Approval required, maintainers approve, no self-approval, one hour; memory store;
        local tasks with a 30-minute deadline."""
        loaded = Settings.from_env(VALID)
        approval = loaded.approval
        assert (approval.required, approval.min_access_level, approval.allow_self_approval) == (
            True,
            40,
            False,
        )
        assert (approval.timeout_s, approval.approvers, approval.exempt_projects) == (
            3600,
            (),
            frozenset(),
        )
        assert approval.required_for(42)
        assert loaded.redis.url is None
        assert (loaded.executor.kind, loaded.executor.timeout_s) == ("local", 1800.0)
        assert loaded.coding.protected_paths is None  # the default list (git.patches)
        assert loaded.coding.check_command is None

    def test_policy_values(self) -> None:
        loaded = Settings.from_env(
            {
                **VALID,
                "APPROVAL_EXEMPT_PROJECTS": "7, 42",
                "APPROVAL_APPROVERS": "ann, bob.smith",
                "APPROVAL_MIN_ACCESS_LEVEL": "none",
                "APPROVAL_ALLOW_SELF": "yes",
                "CODING_CHECK_COMMAND": "make 'unit tests'",
                "CODING_PROTECTED_PATHS": "none",
                "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1, LocalHost:8080",
            }
        )
        assert not loaded.approval.required_for(42)
        assert loaded.approval.required_for(43)
        assert loaded.approval.approvers == ("ann", "bob.smith")
        assert loaded.approval.min_access_level is None
        assert loaded.approval.allow_self_approval is True
        assert loaded.coding.check_command == ("make", "unit tests")
        assert loaded.coding.protected_paths == ()
        assert loaded.coding.git_http_hosts == ("127.0.0.1", "localhost:8080")

    @pytest.mark.parametrize(
        ("variable", "value", "words"),
        [
            ("REDIS_URL", "http://cache:6379", "must start with redis://"),
            ("APPROVAL_MIN_ACCESS_LEVEL", "boss", "must be one of guest (10)"),
            ("APPROVAL_EXEMPT_PROJECTS", "group/app", "is not a project id"),
            ("APPROVAL_REQUIRED", "maybe", "must be true or false"),
            ("APPROVAL_TIMEOUT_S", "0", "must be from 1 to 604800"),
            ("TASK_EXECUTOR", "docker", "must be one of local, kubernetes"),
            ("K8S_NAMESPACE", "Agents_NS", "must be a DNS-1123 label"),
            ("K8S_MEMORY_LIMIT", "2 gigs", "must be a Kubernetes quantity"),
            ("TASK_WORK_DIR", "relative/dir", "must be an absolute path"),
            ("CODING_PROTECTED_PATHS", "../etc", "must be a path inside the repository"),
            ("CODING_CHECK_COMMAND", "make 'unit", "cannot be split into arguments"),
        ],
    )
    def test_bad_values_name_their_variable(self, variable: str, value: str, words: str) -> None:
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**VALID, variable: value})
        assert list(raised.value.problems) == [variable]
        assert words in raised.value.problems[variable]

    def test_nobody_could_approve_is_refused(self) -> None:
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**VALID, "APPROVAL_MIN_ACCESS_LEVEL": "none"})
        assert "nobody could approve" in raised.value.problems["APPROVAL_MIN_ACCESS_LEVEL"]

    def test_the_redis_password_is_a_secret_and_never_shown(self) -> None:
        loaded = Settings.from_env({**VALID, "REDIS_URL": "redis://:pw-redis-0123456@cache:6379/1"})
        assert "pw-redis-0123456" in loaded.secrets()
        assert "pw-redis-0123456" not in loaded.summary()
        assert "redis://cache:6379/1" in loaded.summary()
