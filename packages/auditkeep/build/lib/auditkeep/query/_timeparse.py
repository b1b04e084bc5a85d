"""Times on the command line, and a sort key for the timestamps in entries.

Entries carry ISO 8601 timestamps with a ``Z`` or an offset and any precision
from milliseconds to nanoseconds. Comparing those strings directly is wrong
(``.123Z`` sorts after ``.1234Z``), so every timestamp is mapped to one canonical
form, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, whose string order is time order.
What the logger writes is already in that form and is used as it is: no parse
on the hot path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

CANONICAL_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_CANONICAL_LEN: Final = 27
_RELATIVE = re.compile(r"(\d+)\s*(s|sec|m|min|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS: Final = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.I)


def canonical(moment: datetime) -> str:
    """Return the canonical UTC form of an aware ``datetime`` (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(CANONICAL_FORMAT)


def timestamp_key(value: object) -> str | None:
    """Return the canonical form of an entry's ``timestamp``, or None if it has none.

    A timestamp without an offset (older writers) is taken as UTC.
    """
    if type(value) is not str:
        return None
    if len(value) == _CANONICAL_LEN and value[26] == "Z" and value[19] == "." and value[10] == "T":
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return canonical(moment)


def key_to_datetime(key: str) -> datetime:
    """Parse a canonical key back into an aware UTC ``datetime``."""
    return datetime.strptime(key, CANONICAL_FORMAT).replace(tzinfo=UTC)


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """Parse a ``--since``/``--until`` value into an aware UTC ``datetime``.

    Accepted forms: ISO 8601 (``2026-11-27``, ``2026-11-27T08:00``,
    ``2026-11-27T08:00:00+01:00``; no offset means UTC), a duration back from
    now (``90s``, ``30m``, ``24h``, ``7d``, ``2w``), and the words ``now``,
    ``today`` and ``yesterday`` (midnight UTC).

    Raises:
        ValueError: the text is none of these.

    .. versionadded:: 0.1.0
    """
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    word = text.strip().lower()
    if word == "now":
        return now
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    relative = _RELATIVE.fullmatch(word)
    if relative:
        amount, unit = relative.groups()
        return now - timedelta(seconds=int(amount) * _UNIT_SECONDS[unit])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601 such as 2026-11-27T08:00Z, "
            "a duration back from now such as 24h or 7d, or now/today/yesterday)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def uuid7_datetime(value: str) -> datetime | None:
    """Return the creation time encoded in a UUIDv7, or None for any other string."""
    if not _UUID7.fullmatch(value):
        return None
    millis = int(value[:8] + value[9:13], 16)
    return datetime.fromtimestamp(millis / 1000, UTC)
