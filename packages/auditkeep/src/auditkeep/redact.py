"""The one scrubber: secrets out of every string, key and structure, before any cut.

``SecretRedactor`` decides everything that is scrubbed, for strings and for
structures together:

- **strings**: each ``Rule`` in ``RULES`` (a credential shape: its pattern,
  the literals that must be present for it to run, its flags) and every
  registered secret are matched on the same text, and the union of what they
  cover is replaced by ``[REDACTED]``. One combined alternation would let one
  match hide an overlapping one (``password=`` stops at ``,`` and could consume
  the start of a registered secret; ``Proxy-Authorization: Basic x`` would keep
  ``x``). Percent-encoded text is also decoded and scrubbed again, and what a
  match covers there is mapped back onto the encoded text
  (``Authorization%3A%20Bearer%20x``, ``https%3A%2F%2Fuser%3Apw%40host``).
- **keys**: a value under a key that names a credential (``CREDENTIAL_KEY``:
  ``password``, ``accessToken``, ``aws_secret_access_key``...) is replaced
  whole, whatever it looks like; the same rule decides ``"key": "value"``
  pairs inside text (JSON in an error body).
- **structures**: the walkers that clean an entry's ``target`` and
  ``details`` (nesting, odd types, a lower bound of the encoded size that
  bounds the work) live here, so ``AuditLogger.emit`` calls this one scrubber.

Scrub first, then cut, everywhere: a secret cut in half no longer matches. To
bound the work on a huge text only a window is scrubbed, reaching
``WINDOW_MARGIN`` characters past the cut (or, if longer, the longest spelling
a registered secret can have), and only what lies before the cut is kept. A secret that starts
before the cut therefore lies wholly inside the window and is matched; one that
the window's edge splits starts after the cut and is dropped with the rest
(``scrub_then_cut``; ``clean`` does the same for an entry's strings).
"""

from __future__ import annotations

import functools
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

from auditkeep._coerce import (
    CHANGED,
    COERCED,
    CUT_MARK,
    INT_MAX,
    INT_MIN,
    TRUNCATED,
    big_int_text,
    bytes_text,
    nonfinite_text,
    safe_str,
    type_name,
)

__all__ = [
    "CREDENTIAL_KEY",
    "DEFAULT_MAX_FIELD_CHARS",
    "MAX_DEPTH",
    "MIN_SECRET_CHARS",
    "REDACTED",
    "RULES",
    "WINDOW_MARGIN",
    "KeyRule",
    "Rule",
    "SecretRedactor",
    "credential_key",
    "default_redactor",
    "register_secret",
    "scrub_then_cut",
    "secret_forms",
]

REDACTED: Final = "[REDACTED]"
DEFAULT_MAX_FIELD_CHARS: Final = 4096
MIN_SECRET_CHARS: Final = 6
"""Registered secrets shorter than this are refused: they would redact ordinary words."""
WINDOW_MARGIN: Final = 4096
"""How far past a cut the scrubbed window reaches at least (a longer registered secret
widens it). A shape longer than this that the window splits still matches from its
start (a PEM block to the end of the window)."""
MAX_DEPTH: Final = 6
"""Structures nested deeper are recorded as ``"[nested too deep]"``."""

_CACHEABLE_CHARS: Final = 256
_CACHE_ENTRIES: Final = 8192
_KEY_CACHE_ENTRIES: Final = 4096
NARROW_FLAT: Final = 32
"""A flat mapping of more items is cleaned in slices (``flat_wide``)."""
_FLAGS: Final = TRUNCATED | COERCED
_PERCENT_DEPTH: Final = 2  # %253A (encoded twice) is decoded twice


# -- credential keys -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRule:
    """Which mapping keys (and ``key=value`` names in text) name a credential.

    The name is split into words (``accessToken`` -> access, token;
    ``X-Api-Key`` -> x, api, key; trailing numbers dropped), and its **last**
    word decides: one ending in a word of ``suffixes`` is a credential
    (``gitlab_token``, ``clientSecret``, ``oauth``), as are ``session_id`` and
    names ending in ``key``/``keys`` unless the word before is one of
    ``plain_qualifiers`` (``issue_key``, ``primary_key``: identifiers, not
    secrets). When in doubt it redacts: ``key`` alone, ``ssh_key``,
    ``license_key`` are credentials. Only the last word counts, so
    ``completion_tokens``, ``token_type`` and ``auth_method`` stay readable.
    """

    suffixes: tuple[str, ...]
    key_words: tuple[str, ...]
    plain_qualifiers: frozenset[str]

    def matches(self, name: str) -> bool:
        """Whether a value under ``name`` is a credential."""
        words: list[str] = _WORDS.findall(name)
        while len(words) > 1 and words[-1].isdigit():
            words.pop()
        if not words:
            return False
        last = words[-1].lower()
        if last in self.key_words:
            return len(words) == 1 or words[-2].lower() not in self.plain_qualifiers
        if last == "id":
            return len(words) > 1 and words[-2].lower() == "session"
        return last.endswith(self.suffixes)


# "SecretAccessKey" -> Secret, Access, Key; "APIKey" -> API, Key; "x-api-key" -> x, api, key.
_WORDS: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

CREDENTIAL_KEY: Final = KeyRule(
    suffixes=(
        "token",
        "secret",
        "secrets",
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "apikey",
        "auth",
        "authorization",
        "jwt",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "signature",
        "sessionid",
        "privatekey",
        "secretkey",
        "accesskey",
        "signingkey",
    ),
    key_words=("key", "keys"),
    plain_qualifiers=frozenset(
        {
            "issue",
            # a Jira project's key (PROJ), the other half of an issue key
            "project",
            "primary",
            "foreign",
            "public",
            "sort",
            "partition",
            "idempotency",
            "cache",
            "routing",
            "dedup",
            "deduplication",
            "unique",
            "composite",
            "lookup",
            "object",
            # where a value is kept (a state store's key), never a credential
            "store",
        }
    ),
)


def credential_key(name: str) -> bool:
    """Whether a value under the key ``name`` is replaced whole (see ``KeyRule``)."""
    return CREDENTIAL_KEY.matches(name)


# -- credential shapes in text ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One credential shape.

    ``pattern`` holds exactly one capturing group: a harmless prefix kept so the
    entry still says what kind of credential was there; the rest of the match is
    replaced. It runs only on text (lower-cased) containing one of ``triggers``:
    ``in`` scans at memory speed while a regex tried at every position costs
    ~0.5 us per character (a 4 KiB error body: 2 ms -> ~20 us). A pattern
    that may start with many characters opens with a lookahead of them
    (``(?=[BbTDN])``): ``re`` then skips other positions in C (2-4x faster,
    measured on 4 KiB of prose); the pair rule checks its separator before
    its name's ending for the same reason. With
    ``named_key`` the match's ``key`` group must name a credential
    (``CREDENTIAL_KEY``). ``example`` scrubs to ``redacted`` (tested, and shown
    in docs/redaction.md).
    """

    name: str
    pattern: str
    triggers: tuple[str, ...]
    example: str
    redacted: str
    flags: re.RegexFlag = re.IGNORECASE
    named_key: bool = False
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.pattern, self.flags))


_GITLAB_PREFIXES: Final = (
    "glpat",
    "gldt",
    "glrt",
    "glptt",
    "glft",
    "glimt",
    "glagent",
    "gloas",
    "glsoat",
    "glcbt",
    "glffct",
    "glwt",
    "glrtr",
    "gltst",
    "glsa",
)
_SLACK_PREFIXES: Final = ("xoxa", "xoxb", "xoxp", "xoxo", "xoxs", "xoxr", "xapp")
# Authorization schemes whose credential the scheme rule redacts (so the pair
# rule leaves "Authorization: Bearer" readable).
_SCHEMES: Final = r"bearer|basic|token|digest|negotiate|ntlm"
# The words a credential name may end with, for the pair rule: its name is
# read whole (possessively, so the regex never backtracks into it) and must end
# in one of them; CREDENTIAL_KEY, which knows the last word, then decides.
_KEY_ENDS: Final = (*CREDENTIAL_KEY.suffixes, *CREDENTIAL_KEY.key_words, "session_id", "session-id")
_KEY_END: Final = "(?:" + "|".join(f"(?<={word})" for word in _KEY_ENDS) + ")"
_R: Final = REDACTED

RULES: Final[tuple[Rule, ...]] = (
    # GitLab tokens: personal/project/group (glpat), deploy (gldt), runner
    # (glrt, GR1348941), trigger (glptt), feed (glft), incoming mail (glimt),
    # agent (glagent), OAuth app secret (gloas), SCIM (glsoat), CI job (glcbt),
    # feature flags (glffct), workspaces (glwt), and the newer routable forms.
    # Vendor prefixes are distinctive, so they match even glued to a word
    # character (ANSI colour codes such as "\x1b[31m" end in a letter).
    Rule(
        "gitlab-token",
        rf"((?:{'|'.join(_GITLAB_PREFIXES)})-)[0-9A-Za-z_.\-]{{8,}}",
        tuple(f"{p}-" for p in _GITLAB_PREFIXES),
        "clone with glpat-Ab3xY9876543210 failed",
        f"clone with glpat-{_R} failed",
    ),
    Rule(
        "gitlab-runner-registration-token",
        r"(GR1348941)[0-9A-Za-z_\-]{8,}",
        ("gr1348941",),
        "register GR1348941aB3_-cD4eF5gH6",
        f"register GR1348941{_R}",
    ),
    Rule(
        "github-token",
        r"((?:ghp|gho|ghu|ghs|ghr)_)[A-Za-z0-9]{16,}",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        "push as ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        f"push as ghp_{_R}",
    ),
    Rule(
        "github-fine-grained-token",
        r"(github_pat_)[A-Za-z0-9_]{16,}",
        ("github_pat_",),
        "GH=github_pat_11ABCDEFG0123456789_abcdef end",
        f"GH=github_pat_{_R} end",
    ),
    Rule(
        "webhook-signing-key",
        r"(whsec_)[A-Za-z0-9+/=_\-]{8,}",
        ("whsec_",),
        "key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw= loaded",
        f"key whsec_{_R} loaded",
    ),
    Rule(
        "slack-token",
        rf"((?:{'|'.join(_SLACK_PREFIXES)})-)[0-9A-Za-z\-]{{10,}}",
        ("xox", "xapp-"),
        "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl ok",
        f"slack xoxb-{_R} ok",
    ),
    Rule(
        "openai-style-key",
        r"(\bsk-)[A-Za-z0-9_\-]{16,}",
        ("sk-",),
        "llm key sk-proj-abcdefghijklmnop1234 set",
        f"llm key sk-{_R} set",
    ),
    Rule(
        "atlassian-api-token",
        r"(\bATATT)[A-Za-z0-9_\-=]{16,}",
        ("atatt",),
        "jira ATATT3xFfGF0abcdefghijklmnop= set",
        f"jira ATATT{_R} set",
    ),
    # AWS access key ids: long-term (AKIA) and temporary (ASIA). Upper case and
    # digits only, so a lower-case letter before one (an ANSI code) is no boundary.
    Rule(
        "aws-access-key-id",
        r"(?=A)((?<![A-Z0-9])A[KS]IA)[A-Z0-9]{16}(?![A-Z0-9])",
        ("akia", "asia"),
        "using AKIAIOSFODNN7EXAMPLE now",
        f"using AKIA{_R} now",
        flags=re.NOFLAG,
    ),
    # AWS secret access keys are 40 characters of base64 with no prefix: matched
    # near an AWS context (the word "aws" or an access key id, on the same line,
    # within 40 characters) and only with an upper-case letter, "/" or "+" in
    # them, so a 40-hex git SHA next to "aws" stays. Named pairs
    # (aws_secret_access_key=...) are the pair rule's.
    Rule(
        "aws-secret-access-key",
        r"(?=[Aa])((?:\b[Aa][Ww][Ss]|(?<![A-Z0-9])A[KS]IA[A-Z0-9]{16})[^\r\n]{0,40}?(?<![A-Za-z0-9/+]))"
        r"(?=[a-z0-9]{0,39}[A-Z/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
        ("aws", "akia", "asia"),
        "AWS creds: AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        f"AWS creds: AKIA{_R} {_R}",
        flags=re.NOFLAG,
    ),
    # PEM private keys of any type (RSA, EC, DSA, OPENSSH, ENCRYPTED, PKCS#8,
    # PGP ... BLOCK), over lines: the body up to the END line, or to the end of
    # the text when that was cut off.
    Rule(
        "pem-private-key",
        r"(-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)"
        r"(?:.*?(?=-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)|.*)",
        ("private key",),
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBk\n-----END EC PRIVATE KEY-----",
        f"-----BEGIN EC PRIVATE KEY-----{_R}-----END EC PRIVATE KEY-----",
        flags=re.DOTALL,
    ),
    # Authorization schemes (header values, curl command lines, error text).
    # "Token"/"Digest" only capitalised: "invalid token provided" is prose.
    # "Bearer"/"Basic" spelt so also match glued to a word ("xBasic dXNl..."),
    # as a header echoed into other text shows them.
    Rule(
        "authorization-scheme",
        r"(?=[BbTDN])(\b(?:[Bb][Ee][Aa][Rr][Ee][Rr]|[Bb][Aa][Ss][Ii][Cc]|Token|Digest|Negotiate|NTLM)\s+"
        r"|(?:Bearer|Basic)\s+)[A-Za-z0-9\-._~+/]+=*",
        ("bearer", "basic", "token", "digest", "negotiate", "ntlm"),
        "Authorization: Bearer abc.DEF-ghi_jkl~mno+pqr/stu==",
        f"Authorization: Bearer {_R}",
        flags=re.NOFLAG,
    ),
    # Credential-carrying header lines, e.g. "PRIVATE-TOKEN: x" or "X-Gitlab-Token=x".
    Rule(
        "credential-header",
        r"(?=[pxa])(\b(?:private-token|x-gitlab-token|x-api-key|api-key|x-auth-token"
        r"|proxy-authorization)\s*[:=]\s*)[^\s,;]+",
        ("-token", "api-key", "proxy-auth"),
        "PRIVATE-TOKEN: abcdef123456",
        f"PRIVATE-TOKEN: {_R}",
    ),
    # A cookie header holds several credentials: redact its whole value.
    Rule(
        "cookie-header",
        r"(?=[sc])(\b(?:set-)?cookie\s*[:=]\s*)[^\r\n\"']+",
        ("cookie",),
        "Set-Cookie: sid=deadbeef; Path=/; HttpOnly",
        f"Set-Cookie: {_R}",
    ),
    # Password or token in URL userinfo: scheme://user:secret@host or scheme://secret@host.
    Rule(
        "url-userinfo",
        r"(://)[^/\s@:]*(?::[^/\s@]*)?(?=@)",
        ("://",),
        "git clone https://oauth2:s3cr%40t@gitlab.example.com/g/p.git",
        f"git clone https://{_R}@gitlab.example.com/g/p.git",
    ),
    # Credentials in query strings and form bodies.
    Rule(
        "query-parameter",
        r"([?&;](?:private_token|access_token|refresh_token|id_token|token|api_key|apikey"
        r"|key|password|passwd|secret|client_secret|signature|sig|code)=)[^&#\s\"']+",
        ("=",),
        "GET /api/v4/projects?private_token=abc123def&per_page=20",
        f"GET /api/v4/projects?private_token={_R}&per_page=20",
    ),
    # name=value, name: value and "name": "value" (JSON or a Python repr inside
    # text, quotes escaped or not) where the name is a credential key by
    # CREDENTIAL_KEY: password=..., "accessToken": "...", 'private-token': ...,
    # authorization: <opaque>. A quoted value is redacted up to its closing
    # quote (spaces included); an authorization scheme word is left to the
    # scheme rule, so "Authorization: Bearer" stays readable; a name right
    # after "//" is a URL's user (the userinfo rule's: https://token:x@host).
    Rule(
        "credential-pair",
        r"((?<![A-Za-z0-9_.\-])(?<!//)(?P<key>[A-Za-z0-9_.\-]{1,64}+)"
        rf"(?=(?:\\?[\"'])?[ \t]*[:=]){_KEY_END}"
        r"(?:\\?[\"'])?[ \t]*[:=][ \t]*(?:\\?[\"'])?)"
        rf"(?!\+?(?:{_SCHEMES})[\s+])"
        r"(?:(?<=\\\")(?:[^\"\\\r\n]|\\[^\"\r\n])+"
        r"|(?<=\")(?:[^\"\\\r\n]|\\.)+"
        r"|(?<=')(?:[^'\\\r\n]|\\.)+"
        r"|(?<![\"'])[^\s\"'\\&,;}]+)",
        (
            "token",
            "secret",
            "pass",
            "pwd",
            "key",
            "auth",
            "jwt",
            "cookie",
            "credential",
            "signature",
            "session",
        ),
        '{"accessToken": "ya29 a0Af-H", "user": "bob"}',
        f'{{"accessToken": "{_R}", "user": "bob"}}',
        named_key=True,
    ),
    # JSON Web Tokens: header.payload.signature, or header.payload (unsigned, or
    # cut) when the payload is JSON too.
    Rule(
        "jwt",
        r"(?=e)()\beyJ[A-Za-z0-9_\-]{8,}\."
        r"(?:[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}|eyJ[A-Za-z0-9_\-]{8,}\.?)",
        ("eyj",),
        "session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N expired",
        f"session {_R} expired",
    ),
)

# Any literal of any rule: text holding none (most strings) skips the rules in one scan.
_ANY_TRIGGER: Final = re.compile(
    "|".join(sorted({re.escape(t) for rule in RULES for t in rule.triggers}, key=len))
)
_GATED_CHARS: Final = 128
_PERCENT: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_PERCENT_OR_PLUS: Final = re.compile(r"%[0-9A-Fa-f]{2}|\+")

# C0 and C1 controls, DEL and the Unicode line/paragraph separators: any of
# these could end a line in some reader (str.splitlines, terminals, syslog).
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape_controls(text: str) -> str:
    """``text`` with every line-breaking or control character written as ``\\xNN``/``\\uNNNN``."""
    return _CONTROL.sub(_escape_control, text) if _CONTROL.search(text) else text


# -- matching ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Secrets:
    """Registered secret values, compiled once per change."""

    raw: frozenset[str]
    pattern: re.Pattern[str] | None
    needles: tuple[str, ...]
    """Lower-cased literals, one of which any spelling of a secret holds (pre-check)."""
    always: bool
    """Some secret has no such literal: the pattern always runs."""
    longest: int
    """A bound of how long a match can be (escapes included), for the scrubbed window."""


_NO_SECRETS: Final = _Secrets(frozenset(), None, (), False, 0)
_ALNUM: Final = re.compile(r"[A-Za-z0-9]+")
_CONTROL_ESCAPES: Final = {"\n": "n", "\r": "r", "\t": "t"}


def _escapable(secret: str) -> str:
    """A pattern for ``secret`` escaped any number of times (JSON in JSON, repr of a repr).

    Each character other than a letter or digit may be preceded by backslashes
    (``\\"``, ``\\\\\\'``, ``\\/``), a backslash may be doubled, a newline, tab or
    carriage return may be written as ``\\n``, ``\\t``, ``\\r``, and a character
    outside ASCII by its code (``\\u00e9``, also with doubled backslashes).
    """
    parts = []
    for char in secret:
        if char.isascii() and char.isalnum():
            parts.append(char)
        elif char == "\\":
            parts.append(r"\\+")
        elif char in _CONTROL_ESCAPES:
            parts.append(rf"(?:{re.escape(char)}|\\+{_CONTROL_ESCAPES[char]})")
        elif char.isascii():
            parts.append(r"\\*" + re.escape(char))
        else:
            parts.append(f"(?:{re.escape(char)}|{'|'.join(_code_escapes(char))})")
    return "".join(parts)


def _code_escapes(char: str) -> list[str]:
    """Patterns for ``char`` as JSON or ``repr`` write it by code (``\\u00e9``, ``\\U0001f680``)."""
    code = ord(char)
    if code > 0xFFFF:  # JSON writes a surrogate pair
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        return [rf"\\+u{high:04x}\\+u{low:04x}", rf"\\+U{code:08x}"]
    forms = [rf"\\+u{code:04x}"]
    if code < 0x100:
        forms.append(rf"\\+x{code:02x}")
    return forms


def _compile_secrets(raw: frozenset[str]) -> _Secrets:
    if not raw:
        return _NO_SECRETS
    alternatives = {_escapable(secret) for secret in raw}
    alternatives |= {re.escape(form) for form in secret_forms(*raw)}
    needles: set[str] = set()
    always = False
    for secret in raw:
        runs = _ALNUM.findall(secret)
        longest_run = max(runs, key=len, default="")
        if len(longest_run) >= 3:
            needles.add(longest_run.lower())
        else:
            always = True
    # Longest first, so a secret that contains another is replaced whole.
    pattern = re.compile("|".join(sorted(alternatives, key=len, reverse=True)), re.IGNORECASE)
    longest = max(max(len(form) for form in secret_forms(*raw)), 2 * max(map(len, raw)))
    return _Secrets(raw, pattern, tuple(sorted(needles)), always, longest)


def secret_forms(*secrets: str | None) -> set[str]:
    """Each secret in the spellings text gives it (empty values skipped).

    As written; percent- and form-encoded (also found by decoding, but a
    literal is cheaper); escaped as inside a JSON string (``\\u00e9``) and as
    Python's ``repr`` shows it. (Backslash escapes of any depth are matched by
    the registered pattern itself.)
    """
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= {
                secret,
                urllib.parse.quote(secret, safe=""),
                urllib.parse.quote_plus(secret),
                json.dumps(secret)[1:-1],
                repr(secret)[1:-1],
            }
    return forms


def _spans(text: str, low: str, secrets: _Secrets, depth: int) -> list[tuple[int, int]]:
    """Every ``(start, end)`` of ``text`` to replace; may overlap."""
    spans: list[tuple[int, int]] = []
    # Each search resumes inside the previous match, not after it, so matches may
    # overlap: "Bearer Bearer x" must not hide x behind a first match on "Bearer",
    # nor one registered secret hide the tail of another that overlaps it.
    if secrets.pattern is not None and (secrets.always or any(n in low for n in secrets.needles)):
        pos = 0
        while (m := secrets.pattern.search(text, pos)) is not None:
            spans.append(m.span())
            pos = m.start() + 1
    # One scan for any literal pays on short text; on long text it costs more
    # than the rules' own ``in`` checks (measured: 4 KiB, 200 us vs 135 us).
    if len(low) > _GATED_CHARS or _ANY_TRIGGER.search(low) is not None:
        for rule in RULES:
            if not any(t in low for t in rule.triggers):
                continue
            pattern = rule.compiled
            pos = 0
            while (m := pattern.search(text, pos)) is not None:
                start, end = m.end(1), m.end()
                if end > start and (not rule.named_key or credential_key(m["key"])):
                    spans.append((start, end))
                    if end == len(text):
                        break  # later matches would lie inside this one (a PEM body)
                pos = max(start, m.start() + 1)
    if depth < _PERCENT_DEPTH and "%" in text and _PERCENT.search(text) is not None:
        # Percent-encoded credentials: scrub the decoded text, and map what it
        # covers back onto the encoded characters. "+" is a space in form
        # encoding but itself in a token: both readings are scrubbed.
        for plus in (False, True) if "+" in text else (False,):
            decoded, starts = _percent_decoded(text, plus)
            for s, e in _spans(decoded, decoded.lower(), secrets, depth + 1):
                spans.append((starts[s], starts[e]))
    return spans


def _percent_decoded(text: str, plus: bool) -> tuple[str, list[int]]:
    """``text`` with each ``%XX`` (and ``+`` when ``plus``) decoded to one character.

    Returns the decoded text and, for each of its characters (and its end), the
    index in ``text`` where that character's encoding starts.
    """
    pieces: list[str] = []
    starts: list[int] = []
    pos = 0
    for m in (_PERCENT_OR_PLUS if plus else _PERCENT).finditer(text):
        start = m.start()
        pieces.append(text[pos:start])
        starts.extend(range(pos, start))
        escape = m.group()
        pieces.append(" " if escape == "+" else chr(int(escape[1:], 16)))
        starts.append(start)
        pos = m.end()
    pieces.append(text[pos:])
    starts.extend(range(pos, len(text) + 1))
    return "".join(pieces), starts


def _merged(spans: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    spans.sort()
    start, end = spans[0]
    for s, e in spans[1:]:
        if s > end:
            yield start, end
            start = s
        end = max(end, e)
    yield start, end


def _replace(text: str, spans: list[tuple[int, int]], lo: int, hi: int) -> str:
    """``text[lo:hi]`` with the spans replaced; a span crossing ``lo`` or ``hi`` is
    replaced too, so no part of what it covers is kept."""
    if not spans:
        return text[lo:hi] if lo or hi < len(text) else text
    out: list[str] = []
    pos = lo
    for start, end in _merged(spans):
        if end <= lo:
            continue
        if start >= hi:
            break
        if start > pos:
            out.append(text[pos:start])
        out.append(REDACTED)
        pos = max(pos, end)
    if pos < hi:
        out.append(text[pos:hi])
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _also_secrets(base: _Secrets, also: tuple[str | None, ...]) -> _Secrets:
    extra = {value for value in also if value}
    return _compile_secrets(base.raw | extra) if extra - base.raw else base


# -- the scrubber --------------------------------------------------------------


class SecretRedactor:
    """Scrubs credential shapes and registered secrets from strings, keys and structures.

    Thread-safe: ``register`` swaps in new compiled secrets atomically. Short
    strings and mapping keys are memoised (most strings in a trail repeat);
    ``generation`` is bumped when earlier results may no longer hold.

    .. versionadded:: 0.1.0
    """

    def __init__(self, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> None:
        if max_field_chars < 64:
            raise ValueError("max_field_chars must be at least 64")
        self.max_field_chars = max_field_chars
        self._lock = threading.Lock()
        self._secrets = _NO_SECRETS
        self._margin = WINDOW_MARGIN
        self._cache: dict[str, tuple[str, bool]] = {}
        self._keys: dict[str, tuple[str, bool, int]] = {}
        self._clean = self.clean
        self.generation = 0
        """Bumped whenever earlier results may no longer hold (callers' caches check it)."""

    # -- configuration --------------------------------------------------------

    def register(self, *secrets: str | None) -> None:
        """Add exact secret values (configured tokens) to redact everywhere.

        Their encoded forms are registered too (``secret_forms``: URL, JSON and
        ``repr`` escaping), and percent-encoded text is decoded before matching.
        Empty values are ignored. Matching ignores case.

        Raises:
            ValueError: if a secret is shorter than ``MIN_SECRET_CHARS``.
        """
        for secret in secrets:
            if secret and len(secret) < MIN_SECRET_CHARS:
                raise ValueError(
                    f"refusing to register a secret shorter than {MIN_SECRET_CHARS} characters"
                )
        with self._lock:
            self._secrets = _compile_secrets(self._secrets.raw | {s for s in secrets if s})
            self._margin = max(WINDOW_MARGIN, self._secrets.longest)
            self._forget()

    def set_max_field_chars(self, max_field_chars: int) -> None:
        """Change the per-string limit (clears memoised results)."""
        if max_field_chars < 64:
            raise ValueError("max_field_chars must be at least 64")
        self.max_field_chars = max_field_chars
        self._forget()

    def _forget(self) -> None:
        self._cache = {}
        self._keys = {}
        self.generation += 1

    # -- strings --------------------------------------------------------------

    def redact(self, text: str, *also: str | None) -> str:
        """``text`` whole, with every credential (and each value of ``also``) replaced."""
        secrets = _also_secrets(self._secrets, also) if also else self._secrets
        return _replace(text, _spans(text, text.lower(), secrets, 0), 0, len(text))

    def _part(self, text: str, keep: int, secrets: _Secrets, tail: bool) -> tuple[str, bool]:
        """The scrubbed text; when it is longer than the scrubbed window, only its
        first (or last) ``keep`` characters' worth, and True: something was left out."""
        window = keep + max(self._margin, secrets.longest)
        if len(text) <= window:
            return _replace(text, _spans(text, text.lower(), secrets, 0), 0, len(text)), False
        part = text[-window:] if tail else text[:window]
        lo, hi = (window - keep, window) if tail else (0, keep)
        return _replace(part, _spans(part, part.lower(), secrets, 0), lo, hi), True

    def window(self, limit: int) -> int:
        """How many characters ``scrub_then_cut(text, limit)`` reads (more are left out).

        A caller that must cut bytes before decoding them keeps at least
        ``4 * window(limit) + 4`` bytes (at most 4 bytes a character), so that
        its cut lies beyond the window and cannot split a secret that is kept.
        """
        return limit + self._margin

    def scrub_then_cut(
        self, text: str, limit: int, *also: str | None, mark: str = "…", tail: bool = False
    ) -> str:
        """Scrub, then shorten to at most ``limit`` characters (ending in ``mark`` when cut).

        ``also`` are exact values to redact besides the registered ones (a
        client's own token), in the same forms. With ``tail`` the end is kept
        (and ``mark`` starts the text). The work is bounded by the window (see
        the module's docstring), whatever the size of ``text``.
        """
        if limit <= len(mark):
            raise ValueError(f"limit must be more than {len(mark)}")
        secrets = _also_secrets(self._secrets, also) if also else self._secrets
        part, cut = self._part(text, limit, secrets, tail)
        if not cut and len(part) <= limit:
            return part
        keep = limit - len(mark)
        return mark + part[len(part) - keep :] if tail else part[:keep] + mark

    def clean(self, text: str) -> tuple[str, bool]:
        """Redact, neutralise and cut one untrusted string (memoised when short).

        Returns:
            The safe string and whether it was truncated.
        """
        cache = self._cache
        hit = cache.get(text)
        if hit is not None:
            return hit
        limit = self.max_field_chars
        out, cut = self._part(text, limit, self._secrets, False)
        out = _escape_controls(out)
        # Cut last, so that escaping can never take a field past its limit.
        if cut or len(out) > limit:
            out, cut = out[: limit - 32] + CUT_MARK, True
        result = (out, cut)
        if len(text) <= _CACHEABLE_CHARS:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[text] = result
        return result

    def text(self, value: object) -> tuple[str, int]:
        """Any value as scrubbed text: its ``str()`` (bytes decoded), or a stand-in."""
        try:
            if isinstance(value, str):
                text, flags = str.__str__(value), 0
            elif isinstance(value, bytes | bytearray | memoryview):
                # Decoded far enough past the window that a cut here is the window's.
                text, flags = bytes_text(value, self.window(self.max_field_chars) + 1)
            else:
                text, flags = safe_str(value, self._repr_cut)
        except Exception:  # noqa: BLE001 - even isinstance() runs the caller's __class__
            text, flags = f"<unprintable {type_name(value)}>", COERCED
        cleaned, cut = self.clean(text)
        return cleaned, flags | cut

    def _repr_cut(self, text: str, limit: int) -> str:
        return self.scrub_then_cut(text, limit, mark="...")

    # -- keys -----------------------------------------------------------------

    def key(self, key: object) -> tuple[str, bool, int]:
        """A cleaned mapping key, whether it names a credential, and its flags.

        ``CHANGED`` in the flags says the key cleaned to other text, so two
        keys may have become one.
        """
        found = self._keys.get(key) if type(key) is str else None
        if found is not None:
            return found
        if type(key) is str:
            text, cut = self.clean(key)
            flags = (TRUNCATED if cut else 0) | (CHANGED if text != key else 0)
            found = (text, credential_key(text), flags)
            # Short keys only: a cache of 4,096 keys of any length grew with
            # the input (30 distinct 10 MB keys kept 224 MB).
            if len(key) <= _CACHEABLE_CHARS:
                if len(self._keys) >= _KEY_CACHE_ENTRIES:
                    self._keys.clear()
                self._keys[key] = found
            return found
        # Not a str: its string form, never cached (its hash and equality are
        # the caller's code).
        text, flags = self.text(key)
        return text, credential_key(text), flags | CHANGED

    # -- structures -----------------------------------------------------------

    def flat_wide(
        self, mapping: dict[Any, Any], out: dict[str, Any], max_bytes: int
    ) -> tuple[int, int]:
        """``fill_flat`` for a mapping of many keys: returns the flags and how many
        items were read. Past a lower bound of ``max_bytes`` encoded, the rest is
        left out (``_dropped_keys``)."""
        # Many keys (hostile, or a mistake: targets are meant to be small and
        # flat). Cleaned in slices, with a lower bound of the encoded size:
        # past the limit the entry will be shrunk anyway, so the rest is not
        # worth cleaning (5,000 keys of 4,000 characters made a 20 MB entry).
        items = iter(mapping.items())
        room = max_bytes
        flags = seen = counted = 0
        while room >= 0 and seen < len(mapping):
            chunk = list(islice(items, NARROW_FLAT))
            flags |= self.fill_flat(chunk, out)
            seen += len(chunk)
            for k, v in islice(reversed(out.items()), len(out) - counted):
                room -= len(k) + 5 + (len(v) + 1 if type(v) is str else 0)
            counted = len(out)
        if seen < len(mapping):
            out["_dropped_keys"] = len(mapping) - seen
            flags |= TRUNCATED
        return flags, seen

    def fill_flat(self, items: Iterable[tuple[Any, Any]], out: dict[str, Any]) -> int:
        """Clean flat ``items`` (an entry's ``target``) into ``out``: values stay scalars.

        Up to ``NARROW_FLAT`` items; more go through ``flat_wide``. Returns the flags.
        """
        clean = self._clean  # bound once: emit's hot path
        keys = self._keys
        flags = 0
        for key, value in items:
            found = keys.get(key) if type(key) is str else None
            if found is None:
                found = self.key(key)
            k, secret, f = found
            flags |= f
            kind = type(value)
            if secret and value is not None:
                out[k] = REDACTED
            elif kind is str:
                out[k], cut = clean(value)
                flags |= cut
            elif (
                kind is int
                or kind is bool
                or value is None
                or (kind is float and value - value == 0)
            ):
                out[k] = value
            else:
                out[k], f = self._odd_flat_value(value)
                flags |= f
        return flags

    def _odd_flat_value(self, value: object) -> tuple[Any, int]:
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                return int.__int__(value), 0  # IntEnum; beyond 64 bits: repair()
            if isinstance(value, float):
                number = float.__float__(value)
                if number - number == 0.0:
                    return number, 0
                return nonfinite_text(number), COERCED
        except Exception:  # noqa: BLE001 - the caller's __class__; text() copes
            return self.text(value)
        # Non-scalars too: a flat mapping stays flat so that it can be filtered on.
        return self.text(value)

    def mapping(
        self, items: Iterable[tuple[Any, Any]], count: int, depth: int, room: list[int]
    ) -> tuple[dict[str, Any], int]:
        """Clean a mapping's ``items`` (``count`` of them) at ``depth``, nesting kept.

        ``room`` is a lower bound of the bytes still free in the entry, shared
        by the whole walk: it bounds the work on huge or cyclic input (a list
        holding itself 100 times, 6 levels deep, is 10**12 leaves).
        """
        keys = self._keys
        out: dict[str, Any] = {}
        flags = 0
        for key, item in items:
            if room[0] < 0:
                return out, (flags | TRUNCATED) & _FLAGS
            found = keys.get(key) if type(key) is str else None
            if found is None:
                found = self.key(key)
            k, secret, f = found
            flags |= f
            room[0] -= len(k) + 4  # "k": and a separator
            if secret and item is not None:
                out[k] = REDACTED
            else:
                out[k], f = self.value(item, depth + 1, room)
                flags |= f
        if len(out) < count:
            flags |= COERCED  # keys that clean to the same text keep one value
        return out, flags & _FLAGS

    def value(self, value: Any, depth: int, room: list[int]) -> tuple[Any, int]:
        """Any value as plain JSON data, scrubbed (see ``mapping`` for ``room``)."""
        kind = type(value)
        # Charges to ``room`` are lower bounds of the encoded size: a string is
        # its characters and quotes, a number at least one byte; the container
        # charges one separator per item.
        if kind is str:
            text, cut = self.clean(value)
            room[0] -= len(text) + 2
            return text, cut
        if kind is int or kind is bool or value is None:
            room[0] -= 1
            return value, 0
        if kind is float:
            room[0] -= 1
            if value - value == 0.0:
                return value, 0
            return nonfinite_text(value), COERCED
        if depth >= MAX_DEPTH:
            room[0] -= 19
            return "[nested too deep]", TRUNCATED
        if kind is dict:
            return self.mapping(value.items(), len(value), depth, room)
        if kind is list or kind is tuple:
            items = []
            flags = 0
            for item in value:
                if room[0] < 0:
                    flags |= TRUNCATED
                    break
                room[0] -= 1
                cleaned, f = self.value(item, depth + 1, room)
                items.append(cleaned)
                flags |= f
            return items, flags
        return self._odd_value(value, depth, room)

    def _odd_value(self, value: object, depth: int, room: list[int]) -> tuple[Any, int]:
        try:
            if isinstance(value, str):
                return self.value(str.__str__(value), depth, room)
            if isinstance(value, int):
                return self.value(int.__int__(value), depth, room)
            if isinstance(value, float):
                return self.value(float.__float__(value), depth, room)
            if isinstance(value, Mapping):
                pairs = list(islice(value.items(), max(room[0], 0) // 5 + 1))
                return self.mapping(pairs, len(pairs), depth, room)
            if isinstance(value, list | tuple | set | frozenset):
                return self.value(list(islice(value, max(room[0], 0) + 1)), depth, room)
            text, flags = self.text(value)
        except Exception:  # noqa: BLE001 - a broken container is recorded as its text
            text, flags = self.text(value)
        room[0] -= len(text) + 2
        return text, flags

    def scrub(self, value: object, max_bytes: int = 1 << 20) -> Any:
        """Any value (structures too) as plain JSON data, every key and string scrubbed.

        For callers outside an audit entry (the agent's operational log):
        values under credential keys are replaced whole, strings redacted and
        cut, the walk bounded by ``max_bytes``.
        """
        return self.value(value, 0, [max_bytes])[0]

    def repair(self, value: Any) -> tuple[Any, int]:
        """Make scrubbed plain data encodable: escape lone surrogates, write big ints as text.

        Runs only after orjson refused an entry, on data made of str, int,
        float, bool, None, dict (str keys) and list. An escaped string is
        cleaned again, so it is cut back to the field limit.
        """
        kind = type(value)
        if kind is str:
            return self._repair_text(value)
        if kind is int:
            if INT_MIN <= value <= INT_MAX:
                return value, 0
            text, cut = self.clean(big_int_text(value))
            return text, COERCED | cut
        if kind is dict:
            out: dict[str, Any] = {}
            flags = 0
            for key, item in value.items():
                k, f = self._repair_text(key) if type(key) is str else safe_str(key, self._repr_cut)
                v, g = self.repair(item)
                flags |= f | g
                if k in out:
                    flags |= COERCED
                out[k] = v
            return out, flags
        if kind is list:
            items = []
            flags = 0
            for item in value:
                v, f = self.repair(item)
                items.append(v)
                flags |= f
            return items, flags
        return value, 0

    def _repair_text(self, text: str) -> tuple[str, int]:
        """``text`` unchanged when valid UTF-8, else with lone surrogates written as ``\\udcff``."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
            cleaned, cut = self.clean(escaped)
            return cleaned, COERCED | cut
        return text, 0


default_redactor: Final = SecretRedactor()
"""The process-wide scrubber; the service registers its configured tokens here."""


def register_secret(*secrets: str | None) -> None:
    """Register secrets with the process-wide redactor.

    .. versionadded:: 0.1.0
    """
    default_redactor.register(*secrets)


def scrub_then_cut(text: str, limit: int, *also: str | None, mark: str = "…") -> str:
    """``default_redactor.scrub_then_cut``: the way to shorten any text that may hold a secret."""
    return default_redactor.scrub_then_cut(text, limit, *also, mark=mark)
