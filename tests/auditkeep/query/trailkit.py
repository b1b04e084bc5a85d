"""Test helpers: a trail written by the real file sink (rotated, partly gzipped, malformed lines).

Test modules import this with their own directory put on ``sys.path`` (pytest runs
in importlib mode, and a second ``conftest.py`` would clash with the root one
for mypy). The ``oracle_*`` functions read the same files with nothing but
``gzip`` and ``json`` from the standard library, so expected results never come
from the code under test.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from auditkeep._ids import new_event_id
from auditkeep.sinks.file import FileSink

BASE = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
ACTIONS = (
    ("gitlab.api.get_mr_details", "merge_request"),
    ("gitlab.api.get_mr_diff", "merge_request"),
    ("gitlab.api.post_mr_note", "merge_request"),
    ("gitlab.api.post_commit_discussion", "commit"),
    ("gitlab.api.get_project_info", "project"),
    ("gitlab.api.clone_repo", "repository"),
    ("gitlab.api.push_branch", "branch"),
    ("jira.api.get_issue", "issue"),
    ("jira.api.transition_issue", "issue"),
    ("jira.api.add_comment", "issue"),
    ("jira.api.search_issues", "issue"),
    ("copilot.sdk.review_request", "merge_request"),
    ("copilot.sdk.coding_request", "merge_request"),
    ("copilot.sdk.response_received", "merge_request"),
    ("webhook.auth", "webhook"),
)
ERRORS = ("auth_failure", "rate_limit", "network_error", "timeout", "server_error")
MALFORMED = (
    b'{"schema_version":1,"event_id":"0190-torn',
    b"not json at all",
    b"[1,2,3]",
    b'{"action":"gitlab.api.get_mr_diff","outcome":"failure",',
)


def stamp(moment: datetime) -> str:
    """The logger's timestamp form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def uuid7_at(moment: datetime) -> str:
    """A UUIDv7 carrying ``moment``, as the logger makes them."""
    return new_event_id(int(moment.timestamp() * 1e9))


def make_entries(count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """A realistic, deterministic mix of entries, a few seconds apart, slightly out of order."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []
    correlation = ""
    for i in range(count):
        # Two writers share the file: now and then an entry lands a little late.
        moment = BASE + timedelta(seconds=7 * i, microseconds=rng.randrange(1_000_000))
        if i % 9 == 4:
            moment -= timedelta(seconds=10)
        if i % 6 == 0:
            correlation = uuid7_at(moment - timedelta(seconds=1))
        action, resource = ACTIONS[rng.randrange(len(ACTIONS))]
        target: dict[str, Any] = {"resource_type": resource}
        if resource == "issue":
            target["issue_key"] = f"ABC-{rng.randrange(1, 4)}"
        else:
            target["project_id"] = rng.choice((123, 124, 7))
        if resource == "merge_request":
            target["mr_iid"] = rng.choice((45, 46))
        if resource == "branch":
            target["branch"] = rng.choice(("feature/x", "=HYPERLINK(1)"))
            target["commit_sha"] = f"{rng.getrandbits(160):040x}"
        entry: dict[str, Any] = {
            "schema_version": 1,
            "event_id": new_event_id(int(moment.timestamp() * 1e9)),
            "timestamp": stamp(moment),
            "event_type": "audit",
            "action": action,
            "actor": {
                "type": rng.choice(("webhook_event", "poll_cycle")),
                "id": f"actor-{rng.randrange(4)}",
            },
            "target": target,
            "outcome": "success",
            "correlation_id": correlation,
            "service": "gitlab-copilot-agent" if i % 10 else "copilot-task",
            "duration_ms": round(rng.uniform(1, 400), 3),
            "http_status": 200,
        }
        if rng.random() < 0.2:
            entry["outcome"] = "failure"
            entry["error"] = rng.choice(ERRORS)
            entry["error_message"] = "upstream \x1b[31mrefused\x1b[0m"
            entry["http_status"] = 503
        if action == "webhook.auth" and entry["outcome"] == "failure":
            entry["details"] = {"source_ip": "203.0.113.9", "rejection_reason": "invalid_token"}
        if i % 50 == 17:
            # An entry from before schema_version and event_id existed.
            del entry["schema_version"], entry["event_id"]
        entries.append(entry)
    return entries


def encode(entry: dict[str, Any]) -> bytes:
    """The logger's encoding: compact orjson."""
    return orjson.dumps(entry)


@dataclass
class Trail:
    """Files written by FileSink and what went into them."""

    live: Path
    entries: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.live.parent


def write_with_sink(
    live: Path,
    lines: Sequence[bytes],
    *,
    max_bytes: int,
    compress: bool,
    batch: int = 20,
    backups: int = 20,
) -> None:
    """Write lines through a real FileSink in batches."""
    sink = FileSink(live, max_bytes=max_bytes, backups=backups, compress=compress)
    try:
        for start in range(0, len(lines), batch):
            result = sink.write_batch(lines[start : start + batch])
            assert result.ok
    finally:
        sink.close(1.0)


def build_trail(directory: Path, count: int = 400) -> Trail:
    """Entries through FileSink: first with gzip rotation, then plain, malformed lines between."""
    live = directory / "audit.jsonl"
    entries = make_entries(count)
    lines = [encode(entry) for entry in entries]
    half = len(lines) // 2
    first = lines[:half]
    second = lines[half:]
    # Torn writes land inside batches, so some end up in the gzipped backups.
    first = [*first[:30], MALFORMED[0], *first[30:90], MALFORMED[1], *first[90:]]
    second = [*second[:40], MALFORMED[2], *second[40:]]
    write_with_sink(live, first, max_bytes=24_000, compress=True)
    write_with_sink(live, second, max_bytes=24_000, compress=False)
    with live.open("ab") as handle:
        handle.write(MALFORMED[3])  # a line still being written: no newline yet
    trail = Trail(live, entries)
    trail.files = oracle_files(live)
    return trail


def oracle_files(live: Path) -> list[Path]:
    """The live file and its backups, oldest first, listed without the code under test."""
    backups = []
    for path in live.parent.iterdir():
        suffix = path.name[len(live.name) + 1 :].removesuffix(".gz")
        if path.name.startswith(live.name + ".") and suffix.isdigit():
            backups.append((int(suffix), path))
    return [path for _, path in sorted(backups, reverse=True)] + [live]


def oracle_lines(path: Path) -> list[tuple[int, bytes]]:
    """(byte offset, line) of every non-empty line of a file, gzipped or not."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    out = []
    offset = 0
    for line in data.split(b"\n"):
        if line:
            out.append((offset, line))
        offset += len(line) + 1
    return out


def oracle_entries(files: Sequence[Path]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Every well-formed entry of the files, with its stored line, in file order."""
    for path in files:
        for _, line in oracle_lines(path):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield line, value


def oracle_malformed(files: Sequence[Path]) -> dict[str, list[int]]:
    """Byte offsets of the lines that are not JSON objects, per file."""
    out: dict[str, list[int]] = {}
    for path in files:
        for offset, line in oracle_lines(path):
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                out.setdefault(str(path), []).append(offset)
    return out


def oracle_query(files: Sequence[Path], predicate: Callable[[dict[str, Any]], bool]) -> list[bytes]:
    """Stored lines of the entries that satisfy ``predicate``, sorted by (timestamp, event_id)."""
    chosen = [(entry, line) for line, entry in oracle_entries(files) if predicate(entry)]
    chosen.sort(key=lambda pair: (pair[0]["timestamp"], pair[0].get("event_id") or "", pair[1]))
    return [line for _, line in chosen]
