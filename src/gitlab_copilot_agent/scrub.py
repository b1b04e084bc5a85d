"""Scrub first, then cut: how the agent shortens any text that may hold a secret.

A secret cut in half no longer matches the redactor, so text is always
scrubbed whole and shortened afterwards. To bound the work on a huge input
(a 10 MB error page) only a window is scrubbed; the window reaches
``WINDOW_MARGIN`` characters past the cut, further than any secret is long,
so a secret split by the window's edge lies wholly beyond the cut and is
dropped with the rest (the same reasoning as ``SecretRedactor.clean``).
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Final

from auditrail.redact import MIN_SECRET_CHARS, REDACTED, default_redactor

WINDOW_MARGIN: Final = 4096
"""How far past the cut the scrubbed window reaches; longer than any credential."""


def scrub(text: str, *also: str | None) -> str:
    """``text`` with ``also`` (exact values) and everything the process redactor knows replaced."""
    for secret in also:
        if secret:
            text = text.replace(secret, REDACTED)
    return default_redactor.redact(text)


def scrub_then_cut(text: str, limit: int, *also: str | None) -> str:
    """Scrub, then shorten to ``limit`` characters (the last one an ellipsis when cut)."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    clean = scrub(text[: limit + WINDOW_MARGIN], *also)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def secret_forms(value: str) -> list[str]:
    """The ways ``value`` can be spelt in text: as is, and escaped as Python shows it.

    An exception that carries a header value shows ``b'tok\\n'`` or ``'tok\\t'``
    (httpx and h11 do), which the plain value does not match; the escaped
    forms are registered too. (URL-encoded forms are added by the redactor.)
    Forms shorter than ``MIN_SECRET_CHARS`` are left out (the redactor refuses them).
    """
    forms = {value, value.strip(), repr(value)[1:-1]}
    forms.add(repr(value.encode("utf-8", "backslashreplace"))[2:-1])
    return sorted(f for f in forms if len(f) >= MIN_SECRET_CHARS)


def userinfo_secrets(url: str | None) -> list[str]:
    """The credentials in a URL's userinfo, in each form they travel.

    The password and ``user:password``, as written and percent-decoded, and
    the ``Authorization: Basic`` value httpx builds from them (an endpoint that
    echoes its request headers shows that one; the redactor's ``Basic`` shape
    needs a word boundary before it, which an echo glued to other text lacks).
    """
    if not url:
        return []
    try:
        parts = urllib.parse.urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return []
    found: list[str] = []
    for raw in (password, f"{user}:{password}" if user and password else None):
        if raw:
            found += [raw, urllib.parse.unquote(raw)]
    if user is not None or password is not None:
        pair = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}"
        found.append(base64.b64encode(pair.encode()).decode())
    return found


def without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``: the form the agent shows in messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return scrub(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))
