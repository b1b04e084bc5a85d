"""Typed reads of environment variables, failing with a ``ConfigError`` that names the variable."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from auditrail.exceptions import ConfigError

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off); unset or empty gives ``default``."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """An integer of at least ``minimum``; unset or empty gives ``default``."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds; unset or empty gives ``default``."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(name, f"must be a positive number of seconds, got {raw!r}")
    return value
