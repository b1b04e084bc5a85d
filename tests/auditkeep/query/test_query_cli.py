"""``auditkeep query`` on a trail written by the real file sink."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditkeep.query import cli
from auditkeep.query._format import CSV_COLUMNS

sys.path.insert(0, str(Path(__file__).parent))
from trailkit import (
    MALFORMED,
    Trail,
    build_trail,
    encode,
    make_entries,
    oracle_entries,
    oracle_malformed,
    oracle_query,
    write_with_sink,
)

Predicate = Callable[[dict[str, Any]], bool]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    """One trail shared by the module's tests, which only read it."""
    return build_trail(tmp_path_factory.mktemp("trail"))


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    """Run the CLI in-process; return (exit code, stdout bytes, stderr text)."""
    code = cli.main(list(argv))
    captured = capsysbinary.readouterr()
    return code, captured.out, captured.err.decode()


def as_output(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def target(key: str, value: object) -> Predicate:
    return lambda entry: entry["target"].get(key) == value


FILTER_CASES: list[tuple[list[str], Predicate]] = [
    (
        ["--since", "2026-11-20T08:10:00Z", "--until", "2026-11-20T08:25:00Z"],
        lambda e: "2026-11-20T08:10:00.000000Z" <= e["timestamp"] < "2026-11-20T08:25:00.000000Z",
    ),
    (["--action", "gitlab.api.*"], lambda e: e["action"].startswith("gitlab.api.")),
    (
        ["--action", "*.push_branch", "--action", "jira.api.*"],
        lambda e: e["action"].endswith(".push_branch") or e["action"].startswith("jira.api."),
    ),
    (["--actor-type", "poll_cycle"], lambda e: e["actor"]["type"] == "poll_cycle"),
    (["--actor-id", "actor-2"], lambda e: e["actor"]["id"] == "actor-2"),
    (["--target", "project_id=123"], target("project_id", 123)),
    (["--target", "mr_iid=45"], target("mr_iid", 45)),
    (["--target", "resource_type=merge_request"], target("resource_type", "merge_request")),
    (["--target", "issue_key=ABC-1"], target("issue_key", "ABC-1")),
    (["--target", "branch=feature/x"], target("branch", "feature/x")),
    (
        ["--target", "project_id=123", "--target", "mr_iid=46"],
        lambda e: e["target"].get("project_id") == 123 and e["target"].get("mr_iid") == 46,
    ),
    (["--outcome", "failure"], lambda e: e["outcome"] == "failure"),
    (["--outcome", "success"], lambda e: e["outcome"] == "success"),
    (["--error", "rate_limit"], lambda e: e.get("error") == "rate_limit"),
    (["--service", "copilot-task"], lambda e: e["service"] == "copilot-task"),
    (
        # The selective query of the benchmark: one project, an action glob, failures, a window.
        [
            "--target",
            "project_id=123",
            "--action",
            "gitlab.api.*",
            "--outcome",
            "failure",
            "--since",
            "2026-11-20T08:05Z",
            "--until",
            "2026-11-20T08:40Z",
        ],
        lambda e: (
            e["target"].get("project_id") == 123
            and e["action"].startswith("gitlab.api.")
            and e["outcome"] == "failure"
            and "2026-11-20T08:05:00.000000Z" <= e["timestamp"] < "2026-11-20T08:40:00.000000Z"
        ),
    ),
]


class TestFilters:
    @pytest.mark.parametrize(
        ("args", "predicate"), FILTER_CASES, ids=[" ".join(a) for a, _ in FILTER_CASES]
    )
    def test_selects_exactly_the_matching_entries_in_time_order(
        self,
        capsysbinary: pytest.CaptureFixture[bytes],
        trail: Trail,
        args: list[str],
        predicate: Predicate,
    ) -> None:
        """Each filter prints exactly the entries that meet it, sorted by (timestamp, event_id)."""
        expected = oracle_query(trail.files, predicate)
        assert expected, "the trail must hold matches for every filter"
        code, out, _ = run(capsysbinary, "query", str(trail.live), "--format", "json", *args)
        assert (code, out) == (0, as_output(expected))

    def test_correlation_id_selects_one_scope(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """--correlation-id prints every entry of that scope and nothing else."""
        wanted = trail.entries[100]["correlation_id"]
        expected = oracle_query(trail.files, lambda e: e["correlation_id"] == wanted)
        code, out, _ = run(
            capsysbinary, "query", str(trail.live), "--format", "json", "--correlation-id", wanted
        )
        assert (code, out) == (0, as_output(expected))
        assert len(expected) == 6

    def test_limit_keeps_the_first_matches_in_time_order(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """--limit N prints the N earliest matches."""
        expected = oracle_query(trail.files, lambda e: e["outcome"] == "failure")[:5]
        code, out, _ = run(
            capsysbinary,
            "query",
            str(trail.live),
            "--format",
            "json",
            "--outcome",
            "failure",
            "--limit",
            "5",
        )
        assert (code, out) == (0, as_output(expected))

    def test_no_filter_prints_every_entry_of_every_file(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """Without filters every well-formed entry of the live file and its backups is printed."""
        expected = oracle_query(trail.files, lambda e: True)
        code, out, _ = run(capsysbinary, "query", str(trail.live), "--format", "json")
        assert (code, out) == (0, as_output(expected))
        assert len(expected) == len(trail.entries)


class TestInputs:
    def test_default_input_is_the_configured_file_and_its_rotations(
        self,
        capsysbinary: pytest.CaptureFixture[bytes],
        trail: Trail,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """With no path, AUDIT_LOG_FILE_PATH and its rotated backups are read."""
        monkeypatch.setenv("AUDIT_LOG_FILE_PATH", str(trail.live))
        expected = oracle_query(trail.files, lambda e: e["outcome"] == "failure")
        code, out, _ = run(capsysbinary, "query", "--format", "json", "--outcome", "failure")
        assert (code, out) == (0, as_output(expected))

    def test_directory_and_glob_read_the_same_files(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """A directory and a glob over the rotations give the same result as the live file."""
        expected = as_output(oracle_query(trail.files, lambda e: e["action"] == "webhook.auth"))
        args = ["--format", "json", "--action", "webhook.auth"]
        by_dir = run(capsysbinary, "query", str(trail.directory), *args)
        by_glob = run(capsysbinary, "query", f"{trail.live}*", *args)
        assert by_dir[:2] == by_glob[:2] == (0, expected)

    def test_no_rotations_reads_only_the_named_file(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """--no-rotations leaves the backups out."""
        expected = oracle_query([trail.live], lambda e: True)
        code, out, _ = run(
            capsysbinary, "query", str(trail.live), "--no-rotations", "--format", "json"
        )
        assert (code, out) == (0, as_output(expected))

    def test_entries_of_older_schema_versions_are_read(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """Entries without schema_version and event_id still match filters and print."""
        expected = oracle_query(trail.files, lambda e: "event_id" not in e)
        code, out, _ = run(capsysbinary, "query", str(trail.live), "--format", "json")
        assert code == 0
        assert [line for line in out.splitlines() if b'"event_id"' not in line] == expected
        assert len(expected) == 8

    def test_mixed_timestamp_forms_sort_by_instant(
        self, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
    ) -> None:
        """Offsets and millisecond or nanosecond precision are ordered by the instant they name."""
        stamps = [
            "2026-11-20T10:00:00.5Z",
            "2026-11-20T11:00:00.100000+01:00",  # 10:00:00.1 UTC
            "2026-11-20T10:00:00.300000000Z",
            "2026-11-20T10:00:00.2001Z",
        ]
        lines = [
            encode({"timestamp": stamp, "action": "a.b", "event_id": str(i)})
            for i, stamp in enumerate(stamps)
        ]
        path = tmp_path / "mixed.jsonl"
        write_with_sink(path, lines, max_bytes=0, compress=False)
        code, out, _ = run(
            capsysbinary,
            "query",
            str(path),
            "--format",
            "json",
            "--since",
            "2026-11-20T10:00:00.2Z",
        )
        assert (code, out) == (0, as_output([lines[3], lines[2], lines[0]]))


class TestFormats:
    def test_json_prints_each_entry_exactly_as_stored(
        self, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
    ) -> None:
        """JSON output is the stored bytes, however the writer spaced or escaped them."""
        first, second = make_entries(2)
        stored = [
            json.dumps(first).encode(),  # spaces after colons, \\u escapes
            json.dumps(second, separators=(",", ":"), ensure_ascii=False).encode(),
        ]
        path = tmp_path / "other-writer.jsonl"
        path.write_bytes(b"\n".join(stored) + b"\n")
        code, out, _ = run(capsysbinary, "query", str(path), "--format", "json")
        assert (code, out) == (0, as_output(stored))

    def test_table_shows_one_row_per_entry_with_escaped_control_characters(
        self, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
    ) -> None:
        """The table aligns columns and never lets an escape sequence reach the terminal."""
        entry = {
            "schema_version": 1,
            "event_id": "0190a000-0000-7000-8000-000000000001",
            "timestamp": "2026-11-20T08:00:01.000000Z",
            "event_type": "audit",
            "action": "gitlab.api.post_mr_note",
            "actor": {"type": "webhook_event", "id": "ev-1"},
            "target": {"resource_type": "merge_request", "project_id": 123, "mr_iid": 45},
            "outcome": "failure",
            "error": "rate_limit",
            "error_message": "\x1b[2J\x1b[31mslow down\r\u202e",
            "correlation_id": "0190a000-0000-7000-8000-0000000000aa",
            "service": "svc",
            "duration_ms": 12.345,
            "http_status": 429,
        }
        path = tmp_path / "audit.jsonl"
        write_with_sink(path, [encode(entry)], max_bytes=0, compress=False)
        code, out, _ = run(capsysbinary, "query", str(path), "--format", "table")
        assert code == 0
        assert out.decode().splitlines() == [
            "TIME                         ACTION                   ACTOR               "
            "TARGET                                  OUTCOME  "
            "ERROR                                             MS  STATUS  CORRELATION_ID",
            "2026-11-20T08:00:01.000000Z  gitlab.api.post_mr_note  webhook_event:ev-1  "
            "merge_request project_id=123 mr_iid=45  failure  "
            "rate_limit: \\x1b[2J\\x1b[31mslow down\\x0d\\u202e  12.3     429  "
            "0190a000-0000-7000-8000-0000000000aa",
        ]
        assert b"\x1b" not in out
        assert b"\r" not in out

    def test_csv_has_a_header_and_neutralises_formulas(
        self, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
    ) -> None:
        """CSV rows carry the entry's fields; a cell that starts like a formula gets a quote."""
        entry = {
            "schema_version": 1,
            "event_id": "0190a000-0000-7000-8000-000000000002",
            "timestamp": "2026-11-20T08:00:02.000000Z",
            "event_type": "audit",
            "action": "gitlab.api.push_branch",
            "actor": {"type": "webhook_event", "id": "@SUM(A1)"},
            "target": {
                "resource_type": "branch",
                "project_id": 7,
                "branch": '=HYPERLINK("http://x")',
                "commit_sha": "ab" * 20,
            },
            "outcome": "failure",
            "error": "git_error",
            "error_message": "-1+1",
            "correlation_id": "0190a000-0000-7000-8000-0000000000bb",
            "service": "+svc",
            "duration_ms": 5.5,
            "details": {"note": "=1"},
        }
        path = tmp_path / "audit.jsonl"
        write_with_sink(path, [encode(entry)], max_bytes=0, compress=False)
        code, out, _ = run(capsysbinary, "query", str(path), "--format", "csv")
        rows = list(csv.reader(io.StringIO(out.decode())))
        assert code == 0
        assert rows == [
            list(CSV_COLUMNS),
            [
                "2026-11-20T08:00:02.000000Z",
                "0190a000-0000-7000-8000-000000000002",
                "gitlab.api.push_branch",
                "webhook_event",
                "'@SUM(A1)",
                "branch",
                "7",
                "",
                "",
                '\'=HYPERLINK("http://x")',
                "ab" * 20,
                '{"resource_type":"branch","project_id":7,'
                '"branch":"=HYPERLINK(\\"http://x\\")","commit_sha":"' + "ab" * 20 + '"}',
                "failure",
                "git_error",
                "'-1+1",
                "0190a000-0000-7000-8000-0000000000bb",
                "'+svc",
                "5.5",
                "",
                '{"note":"=1"}',
            ],
        ]

    def test_default_format_off_a_terminal_is_json(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """Piped output defaults to JSON lines."""
        expected = oracle_query(trail.files, lambda e: e.get("error") == "timeout")
        code, out, _ = run(capsysbinary, "query", str(trail.live), "--error", "timeout")
        assert (code, out) == (0, as_output(expected))


class TestRobustness:
    def test_malformed_lines_are_counted_on_stderr(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """Torn and non-JSON lines, in plain and gzipped files, are skipped and reported."""
        malformed = oracle_malformed(trail.files)
        code, _, err = run(
            capsysbinary, "query", str(trail.live), "--format", "json", "--since", "2026-01-01"
        )
        parts = "; ".join(
            f"{path}: {len(offsets)} (at byte {', '.join(map(str, offsets))})"
            for path, offsets in sorted(
                malformed.items(), key=lambda item: trail_order(trail, item[0])
            )
        )
        assert code == 0
        assert err == f"auditkeep: skipped {len(MALFORMED)} malformed or truncated lines: {parts}\n"
        assert any(path.endswith(".gz") for path in malformed)

    def test_truncated_gzip_is_an_error_but_the_rest_is_printed(
        self, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
    ) -> None:
        """A cut gzip file gives exit code 2 and a message; readable entries still print."""
        entries = make_entries(300, seed=3)
        live = tmp_path / "audit.jsonl"
        write_with_sink(live, [encode(e) for e in entries], max_bytes=30_000, compress=True)
        backup = tmp_path / "audit.jsonl.1.gz"
        data = backup.read_bytes()
        backup.write_bytes(data[: len(data) // 2])
        # What survives: every complete line zlib can still inflate, and the live file.
        partial = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2])
        survivors = partial[: partial.rfind(b"\n")].split(b"\n")
        survivors += [line for line, _ in oracle_entries([live])]
        parsed = {line: json.loads(line) for line in survivors}
        expected = sorted(
            survivors,
            key=lambda line: (parsed[line]["timestamp"], parsed[line].get("event_id", ""), line),
        )
        code, out, err = run(
            capsysbinary, "query", str(backup), str(live), "--no-rotations", "--format", "json"
        )
        assert (code, out, err) == (
            2,
            as_output(expected),
            f"auditkeep: cannot read {backup}: compressed file is truncated\n",
        )


def trail_order(trail: Trail, path: str) -> int:
    return [str(p) for p in trail.files].index(path)


class TestExitCodes:
    def test_no_match_exits_1_with_empty_output(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """A query without matches prints nothing and exits 1."""
        code, out, _ = run(capsysbinary, "query", str(trail.live), "--service", "nobody")
        assert (code, out) == (1, b"")

    def test_missing_file_exits_2(
        self, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
    ) -> None:
        """A path that does not exist is an error."""
        missing = tmp_path / "nope.jsonl"
        code, out, err = run(capsysbinary, "query", str(missing))
        assert (code, out, err) == (2, b"", f"auditkeep: no such file: {missing}\n")

    def test_no_input_and_no_configured_path_exits_2(
        self, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a path and without AUDIT_LOG_FILE_PATH the command says what to do."""
        monkeypatch.delenv("AUDIT_LOG_FILE_PATH", raising=False)
        code, out, err = run(capsysbinary, "query")
        assert (code, out, err) == (
            2,
            b"",
            "auditkeep: no input: give a file, directory or glob, or set AUDIT_LOG_FILE_PATH\n",
        )

    def test_bad_time_is_a_usage_error(self, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
        """An unparseable --since exits 2 with argparse's usage message."""
        code, out, err = run(capsysbinary, "query", "x.jsonl", "--since", "last tuesday")
        assert (code, out) == (2, b"")
        assert err.splitlines()[-1] == (
            "auditkeep query: error: argument --since: not a time: 'last tuesday' (use ISO 8601 "
            "such as 2026-11-27T08:00Z, a duration back from now such as 24h or 7d, or "
            "now/today/yesterday)"
        )


class TestSubprocess:
    def test_module_runs_as_a_command(self, trail: Trail) -> None:
        """``python -m auditkeep.query.cli`` runs a query in its own process."""
        expected = oracle_query(trail.files, lambda e: e.get("error") == "auth_failure")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "auditkeep.query.cli",
                "query",
                str(trail.live),
                "--error",
                "auth_failure",
                "--format",
                "json",
            ],
            capture_output=True,
            check=False,
            timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        assert (result.returncode, result.stdout) == (0, as_output(expected))
