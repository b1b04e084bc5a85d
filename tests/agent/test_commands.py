"""``/copilot`` command parsing and its audit entry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditkeep import Actor
from auditkeep.context import correlation_scope
from auditkeep.testing import capture_events, validate_entries
from gitlab_copilot_agent.commands import (
    COMMAND_RECEIVED,
    CopilotCommand,
    audit_command,
    parse_command,
)


class TestParseCommand:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("/copilot review", CopilotCommand("review")),
            ("/copilot   review", CopilotCommand("review")),
            ("  \n/Copilot REVIEW  ", CopilotCommand("review")),
            ("/copilot\treview now please", CopilotCommand("review", "now please")),
            (
                "/copilot fix\r\nthe null check\r\nin search()",
                CopilotCommand("fix", "", "the null check\nin search()"),
            ),
            ("/copilot", CopilotCommand("")),
            ("/copilot\nplease help", CopilotCommand("", "", "please help")),
            ("/copilot deploy prod", CopilotCommand("deploy", "prod")),
            ("/copilot 🚀 go", CopilotCommand("invalid", "go")),
        ],
        ids=[
            "plain",
            "double-space",
            "case-and-blank-lines",
            "args",
            "body",
            "bare",
            "bare-with-body",
            "unknown",
            "unnameable",
        ],
    )
    def test_commands(self, text: str, expected: CopilotCommand) -> None:
        """The command word is lower-cased; the rest of the line is args, the rest is body."""
        assert parse_command(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            None,
            "",
            "LGTM",
            "please /copilot review",
            "> /copilot review",
            "/copilotreview",
            "/copilot: review",
            "`/copilot review`",
        ],
    )
    def test_not_commands(self, text: str | None) -> None:
        """Only a note that opens with ``/copilot`` (then a space or the end) is a command."""
        assert parse_command(text) is None

    def test_arguments_split_on_whitespace(self) -> None:
        """``argv`` is the first line's arguments, split like a shell would without quotes."""
        assert CopilotCommand("fix", "a  b").argv == ["a", "b"]

    @given(st.text(max_size=200))
    def test_any_text_parses_or_is_ignored(self, text: str) -> None:
        """Arbitrary comment text never raises; a parsed name is a safe token."""
        parsed = parse_command(text)
        if parsed is not None:
            assert parsed.name == "" or parsed.name.replace("-", "").replace("_", "").isalnum()
            assert len(parsed.name) <= 32
            assert "\n" not in parsed.args


class TestAuditCommand:
    def test_entry_names_command_mr_and_initiator(self) -> None:
        """``copilot.command.received``: command, project, MR, initiator; args by size only."""
        with capture_events(service="gitlab-copilot-agent") as (audit, sink):
            command = parse_command("/copilot fix\nthe secret-looking instruction text")
            assert command is not None
            with correlation_scope(Actor("webhook_event", "d-1")) as cid:
                event_id = audit_command(
                    audit,
                    command,
                    known=True,
                    project_id=42,
                    mr_iid=7,
                    initiator="jdoe",
                    initiator_id=5,
                    note_id=1244,
                )
            assert audit.flush(5.0)
            (entry,) = validate_entries(sink.lines)
        assert entry["event_id"] == event_id
        assert entry["action"] == COMMAND_RECEIVED
        assert entry["correlation_id"] == cid
        assert entry["outcome"] == "success"
        assert entry["target"] == {"resource_type": "merge_request", "project_id": 42, "mr_iid": 7}
        assert entry["details"] == {
            "command": "fix",
            "known": True,
            "args_chars": len("the secret-looking instruction text"),
            "initiator": "jdoe",
            "initiator_id": 5,
            "note_id": 1244,
        }
        assert b"instruction text" not in b"".join(sink.lines)
