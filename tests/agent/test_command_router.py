"""``/copilot`` commands through the real app: the received entry comes first (GitLab down too),
every known command runs or says why it cannot, unknown ones get the help text."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_standins.gitlab import DEFAULT_MR_IID, DEFAULT_PROJECT_ID
from gitlab_copilot_agent.commands import builtin
from gitlab_copilot_agent.commands.builtin import COMING_LATER
from gitlab_copilot_agent.workflows import review

sys.path.insert(0, str(Path(__file__).parent))
from routerkit import Agent, actions, has_action, note_hook, running_agent

MR_TARGET = {"resource_type": "merge_request", "project_id": DEFAULT_PROJECT_ID, "mr_iid": 7}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    with running_agent(tmp_path) as running:
        yield running


@pytest.fixture
def agent_without_coding(tmp_path: Path) -> Iterator[Agent]:
    """The placeholders' own behaviour: the agent without the coding workflow."""
    with running_agent(tmp_path, plugins=[builtin.install, review.install]) as running:
        yield running


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestReceivedFirst:
    def test_with_gitlab_unreachable_the_command_is_still_on_the_trail_first(
        self, tmp_path: Path
    ) -> None:
        """GitLab down: ``copilot.command.received`` comes before the failed user lookup."""
        url = f"http://127.0.0.1:{_closed_port()}"
        with running_agent(tmp_path, gitlab_url=url) as agent:
            cid = agent.note("/copilot fix the null check")
            entries = agent.wait(cid, has_action("gitlab.api.get_current_user"))
        assert actions(entries) == [
            "webhook.auth.validated",
            "copilot.command.received",
            "gitlab.api.get_current_user",
        ]
        received, lookup = entries[1], entries[2]
        assert received["target"] == MR_TARGET
        assert received["details"]["command"] == "fix"
        assert (lookup["outcome"], lookup["error"]) == ("failure", "network_error")


class TestKnownCommands:
    @pytest.mark.parametrize("name", sorted(COMING_LATER))
    def test_a_command_not_built_yet_gets_a_reply_and_an_entry_saying_why(
        self, agent_without_coding: Agent, name: str
    ) -> None:
        """Without the coding workflow, fix, code, approve, reject, status, cancel get
        ``copilot.command.unavailable`` with ``reason: not_implemented``, then a reply note;
        nothing else happens."""
        agent = agent_without_coding
        cid = agent.note(f"/copilot {name} please", note_id=1500)
        entries = agent.wait(cid, has_action("gitlab.api.post_mr_note"))
        assert actions(entries) == [
            "webhook.auth.validated",
            "copilot.command.received",
            "gitlab.api.get_current_user",
            "copilot.command.unavailable",
            "gitlab.api.post_mr_note",
        ]
        assert entries[1]["details"]["known"] is True
        assert entries[3]["target"] == MR_TARGET
        assert entries[3]["details"] == {
            "command": name,
            "reason": "not_implemented",
            "note_id": 1500,
        }
        assert entries[4]["target"]["comment_type"] == "note"
        (reply,) = agent.gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
        assert reply["body"].startswith(f"`/copilot {name}` cannot run yet: ")
        assert COMING_LATER[name][1] in reply["body"]

    def test_help_runs_and_lists_what_works_and_what_does_not_yet(
        self, agent_without_coding: Agent
    ) -> None:
        """``/copilot help``: a reply with every command; no "unavailable" entry."""
        agent = agent_without_coding
        cid = agent.note("/copilot help")
        entries = agent.wait(cid, has_action("gitlab.api.post_mr_note"))
        assert "copilot.command.unavailable" not in actions(entries)
        (reply,) = agent.gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
        body = reply["body"]
        ready, later = body.split("Not available yet:")
        assert "`/copilot review`" in ready
        assert "`/copilot help`" in ready
        assert all(f"`/copilot {name}`" in later for name in COMING_LATER)

    def test_with_the_coding_workflow_every_command_is_ready(self, agent: Agent) -> None:
        """The default plugins replace every placeholder: help lists them all as working."""
        cid = agent.note("/copilot help")
        agent.wait(cid, has_action("gitlab.api.post_mr_note"))
        (reply,) = agent.gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
        assert "Not available yet" not in reply["body"]
        for name in [*COMING_LATER, "review", "help"]:
            assert f"- `/copilot {name}` — " in reply["body"]

    def test_review_runs(self, agent: Agent) -> None:
        """``/copilot review`` is the one coding-free command that acts: a review is posted."""
        cid = agent.note("/copilot review")
        entries = agent.wait(cid, has_action("gitlab.api.post_commit_discussion"))
        assert actions(entries)[:3] == [
            "webhook.auth.validated",
            "copilot.command.received",
            "gitlab.api.get_current_user",
        ]
        assert "copilot.command.unavailable" not in actions(entries)


class TestWhereCommandsCount:
    def test_a_command_on_an_issue_is_audited_and_ignored_without_any_call(
        self, agent: Agent
    ) -> None:
        """Only merge request notes run commands; one on an issue is on the trail, ignored."""
        payload = note_hook("/copilot review", note_id=1700)
        payload["object_attributes"]["noteable_type"] = "Issue"
        del payload["merge_request"]
        answer = agent.post("Note Hook", payload)
        cid = answer.json()["correlation_id"]
        entries = agent.wait(cid, has_action("copilot.command.ignored"))
        assert actions(entries) == [
            "webhook.auth.validated",
            "copilot.command.received",
            "copilot.command.ignored",
        ]
        target = {"resource_type": "issue", "project_id": DEFAULT_PROJECT_ID}
        assert entries[1]["target"] == entries[2]["target"] == target
        assert entries[2]["details"]["reason"] == "not_a_merge_request"
        assert agent.gitlab.requests == []


class TestUnknownCommands:
    @pytest.mark.parametrize(
        ("text", "name", "opening"),
        [
            ("/copilot deploy prod", "deploy", "`/copilot deploy` is not a command I know."),
            ("/copilot", "", "A bare `/copilot` is not a command I know."),
            ("/copilot 🚀", "invalid", "`/copilot invalid` is not a command I know."),
        ],
        ids=["unknown-word", "bare", "unnameable"],
    )
    def test_the_reply_is_the_help_text(
        self, agent: Agent, text: str, name: str, opening: str
    ) -> None:
        """``reason: unknown_command`` on the trail, the help text in the reply."""
        cid = agent.note(text)
        entries = agent.wait(cid, has_action("gitlab.api.post_mr_note"))
        assert entries[1]["details"]["known"] is False
        unavailable = next(e for e in entries if e["action"] == "copilot.command.unavailable")
        assert unavailable["details"]["reason"] == "unknown_command"
        assert unavailable["details"]["command"] == name
        (reply,) = agent.gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
        assert reply["body"].startswith(opening)
        assert "**Copilot commands**" in reply["body"]

    def test_the_agents_own_replies_are_not_commands(self, agent: Agent) -> None:
        """A reply (help text) echoed back by GitLab as a Note Hook starts no command."""
        cid = agent.note("/copilot deploy")
        agent.wait(cid, has_action("gitlab.api.post_mr_note"))
        (reply,) = agent.gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)
        echoed = agent.note(reply["body"], note_id=1600)
        agent.wait(echoed, lambda e: len(e) >= 1)
        # Give the dispatcher its turn; a command would have emitted within this time.
        assert actions(agent.wait(echoed, lambda e: len(e) > 1, timeout_s=1)) == [
            "webhook.auth.validated"
        ]
