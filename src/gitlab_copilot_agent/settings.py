"""Service settings: read once from the environment, validated at start."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAME = "gitlab-copilot-agent"


class Settings(BaseSettings):
    """Everything the agent needs besides ``AUDIT_LOG_*`` (read by ``auditrail.config``)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    gitlab_url: str = Field(description="Base URL of the GitLab instance, e.g. https://gitlab.com")
    gitlab_token: SecretStr = Field(description="Token with the api scope")
    gitlab_webhook_secret: SecretStr | None = Field(
        default=None, description="The webhook's secret token (X-Gitlab-Token)"
    )
    gitlab_webhook_signing_token: SecretStr | None = Field(
        default=None, description="The webhook's signing token (whsec_...)"
    )
    webhook_max_body_bytes: int = Field(default=1_048_576, gt=0)
    webhook_timestamp_tolerance_s: int = Field(default=300, gt=0)
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated proxy addresses/networks whose X-Forwarded-For is believed",
    )
    gitlab_timeout_s: float = Field(default=30.0, gt=0)
    gitlab_max_retries: int = Field(default=3, ge=0)

    llm_provider: Literal["offline", "openai", "copilot"] = "offline"
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = Field(default=120.0, gt=0)
    copilot_cli_path: str | None = None
    github_token: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    # -- ingress (docs/ingress.md: what each bound protects, and why these defaults) --
    webhook_allow_unsigned: bool = Field(
        default=False,
        description="With a signing token set, still accept token-only (unsigned) deliveries",
    )
    webhook_replay_window_s: int = Field(default=86_400, gt=0, le=30 * 86_400)
    webhook_replay_max_ids: int = Field(default=100_000, gt=0, le=10_000_000)
    webhook_body_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_rate_limit_burst: int = Field(default=60, ge=0, le=1_000_000)
    webhook_rate_limit_per_s: float = Field(default=1.0, gt=0, le=1_000_000)
    webhook_rate_limit_sources: int = Field(default=10_000, gt=0, le=1_000_000)
    webhook_max_connections: int = Field(default=256, gt=0, le=100_000)
    webhook_keepalive_timeout_s: int = Field(default=5, gt=0, le=300)
    webhook_max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    api_docs_enabled: bool = Field(default=False, description="Serve /docs, /redoc, /openapi.json")
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token required on /metrics and /healthz"
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve /metrics and /healthz only on this port"
    )

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[\x21-\x7e]{16,256}", value.get_secret_value()):
            raise ValueError("must be 16 to 256 visible ASCII characters (no spaces or newlines)")
        return value

    @model_validator(mode="after")
    def _ingress_consistent(self) -> Settings:
        if self.webhook_allow_unsigned and self.gitlab_webhook_secret is None:
            raise ValueError(
                "WEBHOOK_ALLOW_UNSIGNED=true needs GITLAB_WEBHOOK_SECRET (the token to accept)"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("METRICS_PORT must differ from PORT")
        return self

    # -- end ingress --

    @field_validator("gitlab_url", "llm_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("gitlab_webhook_signing_token")
    @classmethod
    def _signing_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must start with whsec_ (GitLab's signing token format)")
        try:
            key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the part after whsec_ is not valid base64") from None
        if len(key) < 16:
            raise ValueError("the key is too short (GitLab issues 32-byte keys)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for item in filter(None, (p.strip() for p in value.split(","))):
            ipaddress.ip_network(item, strict=False)
        return value

    @model_validator(mode="after")
    def _need_webhook_auth(self) -> Settings:
        if self.gitlab_webhook_secret is None and self.gitlab_webhook_signing_token is None:
            raise ValueError(
                "set GITLAB_WEBHOOK_SECRET and/or GITLAB_WEBHOOK_SIGNING_TOKEN: "
                "the agent refuses to accept unauthenticated webhooks"
            )
        if self.llm_provider == "openai" and not self.llm_base_url:
            raise ValueError("LLM_PROVIDER=openai needs LLM_BASE_URL")
        return self

    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(p.strip(), strict=False)
            for p in self.trusted_proxies.split(",")
            if p.strip()
        ]

    def secrets(self) -> list[str]:
        """Every configured secret value, for the audit redactor."""
        values = [
            self.gitlab_token,
            self.gitlab_webhook_secret,
            self.gitlab_webhook_signing_token,
            self.llm_api_key,
            self.github_token,
            self.metrics_token,
        ]
        found = [v.get_secret_value() for v in values if v is not None]
        signing = self.gitlab_webhook_signing_token
        if signing is not None:
            found.append(signing.get_secret_value().removeprefix("whsec_"))
        return [s for s in found if len(s) >= 6]
