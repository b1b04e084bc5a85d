"""What an entry must look like to be selected, and the byte tests that rule lines out early.

Every filter is checked on the parsed entry; that alone decides a match. Before
parsing, a line is tested for *needles*: byte strings that any matching line
must contain. A needle is only ever a necessary condition, so it can skip work
but never change a result:

* a string value is searched for as a JSON string token, quotes included
  (``"failure"``, ``"gitlab.api.`` for the glob ``gitlab.api.*``, a quoted
  correlation id), whatever the spacing around it;
* a JSON writer may spell any character as ``\\uXXXX`` (and ``/`` as ``\\/``),
  so a line that contains such an escape is a candidate for every needle
  (``has_escape``);
* a number can be spelt many ways (``123``, ``123.0``, ``1.23e2``), so for a
  value that may be a number, or ``true``/``false``/``null``, only its key is
  searched for (``"project_id"``).

Several values given for one filter are alternatives (OR); different filters
combine with AND.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from auditkeep.query._timeparse import canonical, timestamp_key, uuid7_datetime

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")

_LITERALS = frozenset({"true", "false", "null"})
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

NeedleGroup = tuple[bytes, ...]
"""Alternatives: a candidate line contains at least one of them."""


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """The conditions an entry must meet to be selected; all given ones must hold.

    Args:
        since: Keep entries at or after this time (aware ``datetime``).
        until: Keep entries strictly before this time.
        actions: Shell-style globs on ``action`` (``gitlab.api.*``); any may match.
        actor_type: Exact ``actor.type``.
        actor_id: Exact ``actor.id``.
        targets: ``(key, value)`` pairs that must all be in ``target``. Values are
            compared as text, and numerically when both sides are numbers, so
            ``("project_id", "123")`` matches ``123``, ``123.0`` and ``"123"``.
        outcome: ``success`` or ``failure``.
        error: Exact error class (``rate_limit``).
        correlation_id: Exact ``correlation_id``; a UUID in any letter case.
        service: Exact ``service``.
        event_id: Exact ``event_id``; a UUID in any letter case.

    Ids are UUIDs stored in lower case (the schema's pattern), so a UUID given
    in upper or mixed case is lowered before it is compared or searched for;
    any other text is compared as given.

    .. versionadded:: 0.1.0
    """

    since: datetime | None = None
    until: datetime | None = None
    actions: tuple[str, ...] = ()
    actor_type: str | None = None
    actor_id: str | None = None
    targets: tuple[tuple[str, str], ...] = ()
    outcome: str | None = None
    error: str | None = None
    correlation_id: str | None = None
    service: str | None = None
    event_id: str | None = None

    def compile(self) -> Matcher:
        """Return the fast matcher for this filter."""
        return Matcher(self)

    def matches(self, entry: Mapping[str, Any]) -> bool:
        """Tell whether a parsed entry meets every condition."""
        return self.compile().matches(entry)

    def earliest_write(self) -> datetime | None:
        """A time before which no matching entry can have been written, if one is known.

        Entries are written after they are stamped, so ``since`` bounds them;
        a UUIDv7 correlation id carries the time its scope opened, and no entry
        of that scope is older.
        """
        bounds = [self.since] if self.since is not None else []
        for uuid in (self.correlation_id, self.event_id):
            opened = None if uuid is None else uuid7_datetime(uuid)
            if opened is not None:
                bounds.append(opened)
        return max(bounds) if bounds else None


def id_form(text: str) -> str:
    """The stored form of an id: a UUID lowered (the schema's case), other text as given."""
    return text.lower() if _UUID.fullmatch(text) else text


def value_matches(value: object, text: str, number: int | float | None) -> bool:
    """Compare an entry value with a value given as text.

    ``number`` is ``text`` as a JSON number, or None when it is not one.
    """
    if isinstance(value, str):
        return value == text
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if value is None:
        return text == "null"
    if isinstance(value, int | float):
        return number is not None and value == number
    return False


def as_number(text: str) -> int | float | None:
    """Return ``text`` as a number if it is spelt as a JSON number, else None."""
    match = _JSON_NUMBER.fullmatch(text)
    if match is None:
        return None
    if match.group(1) is None and match.group(2) is None:
        return int(text)
    return float(text)


def _glob_runs(pattern: str) -> list[tuple[str, bool, bool]]:
    """Split a glob into its runs of plain characters: (run, at start, at end)."""
    runs: list[tuple[str, bool, bool]] = []
    run: list[str] = []
    run_start = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        wildcard_end = i
        if char == "[":
            # fnmatch's rule: "[!]...]" and "[]...]" hold a literal "]"; without a closing
            # "]" the "[" is an ordinary character.
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            wildcard_end = close
            if close == -1:
                run.append(char)
                i += 1
                continue
        elif char not in "*?":
            run.append(char)
            i += 1
            continue
        runs.append(("".join(run), run_start == 0, False))
        run = []
        i = wildcard_end + 1
        run_start = i
    runs.append(("".join(run), run_start == 0, True))
    return runs


def glob_literal(pattern: str) -> str:
    """Return the longest run of plain characters in a glob: a substring of any match."""
    return max(_glob_runs(pattern), key=lambda run: len(run[0]))[0]


def glob_needle(pattern: str) -> bytes:
    """Return bytes that the JSON string of any value matching the glob contains (b"" if none).

    A run at either end of the pattern is also at that end of the value, so the
    string's quote is part of the needle there.
    """
    literal, at_start, at_end = max(_glob_runs(pattern), key=lambda run: len(run[0]))
    if not literal:
        return b""
    needle = orjson.dumps(literal)[1:-1]
    return (b'"' if at_start else b"") + needle + (b'"' if at_end else b"")


def has_escape(line: bytes | bytearray) -> bool:
    """Tell whether a line holds a ``\\u`` or ``\\/`` escape, which could hide any needle."""
    return b"\\u" in line or b"\\/" in line


def _text_group(key: str, text: str) -> NeedleGroup:
    if as_number(text) is not None or text in _LITERALS:
        # It can also match a number or true/false/null, which are spelt without
        # quotes (and numbers in many ways): only the key is certain to be there.
        return (orjson.dumps(key),)
    return (orjson.dumps(text),)


class Matcher:
    """An ``EntryFilter`` prepared for millions of lines: needles and precomputed values.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_action_res",
        "_actor_id",
        "_actor_type",
        "_checks",
        "_correlation_id",
        "_error",
        "_event_id",
        "_outcome",
        "_service",
        "_since",
        "_targets",
        "_until",
        "entry_filter",
        "needle_groups",
    )

    def __init__(self, entry_filter: EntryFilter) -> None:
        self.entry_filter = f = entry_filter
        self._since = None if f.since is None else canonical(f.since)
        self._until = None if f.until is None else canonical(f.until)
        self._action_res = tuple(re.compile(fnmatch.translate(glob)) for glob in f.actions)
        self._outcome = _prepared(f.outcome)
        self._error = _prepared(f.error)
        self._correlation_id = _prepared(_id_or_none(f.correlation_id))
        self._event_id = _prepared(_id_or_none(f.event_id))
        self._service = _prepared(f.service)
        self._actor_type = _prepared(f.actor_type)
        self._actor_id = _prepared(f.actor_id)
        self._targets = tuple((key, text, as_number(text)) for key, text in f.targets)
        self._checks = any(
            (
                self._since,
                self._until,
                self._action_res,
                self._outcome,
                self._error,
                self._correlation_id,
                self._event_id,
                self._service,
                self._actor_type,
                self._actor_id,
                self._targets,
            )
        )
        self.needle_groups = self._needles()

    def _needles(self) -> tuple[NeedleGroup, ...]:
        f = self.entry_filter
        groups: list[NeedleGroup] = []
        for key, text in (
            ("correlation_id", _id_or_none(f.correlation_id)),
            ("event_id", _id_or_none(f.event_id)),
            ("error", f.error),
            ("outcome", f.outcome),
            ("service", f.service),
            ("type", f.actor_type),
            ("id", f.actor_id),
        ):
            if text is not None:
                groups.append(_text_group(key, text))
        groups.extend(_text_group(key, text) for key, text in f.targets)
        if f.actions:
            needles = [glob_needle(glob) for glob in f.actions]
            if all(needles):
                groups.append(tuple(dict.fromkeys(needles)))
        return tuple(groups)

    @property
    def selects_all(self) -> bool:
        """True when the filter has no condition at all."""
        return not self._checks

    def matches(self, entry: Mapping[str, Any]) -> bool:
        """Tell whether a parsed entry meets every condition of the filter."""
        if not self._checks:
            return True
        get = entry.get
        if self._outcome and not value_matches(get("outcome"), *self._outcome):
            return False
        if self._error and not value_matches(get("error"), *self._error):
            return False
        if self._correlation_id and not value_matches(get("correlation_id"), *self._correlation_id):
            return False
        if self._event_id and not value_matches(get("event_id"), *self._event_id):
            return False
        if self._service and not value_matches(get("service"), *self._service):
            return False
        if self._actor_type or self._actor_id:
            actor = get("actor")
            if not isinstance(actor, dict):
                return False
            if self._actor_type and not value_matches(actor.get("type"), *self._actor_type):
                return False
            if self._actor_id and not value_matches(actor.get("id"), *self._actor_id):
                return False
        if self._targets:
            target = get("target")
            if not isinstance(target, dict):
                return False
            for key, text, number in self._targets:
                if key not in target or not value_matches(target[key], text, number):
                    return False
        if self._action_res:
            action = get("action")
            if not isinstance(action, str) or not any(
                regex.match(action) for regex in self._action_res
            ):
                return False
        if self._since is not None or self._until is not None:
            stamp = timestamp_key(get("timestamp"))
            if stamp is None:
                return False
            if self._since is not None and stamp < self._since:
                return False
            if self._until is not None and stamp >= self._until:
                return False
        return True


def _id_or_none(text: str | None) -> str | None:
    return None if text is None else id_form(text)


def _prepared(text: str | None) -> tuple[str, int | float | None] | None:
    return None if text is None else (text, as_number(text))
