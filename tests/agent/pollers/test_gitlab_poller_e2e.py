"""The GitLab poller in the running app (GitLab stand-in, real Redis): an MR is reviewed once
per head sha and a ``/copilot`` note runs once — over many cycles and across a restart —
and everything a cycle dispatches carries that cycle's correlation id (``poll_cycle``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from codingkit import PROJECT
from jirakit import JiraWorld, count, jira_world

from agent_standins.gitlab import diff_file

MR = 7
POLLING = {
    "POLL_JIRA_ENABLED": "false",
    "POLL_GITLAB_ENABLED": "true",
    "POLL_GITLAB_PROJECTS": str(PROJECT),
    "POLL_GITLAB_INTERVAL_S": "0.2",
}


def _reviews(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e["action"] == "gitlab.api.post_mr_note" and e["target"].get("comment_type") == "review"
    ]


def _cycles_after(world: JiraWorld, n: int) -> None:
    before = count(world.entries(), "poll.cycle.finished")
    world.wait(lambda es: count(es, "poll.cycle.finished") >= before + n)


def _mr(world: JiraWorld, head: str) -> None:
    world.gitlab.add_merge_request(
        PROJECT,
        MR,
        title="Add search",
        source_branch="feature/search",
        files=[diff_file("src/app.py", ["def search(term):", "    return []"])],
        head_sha=head,
    )
    world.gitlab.touch_merge_request(PROJECT, MR)


def test_reviews_once_per_head_sha_and_runs_a_command_note_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    with jira_world(tmp_path, monkeypatch, redis_url=redis_url, extra=POLLING) as world:
        _mr(world, "1" * 40)
        note = world.gitlab.add_note(PROJECT, MR, "/copilot help")
        world.gitlab.add_note(PROJECT, MR, "just a comment")
        agent = world.start_agent()
        world.wait(lambda es: len(_reviews(es)) == 1)
        _cycles_after(world, 3)
        entries = world.entries()
        assert len(_reviews(entries)) == 1
        received = [e for e in entries if e["action"] == "copilot.command.received"]
        assert len(received) == 1
        assert received[0]["details"]["note_id"] == note["id"]
        # What a cycle dispatched is that cycle's: the review and the command's reply.
        review_cid = _reviews(entries)[0]["correlation_id"]
        cycle = world.entries(review_cid)
        assert cycle[0]["action"] == "poll.cycle.started"
        assert cycle[-1]["action"] == "poll.cycle.finished"
        assert {e["actor"]["type"] for e in cycle} == {"poll_cycle"}
        assert cycle[-1]["details"]["started"] >= 1
        finished = [e for e in entries if e["action"] == "poll.cycle.finished"]
        assert sum(e["details"]["started"] for e in finished) == 2  # the review, the note
        assert finished[-1]["details"]["started"] == 0  # later cycles: watermark, or markers
        # A restart (markers and watermark in Redis) reviews and runs nothing again.
        world.stop_agent(agent)
        world.gitlab.touch_merge_request(PROJECT, MR)
        world.start_agent()
        _cycles_after(world, 3)
        entries = world.entries()
        assert len(_reviews(entries)) == 1
        assert count(entries, "copilot.command.received") == 1
        relisted = [e for e in entries if e["action"] == "poll.cycle.finished"][len(finished) :]
        assert any(e["details"]["skipped"] >= 2 for e in relisted)  # the MR and its note
        # A new head is a new review, once.
        _mr(world, "2" * 40)
        world.wait(lambda es: len(_reviews(es)) == 2)
        _cycles_after(world, 3)
        assert len(_reviews(world.entries())) == 2
        posted = [n["body"] for n in world.gitlab.posted_notes(PROJECT, MR)]
        assert sum("`/copilot" in body and "help" in body.lower() for body in posted) >= 1


def test_a_failing_listing_fails_the_cycle_backs_off_and_keeps_the_watermark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from agent_standins.faults import Fault

    with jira_world(tmp_path, monkeypatch, redis_url=redis_url, extra=POLLING) as world:
        _mr(world, "3" * 40)
        world.gitlab.faults.add(f"/projects/{PROJECT}/merge_requests", Fault.http(429), times=2)
        world.start_agent()
        world.wait(lambda es: len(_reviews(es)) == 1)
        entries = world.entries()
        failed = [
            e for e in entries if e["action"] == "poll.cycle.finished" and e["outcome"] == "failure"
        ]
        assert [e["error"] for e in failed[:2]] == ["rate_limit", "rate_limit"]
        backoffs = [e for e in entries if e["action"] == "poll.backoff"]
        assert [b["details"]["delay_s"] for b in backoffs[:2]] == [0.4, 0.8]


def test_a_review_that_failed_is_tried_again_by_a_later_cycle_and_posted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_standins.faults import Fault

    with jira_world(tmp_path, monkeypatch, extra=POLLING) as world:
        _mr(world, "4" * 40)
        world.gitlab.faults.add(f"/projects/{PROJECT}/merge_requests/{MR}/diffs", Fault.http(502),
                                times=1)  # fmt: skip
        world.start_agent()
        world.wait(lambda es: len(_reviews(es)) == 1)
        _cycles_after(world, 2)
        entries = world.entries()
        assert len(_reviews(entries)) == 1
        diffs = [e for e in entries if e["action"] == "gitlab.api.get_mr_diff"]
        assert [e["outcome"] for e in diffs] == ["failure", "success"]
        finished = [e for e in entries if e["action"] == "poll.cycle.finished"]
        assert sum(e["details"]["failed"] for e in finished) == 1
        assert sum(e["details"]["started"] for e in finished) == 1
