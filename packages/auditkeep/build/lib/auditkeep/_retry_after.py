"""``Retry-After`` (RFC 9110 §10.2.3): the one parser, for the http sink and HTTP clients.

A destination or an API under load answers 429 or 503 with how long to wait,
as delay-seconds (``120``) or as an HTTP-date (``Wed, 21 Oct 2015 07:28:00
GMT``). The value comes from the network, so it is read defensively:

- delay-seconds are ASCII digits, optionally with a fraction (``1.5``, which
  some servers send); no sign, exponent, underscore or other script's digits;
- an HTTP-date in any of the three forms RFC 9110 asks recipients to accept
  (IMF-fixdate, RFC 850, asctime) is read as GMT when it names no zone, and
  becomes the time left until then, 0 when it is past;
- a wait longer than ``MAX_RETRY_AFTER_S`` (one day) is clamped to it: the
  server asked for "a long time", which is not the same as asking nothing;
  clamping keeps the number finite for the caller's arithmetic;
- anything else (empty, negative, ``inf``, ``nan``, garbage, an impossible
  date, more than 64 characters) is None: the caller uses its own backoff.

Callers bound the wait further by their own rules (the delivery pipeline to
300 s; an HTTP client's retry deadline ends its retries).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime
import email.utils
import re
import time
from typing import Final

MAX_RETRY_AFTER_S: Final = 86_400.0
"""The longest wait ``parse_retry_after`` returns (a longer one is clamped to it)."""
_MAX_CHARS: Final = 64  # an HTTP-date is 29 characters; anything this long is not one
_DELAY: Final = re.compile(r"(?P<whole>[0-9]+)(?:\.[0-9]+)?", re.ASCII)
_DAY_DIGITS: Final = len(str(int(MAX_RETRY_AFTER_S)))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None when absent or invalid.

    Args:
        value: the header's value (None when the header is absent).
        now: the current time as a Unix timestamp (default ``time.time()``),
            for an HTTP-date.

    Returns:
        A finite number of seconds from 0 to ``MAX_RETRY_AFTER_S``, or None.

    .. versionadded:: 0.1.0
    """
    if value is None or len(value) > _MAX_CHARS:
        return None
    value = value.strip()
    if not value:
        return None
    delay = _DELAY.fullmatch(value)
    if delay is not None:
        # Bounded before conversion: more digits than a day has is over the cap anyway.
        if len(delay["whole"]) > _DAY_DIGITS:
            return MAX_RETRY_AFTER_S
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)  # RFC 9110: an HTTP-date is GMT
    current = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - current), MAX_RETRY_AFTER_S)
