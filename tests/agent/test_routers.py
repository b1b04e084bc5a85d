"""The seam the next workflows use: a new event kind and a new ``/copilot`` command added through
the routers alone (a plugin; the review workflow untouched), driven through the real app."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_standins.gitlab import DEFAULT_MR_IID, DEFAULT_PROJECT_ID
from auditkeep.context import get_correlation_id
from gitlab_copilot_agent.commands.router import CommandContext
from gitlab_copilot_agent.composition import DEFAULT_PLUGINS
from gitlab_copilot_agent.events import Event, EventRouter
from gitlab_copilot_agent.plugins import Parts

sys.path.insert(0, str(Path(__file__).parent))
from routerkit import Agent, actions, has_action, running_agent

PIPELINE = {
    "object_kind": "pipeline",
    "project": {"id": DEFAULT_PROJECT_ID},
    "object_attributes": {"id": 31, "status": "failed"},
}


class PipelinePlugin:
    """What a future workflow looks like: it only registers on the routers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, str | None]] = []

    def __call__(self, parts: Parts) -> None:
        parts.events.on("Pipeline Hook", self.on_pipeline)

        async def explain(context: CommandContext) -> str:
            self.seen.append(("command", context, get_correlation_id()))
            await parts.commands.reply(context, f"Explaining {context.command.args!r}.")
            return "explained"

        parts.commands.on("explain", explain, summary="explain the change")

    async def on_pipeline(self, event: Event) -> None:
        self.seen.append((event.kind, event.payload, get_correlation_id()))


@pytest.fixture
def extended(tmp_path: Path) -> Iterator[tuple[Agent, PipelinePlugin]]:
    plugin = PipelinePlugin()
    with running_agent(tmp_path, plugins=[*DEFAULT_PLUGINS, plugin]) as agent:
        yield agent, plugin


class TestNewEventKind:
    def test_a_plugged_in_kind_is_queued_and_handled_in_the_webhooks_scope(
        self, extended: tuple[Agent, PipelinePlugin]
    ) -> None:
        """``Pipeline Hook`` is queued (not "ignored") and its handler runs in the delivery's
        correlation scope; a kind nobody handles is still ignored."""
        agent, plugin = extended
        answer = agent.post("Pipeline Hook", PIPELINE)
        ignored = agent.post("Push Hook", {"object_kind": "push", "project_id": 42})
        assert (answer.status_code, answer.json()["status"]) == (202, "queued")
        assert ignored.json()["status"] == "ignored"
        cid = answer.json()["correlation_id"]
        entry = agent.wait(cid, has_action("webhook.auth.validated"))[0]
        assert entry["details"]["decision"] == "queued"
        after = agent.wait(cid, lambda _: len(plugin.seen) == 1)
        assert actions(after) == ["webhook.auth.validated"]
        assert plugin.seen == [("Pipeline Hook", PIPELINE, cid)]

    def test_without_the_plugin_the_kind_is_ignored(self, tmp_path: Path) -> None:
        """The control: the default service does not handle ``Pipeline Hook``."""
        with running_agent(tmp_path) as agent:
            answer = agent.post("Pipeline Hook", PIPELINE)
        assert answer.json()["status"] == "ignored"


class TestNewCommand:
    def test_a_plugged_in_command_runs_with_its_context_and_replies(
        self, extended: tuple[Agent, PipelinePlugin]
    ) -> None:
        """``/copilot explain ...``: received (known), then the plugin's handler and its reply."""
        agent, plugin = extended
        cid = agent.note("/copilot explain the search change", note_id=1401)
        entries = agent.wait(cid, has_action("gitlab.api.post_mr_note"))
        assert actions(entries) == [
            "webhook.auth.validated",
            "copilot.command.received",
            "gitlab.api.get_current_user",
            "gitlab.api.post_mr_note",
        ]
        assert entries[1]["details"]["command"] == "explain"
        assert entries[1]["details"]["known"] is True
        ((kind, context, seen_cid),) = plugin.seen
        assert (kind, seen_cid) == ("command", cid)
        assert (context.project_id, context.mr_iid, context.note_id) == (
            DEFAULT_PROJECT_ID,
            DEFAULT_MR_IID,
            1401,
        )
        assert (context.command.args, context.initiator) == ("the search change", "jdoe")
        (reply,) = agent.gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
        assert reply["body"] == "Explaining 'the search change'."

    def test_help_lists_the_new_command_and_the_review_still_works(
        self, extended: tuple[Agent, PipelinePlugin]
    ) -> None:
        """The plugin changed nothing else: help lists it next to review, reviews still post."""
        agent, _ = extended
        cid = agent.note("/copilot help")
        agent.wait(cid, has_action("gitlab.api.post_mr_note"))
        (help_note,) = agent.gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
        assert "- `/copilot explain` — explain the change" in help_note["body"]
        assert "- `/copilot review` — " in help_note["body"]
        review = agent.note("/copilot review", note_id=1402)
        entries = agent.wait(review, has_action("gitlab.api.post_commit_discussion"))
        assert "copilot.sdk.review_request" in actions(entries)


class TestRouterRules:
    def test_handlers_of_one_kind_run_in_order_and_one_failure_does_not_stop_the_next(
        self,
    ) -> None:
        """Two workflows on one kind: both run, in registration order, despite a failure."""
        router = EventRouter()
        ran: list[str] = []

        async def first(event: Event) -> None:
            ran.append("first")
            raise RuntimeError("first failed")

        async def second(event: Event) -> str:
            ran.append("second")
            return "done"

        router.on("Merge Request Hook", first)
        router.on("Merge Request Hook", second)
        results = asyncio.run(router.dispatch("Merge Request Hook", {}))
        assert (ran, results) == (["first", "second"], [None, "done"])
        assert asyncio.run(router.dispatch("Push Hook", {})) == []
        assert router.kinds == ["Merge Request Hook"]
