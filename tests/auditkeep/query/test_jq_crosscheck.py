"""The same queries through ``auditkeep query`` and ``jq`` give the same entries in order."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auditkeep.query import cli

sys.path.insert(0, str(Path(__file__).parent))
from trailkit import Trail, build_trail

JQ = shutil.which("jq")


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    """One trail shared by the module's tests, which only read it."""
    return build_trail(tmp_path_factory.mktemp("trail"))


def jq_query(trail: Trail, condition: str) -> list[dict[str, Any]]:
    """Run jq over every file, oldest first, skipping lines that are not JSON objects."""
    assert JQ is not None, "jq is needed (scripts/bootstrap installs it)"
    data = b"".join(
        gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for path in trail.files
    )
    program = (
        f"[inputs | fromjson? | objects | select({condition})] "
        "| sort_by(.timestamp, .event_id) | .[]"
    )
    result = subprocess.run(
        [JQ, "-cnR", program], input=data, capture_output=True, check=True, timeout=60
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


CASES = [
    ([], "true"),
    (
        ["--action", "gitlab.api.*", "--outcome", "failure", "--target", "project_id=123"],
        '(.action | startswith("gitlab.api.")) and .outcome == "failure" '
        "and .target.project_id == 123",
    ),
    (
        ["--since", "2026-11-20T08:12:30Z", "--until", "2026-11-20T08:31:00Z"],
        '.timestamp >= "2026-11-20T08:12:30" and .timestamp < "2026-11-20T08:31:00"',
    ),
    (
        ["--error", "rate_limit", "--service", "gitlab-copilot-agent"],
        '.error == "rate_limit" and .service == "gitlab-copilot-agent"',
    ),
    (
        ["--actor-type", "poll_cycle", "--target", "issue_key=ABC-2"],
        '.actor.type == "poll_cycle" and .target.issue_key == "ABC-2"',
    ),
    (
        ["--action", "*.push_branch", "--target", "branch=feature/x"],
        '(.action | endswith(".push_branch")) and .target.branch == "feature/x"',
    ),
    (
        [
            "--target",
            "resource_type=merge_request",
            "--target",
            "mr_iid=46",
            "--outcome",
            "success",
        ],
        '.target.resource_type == "merge_request" and .target.mr_iid == 46 '
        'and .outcome == "success"',
    ),
]


class TestAgainstJq:
    @pytest.mark.parametrize(("args", "condition"), CASES, ids=[c for _, c in CASES])
    def test_same_entries_in_the_same_order(
        self,
        capsysbinary: pytest.CaptureFixture[bytes],
        trail: Trail,
        args: list[str],
        condition: str,
    ) -> None:
        """auditkeep query and an equivalent jq program select the same entries, same order."""
        expected = jq_query(trail, condition)
        code = cli.main(["query", str(trail.directory), "--format", "json", *args])
        printed = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
        assert expected, "every case must select something"
        assert (code, printed) == (0, expected)

    def test_correlation_id_matches_jq(
        self, capsysbinary: pytest.CaptureFixture[bytes], trail: Trail
    ) -> None:
        """A trace's entries are the ones jq finds for that correlation id."""
        wanted = trail.entries[200]["correlation_id"]
        expected = jq_query(trail, f'.correlation_id == "{wanted}"')
        code = cli.main(["trace", wanted, str(trail.live), "--format", "json"])
        printed = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
        assert (code, printed) == (0, expected)
        assert len(expected) == 6
