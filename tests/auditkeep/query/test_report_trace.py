"""``auditkeep report`` and ``auditkeep trace`` on a small trail whose figures are known."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from auditkeep.query import cli
from auditkeep.query._report import ReportBuilder, percentile

sys.path.insert(0, str(Path(__file__).parent))
from trailkit import MALFORMED, encode, oracle_files, oracle_malformed, write_with_sink

CID_A = "0190a000-0000-7000-8000-00000000000a"
MR_123 = {"resource_type": "merge_request", "project_id": 123, "mr_iid": 45}
HOOK_7 = {"resource_type": "webhook", "project_id": 7}


def entry(
    second: float,
    action: str,
    *,
    outcome: str = "success",
    actor: tuple[str, str] = ("webhook_event", "ev-1"),
    target: dict[str, Any] | None = None,
    correlation_id: str = CID_A,
    **extra: Any,
) -> dict[str, Any]:
    minutes, seconds = divmod(second, 60)
    return {
        "schema_version": 1,
        "event_id": f"0190a000-0000-7000-8000-{int(second * 1000):012d}",
        "timestamp": f"2026-11-20T08:{int(minutes):02d}:{seconds:09.6f}Z",
        "event_type": "audit",
        "action": action,
        "actor": {"type": actor[0], "id": actor[1]},
        "target": target or MR_123,
        "outcome": outcome,
        "correlation_id": correlation_id,
        "service": "gitlab-copilot-agent",
        **extra,
    }


ENTRIES = [
    entry(0, "gitlab.api.get_mr_details", duration_ms=10.0, http_status=200),
    entry(0.25, "gitlab.api.get_mr_diff", duration_ms=30.0, http_status=200),
    entry(1.5, "copilot.sdk.review_request", duration_ms=1000.0),
    entry(
        2,
        "gitlab.api.post_mr_note",
        outcome="failure",
        error="rate_limit",
        error_message="429 Too Many Requests",
        duration_ms=20.0,
        http_status=429,
    ),
    *(
        entry(
            300 + 60 * n,
            "webhook.auth",
            outcome="failure",
            actor=("webhook_event", f"ev-{n + 2}"),
            target=HOOK_7,
            correlation_id=f"0190a000-0000-7000-8000-0000000000b{n}",
            error="auth_failure",
            details={"source_ip": ip, "rejection_reason": reason},
        )
        for n, (ip, reason) in enumerate(
            [
                ("203.0.113.9", "invalid_token"),
                ("203.0.113.9", "invalid_token"),
                ("198.51.100.4", "replayed"),
            ]
        )
    ),
    entry(
        480,
        "gitlab.api.get_mr_details",
        actor=("poll_cycle", "poll-1"),
        target={"resource_type": "merge_request", "project_id": 124, "mr_iid": 46},
        correlation_id="0190a000-0000-7000-8000-0000000000c0",
        duration_ms=50.0,
    ),
]

EXPECTED_REPORT = {
    "top": 10,
    "entries": 8,
    "failures": 4,
    "first_timestamp": "2026-11-20T08:00:00.000000Z",
    "last_timestamp": "2026-11-20T08:08:00.000000Z",
    # Webhook- and poll-driven activity side by side: the webhook scopes are 4
    # correlation ids (one delivery that was reviewed, three rejected ones).
    "by_actor_type": [
        {
            "actor_type": "webhook_event",
            "entries": 7,
            "failures": 4,
            "correlations": 4,
            "p95_ms": 1000.0,
        },
        {
            "actor_type": "poll_cycle",
            "entries": 1,
            "failures": 0,
            "correlations": 1,
            "p95_ms": 50.0,
        },
    ],
    "by_action": [
        {"action": "webhook.auth", "success": 0, "failure": 3, "total": 3},
        {"action": "gitlab.api.get_mr_details", "success": 2, "failure": 0, "total": 2},
        {"action": "copilot.sdk.review_request", "success": 1, "failure": 0, "total": 1},
        {"action": "gitlab.api.get_mr_diff", "success": 1, "failure": 0, "total": 1},
        {"action": "gitlab.api.post_mr_note", "success": 0, "failure": 1, "total": 1},
    ],
    "failures_by_error": [
        {"error": "auth_failure", "count": 3},
        {"error": "rate_limit", "count": 1},
    ],
    "webhook_auth_failures": [
        {"source_ip": "203.0.113.9", "reason": "invalid_token", "count": 2},
        {"source_ip": "198.51.100.4", "reason": "replayed", "count": 1},
    ],
    "busiest_targets": [
        {"target": MR_123, "count": 4},
        {"target": HOOK_7, "count": 3},
        {"target": {"resource_type": "merge_request", "project_id": 124, "mr_iid": 46}, "count": 1},
    ],
    "busiest_actors": [
        {"actor_type": "webhook_event", "actor_id": "ev-1", "count": 4},
        {"actor_type": "poll_cycle", "actor_id": "poll-1", "count": 1},
        {"actor_type": "webhook_event", "actor_id": "ev-2", "count": 1},
        {"actor_type": "webhook_event", "actor_id": "ev-3", "count": 1},
        {"actor_type": "webhook_event", "actor_id": "ev-4", "count": 1},
    ],
    "slowest_actions": [
        {
            "action": "copilot.sdk.review_request",
            "calls": 1,
            "p50_ms": 1000.0,
            "p95_ms": 1000.0,
            "max_ms": 1000.0,
        },
        {
            "action": "gitlab.api.get_mr_details",
            "calls": 2,
            "p50_ms": 10.0,
            "p95_ms": 50.0,
            "max_ms": 50.0,
        },
        {
            "action": "gitlab.api.get_mr_diff",
            "calls": 1,
            "p50_ms": 30.0,
            "p95_ms": 30.0,
            "max_ms": 30.0,
        },
        {
            "action": "gitlab.api.post_mr_note",
            "calls": 1,
            "p50_ms": 20.0,
            "p95_ms": 20.0,
            "max_ms": 20.0,
        },
    ],
}


@pytest.fixture
def small_trail(tmp_path: Path) -> Path:
    """The entries above, written by the file sink with a torn line, rotated to gzip."""
    live = tmp_path / "audit.jsonl"
    lines = [encode(e) for e in ENTRIES]
    lines.insert(2, MALFORMED[0])
    write_with_sink(live, lines, max_bytes=1500, compress=True, batch=3)
    assert (tmp_path / "audit.jsonl.1.gz").exists()
    return live


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsysbinary.readouterr()
    return code, captured.out.decode(), captured.err.decode()


class TestReport:
    def test_json_report_has_every_figure(
        self, capsysbinary: pytest.CaptureFixture[bytes], small_trail: Path
    ) -> None:
        """Counts by action and outcome, errors, webhook rejections, busiest and slowest."""
        [(path, [offset])] = oracle_malformed(oracle_files(small_trail)).items()
        code, out, err = run(capsysbinary, "report", str(small_trail), "--format", "json")
        assert (code, json.loads(out), err) == (
            0,
            EXPECTED_REPORT,
            f"auditkeep: skipped 1 malformed or truncated line: {path}: 1 (at byte {offset})\n",
        )

    def test_time_range_and_filters_narrow_the_report(
        self, capsysbinary: pytest.CaptureFixture[bytes], small_trail: Path
    ) -> None:
        """--since/--until and the query filters choose which entries are counted."""
        code, out, _ = run(
            capsysbinary,
            "report",
            str(small_trail),
            "--format",
            "json",
            "--since",
            "2026-11-20T08:05:30Z",
            "--until",
            "2026-11-20T08:08:00Z",
            "--top",
            "1",
        )
        report = json.loads(out)
        assert code == 0
        assert report == {
            "top": 1,
            "entries": 2,
            "failures": 2,
            "first_timestamp": "2026-11-20T08:06:00.000000Z",
            "last_timestamp": "2026-11-20T08:07:00.000000Z",
            "by_actor_type": [
                {
                    "actor_type": "webhook_event",
                    "entries": 2,
                    "failures": 2,
                    "correlations": 2,
                    "p95_ms": None,
                }
            ],
            "by_action": [{"action": "webhook.auth", "success": 0, "failure": 2, "total": 2}],
            "failures_by_error": [{"error": "auth_failure", "count": 2}],
            "webhook_auth_failures": [
                {"source_ip": "198.51.100.4", "reason": "replayed", "count": 1}
            ],
            "busiest_targets": [{"target": HOOK_7, "count": 2}],
            "busiest_actors": [{"actor_type": "webhook_event", "actor_id": "ev-3", "count": 1}],
            "slowest_actions": [],
        }

    def test_table_report_shows_each_section(
        self, capsysbinary: pytest.CaptureFixture[bytes], small_trail: Path
    ) -> None:
        """The table report prints every section with aligned columns."""
        code, out, _ = run(
            capsysbinary, "report", str(small_trail), "--top", "2", "--format", "table"
        )
        assert code == 0
        assert out == (
            "8 entries, 4 failures, "
            "from 2026-11-20T08:00:00.000000Z to 2026-11-20T08:08:00.000000Z\n"
            "\n"
            "Activity by actor type\n"
            "ACTOR_TYPE     ENTRIES  FAILURES  CORRELATIONS  P95_MS\n"
            "webhook_event        7         4             4  1000.0\n"
            "poll_cycle           1         0             1    50.0\n"
            "\n"
            "Calls by action and outcome\n"
            "ACTION                      SUCCESS  FAILURE  TOTAL\n"
            "webhook.auth                      0        3      3\n"
            "gitlab.api.get_mr_details         2        0      2\n"
            "copilot.sdk.review_request        1        0      1\n"
            "gitlab.api.get_mr_diff            1        0      1\n"
            "gitlab.api.post_mr_note           0        1      1\n"
            "\n"
            "Failures by error class\n"
            "ERROR         COUNT\n"
            "auth_failure      3\n"
            "rate_limit        1\n"
            "\n"
            "Webhook authentication failures (top 2 by source IP and reason)\n"
            "SOURCE_IP     REASON         COUNT\n"
            "203.0.113.9   invalid_token      2\n"
            "198.51.100.4  replayed           1\n"
            "\n"
            "Busiest targets (top 2)\n"
            "TARGET                                  COUNT\n"
            "merge_request mr_iid=45 project_id=123      4\n"
            "webhook project_id=7                        3\n"
            "\n"
            "Busiest actors (top 2)\n"
            "ACTOR               COUNT\n"
            "webhook_event:ev-1      4\n"
            "poll_cycle:poll-1       1\n"
            "\n"
            "Slowest actions (top 2 by p95 duration)\n"
            "ACTION                      CALLS  P50_MS  P95_MS  MAX_MS\n"
            "copilot.sdk.review_request      1  1000.0  1000.0  1000.0\n"
            "gitlab.api.get_mr_details       2    10.0    50.0    50.0\n"
        )

    def test_an_empty_range_exits_1(
        self, capsysbinary: pytest.CaptureFixture[bytes], small_trail: Path
    ) -> None:
        """A report over a range without entries says so and exits 1."""
        code, out, _ = run(
            capsysbinary, "report", str(small_trail), "--format", "json", "--since", "2027-01-01"
        )
        assert (code, json.loads(out)["entries"]) == (1, 0)

    def test_merged_builders_equal_one_builder(self) -> None:
        """Builders of disjoint parts merge into the report of the whole (parallel scans)."""
        whole, first, second = ReportBuilder(), ReportBuilder(), ReportBuilder()
        for index, item in enumerate(ENTRIES):
            whole.add(item)
            (first if index % 2 else second).add(item)
        first.merge(second)
        assert first.result() == whole.result() == EXPECTED_REPORT

    def test_percentiles_use_the_nearest_rank(self) -> None:
        """p50 and p95 are durations that were measured, by the nearest-rank rule."""
        values = [float(v) for v in range(1, 21)]
        assert (percentile(values, 0.5), percentile(values, 0.95), percentile([7.0], 0.95)) == (
            10.0,
            19.0,
            7.0,
        )


class TestTrace:
    def test_prints_the_timeline_of_one_correlation_id(
        self, capsysbinary: pytest.CaptureFixture[bytes], small_trail: Path
    ) -> None:
        """Offsets from the first entry, action, target, outcome, duration, error; a summary."""
        code, out, _ = run(capsysbinary, "trace", CID_A, str(small_trail), "--format", "table")
        assert code == 0
        assert out == (
            f"trace {CID_A}: first entry at 2026-11-20T08:00:00.000000Z\n"
            "OFFSET_S  ACTION                      TARGET                                  "
            "OUTCOME      MS  ERROR\n"
            "+0.000    gitlab.api.get_mr_details   merge_request project_id=123 mr_iid=45  "
            "success    10.0\n"
            "+0.250    gitlab.api.get_mr_diff      merge_request project_id=123 mr_iid=45  "
            "success    30.0\n"
            "+1.500    copilot.sdk.review_request  merge_request project_id=123 mr_iid=45  "
            "success  1000.0\n"
            "+2.000    gitlab.api.post_mr_note     merge_request project_id=123 mr_iid=45  "
            "failure    20.0  rate_limit: 429 Too Many Requests\n"
            "4 calls, 1 failure, 2.000 s from first to last entry, 1.060 s in calls\n"
        )

    def test_json_trace_prints_the_stored_lines(
        self, capsysbinary: pytest.CaptureFixture[bytes], small_trail: Path
    ) -> None:
        """--format json prints the scope's entries exactly as stored, in time order."""
        code, out, _ = run(capsysbinary, "trace", CID_A, str(small_trail), "--format", "json")
        assert (code, out) == (0, "".join(encode(e).decode() + "\n" for e in ENTRIES[:4]))

    def test_unknown_correlation_id_exits_1(
        self, capsysbinary: pytest.CaptureFixture[bytes], small_trail: Path
    ) -> None:
        """A correlation id with no entries prints nothing on stdout and exits 1."""
        code, out, err = run(capsysbinary, "trace", "no-such-id", str(small_trail))
        assert (code, out, err) == (
            1,
            "",
            "auditkeep: no entries with correlation id 'no-such-id'\n",
        )
