"""Output: a table for people, JSON lines exactly as stored, CSV for spreadsheets.

Entry strings are untrusted (branch names, comment text, error bodies), so:

* the table escapes every control character, DEL, the C1 controls, and the
  Unicode line separators and direction overrides: an ANSI escape sequence or a
  carriage return in an entry prints as ``\\x1b`` or ``\\x0d`` and can neither
  drive the terminal nor disguise a row;
* CSV cells that come from strings and start with ``=``, ``+``, ``-``, ``@``, a
  tab or a carriage return get a leading ``'``, so a spreadsheet shows them as
  text instead of running them as a formula (CSV injection, CWE-1236).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import orjson

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")

CSV_COLUMNS: Final = (
    "timestamp",
    "event_id",
    "action",
    "actor_type",
    "actor_id",
    "target_resource_type",
    "target_project_id",
    "target_mr_iid",
    "target_issue_key",
    "target_branch",
    "target_commit_sha",
    "target",
    "outcome",
    "error",
    "error_message",
    "correlation_id",
    "service",
    "duration_ms",
    "http_status",
    "details",
)
_CSV_TARGET_KEYS: Final = ("resource_type", "project_id", "mr_iid", "issue_key", "branch")


class TextOut(Protocol):
    """Where text output goes: anything with ``write(str)``."""

    def write(self, text: str, /) -> int: ...


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_terminal(text: str) -> str:
    """Make untrusted text safe to print on a terminal: escape every control character."""
    return _UNSAFE.sub(_escape_char, text)


def csv_safe(text: str) -> str:
    """Neutralise a spreadsheet formula at the start of a cell with a leading quote."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def describe_target(target: object) -> str:
    """``merge_request project_id=123 mr_iid=45``: the resource type, then key=value pairs."""
    fields = _mapping(target)
    parts = [_text(fields.get("resource_type", ""))]
    parts.extend(f"{key}={_text(value)}" for key, value in fields.items() if key != "resource_type")
    return " ".join(part for part in parts if part)


def describe_actor(actor: object) -> str:
    """``type:id`` of an entry's actor."""
    fields = _mapping(actor)
    return f"{_text(fields.get('type'))}:{_text(fields.get('id'))}"


def describe_error(entry: Mapping[str, Any]) -> str:
    """The error class, followed by the message when there is one."""
    error = _text(entry.get("error"))
    message = _text(entry.get("error_message"))
    return f"{error}: {message}" if error and message else error or message


def format_ms(value: object) -> str:
    """A duration in milliseconds with one decimal, or "" when there is none."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}"
    return _text(value)


def query_row(entry: Mapping[str, Any]) -> list[str]:
    """The table cells of one entry, in the order of ``_table.QUERY_TABLE``."""
    return [
        _text(entry.get("timestamp")),
        _text(entry.get("action")),
        describe_actor(entry.get("actor")),
        describe_target(entry.get("target")),
        _text(entry.get("outcome")),
        describe_error(entry),
        format_ms(entry.get("duration_ms")),
        _text(entry.get("http_status")),
        _text(entry.get("correlation_id")),
    ]


def csv_row(entry: Mapping[str, Any]) -> list[str]:
    """The CSV cells of one entry, in ``CSV_COLUMNS`` order, formula-safe."""
    actor = _mapping(entry.get("actor"))
    target = _mapping(entry.get("target"))
    values: list[object] = [
        entry.get("timestamp"),
        entry.get("event_id"),
        entry.get("action"),
        actor.get("type"),
        actor.get("id"),
        *(target.get(key) for key in _CSV_TARGET_KEYS),
        target.get("commit_sha"),
        target or None,
        entry.get("outcome"),
        entry.get("error"),
        entry.get("error_message"),
        entry.get("correlation_id"),
        entry.get("service"),
        entry.get("duration_ms"),
        entry.get("http_status"),
        entry.get("details"),
    ]
    return [csv_safe(value) if isinstance(value, str) else _text(value) for value in values]


class CsvWriter:
    """Writes entries as CSV with a header row.

    .. versionadded:: 0.1.0
    """

    def __init__(self, out: TextOut) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(CSV_COLUMNS)

    def write(self, entry: Mapping[str, Any]) -> None:
        """Write one entry as a row."""
        self._writer.writerow(csv_row(entry))


def render_csv(entries: Iterable[Mapping[str, Any]]) -> str:
    """The CSV text of some entries, header included."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    for entry in entries:
        writer.write(entry)
    return buffer.getvalue()
