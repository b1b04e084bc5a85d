"""Service settings: read once from the environment, in sections, validated at start.

``Settings.from_env()`` reads the variables below (upper-case names only) and
raises ``SettingsError`` listing every problem in one line, each naming its
variable in plain words. A secret's value is never repeated in a message.
``AUDIT_LOG_*`` belong to the audit library (``auditrail.config``).

Sections, one model each: ``gitlab`` (``GITLAB_URL``, ``GITLAB_TOKEN``, …),
``webhook`` (``GITLAB_WEBHOOK_*``, ``WEBHOOK_*``, ``TRUSTED_PROXIES``), ``llm``
(``LLM_*``, ``COPILOT_CLI_PATH``, ``GITHUB_TOKEN``), ``server`` (``HOST``,
``PORT``), ``logs`` (``LOG_FORMAT``, ``LOG_LEVEL``). The parts still to come
(executor, Redis, approval, Jira) each add a section model here and a field
on ``Settings``; the loader and the error wording need no change.

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

from auditrail.redact import MIN_SECRET_CHARS, default_redactor
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
    def parse(value: object) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            text = _text(value)
            if not _DECIMAL.fullmatch(text):
                raise _problem(f"must be a number of seconds, got {_shown(text)}")
            number = float(text)
        if not 0 < number <= maximum:
            raise _problem(f"must be more than 0 and at most {maximum:g} seconds, got {number:g}")
        return number

    return parse


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

    @model_validator(mode="after")
    def _need_authentication(self) -> WebhookSettings:
        if self.secret is None and self.signing_token is None:
            raise _problem(
                "required, or GITLAB_WEBHOOK_SIGNING_TOKEN (or both): "
                "the agent refuses to accept unauthenticated webhooks",
                "GITLAB_WEBHOOK_SECRET",
            )
        return self


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

    @model_validator(mode="after")
    def _provider_needs(self) -> LLMSettings:
        if self.provider == "openai" and not self.base_url:
            raise _problem("required when LLM_PROVIDER=openai", "LLM_BASE_URL")
        if self.provider == "copilot":
            if self.copilot_cli_path is not None:
                _check_executable(self.copilot_cli_path)
            if importlib.util.find_spec("copilot") is None:
                raise _problem(
                    "copilot needs the GitHub Copilot SDK: pip install 'auditrail[copilot]'",
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


class LogSettings(_Section):
    """The agent's own operational log (stderr)."""

    format: Annotated[
        Literal["auto", "json", "console"], BeforeValidator(_choice("auto", "json", "console"))
    ] = Field(default="auto", validation_alias="LOG_FORMAT")
    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        BeforeValidator(_choice("debug", "info", "warning", "error")),
    ] = Field(default="info", validation_alias="LOG_LEVEL")


_SECTIONS: Final[dict[str, type[BaseModel]]] = {
    "gitlab": GitLabSettings,
    "webhook": WebhookSettings,
    "llm": LLMSettings,
    "server": ServerSettings,
    "logs": LogSettings,
}


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every section from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: naming each invalid variable (all of them, in one line).
        """
        env = os.environ if environ is None else environ
        problems: dict[str, str] = {}
        sections: dict[str, BaseModel] = {}
        for name, model in _SECTIONS.items():
            # Only this section's variables: nothing else of the environment is carried.
            names = [str(f.validation_alias) for f in model.model_fields.values()]
            values = {variable: env[variable] for variable in names if variable in env}
            try:
                sections[name] = model.model_validate(values)
            except ValidationError as exc:
                for variable, text in _describe(model, exc):
                    problems.setdefault(variable, text)
        if problems:
            raise SettingsError(problems)
        return cls.model_validate(sections)

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
            "llm:",
            f"  provider:     {llm.provider}, model {llm.model}, timeout {llm.timeout_s:g} s",
        ]
        if llm.base_url is not None:
            lines.append(f"  base url:     {without_userinfo(llm.base_url)}")
        if llm.provider != "offline":
            lines.append(f"  api key:      {_set(llm.api_key)}")
        if llm.provider == "copilot":
            lines.append(f"  copilot cli:  {llm.copilot_cli_path or 'the SDK bundled CLI'}")
            lines.append(f"  github token: {_set(llm.github_token)}")
        lines += [
            f"server:         {self.server.host}:{self.server.port}",
            f"logs:           {self.logs.format}, level {self.logs.level} (stderr)",
        ]
        return "\n".join(lines)

    def secrets(self) -> list[str]:
        """Every configured secret, in each form text may show it, for the redactor."""
        values = [
            self.gitlab.token,
            self.webhook.secret,
            self.webhook.signing_token,
            self.llm.api_key,
            self.llm.github_token,
        ]
        raw = [v.get_secret_value() for v in values if v is not None]
        if self.webhook.signing_token is not None:
            raw.append(self.webhook.signing_token.get_secret_value().removeprefix("whsec_"))
        raw += userinfo_secrets(self.gitlab.url) + userinfo_secrets(self.llm.base_url)
        return sorted({form for value in raw for form in secret_forms(value)})


def _set(secret: SecretStr | None) -> str:
    return "not set" if secret is None else f"set ({len(secret.get_secret_value())} chars)"


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
