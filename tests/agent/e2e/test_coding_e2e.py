"""US-3 end to end: ``/copilot fix`` → approval → a task process → a real push → the result note,
over real sockets, a real git server, real Redis and a real child process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from codingkit import DEV, MAINTAINER, US3, World, actions, coding_world, in_order


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> World:
    with coding_world(tmp_path, monkeypatch, redis_url=redis_url) as found:
        yield found  # type: ignore[misc]


class TestHappyPath:
    def test_fix_approve_push_one_correlation_id(self, world: World) -> None:
        before = world.head()
        cid = world.note("/copilot fix add a line about search to the README")
        task_id = world.requested_task(cid)
        approver_cid = world.note(f"/copilot approve {task_id}", MAINTAINER)
        finished = world.wait_for("task.finished", cid)
        entries = world.entries(cid)
        print(actions(entries))
        assert finished["outcome"] == "success", finished
        assert in_order(actions(entries), US3)
        assert world.head() != before
