"""Scrub first, then cut: the agent's helpers over the library's one scrubber.

``scrub`` and ``scrub_then_cut`` are ``auditkeep.redact``'s (the process-wide
redactor, which knows every configured secret, plus exact values a caller
holds); the helpers below list the forms a configured secret can take in text,
for registering them at start.
"""

from __future__ import annotations

import base64
import urllib.parse

from auditkeep.redact import MIN_SECRET_CHARS, default_redactor
from auditkeep.redact import scrub_then_cut as scrub_then_cut


def scrub(text: str, *also: str | None) -> str:
    """``text`` with ``also`` (exact values) and everything the process redactor knows replaced."""
    return default_redactor.redact(text, *also)


def secret_forms(value: str) -> list[str]:
    """The ways ``value`` can be spelt in text: as is, stripped, and as a bytes repr.

    An exception that carries a header value shows ``b'tok\\n'`` (httpx and
    h11 do), which the plain value does not match; that form is registered
    too. (URL, JSON and ``repr`` escaping of each are added by the redactor,
    ``auditkeep.redact.secret_forms``.) Forms shorter than ``MIN_SECRET_CHARS``
    are left out (the redactor refuses them).
    """
    forms = {value, value.strip()}
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
