"""The query commands as a new user meets them: one output rule, helpful filters, fitting tables.

Each test here failed on the command line before the issue-9 changes. Trails
are written by the real FileSink (``trailkit``); the commands run in this
process with stdout and stderr on real pseudo-terminals (``terminal``) or in
pipes, as a person or a script would see them.
"""

from __future__ import annotations

import io
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from auditkeep.query import _reader, cli
from auditkeep.query._filters import EntryFilter
from auditkeep.query._reader import MatchCollector, ScanStats, discover_files, scan

sys.path.insert(0, str(Path(__file__).parent))
from terminal import Result, run_on_terminals
from trailkit import (
    Trail,
    build_trail,
    encode,
    make_entries,
    oracle_entries,
    oracle_query,
    write_with_sink,
)

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    """Rotated, partly gzipped, with malformed lines; the tests only read it."""
    return build_trail(tmp_path_factory.mktemp("trail"))


@pytest.fixture(scope="module")
def wide_trail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Entries whose actor ids are UUIDs and whose targets and errors are long."""
    entries = make_entries(40, seed=5)
    for entry in entries:
        entry["actor"] = {"type": "webhook_event", "id": str(uuid.uuid4())}
        entry["target"]["commit_sha"] = "c0ffee" * 6 + "0123"
        entry["outcome"] = "failure"
        entry["error"] = "server_error"
        entry["error_message"] = "upstream said: " + "the service is unavailable, " * 4
    live = tmp_path_factory.mktemp("wide") / "audit.jsonl"
    write_with_sink(live, [encode(entry) for entry in entries], max_bytes=0, compress=False)
    return live, entries


def live_cid(trail: Trail) -> str:
    """A correlation id with entries in the live file, so that tail finds them too."""
    _, entry = next(oracle_entries([trail.live]))
    cid: str = entry["correlation_id"]
    return cid


def piped(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> Result:
    """Run with stdout and stderr captured: what a pipe or a file receives."""
    code = cli.main(list(argv))
    captured = capsysbinary.readouterr()
    return Result(code, captured.out.decode(), captured.err.decode())


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


class TestInputs:
    def test_no_rotations_is_honoured_for_the_configured_file(
        self,
        capsysbinary: pytest.CaptureFixture[bytes],
        trail: Trail,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """With the file from AUDIT_LOG_FILE_PATH, --no-rotations reads the live file alone."""
        monkeypatch.setenv("AUDIT_LOG_FILE_PATH", str(trail.live))
        expected = oracle_query([trail.live], lambda e: True)
        result = piped(capsysbinary, "query", "--no-rotations", "--format", "json")
        assert (result.code, result.out.encode()) == (
            0,
            b"".join(line + b"\n" for line in expected),
        )
        assert len(expected) < len(oracle_query(trail.files, lambda e: True))


def one_scope(command: str, trail: Trail, cid: str) -> list[str]:
    """The arguments that make ``command`` show the entries of one correlation id."""
    if command == "trace":
        return ["trace", cid, str(trail.live)]
    args = [command, str(trail.live), "--correlation-id", cid]
    return [*args, "--duration-s", "0.05"] if command == "tail" else args


class TestOutputFormatRule:
    @pytest.mark.parametrize("command", ["query", "trace", "report", "tail"])
    def test_piped_output_is_json_lines(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail, command: str
    ) -> None:
        """Every command prints JSON lines when stdout is not a terminal."""
        cid = live_cid(trail)
        args = one_scope(command, trail, cid)
        result = piped(capsysbinary, *args)
        parsed = json_lines(result.out)
        assert result.code == 0
        if command == "report":
            expected = oracle_query(trail.files, lambda e: e["correlation_id"] == cid)
            assert [document["entries"] for document in parsed] == [len(expected)]
        else:
            assert {entry["correlation_id"] for entry in parsed} == {cid}

    @pytest.mark.parametrize("command", ["query", "trace", "report", "tail"])
    def test_a_terminal_gets_a_table(self, trail: Trail, command: str) -> None:
        """Every command prints a table when stdout is a terminal."""
        cid = live_cid(trail)
        args = one_scope(command, trail, cid)
        result = run_on_terminals(cli.main, args, columns=200)
        assert result.code == 0
        assert not result.out.lstrip().startswith("{")
        header = {"query": "CORRELATION_ID", "trace": "OFFSET_S", "report": "ACTION"}
        assert header.get(command, "CORRELATION_ID") in result.out

    @pytest.mark.parametrize("command", ["query", "trace", "report"])
    def test_format_wins_on_a_terminal(self, trail: Trail, command: str) -> None:
        """--format json prints JSON even on a terminal."""
        args = one_scope(command, trail, live_cid(trail))
        result = run_on_terminals(cli.main, [*args, "--format", "json"])
        assert result.code == 0
        assert json_lines(result.out)


class TestFilters:
    @pytest.mark.parametrize(
        ("option", "typed", "meant"),
        [
            ("--error", "ratelimit", "rate_limit"),
            ("--error", "rate-limit", "rate_limit"),
            ("--error", "timed_out", "timeout"),
            ("--outcome", "fail", "failure"),
        ],
    )
    def test_an_unknown_vocabulary_word_is_refused_with_a_hint(
        self,
        capsysbinary: pytest.CaptureFixture[bytes],
        trail: Trail,
        option: str,
        typed: str,
        meant: str,
    ) -> None:
        """A value outside the fixed vocabulary exits 2 and names the word meant."""
        result = piped(capsysbinary, "query", str(trail.live), option, typed)
        assert (result.code, result.out) == (2, "")
        assert f"did you mean {meant}?" in result.err

    def test_vocabulary_words_are_matched_in_any_case(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """--error RATE_LIMIT --outcome Failure select what the lower-case words select."""
        expected = oracle_query(trail.files, lambda e: e.get("error") == "rate_limit")
        result = piped(
            capsysbinary, "query", str(trail.live), "--error", "RATE_LIMIT", "--outcome", "Failure"
        )
        assert (result.code, result.out.encode()) == (0, b"".join(x + b"\n" for x in expected))

    def test_an_unknown_actor_type_is_warned_about_with_a_hint(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """--actor-type webhook says it is no standard type and suggests webhook_event."""
        result = piped(capsysbinary, "query", str(trail.live), "--actor-type", "webhook")
        assert (result.code, result.out) == (1, "")
        assert "did you mean webhook_event?" in result.err

    def test_an_upper_case_correlation_id_finds_its_entries(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """trace and query --correlation-id take the id in any letter case."""
        cid = trail.entries[100]["correlation_id"]
        expected = oracle_query(trail.files, lambda e: e["correlation_id"] == cid)
        printed = b"".join(line + b"\n" for line in expected)
        traced = piped(capsysbinary, "trace", cid.upper(), str(trail.live))
        queried = piped(capsysbinary, "query", str(trail.live), "--correlation-id", cid.upper())
        assert (traced.code, traced.out.encode()) == (0, printed)
        assert (queried.code, queried.out.encode()) == (0, printed)

    def test_an_event_id_in_any_case_finds_its_entry(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """--event-id selects the one entry with that id, whatever the letter case."""
        event_id = trail.entries[123]["event_id"]
        result = piped(capsysbinary, "query", str(trail.live), "--event-id", event_id.upper())
        assert result.code == 0
        assert [entry["event_id"] for entry in json_lines(result.out)] == [event_id]

    def test_an_empty_time_window_is_warned_about(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """--since 1h --until 2h (since after until) says why nothing can match."""
        result = piped(capsysbinary, "query", str(trail.live), "--since", "1h", "--until", "2h")
        assert (result.code, result.out) == (1, "")
        assert "the time window is empty" in result.err
        assert "--since 2h --until 1h" in result.err


class TestTail:
    def test_a_gzip_file_is_refused_with_what_to_do(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """tail on a .gz backup exits 2 with one line pointing to query, not malformed lines."""
        backup = next(path for path in trail.files if path.name.endswith(".gz"))
        result = piped(capsysbinary, "tail", str(backup), "--duration-s", "0.05")
        assert (result.code, result.out) == (2, "")
        assert result.err == (
            f"auditkeep: cannot follow {backup}: it is gzip-compressed, a rotated backup that "
            f"no longer grows; read it with: auditkeep query {backup}\n"
        )


class TestTables:
    @pytest.mark.parametrize("columns", [80, 100, 140, 200])
    @pytest.mark.parametrize("command", ["query", "tail"])
    def test_a_table_fits_the_terminal_and_never_cuts_an_id(
        self,
        wide_trail: tuple[Path, list[dict[str, Any]]],
        columns: int,
        command: str,
    ) -> None:
        """No line is wider than the terminal; every id printed is whole; left-out columns named."""
        live, entries = wide_trail
        args = [command, str(live)]
        if command == "tail":
            args += ["-n", "40", "--duration-s", "0.05"]
        result = run_on_terminals(cli.main, args, columns=columns)
        lines = result.out.splitlines()
        assert result.code == 0
        assert max(len(line) for line in lines) <= columns
        correlation_ids = {entry["correlation_id"] for entry in entries}
        assert set(UUID_TEXT.findall(result.out)) >= correlation_ids
        if "ACTOR" in lines[0].split():
            for entry in entries:
                assert f"webhook_event:{entry['actor']['id']}" in result.out
        else:
            # Left out whole, and said so, rather than cut.
            assert "left out to fit" in result.out
            assert "ACTOR" in result.out
        assert "…" not in result.out

    def test_trace_and_report_fit_a_narrow_terminal(self, trail: Trail) -> None:
        """The trace and report tables fit 80 columns too."""
        cid = trail.entries[100]["correlation_id"]
        for args in (["trace", cid, str(trail.live)], ["report", str(trail.live)]):
            result = run_on_terminals(cli.main, args, columns=80)
            assert result.code == 0
            assert max(len(line) for line in result.out.splitlines()) <= 80


class TestProgress:
    # _progress is imported in each test, so that the other tests of this module
    # still run (and fail as they should) against a tree without it.
    def test_a_long_scan_shows_progress_on_a_terminal_stderr_only(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a terminal's stderr a progress line is drawn, then erased; stdout never has it."""
        from auditkeep.query import _progress

        monkeypatch.setattr(_progress, "DELAY_S", 0.0)  # every scan counts as long
        result = run_on_terminals(cli.main, ["query", str(trail.live), "--format", "json"])
        assert result.code == 0
        assert "auditkeep: scanned " in result.err
        assert "(100%)" in result.err
        assert result.err.endswith("\r\x1b[K") or "\r\x1b[Kauditkeep: skipped" in result.err
        assert "scanned" not in result.out

    def test_no_progress_into_a_pipe(
        self,
        capsysbinary: pytest.CaptureFixture[bytes],
        trail: Trail,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """With stderr not a terminal nothing is drawn, however long the scan."""
        from auditkeep.query import _progress

        monkeypatch.setattr(_progress, "DELAY_S", 0.0)
        result = run_on_terminals(
            cli.main, ["query", str(trail.live), "--format", "json"], stderr_tty=False
        )
        assert result.code == 0
        assert "scanned" not in result.err
        assert "\r" not in result.err

    def test_the_line_waits_redraws_sparingly_and_is_erased(self) -> None:
        """Nothing before the delay, one redraw per interval, always the last; erased at close."""
        from auditkeep.query._progress import DELAY_S, INTERVAL_S, Progress

        now = [0.0]
        out = io.StringIO()
        progress = Progress(out, clock=lambda: now[0])
        progress(10, 100)  # a quick scan draws nothing
        now[0] = DELAY_S
        progress(20, 100)
        now[0] += INTERVAL_S / 2
        progress(30, 100)  # too soon after the last
        progress(100, 100)  # but the end is always shown
        progress.close()
        assert out.getvalue() == (
            "\r\x1b[Kauditkeep: scanned 0.0 of 0.0 MB (20%)"
            "\r\x1b[Kauditkeep: scanned 0.0 of 0.0 MB (100%)"
            "\r\x1b[K"
        )

    def test_a_parallel_scan_reports_every_byte_once(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Pieces scanned by worker processes move the count on, up to the total, in order."""
        monkeypatch.setattr(_reader, "PARALLEL_MIN_BYTES", 1)
        monkeypatch.setattr(_reader, "MIN_PIECE_BYTES", 4096)
        files = discover_files([trail.live])
        seen: list[tuple[int, int]] = []
        found = scan(
            files,
            EntryFilter(),
            MatchCollector,
            ScanStats(),
            workers=2,
            progress=lambda done, total: seen.append((done, total)),
        ).found
        total = sum(trail_file.size for trail_file in files)
        assert len(found) == len(trail.entries)
        assert len(seen) > 2
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)
        assert {size for _, size in seen} == {total}
        assert seen[-1] == (total, total)
