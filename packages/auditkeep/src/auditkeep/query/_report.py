"""``report``: a summary of a time range; ``trace``: the timeline of one correlation id.

Percentiles use the nearest-rank method: p95 is the smallest duration that at
least 95 % of the calls did not exceed, always a duration that was measured.

Activity by actor type puts what webhooks caused beside what poll cycles (or
admin actions) caused: per ``actor.type``, the entries, the failures, the
distinct correlation ids (deliveries, cycles: the units of work) and the p95
duration of the calls that carry one.

Webhook authentication failures are the failed entries whose action has a
dotted part starting with ``webhook`` (``webhook.auth``, ``webhook.received``).
Their source IP and rejection reason are read from ``details``, then
``target``, then the entry itself (``source_ip``, ``rejection_reason``); the
reason falls back to the error class.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from auditkeep.query._format import (
    describe_error,
    describe_target,
    escape_terminal,
    format_ms,
)
from auditkeep.query._table import Column, fill, render_table
from auditkeep.query._timeparse import key_to_datetime, timestamp_key

DEFAULT_TOP: Final = 10
_UNKNOWN: Final = "(unknown)"


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _field(entry: Mapping[str, Any], name: str) -> object:
    for holder in (entry.get("details"), entry.get("target"), entry):
        if isinstance(holder, dict) and holder.get(name) not in (None, ""):
            return holder[name]
    return None


def _is_webhook(action: object) -> bool:
    return isinstance(action, str) and any(part.startswith("webhook") for part in action.split("."))


def _label(value: object) -> str:
    if value is None:
        return _UNKNOWN
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class _KindStats:
    """What the report keeps of one actor type."""

    __slots__ = ("correlations", "durations", "entries", "failures")

    def __init__(self) -> None:
        self.entries = 0
        self.failures = 0
        self.correlations: set[str] = set()
        self.durations: list[float] = []

    def merge(self, other: _KindStats) -> None:
        self.entries += other.entries
        self.failures += other.failures
        self.correlations |= other.correlations
        self.durations.extend(other.durations)


class ReportBuilder:
    """Accumulates entries into the figures of ``auditkeep report``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, top: int = DEFAULT_TOP) -> None:
        if top < 1:
            raise ValueError("top must be at least 1")
        self.top = top
        self.entries = 0
        self.first: str | None = None
        self.last: str | None = None
        self.by_action: dict[tuple[str, str], int] = {}
        self.errors: dict[str, int] = {}
        self.webhook_failures: dict[tuple[str, str], int] = {}
        self.targets: dict[bytes, int] = {}
        self.actors: dict[tuple[str, str], int] = {}
        self.durations: dict[str, list[float]] = {}
        # Per actor type: one lookup an entry (this runs once per entry of the range).
        self.actor_types: dict[str, _KindStats] = {}

    def collect(self, line: bytes | bytearray, entry: dict[str, Any]) -> None:
        """Count one matching entry (the scan's collector interface)."""
        self.add(entry)

    def merge(self, other: ReportBuilder) -> None:
        """Add the counts of a builder that saw other entries (a piece scanned in parallel)."""
        self.entries += other.entries
        for key in (other.first, other.last):
            if key is not None:
                self.first = key if self.first is None else min(self.first, key)
                self.last = key if self.last is None else max(self.last, key)
        for mine, theirs in (
            (self.by_action, other.by_action),
            (self.errors, other.errors),
            (self.webhook_failures, other.webhook_failures),
            (self.targets, other.targets),
            (self.actors, other.actors),
        ):
            _add_counts(mine, theirs)
        for action, values in other.durations.items():
            self.durations.setdefault(action, []).extend(values)
        for kind, theirs_kind in other.actor_types.items():
            self.actor_types.setdefault(kind, _KindStats()).merge(theirs_kind)

    def add(self, entry: Mapping[str, Any]) -> None:
        """Count one entry."""
        # Plain dicts rather than Counter: this runs once per entry of the range.
        self.entries += 1
        key = timestamp_key(entry.get("timestamp"))
        if key is not None:
            if self.first is None or key < self.first:
                self.first = key
            if self.last is None or key > self.last:
                self.last = key
        raw_action = entry.get("action")
        action = raw_action if type(raw_action) is str else _label(raw_action)
        raw_outcome = entry.get("outcome")
        outcome = raw_outcome if type(raw_outcome) is str else _label(raw_outcome)
        by_action = self.by_action
        pair = (action, outcome)
        by_action[pair] = by_action.get(pair, 0) + 1
        if outcome == "failure":
            error = _label(entry.get("error"))
            self.errors[error] = self.errors.get(error, 0) + 1
            if _is_webhook(raw_action):
                reason = _label(_field(entry, "rejection_reason") or entry.get("error"))
                where = (_label(_field(entry, "source_ip")), reason)
                self.webhook_failures[where] = self.webhook_failures.get(where, 0) + 1
        target = entry.get("target")
        if type(target) is dict:
            packed = orjson.dumps(target, option=orjson.OPT_SORT_KEYS)
            self.targets[packed] = self.targets.get(packed, 0) + 1
        actor = entry.get("actor")
        kind = _UNKNOWN
        if type(actor) is dict:
            who = (_label(actor.get("type")), _label(actor.get("id")))
            self.actors[who] = self.actors.get(who, 0) + 1
            kind = who[0]
        stats = self.actor_types.get(kind)
        if stats is None:
            stats = self.actor_types[kind] = _KindStats()
        stats.entries += 1
        if outcome == "failure":
            stats.failures += 1
        correlation = entry.get("correlation_id")
        if type(correlation) is str:
            stats.correlations.add(correlation)
        duration = entry.get("duration_ms")
        if type(duration) is float or type(duration) is int:
            values = self.durations.get(action)
            if values is None:
                values = self.durations[action] = []
            values.append(duration)
            stats.durations.append(duration)

    def result(self) -> dict[str, Any]:
        """The report as plain data (what ``--format json`` prints).

        .. versionadded:: 0.1.0
        """
        outcomes: dict[str, dict[str, int]] = {}
        for (action, outcome), count in self.by_action.items():
            outcomes.setdefault(action, {})[outcome] = count
        ranked = sorted(
            ((sum(counts.values()), action, counts) for action, counts in outcomes.items()),
            key=lambda item: (-item[0], item[1]),
        )
        by_action = [
            {
                "action": action,
                "success": counts.get("success", 0),
                "failure": counts.get("failure", 0),
                "total": total,
            }
            for total, action, counts in ranked
        ]
        timings = []
        for action, values in self.durations.items():
            values.sort()
            timings.append((percentile(values, 0.95), action, values))
        timings.sort(key=lambda item: (-item[0], item[1]))
        slowest = [
            {
                "action": action,
                "calls": len(values),
                "p50_ms": percentile(values, 0.50),
                "p95_ms": p95,
                "max_ms": values[-1],
            }
            for p95, action, values in timings[: self.top]
        ]
        return {
            "top": self.top,
            "entries": self.entries,
            "failures": sum(self.errors.values()),
            "first_timestamp": self.first,
            "last_timestamp": self.last,
            "by_actor_type": self._by_actor_type(),
            "by_action": by_action,
            "failures_by_error": [
                {"error": error, "count": count} for error, count in _ranked(self.errors)
            ],
            "webhook_auth_failures": [
                {"source_ip": source, "reason": reason, "count": count}
                for (source, reason), count in _ranked(self.webhook_failures, self.top)
            ],
            "busiest_targets": [
                {"target": orjson.loads(target), "count": count}
                for target, count in _ranked(self.targets, self.top)
            ],
            "busiest_actors": [
                {"actor_type": kind, "actor_id": ident, "count": count}
                for (kind, ident), count in _ranked(self.actors, self.top)
            ],
            "slowest_actions": slowest,
        }

    def _by_actor_type(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for kind, stats in self.actor_types.items():
            durations = sorted(stats.durations)
            rows.append(
                {
                    "actor_type": kind,
                    "entries": stats.entries,
                    "failures": stats.failures,
                    "correlations": len(stats.correlations),
                    "p95_ms": percentile(durations, 0.95) if durations else None,
                }
            )
        rows.sort(key=lambda row: (-int(row["entries"]), str(row["actor_type"])))
        return rows


def _add_counts(mine: dict[Any, int], theirs: dict[Any, int]) -> None:
    for key, count in theirs.items():
        mine[key] = mine.get(key, 0) + count


def _ranked(counts: dict[Any, int], top: int | None = None) -> list[tuple[Any, int]]:
    # Most common first; ties in a stable, readable order.
    if top is not None:
        return heapq.nsmallest(top, counts.items(), key=lambda item: (-item[1], item[0]))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _counts(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name, rank, right=True) for rank, name in enumerate(names, start=1))


_BY_ACTION: Final = (Column("ACTION", 0, wrap=True), *_counts("SUCCESS", "FAILURE", "TOTAL"))
_BY_ACTOR_TYPE: Final = (
    Column("ACTOR_TYPE", 0),
    *_counts("ENTRIES", "FAILURES", "CORRELATIONS", "P95_MS"),
)
_BY_ERROR: Final = (Column("ERROR", 0), *_counts("COUNT"))
_WEBHOOK_FAILURES: Final = (
    Column("SOURCE_IP", 0),
    Column("REASON", 1, wrap=True),
    Column("COUNT", 2, right=True),
)
_BUSIEST_TARGETS: Final = (Column("TARGET", 0, wrap=True), *_counts("COUNT"))
_BUSIEST_ACTORS: Final = (Column("ACTOR", 0), *_counts("COUNT"))
_SLOWEST: Final = (
    Column("ACTION", 0, wrap=True),
    Column("CALLS", 3, right=True),
    Column("P50_MS", 2, right=True),
    Column("P95_MS", 1, right=True),
    Column("MAX_MS", 4, right=True),
)


def render_report(report: Mapping[str, Any], *, width: int | None = None) -> str:
    """The report as text tables, each fitting ``width`` when given (see ``_table``).

    .. versionadded:: 0.1.0
    """
    out = [
        fill(
            f"{report['entries']} entries, {report['failures']} failures, "
            f"from {report['first_timestamp'] or '-'} to {report['last_timestamp'] or '-'}",
            width,
        )
    ]

    def section(title: str, columns: Sequence[Column], rows: list[list[str]]) -> None:
        out.append("\n" + fill(title, width))
        out.append(render_table(columns, rows, width=width) if rows else "(none)\n")

    section(
        "Activity by actor type",
        _BY_ACTOR_TYPE,
        [
            [
                row["actor_type"],
                str(row["entries"]),
                str(row["failures"]),
                str(row["correlations"]),
                format_ms(row["p95_ms"]) if row["p95_ms"] is not None else "-",
            ]
            for row in report["by_actor_type"]
        ],
    )
    section(
        "Calls by action and outcome",
        _BY_ACTION,
        [
            [row["action"], str(row["success"]), str(row["failure"]), str(row["total"])]
            for row in report["by_action"]
        ],
    )
    section(
        "Failures by error class",
        _BY_ERROR,
        [[row["error"], str(row["count"])] for row in report["failures_by_error"]],
    )
    section(
        f"Webhook authentication failures (top {report['top']} by source IP and reason)",
        _WEBHOOK_FAILURES,
        [
            [row["source_ip"], row["reason"], str(row["count"])]
            for row in report["webhook_auth_failures"]
        ],
    )
    section(
        f"Busiest targets (top {report['top']})",
        _BUSIEST_TARGETS,
        [[describe_target(row["target"]), str(row["count"])] for row in report["busiest_targets"]],
    )
    section(
        f"Busiest actors (top {report['top']})",
        _BUSIEST_ACTORS,
        [
            [f"{row['actor_type']}:{row['actor_id']}", str(row["count"])]
            for row in report["busiest_actors"]
        ],
    )
    section(
        f"Slowest actions (top {report['top']} by p95 duration)",
        _SLOWEST,
        [
            [
                row["action"],
                str(row["calls"]),
                format_ms(row["p50_ms"]),
                format_ms(row["p95_ms"]),
                format_ms(row["max_ms"]),
            ]
            for row in report["slowest_actions"]
        ],
    )
    return "".join(out)


TRACE_TABLE: Final = (
    Column("OFFSET_S", 0),
    Column("ACTION", 1, wrap=True, max_width=40),
    Column("TARGET", 3, wrap=True, min_width=16),
    Column("OUTCOME", 2),
    Column("MS", 4, right=True),
    Column("ERROR", 5, wrap=True, min_width=16, max_width=80),
)


def trace_summary(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Count the calls and failures of a trace and measure its time.

    ``span_s`` runs from the first entry's timestamp to the last one's;
    ``in_calls_s`` adds up the entries' ``duration_ms``.
    """
    keys = [timestamp_key(entry.get("timestamp")) for entry in entries]
    stamped = [key_to_datetime(key) for key in keys if key is not None]
    span = (stamped[-1] - stamped[0]).total_seconds() if stamped else 0.0
    durations = [
        float(value)
        for value in (entry.get("duration_ms") for entry in entries)
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return {
        "calls": len(entries),
        "failures": sum(1 for entry in entries if entry.get("outcome") == "failure"),
        "span_s": span,
        "in_calls_s": sum(durations) / 1000,
    }


def render_trace(
    correlation_id: str, entries: Sequence[Mapping[str, Any]], *, width: int | None = None
) -> str:
    """The timeline of one correlation id: offsets from the first entry, then a summary.

    The table fits ``width`` when given (see ``_table``).

    .. versionadded:: 0.1.0
    """
    keys = [timestamp_key(entry.get("timestamp")) for entry in entries]
    origin = next((key_to_datetime(key) for key in keys if key is not None), None)
    rows = []
    for entry, key in zip(entries, keys, strict=True):
        if origin is None or key is None:
            offset = "?"
        else:
            offset = f"+{(key_to_datetime(key) - origin).total_seconds():.3f}"
        rows.append(
            [
                offset,
                _label(entry.get("action")),
                describe_target(entry.get("target")),
                _label(entry.get("outcome")),
                format_ms(entry.get("duration_ms")),
                describe_error(entry),
            ]
        )
    summary = trace_summary(entries)
    failures = summary["failures"]
    first = keys[0] if keys and keys[0] else "-"
    head = fill(f"trace {escape_terminal(correlation_id)}: first entry at {first}", width)
    table = render_table(TRACE_TABLE, rows, width=width)
    tail = fill(
        f"{summary['calls']} calls, {failures} {'failure' if failures == 1 else 'failures'}, "
        f"{summary['span_s']:.3f} s from first to last entry, "
        f"{summary['in_calls_s']:.3f} s in calls",
        width,
    )
    return head + table + tail
