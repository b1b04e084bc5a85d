"""Secret scrubbing and log-injection neutralisation for every string in an entry.

``SecretRedactor.clean`` is applied by the logger to each string value before
the entry is encoded, so secrets never reach the buffer, the spool or a sink.
Order matters: redact first (a secret cut in half by truncation would no longer
match), then neutralise control characters, then cut to the length limit (so
escaping cannot grow a field past it).

Registered secrets and each credential shape are matched separately on the
same text and the union of what they cover is replaced. One combined
alternation would let one match hide an overlapping one: ``password=`` (whose
value stops at ``,``) could consume the start of a registered secret and leave
its tail in clear, and ``Proxy-Authorization: Basic x`` would keep ``x``.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from typing import Final

REDACTED: Final = "[REDACTED]"
DEFAULT_MAX_FIELD_CHARS: Final = 4096
_CACHEABLE_CHARS: Final = 256
_CACHE_ENTRIES: Final = 8192
MIN_SECRET_CHARS: Final = 6
"""Registered secrets shorter than this are refused: they would redact ordinary words."""

# Each pattern has exactly one capturing group: a harmless prefix kept so the entry still says
# what kind of credential was there.
_PATTERNS: Final[tuple[str, ...]] = (
    # GitLab tokens: personal/project/group (glpat), deploy (gldt), runner (glrt,
    # GR1348941), trigger (glptt), feed (glft), incoming mail (glimt), agent
    # (glagent), OAuth app secret (gloas), SCIM (glsoat), CI job (glcbt),
    # feature flags (glffct), workspaces (glwt), and the newer routable forms.
    # These vendor prefixes are distinctive, so they are matched even when glued to
    # a word character (ANSI colour codes such as "\x1b[31m" end in a letter).
    r"((?:glpat|gldt|glrt|glptt|glft|glimt|glagent|gloas|glsoat|glcbt|glffct|glwt"
    r"|glrtr|gltst|glsa)-)[0-9A-Za-z_.\-]{8,}",
    r"(GR1348941)[0-9A-Za-z_\-]{8,}",
    # GitHub tokens.
    r"((?:ghp|gho|ghu|ghs|ghr)_)[A-Za-z0-9]{16,}",
    r"(github_pat_)[A-Za-z0-9_]{16,}",
    # Standard Webhooks signing keys.
    r"(whsec_)[A-Za-z0-9+/=_\-]{8,}",
    # Slack/OpenAI/Jira-style API keys commonly met by an automation agent.
    r"(\bsk-)[A-Za-z0-9_\-]{16,}",
    r"(\bATATT)[A-Za-z0-9_\-=]{16,}",
    # Authorization schemes (header values, curl command lines, error text).
    # "Token"/"Digest" only capitalised: "invalid token provided" is prose.
    r"(\b(?:[Bb][Ee][Aa][Rr][Ee][Rr]|[Bb][Aa][Ss][Ii][Cc]|Token|Digest)\s+)"
    r"[A-Za-z0-9\-._~+/]+=*",
    # Credential-carrying header lines, e.g. "PRIVATE-TOKEN: x" or "X-Gitlab-Token=x".
    r"(\b(?:private-token|x-gitlab-token|x-api-key|api-key|x-auth-token"
    r"|proxy-authorization)\s*[:=]\s*)[^\s,;]+",
    # A cookie header holds several credentials: redact its whole value.
    r"(\b(?:set-)?cookie\s*[:=]\s*)[^\r\n\"']+",
    # Password/token in URL userinfo: scheme://user:secret@host or scheme://secret@host.
    r"(://)[^/\s@:]*(?::[^/\s@]*)?@",
    # Credentials in query strings and form bodies.
    r"([?&;](?:private_token|access_token|refresh_token|id_token|token|api_key|apikey"
    r"|key|password|passwd|secret|client_secret|signature|sig|code)=)[^&#\s\"']+",
    # key=value / "key": "value" pairs in free text and JSON error bodies.
    r"(\b(?:password|passwd|secret|client_secret|api_key|access_token|private_token)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+",
    # JSON Web Tokens.
    r"()\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
)

# Lower-case literals, one of which each pattern's match must contain. Python's
# ``in`` scans text at memory speed, while the regexes cost ~0.5 us per character
# of text when tried at every position, so a pattern only runs on text that
# holds one of its literals (measured: a 4 KiB error body, 2 ms -> ~20 us).
_TRIGGERS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "glpat-",
        "gldt-",
        "glrt-",
        "glptt-",
        "glft-",
        "glimt-",
        "glagent-",
        "gloas-",
        "glsoat-",
        "glcbt-",
        "glffct-",
        "glwt-",
        "glrtr-",
        "gltst-",
        "glsa-",
    ),
    ("gr1348941",),
    ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ("github_pat_",),
    ("whsec_",),
    ("sk-",),
    ("atatt",),
    ("bearer", "basic", "token", "digest"),
    ("private-token", "x-gitlab-token", "x-api-key", "api-key", "x-auth-token", "proxy-auth"),
    ("cookie",),
    ("://",),
    ("=",),
    ("password", "passwd", "secret", "api_key", "access_token", "private_token"),
    ("eyj",),
)
# Compiled one by one and all applied, so a match of one shape never hides an
# overlapping one ("Proxy-Authorization: Basic <credentials>"). The
# authorization-scheme pattern spells its own case rules.
_CREDENTIALS: Final = tuple(
    (re.compile(p) if "Token|Digest" in p else re.compile(p, re.IGNORECASE), triggers)
    for p, triggers in zip(_PATTERNS, _TRIGGERS, strict=True)
)

# C0 and C1 controls, DEL and the Unicode line/paragraph separators: any of
# these could end a line in some reader (str.splitlines, terminals, syslog).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _credential_span(match: re.Match[str]) -> tuple[int, int]:
    # Each pattern holds one capturing group: the prefix to keep.
    end = match.end()
    if match.group(1) == "://":
        end -= 1  # keep the "@" that ends the userinfo
    return match.end(1), end


def _redact(text: str, secrets: re.Pattern[str] | None, lowered_secrets: frozenset[str]) -> str:
    spans: list[tuple[int, int]] = []
    low = text.lower()
    # Each search resumes inside the previous match, not after it, so matches may
    # overlap: "Bearer Bearer x" must not hide x behind a first match on "Bearer",
    # nor one registered secret hide the tail of another that overlaps it.
    if secrets is not None and any(s in low for s in lowered_secrets):
        pos = 0
        while (m := secrets.search(text, pos)) is not None:
            spans.append(m.span())
            pos = m.start() + 1
    for pattern, triggers in _CREDENTIALS:
        if any(t in low for t in triggers):
            pos = 0
            while (m := pattern.search(text, pos)) is not None:
                spans.append(_credential_span(m))
                pos = max(m.end(1), m.start() + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    pos = 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s <= end:
            end = max(end, e)
            continue
        out += (text[pos:start], REDACTED)
        pos, start, end = end, s, e
    out += (text[pos:start], REDACTED, text[end:])
    return "".join(out)


class SecretRedactor:
    """Scrubs known credential shapes and registered secret values from text.

    Thread-safe: ``register`` swaps in a new compiled pattern atomically.

    .. versionadded:: 0.1.0
    """

    def __init__(self, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> None:
        if max_field_chars < 64:
            raise ValueError("max_field_chars must be at least 64")
        self.max_field_chars = max_field_chars
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._pattern = self._compile(self._secrets)
        self._lowered: frozenset[str] = frozenset()
        # Most strings in a trail repeat (actions, resource types, actor ids,
        # project paths), and the combined pattern costs several microseconds
        # per string, so short strings are memoised. Cleared on ``register``.
        self._cache: dict[str, tuple[str, bool]] = {}
        self.generation = 0
        """Bumped whenever earlier results may no longer hold (callers' caches check it)."""

    @staticmethod
    def _compile(secrets: frozenset[str]) -> re.Pattern[str] | None:
        if not secrets:
            return None
        # Longest first so a secret that contains another is replaced whole.
        literal = [re.escape(s) for s in sorted(secrets, key=len, reverse=True)]
        return re.compile("|".join(literal), re.IGNORECASE)

    def register(self, *secrets: str | None) -> None:
        """Add exact secret values (configured tokens) to redact everywhere.

        Their URL-encoded forms are registered too. Empty values are ignored.

        Raises:
            ValueError: if a secret is shorter than ``MIN_SECRET_CHARS``.
        """
        new: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            if len(secret) < MIN_SECRET_CHARS:
                raise ValueError(
                    f"refusing to register a secret shorter than {MIN_SECRET_CHARS} characters"
                )
            new.add(secret)
            new.add(urllib.parse.quote(secret, safe=""))
            new.add(urllib.parse.quote_plus(secret))
        with self._lock:
            self._secrets = self._secrets | new
            self._pattern = self._compile(self._secrets)
            self._lowered = frozenset(s.lower() for s in self._secrets)
            self._cache = {}
            self.generation += 1

    def set_max_field_chars(self, max_field_chars: int) -> None:
        """Change the per-string limit (clears memoised results)."""
        if max_field_chars < 64:
            raise ValueError("max_field_chars must be at least 64")
        self.max_field_chars = max_field_chars
        self._cache = {}
        self.generation += 1

    def redact(self, text: str) -> str:
        """Return ``text`` with every credential replaced by ``[REDACTED]``."""
        return _redact(text, self._pattern, self._lowered)

    def clean(self, text: str) -> tuple[str, bool]:
        """Redact, truncate and neutralise one untrusted string.

        Returns:
            The safe string and whether it was truncated.
        """
        cache = self._cache
        hit = cache.get(text)
        if hit is not None:
            return hit
        result = self._clean(text)
        if len(text) <= _CACHEABLE_CHARS:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[text] = result
        return result

    def _clean(self, text: str) -> tuple[str, bool]:
        limit = self.max_field_chars
        truncated = False
        if len(text) > 4 * limit:
            # Bound the regex work on huge inputs; the later cut removes any
            # secret split by this one.
            text = text[: 4 * limit]
            truncated = True
        text = _redact(text, self._pattern, self._lowered)
        if _CONTROL.search(text) is not None:
            text = _CONTROL.sub(_escape_control, text)
        # Cut last, so that escaping can never take a field past its limit.
        if len(text) > limit:
            text = f"{text[: limit - 32]}…[truncated]"
            truncated = True
        return text, truncated


default_redactor: Final = SecretRedactor()
"""The process-wide redactor; the service registers its configured tokens here."""


def register_secret(*secrets: str | None) -> None:
    """Register secrets with the process-wide redactor.

    .. versionadded:: 0.1.0
    """
    default_redactor.register(*secrets)
