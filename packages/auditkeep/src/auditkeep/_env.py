"""Typed reads of environment variables, failing with a ``ConfigError`` that names the variable.

Numbers are bounded twice: the raw text before conversion (``MAX_NUMBER_CHARS``,
so a megabyte of digits is never parsed) and the value after it (finite, within
the range the caller gives), so nothing like ``inf`` or ``1e300`` can reach a
timer or a buffer and fail later, on a worker thread, where nobody sees it.

``KNOWN_VARIABLES`` is the one list of every ``AUDIT_LOG_*`` name the library
reads; ``check_unknown_variables`` turns any other ``AUDIT_LOG_*`` name (a typo,
a setting from another version) into an error naming the closest known one.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Final

from auditkeep.exceptions import ConfigError
from auditkeep.redact import scrub_then_cut

PREFIX: Final = "AUDIT_LOG_"

KNOWN_VARIABLES: Final = frozenset(
    {
        "AUDIT_LOG_ENABLED",
        "AUDIT_LOG_SERVICE_NAME",
        "AUDIT_LOG_DESTINATION",
        "AUDIT_LOG_DURABILITY",
        "AUDIT_LOG_SPOOL_DIR",
        "AUDIT_LOG_BUFFER_SIZE",
        "AUDIT_LOG_BATCH_SIZE",
        "AUDIT_LOG_FLUSH_INTERVAL_S",
        "AUDIT_LOG_SHUTDOWN_TIMEOUT_S",
        "AUDIT_LOG_MAX_ENTRY_BYTES",
        "AUDIT_LOG_MAX_FIELD_CHARS",
        "AUDIT_LOG_DISK_WARN_FREE",
        # tamper evidence (auditkeep.integrity.options)
        "AUDIT_LOG_INTEGRITY",
        "AUDIT_LOG_SIGNING_KEY_FILE",
        "AUDIT_LOG_SIGNER_SOCKET",
        "AUDIT_LOG_CHECKPOINT_EVERY",
        "AUDIT_LOG_CHECKPOINT_INTERVAL_S",
        "AUDIT_LOG_SEAL",
        "AUDIT_LOG_SEAL_KEY_FILE",
        "AUDIT_LOG_FILE_PATH",
        "AUDIT_LOG_FILE_MAX_BYTES",
        "AUDIT_LOG_FILE_BACKUPS",
        "AUDIT_LOG_FILE_COMPRESS",
        "AUDIT_LOG_FILE_RETENTION",
        "AUDIT_LOG_SYSLOG_ADDRESS",
        "AUDIT_LOG_SYSLOG_FACILITY",
        "AUDIT_LOG_SYSLOG_APP_NAME",
        "AUDIT_LOG_SYSLOG_TIMEOUT_S",
        "AUDIT_LOG_SYSLOG_TLS_CA_FILE",
        "AUDIT_LOG_HTTP_ENDPOINT",
        "AUDIT_LOG_HTTP_FORMAT",
        "AUDIT_LOG_HTTP_COMPRESS",
        "AUDIT_LOG_HTTP_HEADERS",
        "AUDIT_LOG_HTTP_AUTHORIZATION",
        "AUDIT_LOG_HTTP_AUTHORIZATION_FILE",
        "AUDIT_LOG_HTTP_VERIFY_TLS",
        "AUDIT_LOG_HTTP_CA_BUNDLE",
        "AUDIT_LOG_HTTP_CONNECT_TIMEOUT_S",
        "AUDIT_LOG_HTTP_READ_TIMEOUT_S",
        "AUDIT_LOG_HTTP_MAX_BODY_BYTES",
        "AUDIT_LOG_HTTP_INDEX",
    }
)
"""Every ``AUDIT_LOG_*`` variable read anywhere in ``auditkeep`` (a test greps the sources)."""

MAX_NUMBER_CHARS: Final = 32
"""Longer numeric values are refused before conversion (no real setting needs more)."""

_SHOWN_CHARS: Final = 40
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,100}")


def shown(raw: str) -> str:
    """A value as error messages quote it: scrubbed, then cut to a readable length, ``repr``.

    A value given to the wrong variable may be a credential (a token pasted
    into AUDIT_LOG_HTTP_ENDPOINT): scrubbed before the cut, so no prefix of it shows.
    """
    text = scrub_then_cut(raw, _SHOWN_CHARS + 3, mark="...")
    if len(raw) > _SHOWN_CHARS:
        return f"{text!r} ({len(raw)} characters)"
    return repr(text)


def _shown_name(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else shown(name)


def check_unknown_variables(env: Mapping[str, str]) -> None:
    """Refuse any ``AUDIT_LOG_*`` name (in any letter case) that auditkeep does not read.

    A misspelt name would otherwise be ignored and its default used in silence,
    e.g. ``AUDIT_LOG_DESTINATON=file`` sending the trail to stdout.

    Raises:
        ConfigError: naming the first unknown variable (in sorted order) and the
            closest known one.
    """
    unknown = sorted(
        name for name in env if name.upper().startswith(PREFIX) and name not in KNOWN_VARIABLES
    )
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name.upper(), sorted(KNOWN_VARIABLES), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(
        _shown_name(name),
        f"not an auditkeep setting; {hint}"
        "remove or rename it (every AUDIT_LOG_* variable must be one auditkeep reads)",
    )


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
    raise ConfigError(name, f"expected true or false, got {shown(raw)}")


def _number_text(env: Mapping[str, str], name: str, allowed: str) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if len(text) > MAX_NUMBER_CHARS:
        raise ConfigError(name, f"value too long ({len(text)} characters); allowed: {allowed}")
    return text


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer from ``minimum`` to ``maximum``; unset or empty gives ``default``."""
    allowed = f"{minimum} to {maximum}"
    text = _number_text(env, name, allowed)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(
            name, f"expected an integer, got {shown(text)} (allowed: {allowed})"
        ) from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value} (allowed: {allowed})")
    if value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value} (allowed: {allowed})")
    return value


def env_seconds(env: Mapping[str, str], name: str, default: float, *, maximum: float) -> float:
    """Finite seconds above 0, at most ``maximum``; unset or empty gives ``default``."""
    allowed = f"more than 0 and at most {maximum:g} seconds"
    text = _number_text(env, name, allowed)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            name, f"expected a positive number of seconds, got {shown(text)} (allowed: {allowed})"
        ) from None
    if not math.isfinite(value) or not 0 < value <= maximum:
        raise ConfigError(
            name, f"must be a positive number of seconds, got {shown(text)} (allowed: {allowed})"
        )
    return value
