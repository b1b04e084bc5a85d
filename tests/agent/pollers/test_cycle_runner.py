"""The poll cycle runner: a correlation scope per iteration, counts, audited backoff, shutdown.

Entries are read back from a real file sink and validated against the JSON Schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from auditkeep.context import get_actor, get_correlation_id, subprocess_env
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.clients.gitlab import GitLabError
from gitlab_copilot_agent.pollers.base import CycleCounts, CycleRunner


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[tuple[AuditLogger, Path]]:
    path = tmp_path / "audit.jsonl"
    audit = AuditLogger(
        FileSink(path, max_bytes=0),
        service="gitlab-copilot-agent",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
    )
    yield audit, path
    audit.close()


def entries(audit: AuditLogger, path: Path) -> list[dict[str, Any]]:
    assert audit.flush(10)
    return validate_entries(read_trail(path))


def test_each_cycle_has_its_own_id_and_everything_in_it_carries_that_id(
    trail: tuple[AuditLogger, Path],
) -> None:
    audit, path = trail
    seen_env: list[dict[str, str]] = []

    async def cycle(counts: CycleCounts) -> None:
        counts.seen, counts.started, counts.skipped = 3, 1, 2
        audit.emit("test.inside", target={"resource_type": "thing"})
        seen_env.append(subprocess_env({}))  # what a task process started now inherits
        actor = get_actor()
        assert actor is not None
        assert actor.type == "poll_cycle"

    runner = CycleRunner("jira", cycle, audit=audit, interval_s=1)
    first = asyncio.run(runner.run_once())
    second = asyncio.run(runner.run_once())
    found = entries(audit, path)
    assert first.correlation_id != second.correlation_id
    for result, env in ((first, seen_env[0]), (second, seen_env[1])):
        mine = [e for e in found if e["correlation_id"] == result.correlation_id]
        assert [e["action"] for e in mine] == [
            "poll.cycle.started", "test.inside", "poll.cycle.finished"
        ]  # fmt: skip
        assert {(e["actor"]["type"], e["actor"]["id"]) for e in mine} == {("poll_cycle", "jira")}
        assert env["AUDIT_CORRELATION_ID"] == result.correlation_id
        assert env["AUDIT_ACTOR_TYPE"] == "poll_cycle"
        finished = mine[-1]
        assert finished["outcome"] == "success"
        assert finished["target"] == {"resource_type": "poller", "poller": "jira"}
        assert {k: finished["details"][k] for k in ("seen", "started", "skipped", "failed")} == {
            "seen": 3, "started": 1, "skipped": 2, "failed": 0
        }  # fmt: skip
    assert get_correlation_id() is None


def test_a_failed_cycle_is_recorded_with_its_error_class_and_backs_off_doubling_to_the_cap(
    trail: tuple[AuditLogger, Path],
) -> None:
    audit, path = trail
    outcomes = [GitLabError(429, "Retry later"), RuntimeError("boom"), None, None]
    sleeps: list[float] = []

    async def cycle(counts: CycleCounts) -> None:
        counts.seen = 1
        failure = outcomes.pop(0) if outcomes else None
        if failure is not None:
            raise failure

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) >= 4:
            raise asyncio.CancelledError

    async def main() -> None:
        runner = CycleRunner(
            "gitlab", cycle, audit=audit, interval_s=0.01, max_backoff_s=0.03, sleep=sleep
        )
        with pytest.raises(asyncio.CancelledError):
            await runner.run_forever()

    asyncio.run(main())
    assert sleeps == [0.02, 0.03, 0.01, 0.01]  # 2x, 4x capped at max, then reset
    found = entries(audit, path)
    finished = [e for e in found if e["action"] == "poll.cycle.finished"]
    assert [e["outcome"] for e in finished] == ["failure", "failure", "success", "success"]
    assert finished[0]["error"] == "rate_limit"
    assert finished[1]["error"] == "internal_error"
    backoffs = [e for e in found if e["action"] == "poll.backoff"]
    assert [b["details"]["delay_s"] for b in backoffs] == [0.02, 0.03]
    assert [b["details"]["consecutive_failures"] for b in backoffs] == [1, 2]
    assert backoffs[0]["error"] == "rate_limit"
    # The backoff entry belongs to the cycle that failed.
    assert backoffs[0]["correlation_id"] == finished[0]["correlation_id"]


@pytest.mark.parametrize(("grace_s", "finishes"), [(5.0, True), (0.05, False)])
def test_shutdown_lets_a_cycle_finish_within_the_grace_else_cancels_it_and_says_so(
    trail: tuple[AuditLogger, Path], grace_s: float, finishes: bool
) -> None:
    audit, path = trail
    inside = asyncio.Event()

    async def cycle(counts: CycleCounts) -> None:
        counts.seen = 2
        inside.set()
        await asyncio.sleep(0.3)
        counts.started = 2

    async def main() -> None:
        runner = CycleRunner("jira", cycle, audit=audit, interval_s=60, shutdown_grace_s=grace_s)
        task = asyncio.create_task(runner.run_forever())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    finished = [e for e in entries(audit, path) if e["action"] == "poll.cycle.finished"]
    assert len(finished) == 1
    if finishes:
        assert finished[0]["outcome"] == "success"
        assert finished[0]["details"]["started"] == 2
    else:
        assert finished[0]["outcome"] == "failure"
        assert finished[0]["details"]["cancelled"] is True
        assert finished[0]["details"]["seen"] == 2
        assert finished[0]["details"]["started"] == 0
