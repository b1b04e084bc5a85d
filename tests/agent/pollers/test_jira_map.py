"""The Jira project map and the ``POLL_*`` settings: a bad one stops the agent at start with one
plain line naming the variable and the key; anything else parses; no input raises otherwise."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[1]))
from agentproc import VALID, bound, run

from gitlab_copilot_agent.jira_map import JiraBinding, MapError, parse_project_map
from gitlab_copilot_agent.settings import Settings, SettingsError

PREFIX = "gitlab-copilot-agent: invalid configuration: "
GOOD = {"PROJ": {"gitlab_project_id": 42}}


def _map(value: object) -> dict[str, str]:
    return {"JIRA_PROJECT_MAP": orjson.dumps(value).decode()}


def test_a_minimal_binding_gets_the_documented_defaults() -> None:
    (binding,) = parse_project_map(orjson.dumps(GOOD))
    assert binding == JiraBinding("PROJ", 42)
    assert (binding.trigger_status, binding.in_progress_status, binding.in_review_status) == (
        "To Do", "In Progress", "In Review"
    )  # fmt: skip
    assert binding.target_branch is None
    assert binding.jql() == 'project = "PROJ" AND status = "To Do" ORDER BY created ASC'


BAD: list[tuple[str, dict[str, str], str, str]] = [
    ("not-json", {"JIRA_PROJECT_MAP": "{PROJ: 42}"}, "JIRA_PROJECT_MAP", "is not valid JSON"),
    ("a-list", _map([GOOD]), "JIRA_PROJECT_MAP", "must be a JSON object"),
    ("empty", _map({}), "JIRA_PROJECT_MAP", "must be a JSON object"),
    ("lower-key", _map({"proj": {"gitlab_project_id": 1}}), "JIRA_PROJECT_MAP", "'proj'"),
    ("binding-not-object", _map({"PROJ": 42}), "JIRA_PROJECT_MAP", "PROJ: must be an object"),
    ("missing-project", _map({"PROJ": {}}), "JIRA_PROJECT_MAP", "PROJ.gitlab_project_id"),
    (
        "bool-project",
        _map({"PROJ": {"gitlab_project_id": True}}),
        "JIRA_PROJECT_MAP",
        "PROJ.gitlab_project_id",
    ),
    (
        "typo",
        _map({"PROJ": {"gitlab_project_id": 1, "trigger": "x"}}),
        "JIRA_PROJECT_MAP",
        "PROJ.trigger: unknown key",
    ),
    (
        "branch",
        _map({"PROJ": {"gitlab_project_id": 1, "target_branch": "../x"}}),
        "JIRA_PROJECT_MAP",
        "PROJ.target_branch",
    ),
    (
        "jql-quote",
        _map({"PROJ": {"gitlab_project_id": 1, "trigger_status": 'a" OR 1=1'}}),
        "JIRA_PROJECT_MAP",
        "PROJ.trigger_status",
    ),
    (
        "same-status",
        _map({"PROJ": {"gitlab_project_id": 1, "in_review_status": "to do"}}),
        "JIRA_PROJECT_MAP",
        "PROJ: trigger, in-progress and in-review statuses must differ",
    ),
    (
        "approvers",
        _map({"PROJ": {"gitlab_project_id": 1, "approvers": "acc-1"}}),
        "JIRA_PROJECT_MAP",
        "PROJ.approvers",
    ),
    (
        "huge",
        {"JIRA_PROJECT_MAP": '{"PROJ": {"gitlab_project_id": 1}' + " " * 70_000 + "}"},
        "JIRA_PROJECT_MAP",
        "larger than",
    ),
    (
        "file-missing",
        {"JIRA_PROJECT_MAP_FILE": "/nonexistent/map.json"},
        "JIRA_PROJECT_MAP_FILE",
        "cannot be read",
    ),
    (
        "both",
        {**_map(GOOD), "JIRA_PROJECT_MAP_FILE": "/etc/hostname"},
        "JIRA_PROJECT_MAP_FILE",
        "not both",
    ),
    (
        "jira-without-map",
        {
            "POLL_JIRA_ENABLED": "true",
            "JIRA_URL": "https://x.atlassian.net",
            "JIRA_EMAIL": "a@example.com",
            "JIRA_API_TOKEN": "jira-token-0123456789abcdef",
        },
        "POLL_JIRA_ENABLED",
        "no JIRA_PROJECT_MAP",
    ),
    (
        "jira-without-url",
        {"POLL_JIRA_ENABLED": "true", **_map(GOOD)},
        "POLL_JIRA_ENABLED",
        "JIRA_URL is not set",
    ),
    (
        "gitlab-without-projects",
        {"POLL_GITLAB_ENABLED": "true"},
        "POLL_GITLAB_ENABLED",
        "POLL_GITLAB_PROJECTS is empty",
    ),
    (
        "no-approvers",
        {
            "POLL_JIRA_ENABLED": "true",
            **_map(GOOD),
            "JIRA_URL": "https://x.atlassian.net",
            "JIRA_EMAIL": "a@example.com",
            "JIRA_API_TOKEN": "jira-token-0123456789abcdef",
        },
        "JIRA_PROJECT_MAP",
        "PROJ.approvers: empty, but GitLab project 42 requires approval",
    ),
    ("bad-interval", {"POLL_JIRA_INTERVAL_S": "0"}, "POLL_JIRA_INTERVAL_S", "more than 0"),
    ("bad-project-id", {"POLL_GITLAB_PROJECTS": "42,x"}, "POLL_GITLAB_PROJECTS", "'x'"),
]


@pytest.mark.parametrize(("changes", "variable", "words"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_a_bad_map_or_poller_setting_names_its_variable_and_key(
    changes: dict[str, str], variable: str, words: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**VALID, **changes})
    assert variable in caught.value.problems
    assert words in caught.value.problems[variable]
    assert "\n" not in str(caught.value)


def test_a_map_file_is_read_and_checked_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_bytes(orjson.dumps({"OPS": {"gitlab_project_id": 7, "target_branch": "develop"}}))
    found = Settings.from_env({**VALID, "JIRA_PROJECT_MAP_FILE": str(path)}).poll.jira_map
    assert found == (JiraBinding("OPS", 7, "develop"),)
    path.write_bytes(b'{"OPS": {"gitlab_project_id": -1}}')
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**VALID, "JIRA_PROJECT_MAP_FILE": str(path)})
    assert caught.value.problems == {
        "JIRA_PROJECT_MAP_FILE": "OPS.gitlab_project_id: required, a positive whole number"
    }


def test_check_config_stops_with_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = {"JIRA_PROJECT_MAP": '{"PROJ": {"gitlab_project_id": 42, "trigger": "Ready"}}'}
    for command in ("check-config", "serve"):
        result = run(tmp_path, {**VALID, **bad}, command)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines(keepends=True) == [result.stderr]
        assert result.stderr.startswith(f"{PREFIX}JIRA_PROJECT_MAP: PROJ.trigger: unknown key")
        assert "Traceback" not in result.stderr
        assert bound(tmp_path) == []


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json, st.dictionaries(st.sampled_from(["PROJ", "A1", "x"]), _json)))
def test_any_json_parses_or_is_a_map_error(value: object) -> None:
    try:
        bindings = parse_project_map(json.dumps(value))
    except MapError as exc:
        message = str(exc)
        bindings = ()
        assert "\n" not in message
    assert all(isinstance(b.gitlab_project_id, int) for b in bindings)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_a_map_error(raw: bytes) -> None:
    with contextlib.suppress(MapError):
        parse_project_map(raw)
