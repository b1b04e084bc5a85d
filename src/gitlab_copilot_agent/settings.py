"""Service settings: read once from the environment, in sections, validated at start.

``Settings.from_env()`` reads the variables below (upper-case names only) and
raises ``SettingsError`` listing every problem in one line, each naming its
variable in plain words. A secret's value is never repeated in a message.
``AUDIT_LOG_*`` belong to the audit library (``auditkeep.config``).

Sections, one model each: ``gitlab`` (``GITLAB_URL``, ``GITLAB_TOKEN``, …),
``webhook`` (``GITLAB_WEBHOOK_*``, ``WEBHOOK_*``, ``TRUSTED_PROXIES``: how
deliveries are authenticated and bounded, docs/ingress.md), ``llm``
(``LLM_*``, ``COPILOT_CLI_PATH``, ``GITHUB_TOKEN``), ``server`` (``HOST``,
``PORT``, ``METRICS_PORT``, ``METRICS_TOKEN``, ``API_DOCS_ENABLED``), ``logs``
(``LOG_FORMAT``, ``LOG_LEVEL``), ``redis`` (``REDIS_*``), ``approval``
(``APPROVAL_*``), ``executor`` (``TASK_*``), ``coding`` (``CODING_*``,
``GIT_*``), ``jira`` (``JIRA_*``; off while ``JIRA_URL`` is unset), ``poll``
(``POLL_*`` and the Jira project map) and ``kubernetes`` (``K8S_*``, checked with
``TASK_EXECUTOR=kubernetes`` by ``_check_kubernetes``). A new part adds a section
model here and a field on ``Settings``; the loader and the error wording need no
change. ``TaskSettings`` is the subset a task process reads (it never gets the
webhook secrets, nor Jira's).

Rules every value follows:

- set means set: a variable present but empty (``GITLAB_TOKEN=``) or only
  whitespace is an error, not "unset";
- no control characters anywhere; non-secret values may have surrounding
  spaces (stripped);
- **secrets are refused, not repaired**, when they begin or end with
  whitespace or hold a control character (the usual cause is a trailing
  newline from ``echo`` into a secret file). Stripping would be friendlier,
  but the stripped value may not be the credential the operator stored
  (GitLab compares webhook secrets byte for byte), and the failure would then
  show up later as 401s far from its cause. The refused value is still
  registered with the redactor, so nothing later can print it;
- numbers are bounded before conversion (at most 18 digits) and range-checked.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import os
import re
import shlex
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from auditkeep.redact import MIN_SECRET_CHARS, default_redactor
from gitlab_copilot_agent.scrub import (
    scrub_then_cut,
    secret_forms,
    userinfo_secrets,
    without_userinfo,
)

SERVICE_NAME: Final = "gitlab-copilot-agent"

_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DIGITS: Final = re.compile(r"[+-]?\d{1,18}")
_DECIMAL: Final = re.compile(r"[+-]?(?:\d{1,12}(?:\.\d{0,9})?|\.\d{1,9})")
_HOST: Final = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
_BEARER: Final = re.compile(r"[\x21-\x7e]{16,256}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """The environment holds invalid settings; ``problems`` maps each variable to what is wrong.

    ``str()`` is one line: ``VAR: problem | OTHER_VAR: problem``.
    """

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__(" | ".join(f"{name}: {text}" for name, text in self.problems.items()))


def _problem(message: str, variable: str | None = None) -> PydanticCustomError:
    # The message goes through a context value so braces in it are not a template.
    context: dict[str, Any] = {"message": message}
    if variable is not None:
        context["variable"] = variable
    return PydanticCustomError("setting", "{message}", context)


def _shown(value: str) -> str:
    """A rejected non-secret value as a message may show it: scrubbed, cut, escaped (repr)."""
    return repr(scrub_then_cut(value, 60))


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _problem("must be text")
    stripped = value.strip()
    if not stripped:
        raise _problem("is set but empty; give it a value or unset it")
    if _CONTROL.search(stripped):
        raise _problem("contains a control character; remove it")
    return stripped


def _secret(value: object) -> SecretStr:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise _problem("must be text")
    problem: str | None = None
    if not value:
        problem = "is set but empty; give it a value or unset it"
    elif not value.strip():
        problem = "is only whitespace; give it the real value"
    elif _CONTROL.search(value):
        problem = (
            "contains a control character (often a trailing newline, e.g. from echo into a "
            "secret file); store the value without it"
        )
    elif value != value.strip():
        problem = "begins or ends with whitespace; store the value without it"
    elif len(value) < MIN_SECRET_CHARS:
        problem = (
            f"is {len(value)} characters long; secrets need at least {MIN_SECRET_CHARS} "
            "(shorter ones cannot be told apart from ordinary words and scrubbed)"
        )
    if problem is not None:
        # Refused, but it may still be printed by something: make sure it is scrubbed.
        forms = secret_forms(value)
        if forms:
            default_redactor.register(*forms)
        raise _problem(problem)
    return SecretStr(value)


def _integer(minimum: int, maximum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = _text(value)
            if not _DIGITS.fullmatch(text):
                raise _problem(
                    f"must be a whole number from {minimum} to {maximum}, got {_shown(text)}"
                )
            number = int(text)
        if not minimum <= number <= maximum:
            raise _problem(f"must be from {minimum} to {maximum}, got {number}")
        return number

    return parse


def _seconds(maximum: float) -> Callable[[object], float]:
    return _positive(maximum, what="a number of seconds", unit=" seconds")


def _positive(maximum: float, *, what: str, unit: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            text = _text(value)
            if not _DECIMAL.fullmatch(text):
                raise _problem(f"must be {what}, got {_shown(text)}")
            number = float(text)
        if not 0 < number <= maximum:
            raise _problem(
                f"must be more than 0 and at most {maximum:.15g}{unit}, got {number:.15g}"
            )
        return number

    return parse


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _problem(f"must be true or false, got {_shown(text)}")


def _choice(*options: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _text(value).lower()
        if text not in options:
            raise _problem(f"must be one of {', '.join(options)}, got {_shown(text)}")
        return text

    return parse


def _http_url(value: object) -> str:
    text = _text(value)
    shown = _shown(without_userinfo(text))
    if not text.lower().startswith(("http://", "https://")):
        raise _problem(f"must start with http:// or https://, got {shown}")
    if any(c.isspace() for c in text):
        raise _problem(f"must not contain spaces, got {shown}")
    host = text.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    if not host or not _HOST.fullmatch(host):
        raise _problem(f"has no valid host name, got {shown}")
    return text.rstrip("/")


def _host(value: object) -> str:
    text = _text(value)
    if not _HOST.fullmatch(text):
        raise _problem(f"must be an address or host name to listen on, got {_shown(text)}")
    return text


def _email(value: object) -> str:
    text = _text(value)
    if len(text) > 254 or any(c.isspace() for c in text) or text.count("@") != 1:
        raise _problem(f"must be an email address, got {_shown(text)}")
    return text


def _networks(value: object) -> tuple[Network, ...]:
    if isinstance(value, tuple):
        return value
    items = [item.strip() for item in _text(value).split(",") if item.strip()]
    networks: list[Network] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _problem(f"{_shown(item)} is not an IP address or network") from None
    return tuple(networks)


def _signing_token(value: object) -> SecretStr:
    secret = _secret(value)
    raw = secret.get_secret_value()
    if not raw.startswith("whsec_"):
        raise _problem("must start with whsec_ (GitLab's signing token format)")
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise _problem("the part after whsec_ is not valid base64") from None
    if len(key) < 16:
        raise _problem("the key is too short (GitLab issues 32-byte keys)")
    return secret


def _bearer_token(value: object) -> SecretStr:
    secret = _secret(value)
    raw = secret.get_secret_value()
    if not _BEARER.fullmatch(raw):
        # Refused, but it may still be printed by something: make sure it is scrubbed.
        default_redactor.register(*secret_forms(raw))
        raise _problem("must be 16 to 256 visible ASCII characters (no spaces or newlines)")
    return secret


def _coding_script(value: object) -> Path:
    # One reader for the file (the offline provider's), so start and use agree on what is valid.
    from gitlab_copilot_agent.llm.offline_coding import load_coding_script

    path = Path(_text(value))
    try:
        load_coding_script(path)
    except ValueError as exc:
        raise _problem(default_redactor.scrub_then_cut(str(exc), 300)) from None
    return path


Text = Annotated[str, BeforeValidator(_text)]
Secret = Annotated[SecretStr, BeforeValidator(_secret)]


class _Section(BaseModel):
    # By variable name from the environment; by field name from code (LogSettings(level="debug")).
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class GitLabSettings(_Section):
    """``GITLAB_*``: the instance and how the agent calls it."""

    url: Annotated[str, BeforeValidator(_http_url)] = Field(
        validation_alias="GITLAB_URL",
        description="the GitLab instance's URL, e.g. https://gitlab.example.com",
    )
    token: Secret = Field(
        validation_alias="GITLAB_TOKEN", description="a GitLab access token with the api scope"
    )
    timeout_s: Annotated[float, BeforeValidator(_seconds(600))] = Field(
        default=30.0, validation_alias="GITLAB_TIMEOUT_S"
    )
    max_retries: Annotated[int, BeforeValidator(_integer(0, 10))] = Field(
        default=3, validation_alias="GITLAB_MAX_RETRIES"
    )


class JiraSettings(_Section):
    """``JIRA_*``: the Jira site and its credentials; Jira is off while ``JIRA_URL`` is unset.

    Jira Cloud takes ``JIRA_EMAIL`` + ``JIRA_API_TOKEN`` (Basic auth); Jira Data
    Center a personal access token, ``JIRA_PAT`` (Bearer). Exactly one of the two.
    """

    url: Annotated[str | None, BeforeValidator(_http_url)] = Field(
        default=None, validation_alias="JIRA_URL"
    )
    email: Annotated[str | None, BeforeValidator(_email)] = Field(
        default=None, validation_alias="JIRA_EMAIL"
    )
    api_token: Annotated[SecretStr | None, BeforeValidator(_secret)] = Field(
        default=None, validation_alias="JIRA_API_TOKEN"
    )
    pat: Annotated[SecretStr | None, BeforeValidator(_secret)] = Field(
        default=None, validation_alias="JIRA_PAT"
    )
    timeout_s: Annotated[float, BeforeValidator(_seconds(600))] = Field(
        default=30.0, validation_alias="JIRA_TIMEOUT_S"
    )
    max_retries: Annotated[int, BeforeValidator(_integer(0, 10))] = Field(
        default=3, validation_alias="JIRA_MAX_RETRIES"
    )

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> JiraSettings:
        basic = self.email is not None or self.api_token is not None
        if self.url is None:
            if basic or self.pat is not None:
                raise _problem("required when Jira credentials are set", "JIRA_URL")
            return self
        if basic and self.pat is not None:
            raise _problem("set JIRA_PAT or JIRA_EMAIL with JIRA_API_TOKEN, not both", "JIRA_PAT")
        if self.pat is None and self.api_token is None:
            raise _problem(
                "required with JIRA_URL (or JIRA_PAT for Jira Data Center)", "JIRA_API_TOKEN"
            )
        if self.pat is None and self.email is None:
            raise _problem("required with JIRA_API_TOKEN (Basic auth is email:token)", "JIRA_EMAIL")
        return self

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def authorization(self) -> str:
        """The ``Authorization`` header value (``Basic …`` or ``Bearer …``)."""
        if self.pat is not None:
            return f"Bearer {self.pat.get_secret_value()}"
        if self.email is None or self.api_token is None:
            raise ValueError("Jira is not configured (JIRA_URL is unset)")
        pair = f"{self.email}:{self.api_token.get_secret_value()}".encode()
        return f"Basic {base64.b64encode(pair).decode('ascii')}"

    def secrets(self) -> list[str]:
        """The token, the PAT, the Basic header's value and URL credentials (raw forms)."""
        raw = [v.get_secret_value() for v in (self.api_token, self.pat) if v is not None]
        if self.url is not None:
            raw.append(self.authorization().split(" ", 1)[1])
        return raw + userinfo_secrets(self.url)


class WebhookSettings(_Section):
    """How ``POST /webhook`` authenticates and bounds deliveries."""

    secret: Annotated[SecretStr | None, BeforeValidator(_secret)] = Field(
        default=None, validation_alias="GITLAB_WEBHOOK_SECRET"
    )
    signing_token: Annotated[SecretStr | None, BeforeValidator(_signing_token)] = Field(
        default=None, validation_alias="GITLAB_WEBHOOK_SIGNING_TOKEN"
    )
    max_body_bytes: Annotated[int, BeforeValidator(_integer(1, 64 * 1024 * 1024))] = Field(
        default=1_048_576, validation_alias="WEBHOOK_MAX_BODY_BYTES"
    )
    timestamp_tolerance_s: Annotated[int, BeforeValidator(_integer(1, 86_400))] = Field(
        default=300, validation_alias="WEBHOOK_TIMESTAMP_TOLERANCE_S"
    )
    trusted_proxies: Annotated[tuple[Network, ...], BeforeValidator(_networks)] = Field(
        default=(), validation_alias="TRUSTED_PROXIES"
    )
    # The ingress's bounds (docs/ingress.md: what each protects, and why these defaults).
    allow_unsigned: Annotated[bool, BeforeValidator(_flag)] = Field(
        default=False, validation_alias="WEBHOOK_ALLOW_UNSIGNED"
    )
    replay_window_s: Annotated[int, BeforeValidator(_integer(1, 30 * 86_400))] = Field(
        default=86_400, validation_alias="WEBHOOK_REPLAY_WINDOW_S"
    )
    replay_max_ids: Annotated[int, BeforeValidator(_integer(1, 10_000_000))] = Field(
        default=100_000, validation_alias="WEBHOOK_REPLAY_MAX_IDS"
    )
    body_timeout_s: Annotated[float, BeforeValidator(_seconds(300))] = Field(
        default=10.0, validation_alias="WEBHOOK_BODY_TIMEOUT_S"
    )
    header_timeout_s: Annotated[float, BeforeValidator(_seconds(300))] = Field(
        default=10.0, validation_alias="WEBHOOK_HEADER_TIMEOUT_S"
    )
    rate_limit_burst: Annotated[int, BeforeValidator(_integer(0, 1_000_000))] = Field(
        default=60, validation_alias="WEBHOOK_RATE_LIMIT_BURST"
    )
    rate_limit_per_s: Annotated[
        float,
        BeforeValidator(_positive(1_000_000, what="a number (tokens a second)", unit=" a second")),
    ] = Field(default=1.0, validation_alias="WEBHOOK_RATE_LIMIT_PER_S")
    rate_limit_sources: Annotated[int, BeforeValidator(_integer(1, 1_000_000))] = Field(
        default=10_000, validation_alias="WEBHOOK_RATE_LIMIT_SOURCES"
    )
    max_connections: Annotated[int, BeforeValidator(_integer(1, 100_000))] = Field(
        default=256, validation_alias="WEBHOOK_MAX_CONNECTIONS"
    )
    keepalive_timeout_s: Annotated[int, BeforeValidator(_integer(1, 300))] = Field(
        default=5, validation_alias="WEBHOOK_KEEPALIVE_TIMEOUT_S"
    )
    max_header_bytes: Annotated[int, BeforeValidator(_integer(1024, 1_048_576))] = Field(
        default=16_384, validation_alias="WEBHOOK_MAX_HEADER_BYTES"
    )

    @model_validator(mode="after")
    def _need_authentication(self) -> WebhookSettings:
        if self.secret is None and self.signing_token is None:
            raise _problem(
                "required, or GITLAB_WEBHOOK_SIGNING_TOKEN (or both): "
                "the agent refuses to accept unauthenticated webhooks",
                "GITLAB_WEBHOOK_SECRET",
            )
        if self.allow_unsigned and self.secret is None:
            raise _problem(
                "true needs GITLAB_WEBHOOK_SECRET (the token to accept)", "WEBHOOK_ALLOW_UNSIGNED"
            )
        return self

    @property
    def replay_keep_s(self) -> int:
        """How long delivery keys are kept: the window, never under twice the tolerance."""
        # Signed deliveries are refused outside the tolerance anyway; the token path
        # has no timestamp, so the window is all that stops its replays.
        return max(self.replay_window_s, 2 * self.timestamp_tolerance_s)


class LLMSettings(_Section):
    """Which model reviews, and how to reach it."""

    provider: Annotated[
        Literal["offline", "openai", "copilot"],
        BeforeValidator(_choice("offline", "openai", "copilot")),
    ] = Field(default="offline", validation_alias="LLM_PROVIDER")
    base_url: Annotated[str | None, BeforeValidator(_http_url)] = Field(
        default=None, validation_alias="LLM_BASE_URL"
    )
    api_key: Annotated[SecretStr | None, BeforeValidator(_secret)] = Field(
        default=None, validation_alias="LLM_API_KEY"
    )
    model: Text = Field(default="gpt-4o-mini", validation_alias="LLM_MODEL")
    timeout_s: Annotated[float, BeforeValidator(_seconds(3600))] = Field(
        default=120.0, validation_alias="LLM_TIMEOUT_S"
    )
    copilot_cli_path: Annotated[str | None, BeforeValidator(_text)] = Field(
        default=None, validation_alias="COPILOT_CLI_PATH"
    )
    github_token: Annotated[SecretStr | None, BeforeValidator(_secret)] = Field(
        default=None, validation_alias="GITHUB_TOKEN"
    )
    offline_coding_script: Annotated[Path | None, BeforeValidator(_coding_script)] = Field(
        default=None, validation_alias="OFFLINE_LLM_CODING_SCRIPT"
    )

    @model_validator(mode="after")
    def _provider_needs(self) -> LLMSettings:
        if self.provider == "openai" and not self.base_url:
            raise _problem("required when LLM_PROVIDER=openai", "LLM_BASE_URL")
        if self.offline_coding_script is not None and self.provider != "offline":
            raise _problem(
                "is only used when LLM_PROVIDER=offline; unset it", "OFFLINE_LLM_CODING_SCRIPT"
            )
        if self.provider == "copilot":
            if self.copilot_cli_path is not None:
                _check_executable(self.copilot_cli_path)
            if importlib.util.find_spec("copilot") is None:
                raise _problem(
                    "copilot needs the GitHub Copilot SDK: "
                    "pip install 'gitlab-copilot-agent[copilot]'",
                    "LLM_PROVIDER",
                )
        return self


def _check_executable(path: str) -> None:
    candidate = Path(path)
    shown = _shown(path)
    if not candidate.exists():
        raise _problem(f"{shown} does not exist", "COPILOT_CLI_PATH")
    if not candidate.is_file():
        raise _problem(f"{shown} is not a file", "COPILOT_CLI_PATH")
    if not os.access(candidate, os.X_OK):
        raise _problem(f"{shown} is not executable (chmod +x it)", "COPILOT_CLI_PATH")


class ServerSettings(_Section):
    """Where ``serve`` listens."""

    host: Annotated[str, BeforeValidator(_host)] = Field(
        default="127.0.0.1", validation_alias="HOST"
    )
    port: Annotated[int, BeforeValidator(_integer(0, 65535))] = Field(
        default=8080, validation_alias="PORT"
    )
    # /metrics and /healthz: open on PORT by default (probes, scrapes), or behind a
    # bearer token, and/or only on their own port (ingress.operational).
    metrics_token: Annotated[SecretStr | None, BeforeValidator(_bearer_token)] = Field(
        default=None, validation_alias="METRICS_TOKEN"
    )
    metrics_port: Annotated[int | None, BeforeValidator(_integer(1, 65535))] = Field(
        default=None, validation_alias="METRICS_PORT"
    )
    api_docs_enabled: Annotated[bool, BeforeValidator(_flag)] = Field(
        default=False, validation_alias="API_DOCS_ENABLED"
    )

    @model_validator(mode="after")
    def _ports_differ(self) -> ServerSettings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise _problem("must differ from PORT", "METRICS_PORT")
        return self


class LogSettings(_Section):
    """The agent's own operational log (stderr)."""

    format: Annotated[
        Literal["auto", "json", "console"], BeforeValidator(_choice("auto", "json", "console"))
    ] = Field(default="auto", validation_alias="LOG_FORMAT")
    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        BeforeValidator(_choice("debug", "info", "warning", "error")),
    ] = Field(default="info", validation_alias="LOG_LEVEL")


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise _problem(f"must be true or false, got {_shown(text)}")


def _redis_url(value: object) -> str:
    text = _text(value)
    shown = _shown(without_userinfo(text))
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise _problem(f"must start with redis://, rediss:// or unix://, got {shown}")
    if any(c.isspace() for c in text):
        raise _problem(f"must not contain spaces, got {shown}")
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port
    except ValueError:
        raise _problem(f"is not a valid URL, got {shown}") from None
    if scheme != "unix" and not parts.hostname:
        raise _problem(f"has no host name, got {shown}")
    return text


ACCESS_LEVELS: Final = {
    "guest": 10,
    "planner": 15,
    "reporter": 20,
    "developer": 30,
    "maintainer": 40,
    "owner": 50,
}
"""GitLab's access levels by name (the members API reports the number)."""


def _access_level(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    text = _text(value).lower()
    if text == "none":
        return None
    if text in ACCESS_LEVELS:
        return ACCESS_LEVELS[text]
    if text.isdigit() and len(text) <= 3 and int(text) in ACCESS_LEVELS.values():
        return int(text)
    names = ", ".join(f"{name} ({level})" for name, level in ACCESS_LEVELS.items())
    raise _problem(f"must be one of {names} or none, got {_shown(text)}")


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    items = [item.strip() for item in _text(value).split(",") if item.strip()]
    for item in items:
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}", item):
            raise _problem(f"{_shown(item)} is not a GitLab username")
    return tuple(items)


def _project_ids(value: object) -> frozenset[int]:
    if isinstance(value, frozenset):
        return value
    found: set[int] = set()
    for item in (i.strip() for i in _text(value).split(",")):
        if not item:
            continue
        if not item.isdigit() or len(item) > 18 or int(item) < 1:
            raise _problem(f"{_shown(item)} is not a project id (a positive whole number)")
        found.add(int(item))
    return frozenset(found)


def _hosts(value: object) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    items = [item.strip().lower() for item in _text(value).split(",") if item.strip()]
    for item in items:
        if not _HOST.fullmatch(item):
            raise _problem(f"{_shown(item)} is not a host or host:port")
    return tuple(items)


def _command(value: object) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    text = _text(value)
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise _problem(f"cannot be split into arguments ({exc})") from None
    if not argv:
        raise _problem("is set but empty; give it a value or unset it")
    return tuple(argv)


def _paths(value: object) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    text = _text(value)
    if text.lower() == "none":
        return ()
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    for item in items:
        if item.startswith("/") or ".." in item.split("/"):
            raise _problem(f"{_shown(item)} must be a path inside the repository (no / or ..)")
    return items


def _directory(value: object) -> str:
    text = _text(value)
    path = Path(text)
    if not path.is_absolute():
        raise _problem(f"must be an absolute path, got {_shown(text)}")
    if path.exists() and not path.is_dir():
        raise _problem(f"{_shown(text)} is not a directory")
    return text


class RedisSettings(_Section):
    """Where tasks, approvals, locks and results live (``REDIS_URL``; memory when unset)."""

    url: Annotated[str | None, BeforeValidator(_redis_url)] = Field(
        default=None, validation_alias="REDIS_URL"
    )
    timeout_s: Annotated[float, BeforeValidator(_seconds(60))] = Field(
        default=5.0, validation_alias="REDIS_TIMEOUT_S"
    )


class ApprovalSettings(_Section):
    """The approval gate's policy: who may approve a coding task, and for how long."""

    required: Annotated[bool, BeforeValidator(_boolean)] = Field(
        default=True, validation_alias="APPROVAL_REQUIRED"
    )
    exempt_projects: Annotated[frozenset[int], BeforeValidator(_project_ids)] = Field(
        default=frozenset(), validation_alias="APPROVAL_EXEMPT_PROJECTS"
    )
    approvers: Annotated[tuple[str, ...], BeforeValidator(_names)] = Field(
        default=(), validation_alias="APPROVAL_APPROVERS"
    )
    min_access_level: Annotated[int | None, BeforeValidator(_access_level)] = Field(
        default=ACCESS_LEVELS["maintainer"], validation_alias="APPROVAL_MIN_ACCESS_LEVEL"
    )
    allow_self_approval: Annotated[bool, BeforeValidator(_boolean)] = Field(
        default=False, validation_alias="APPROVAL_ALLOW_SELF"
    )
    timeout_s: Annotated[int, BeforeValidator(_integer(1, 7 * 86_400))] = Field(
        default=3600, validation_alias="APPROVAL_TIMEOUT_S"
    )

    @model_validator(mode="after")
    def _someone_can_approve(self) -> ApprovalSettings:
        if self.min_access_level is None and not self.approvers:
            raise _problem(
                "is none and APPROVAL_APPROVERS is not set: nobody could approve a task; "
                "name approvers or a minimum access level",
                "APPROVAL_MIN_ACCESS_LEVEL",
            )
        return self

    def required_for(self, project_id: int) -> bool:
        """Whether a coding task on ``project_id`` waits for an approval (fail-closed default)."""
        return self.required and project_id not in self.exempt_projects


def _executor(value: object) -> str:
    return _choice("local", "kubernetes")(_text(value).lower())


class ExecutorSettings(_Section):
    """How coding tasks run: each in its own process (``local``) or as a Kubernetes Job
    (``kubernetes``, the ``K8S_*`` section), with a deadline."""

    kind: Annotated[Literal["local", "kubernetes"], BeforeValidator(_executor)] = Field(
        default="local", validation_alias="TASK_EXECUTOR"
    )
    timeout_s: Annotated[float, BeforeValidator(_seconds(86_400))] = Field(
        default=1800.0, validation_alias="TASK_TIMEOUT_S"
    )
    work_dir: Annotated[str | None, BeforeValidator(_directory)] = Field(
        default=None, validation_alias="TASK_WORK_DIR"
    )
    max_concurrent: Annotated[int, BeforeValidator(_integer(1, 64))] = Field(
        default=2, validation_alias="TASK_MAX_CONCURRENT"
    )
    keep_work_dirs: Annotated[bool, BeforeValidator(_boolean)] = Field(
        default=False, validation_alias="TASK_KEEP_WORK_DIRS"
    )


class CodingSettings(_Section):
    """What a coding task may change and how it talks to git."""

    max_patch_bytes: Annotated[int, BeforeValidator(_integer(1, 64 * 1024 * 1024))] = Field(
        default=1_048_576, validation_alias="CODING_MAX_PATCH_BYTES"
    )
    protected_paths: Annotated[tuple[str, ...] | None, BeforeValidator(_paths)] = Field(
        default=None, validation_alias="CODING_PROTECTED_PATHS"
    )
    check_command: Annotated[tuple[str, ...] | None, BeforeValidator(_command)] = Field(
        default=None, validation_alias="CODING_CHECK_COMMAND"
    )
    check_timeout_s: Annotated[float, BeforeValidator(_seconds(3600))] = Field(
        default=300.0, validation_alias="CODING_CHECK_TIMEOUT_S"
    )
    git_timeout_s: Annotated[float, BeforeValidator(_seconds(3600))] = Field(
        default=120.0, validation_alias="GIT_TIMEOUT_S"
    )
    git_http_hosts: Annotated[tuple[str, ...], BeforeValidator(_hosts)] = Field(
        default=(), validation_alias="GIT_ALLOWED_HTTP_HOSTS"
    )
    git_author_name: Text = Field(
        default="gitlab-copilot-agent", validation_alias="GIT_AUTHOR_NAME"
    )
    git_author_email: Text = Field(default="agent@localhost", validation_alias="GIT_AUTHOR_EMAIL")


# -- pollers and the Jira project map (issue 13) --------------------------------------


def _project_map(value: object) -> tuple[Any, ...]:
    from gitlab_copilot_agent.jira_map import MapError, parse_project_map

    if isinstance(value, tuple):
        return value
    try:
        return parse_project_map(_text(value))
    except MapError as exc:
        raise _problem(str(exc)) from None


class PollerSettings(_Section):
    """``POLL_*`` and the Jira project map (``JIRA_PROJECT_MAP`` JSON or ``_FILE``); see
    ``jira_map`` for the map's format. Each poller is off unless enabled."""

    jira_enabled: Annotated[bool, BeforeValidator(_boolean)] = Field(
        default=False, validation_alias="POLL_JIRA_ENABLED"
    )
    jira_interval_s: Annotated[float, BeforeValidator(_seconds(86_400))] = Field(
        default=60.0, validation_alias="POLL_JIRA_INTERVAL_S"
    )
    gitlab_enabled: Annotated[bool, BeforeValidator(_boolean)] = Field(
        default=False, validation_alias="POLL_GITLAB_ENABLED"
    )
    gitlab_interval_s: Annotated[float, BeforeValidator(_seconds(86_400))] = Field(
        default=60.0, validation_alias="POLL_GITLAB_INTERVAL_S"
    )
    gitlab_projects: Annotated[frozenset[int], BeforeValidator(_project_ids)] = Field(
        default=frozenset(), validation_alias="POLL_GITLAB_PROJECTS"
    )
    gitlab_lookback_s: Annotated[int, BeforeValidator(_integer(0, 30 * 86_400))] = Field(
        default=3600, validation_alias="POLL_GITLAB_LOOKBACK_S"
    )
    max_backoff_s: Annotated[float, BeforeValidator(_seconds(3600))] = Field(
        default=300.0, validation_alias="POLL_MAX_BACKOFF_S"
    )
    shutdown_grace_s: Annotated[float, BeforeValidator(_seconds(600))] = Field(
        default=10.0, validation_alias="POLL_SHUTDOWN_GRACE_S"
    )
    jira_dedup_ttl_s: Annotated[int, BeforeValidator(_integer(60, 365 * 86_400))] = Field(
        default=30 * 86_400, validation_alias="JIRA_DEDUP_TTL_S"
    )
    jira_map: Annotated[tuple[Any, ...], BeforeValidator(_project_map)] = Field(
        default=(), validation_alias="JIRA_PROJECT_MAP"
    )
    jira_map_file: Annotated[str | None, BeforeValidator(_text)] = Field(
        default=None, validation_alias="JIRA_PROJECT_MAP_FILE"
    )

    @model_validator(mode="before")
    @classmethod
    def _read_map_file(cls, values: Any) -> Any:
        if not isinstance(values, dict) or "JIRA_PROJECT_MAP_FILE" not in values:
            return values
        if "JIRA_PROJECT_MAP" in values:
            raise _problem("set JIRA_PROJECT_MAP or this, not both", "JIRA_PROJECT_MAP_FILE")
        path = _text(values["JIRA_PROJECT_MAP_FILE"])
        try:
            with open(path, "rb") as handle:
                raw = handle.read(65_537)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise _problem(f"cannot be read ({reason})", "JIRA_PROJECT_MAP_FILE") from None
        try:
            parsed = _project_map(raw.decode("utf-8", "replace"))
        except PydanticCustomError as exc:
            raise _problem(str(exc), "JIRA_PROJECT_MAP_FILE") from None
        return {**values, "JIRA_PROJECT_MAP": parsed}

    @model_validator(mode="after")
    def _complete(self) -> PollerSettings:
        if self.jira_enabled and not self.jira_map:
            raise _problem(
                "is true but no JIRA_PROJECT_MAP (or JIRA_PROJECT_MAP_FILE) binds a Jira project",
                "POLL_JIRA_ENABLED",
            )
        if self.gitlab_enabled and not self.gitlab_projects:
            raise _problem("is true but POLL_GITLAB_PROJECTS is empty", "POLL_GITLAB_ENABLED")
        return self


# -- the Kubernetes Job executor (TASK_EXECUTOR=kubernetes) -------------------------------------

_QUANTITY: Final = re.compile(r"\d{1,9}(?:\.\d{1,6})?(?:m|Ki|Mi|Gi|Ti|k|M|G|T)?")
_DNS_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


def _quantity(value: object) -> str:
    text = _text(value)
    if not _QUANTITY.fullmatch(text):
        raise _problem(
            f"must be a Kubernetes quantity such as 500m, 1, 512Mi or 2Gi, got {_shown(text)}"
        )
    return text


def _dns_label(value: object) -> str:
    text = _text(value)
    if not _DNS_LABEL.fullmatch(text):
        raise _problem(f"must be a DNS-1123 label (a-z, 0-9, -; at most 63), got {_shown(text)}")
    return text


def _dns_subdomain(value: object) -> str:
    text = _text(value)
    if not _DNS_SUBDOMAIN.fullmatch(text):
        raise _problem(f"must be a DNS-1123 name (a-z, 0-9, -, .), got {_shown(text)}")
    return text


def _file(value: object) -> str:
    text = _text(value)
    if not Path(text).is_file():
        raise _problem(f"{_shown(text)} is not a readable file")
    return text


class KubernetesSettings(_Section):
    """``K8S_*``: where and how ``TASK_EXECUTOR=kubernetes`` runs each task as a Job.

    The API is reached through ``K8S_KUBECONFIG`` (else ``KUBECONFIG``, else the
    in-cluster service account). The Job's secrets come from the Secret
    ``K8S_SECRET_NAME`` by reference only (``tasks.jobspec``).
    """

    namespace: Annotated[str, BeforeValidator(_dns_label)] = Field(
        default="default", validation_alias="K8S_NAMESPACE"
    )
    image: Text | None = Field(default=None, validation_alias="K8S_IMAGE")
    command: Annotated[tuple[str, ...], BeforeValidator(_command)] = Field(
        default=("gitlab-copilot-agent", "run-task"), validation_alias="K8S_COMMAND"
    )
    secret_name: Annotated[str | None, BeforeValidator(_dns_subdomain)] = Field(
        default=None, validation_alias="K8S_SECRET_NAME"
    )
    service_account: Annotated[str | None, BeforeValidator(_dns_subdomain)] = Field(
        default=None, validation_alias="K8S_SERVICE_ACCOUNT"
    )
    kubeconfig: Annotated[str | None, BeforeValidator(_file)] = Field(
        default=None, validation_alias="K8S_KUBECONFIG"
    )
    cpu_request: Annotated[str, BeforeValidator(_quantity)] = Field(
        default="250m", validation_alias="K8S_CPU_REQUEST"
    )
    cpu_limit: Annotated[str, BeforeValidator(_quantity)] = Field(
        default="1", validation_alias="K8S_CPU_LIMIT"
    )
    memory_request: Annotated[str, BeforeValidator(_quantity)] = Field(
        default="512Mi", validation_alias="K8S_MEMORY_REQUEST"
    )
    memory_limit: Annotated[str, BeforeValidator(_quantity)] = Field(
        default="2Gi", validation_alias="K8S_MEMORY_LIMIT"
    )
    run_as_user: Annotated[int, BeforeValidator(_integer(1, 2_147_483_647))] = Field(
        default=10001, validation_alias="K8S_RUN_AS_USER"
    )
    ttl_after_finished_s: Annotated[int, BeforeValidator(_integer(0, 7 * 86_400))] = Field(
        default=600, validation_alias="K8S_TTL_AFTER_FINISHED_S"
    )
    api_timeout_s: Annotated[float, BeforeValidator(_seconds(300))] = Field(
        default=10.0, validation_alias="K8S_API_TIMEOUT_S"
    )
    poll_max_s: Annotated[float, BeforeValidator(_seconds(60))] = Field(
        default=5.0, validation_alias="K8S_POLL_MAX_S"
    )


def _check_kubernetes(settings: Settings, env: Mapping[str, str]) -> None:
    """``TASK_EXECUTOR=kubernetes`` needs what a Job cannot do without (every problem at once)."""
    if settings.executor.kind != "kubernetes":
        return
    k8s = settings.kubernetes
    problems: dict[str, str] = {}
    if importlib.util.find_spec("kubernetes") is None:
        problems["TASK_EXECUTOR"] = (
            "kubernetes needs the official client: pip install 'gitlab-copilot-agent[kubernetes]'"
        )
    if k8s.secret_name is None:
        why = (
            "required with TASK_EXECUTOR=kubernetes: the Secret the Job's tokens come from "
            "(a Job spec never holds a secret value)"
        )
        problems["K8S_SECRET_NAME"] = why
    if settings.redis.url is None:
        problems["REDIS_URL"] = (
            "required with TASK_EXECUTOR=kubernetes: the Job's pod reports its result and asks "
            "for the push approval through Redis"
        )
    if k8s.image is None:
        problems["K8S_IMAGE"] = (
            "required with TASK_EXECUTOR=kubernetes: the agent's image the Job runs"
        )
    kubeconfig = k8s.kubeconfig or env.get("KUBECONFIG")
    if kubeconfig is None and not env.get("KUBERNETES_SERVICE_HOST"):
        problems["K8S_KUBECONFIG"] = (
            "required with TASK_EXECUTOR=kubernetes outside a cluster (no KUBECONFIG, no "
            "in-cluster service account): the kubeconfig file to use"
        )
    elif "TASK_EXECUTOR" not in problems:
        problem = _kubeconfig_problem(kubeconfig)
        if problem is not None:
            problems["KUBECONFIG" if kubeconfig and not k8s.kubeconfig else "K8S_KUBECONFIG"] = (
                problem
            )
    if problems:
        raise SettingsError(problems)


def _kubeconfig_problem(path: str | None) -> str | None:
    """Why the client's own loader cannot use the kubeconfig at ``path`` (or, with None, the
    in-cluster service account), or None."""
    from kubernetes import client, config

    try:
        if path is None:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=client.Configuration()
            )
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, client_configuration=client.Configuration(), persist_config=False
            )
    except Exception as exc:  # noqa: BLE001 - any loader failure is the operator's to fix
        where = "the in-cluster service account" if path is None else _shown(path)
        why = _shown(f"{type(exc).__name__}: {exc}")
        return f"{where} is not a usable Kubernetes configuration ({why})"
    return None


def pod_redis_settings(environ: Mapping[str, str] | None = None) -> RedisSettings:
    """``REDIS_URL`` as a Job's pod reads it (``run-task`` with ``COPILOT_TASK_CHANNEL=redis``).

    Raises:
        SettingsError: naming ``REDIS_URL`` (unset or invalid).
    """
    env = os.environ if environ is None else environ
    redis = _load(env, ("redis",))["redis"]
    assert isinstance(redis, RedisSettings)
    if redis.url is None:
        raise SettingsError({"REDIS_URL": "required in a Job's pod (its channel to the agent)"})
    return redis


_SECTIONS: Final[dict[str, type[BaseModel]]] = {
    "gitlab": GitLabSettings,
    "webhook": WebhookSettings,
    "llm": LLMSettings,
    "server": ServerSettings,
    "logs": LogSettings,
    "redis": RedisSettings,
    "approval": ApprovalSettings,
    "executor": ExecutorSettings,
    "coding": CodingSettings,
    "jira": JiraSettings,
    "poll": PollerSettings,
    "kubernetes": KubernetesSettings,
}
_TASK_SECTIONS: Final = ("gitlab", "llm", "logs", "coding")


def _load(env: Mapping[str, str], names: tuple[str, ...]) -> dict[str, BaseModel]:
    """Validate the sections ``names`` from ``env``; every problem of every section at once."""
    problems: dict[str, str] = {}
    sections: dict[str, BaseModel] = {}
    for name in names:
        model = _SECTIONS[name]
        # Only this section's variables: nothing else of the environment is carried.
        variables = [str(f.validation_alias) for f in model.model_fields.values()]
        values = {variable: env[variable] for variable in variables if variable in env}
        try:
            sections[name] = model.model_validate(values)
        except ValidationError as exc:
            for variable, text in _describe(model, exc):
                problems.setdefault(variable, text)
    if problems:
        raise SettingsError(problems)
    return sections


class Settings(BaseModel):
    """Everything the agent needs besides ``AUDIT_LOG_*``, one section per part.

    Build it with ``Settings.from_env()``.
    """

    model_config = ConfigDict(frozen=True)

    gitlab: GitLabSettings
    webhook: WebhookSettings
    llm: LLMSettings
    server: ServerSettings = ServerSettings()
    logs: LogSettings = LogSettings()
    redis: RedisSettings = RedisSettings()
    approval: ApprovalSettings = ApprovalSettings()
    executor: ExecutorSettings = ExecutorSettings()
    coding: CodingSettings = CodingSettings()
    jira: JiraSettings = JiraSettings()
    poll: PollerSettings = PollerSettings()

    kubernetes: KubernetesSettings = KubernetesSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every section from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: naming each invalid variable (all of them, in one line).
        """
        env = os.environ if environ is None else environ
        settings = cls.model_validate(_load(env, tuple(_SECTIONS)))
        if settings.poll.jira_enabled and settings.jira.url is None:
            raise SettingsError({"POLL_JIRA_ENABLED": "is true but JIRA_URL is not set"})
        for binding in settings.poll.jira_map if settings.poll.jira_enabled else ():
            if settings.approval.required_for(binding.gitlab_project_id) and not binding.approvers:
                source = "JIRA_PROJECT_MAP_FILE" if "JIRA_PROJECT_MAP_FILE" in env else ""
                problem = (
                    f"{binding.jira_project}.approvers: empty, but GitLab project "
                    f"{binding.gitlab_project_id} requires approval (APPROVAL_REQUIRED, "
                    "APPROVAL_EXEMPT_PROJECTS): nobody could approve its tasks"
                )
                raise SettingsError({source or "JIRA_PROJECT_MAP": problem})

        _check_kubernetes(settings, env)
        return settings

    def summary(self) -> str:
        """What the settings resolve to, for ``check-config``; secrets only as "set (N chars)"."""
        gitlab, webhook, llm = self.gitlab, self.webhook, self.llm
        proxies = ", ".join(str(n) for n in webhook.trusted_proxies) or "none"
        lines = [
            "gitlab:",
            f"  url:          {without_userinfo(gitlab.url)}",
            f"  token:        {_set(gitlab.token)}",
            f"  calls:        timeout {gitlab.timeout_s:g} s, {gitlab.max_retries} retries",
            "webhook:",
            f"  secret:       {_set(webhook.secret)} (X-Gitlab-Token)",
            f"  signing:      {_set(webhook.signing_token)} (Standard Webhooks HMAC)",
            f"  limits:       body {webhook.max_body_bytes} bytes, "
            f"timestamps within {webhook.timestamp_tolerance_s} s",
            f"  proxies:      {proxies}",
            f"  unsigned:     {_unsigned(webhook)}",
            f"  replays:      keys kept {webhook.replay_keep_s} s, "
            f"at most {webhook.replay_max_ids} keys",
            f"  rate limit:   {_rate_limit(webhook)}",
            f"  deadlines:    body {webhook.body_timeout_s:g} s, headers "
            f"{webhook.header_timeout_s:g} s, keep-alive {webhook.keepalive_timeout_s} s",
            f"  connections:  at most {webhook.max_connections}, "
            f"headers at most {webhook.max_header_bytes} bytes",
            "llm:",
            f"  provider:     {llm.provider}, model {llm.model}, timeout {llm.timeout_s:g} s",
        ]
        if llm.base_url is not None:
            lines.append(f"  base url:     {without_userinfo(llm.base_url)}")
        if llm.provider == "offline":
            script = llm.offline_coding_script
            answers = f"scripted by {script}" if script is not None else "default diffs"
            lines.append(f"  coding:       {answers}")
        if llm.provider != "offline":
            lines.append(f"  api key:      {_set(llm.api_key)}")
        if llm.provider == "copilot":
            lines.append(f"  copilot cli:  {llm.copilot_cli_path or 'the SDK bundled CLI'}")
            lines.append(f"  github token: {_set(llm.github_token)}")
        server = self.server
        approval, executor, coding = self.approval, self.executor, self.coding
        who = [f"@{name}" for name in approval.approvers]
        if approval.min_access_level is not None:
            who.append(f"members with access level >= {approval.min_access_level}")
        exempt = ", ".join(str(p) for p in sorted(approval.exempt_projects)) or "none"
        redis = without_userinfo(self.redis.url) if self.redis.url else "not set (memory)"
        protected = (
            ", ".join(coding.protected_paths) if coding.protected_paths is not None else "default"
        )
        check = shlex.join(coding.check_command) if coding.check_command else "none"
        lines += [
            f"server:         {server.host}:{server.port}",
            f"  metrics:      /metrics and /healthz on "
            f"{server.metrics_port if server.metrics_port is not None else 'PORT'}, "
            f"token {_set(server.metrics_token)}",
            f"  api docs:     {'on' if server.api_docs_enabled else 'off'}",
            f"logs:           {self.logs.format}, level {self.logs.level} (stderr)",
            f"state store:    {redis}",
            "approval:",
            f"  required:     {'yes' if approval.required else 'NO'}, except projects {exempt}",
            f"  approvers:    {' or '.join(who)}; self-approval "
            f"{'allowed' if approval.allow_self_approval else 'refused'}",
            f"  expires:      after {approval.timeout_s} s",
            f"tasks:          {executor.kind} executor, timeout {executor.timeout_s:g} s, "
            f"at most {executor.max_concurrent} at once",
            f"  patches:      at most {coding.max_patch_bytes} bytes; protected {protected}",
            f"  check:        {check}",
        ]
        lines.append(_jira_summary(self.jira))
        lines.append(_poll_summary(self.poll))

        if executor.kind == "kubernetes":
            k8s = self.kubernetes
            lines.append(
                f"  kubernetes:   namespace {k8s.namespace}, image {k8s.image}, secrets from "
                f"Secret {k8s.secret_name}, {k8s.kubeconfig or 'KUBECONFIG or in-cluster'}"
            )
        return "\n".join(lines)

    def secrets(self) -> list[str]:
        """Every configured secret, in each form text may show it, for the redactor."""
        values = [
            self.gitlab.token,
            self.webhook.secret,
            self.webhook.signing_token,
            self.llm.api_key,
            self.llm.github_token,
            self.server.metrics_token,
        ]
        raw = [v.get_secret_value() for v in values if v is not None]
        if self.webhook.signing_token is not None:
            raw.append(self.webhook.signing_token.get_secret_value().removeprefix("whsec_"))
        raw += userinfo_secrets(self.gitlab.url) + userinfo_secrets(self.llm.base_url)
        raw += userinfo_secrets(self.redis.url)
        raw += self.jira.secrets()
        return sorted({form for value in raw for form in secret_forms(value)})


class TaskSettings(BaseModel):
    """What a task process (``gitlab-copilot-agent run-task``) reads: no webhook secrets.

    The parent passes only these sections' variables (and ``AUDIT_LOG_*``).
    """

    model_config = ConfigDict(frozen=True)

    gitlab: GitLabSettings
    llm: LLMSettings
    logs: LogSettings = LogSettings()
    coding: CodingSettings = CodingSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskSettings:
        """Read and check the task's sections (see ``Settings.from_env``)."""
        env = os.environ if environ is None else environ
        return cls.model_validate(_load(env, _TASK_SECTIONS))

    def secrets(self) -> list[str]:
        """The task's secrets in each form text may show them, for the redactor."""
        values = [self.gitlab.token, self.llm.api_key, self.llm.github_token]
        raw = [v.get_secret_value() for v in values if v is not None]
        raw += userinfo_secrets(self.gitlab.url) + userinfo_secrets(self.llm.base_url)
        return sorted({form for value in raw for form in secret_forms(value)})


def task_variables() -> tuple[str, ...]:
    """The variables a task process reads (the parent passes these, and nothing else of its own)."""
    return tuple(
        str(f.validation_alias)
        for name in _TASK_SECTIONS
        for f in _SECTIONS[name].model_fields.values()
    )


def _jira_summary(jira: JiraSettings) -> str:
    if jira.url is None:
        return "jira:           off (JIRA_URL unset)"
    auth = (
        f"PAT {_set(jira.pat)} (Data Center, REST v2)"
        if jira.pat is not None
        else f"{jira.email}, token {_set(jira.api_token)} (Cloud, REST v3)"
    )
    return (
        f"jira:           {without_userinfo(jira.url)}, {auth}\n"
        f"  calls:        timeout {jira.timeout_s:g} s, {jira.max_retries} retries"
    )


def _poll_summary(poll: PollerSettings) -> str:
    jira = f"every {poll.jira_interval_s:g} s" if poll.jira_enabled else "off"
    gitlab = (
        f"every {poll.gitlab_interval_s:g} s, projects "
        + ", ".join(str(p) for p in sorted(poll.gitlab_projects))
        if poll.gitlab_enabled
        else "off"
    )
    bound = "; ".join(
        f"{b.jira_project} -> {b.gitlab_project_id} ({b.trigger_status} -> "
        f"{b.in_progress_status} -> {b.in_review_status}, {len(b.approvers)} approver(s))"
        for b in poll.jira_map
    )
    return (
        f"pollers:        jira {jira}; gitlab {gitlab}; backoff up to {poll.max_backoff_s:g} s\n"
        f"  jira map:     {bound or 'none'}"
    )


def _set(secret: SecretStr | None) -> str:
    return "not set" if secret is None else f"set ({len(secret.get_secret_value())} chars)"


def _unsigned(webhook: WebhookSettings) -> str:
    if webhook.signing_token is None:
        return "token only (no signing token)"
    if webhook.allow_unsigned:
        return "accepted with the token (WEBHOOK_ALLOW_UNSIGNED=true)"
    return "refused (missing_signature)"


def _rate_limit(webhook: WebhookSettings) -> str:
    if webhook.rate_limit_burst == 0:
        return "off (WEBHOOK_RATE_LIMIT_BURST=0)"
    return (
        f"{webhook.rate_limit_burst} refusals a source, refilled {webhook.rate_limit_per_s:g}/s, "
        f"{webhook.rate_limit_sources} sources tracked"
    )


def _describe(model: type[BaseModel], exc: ValidationError) -> list[tuple[str, str]]:
    """Each error of a section as (variable, message in the agent's words)."""
    found: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        context = error.get("ctx") or {}
        variable = context.get("variable") or (str(error["loc"][0]) if error["loc"] else "")
        if error["type"] == "missing":
            field = next(
                (f for f in model.model_fields.values() if f.validation_alias == variable), None
            )
            what = f" to {field.description}" if field is not None and field.description else ""
            found.append((variable, f"required; set it{what}"))
        elif error["type"] == "setting":
            found.append((variable or "settings", str(context["message"])))
        else:  # a type the validators above do not produce; still no pydantic wording
            found.append((variable or "settings", "has an invalid value"))
    return found


def task_environment(settings: Settings | TaskSettings) -> dict[str, str]:
    """The task sections of ``settings`` as the variables a task process reads back.

    The agent's settings may come from a mapping (tests, the demo), not from
    its own environment, so the task process gets them re-encoded from the
    validated values, secrets included; ``TaskSettings.from_env`` checks them
    again there. Unset optional values are left out.
    """
    env: dict[str, str] = {}
    for name in _TASK_SECTIONS:
        section = getattr(settings, name)
        for field_name, info in type(section).model_fields.items():
            value = getattr(section, field_name)
            variable = str(info.validation_alias)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                env[variable] = value.get_secret_value()
            elif isinstance(value, bool):
                env[variable] = "true" if value else "false"
            elif variable == "CODING_CHECK_COMMAND":
                env[variable] = shlex.join(value)
            elif variable == "CODING_PROTECTED_PATHS":
                env[variable] = ",".join(value) if value else "none"
            elif isinstance(value, tuple):
                if value:
                    env[variable] = ",".join(value)
            else:
                env[variable] = str(value)
    return env
