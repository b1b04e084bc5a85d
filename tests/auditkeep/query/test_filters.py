"""Filters and their byte needles: needles skip work but never change a result."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditkeep.query import EntryFilter, ScanStats, search
from auditkeep.query._filters import as_number, glob_literal, glob_needle, value_matches
from auditkeep.query._reader import TrailFile


class TestValueMatches:
    @pytest.mark.parametrize(
        ("value", "text", "expected"),
        [
            (123, "123", True),
            (123.0, "123", True),
            ("123", "123", True),
            (123, "0123", False),
            (123, "123.5", False),
            (True, "true", True),
            (False, "true", False),
            (None, "null", True),
            ("ABC-1", "ABC-1", True),
            ("ABC-1", "abc-1", False),
            ({"nested": 1}, "1", False),
            (1.5, "1.5", True),
        ],
    )
    def test_compares_as_text_and_numerically_for_numbers(
        self, value: object, text: str, expected: bool
    ) -> None:
        """A target value matches text equal to it, and a number matches an equal number."""
        assert value_matches(value, text, as_number(text)) is expected


class TestGlobNeedles:
    @pytest.mark.parametrize(
        ("pattern", "literal", "needle"),
        [
            ("gitlab.api.*", "gitlab.api.", b'"gitlab.api.'),
            ("*.push_branch", ".push_branch", b'.push_branch"'),
            ("jira.api.get_issue", "jira.api.get_issue", b'"jira.api.get_issue"'),
            ("*mr_*diff*", "diff", b"diff"),
            ("gitlab.[ab]pi.*", "gitlab.", b'"gitlab.'),
            ("a*a", "a", b'"a'),
            ("*", "", b""),
            ("[ab]", "", b""),
            ("x[y", "x[y", b'"x[y"'),
        ],
    )
    def test_needle_is_a_substring_of_every_match(
        self, pattern: str, literal: str, needle: bytes
    ) -> None:
        """The needle is the longest literal run, quoted where it touches an end of the glob."""
        assert (glob_literal(pattern), glob_needle(pattern)) == (literal, needle)


# -- property: scanning with needles == parsing everything ------------------

TEXTS = (
    "gitlab.api.get_mr_diff",
    "gitlab.api.push_branch",
    "jira.api.get_issue",
    "failure",
    "success",
    "rate_limit",
    "a/b",
    "ümlaut",
    'quo"te',
    "back\\slash",
    "x\u2028y",
    "123",
    "45",
)
NUMBERS = (123, 123.0, 45, -1, 0, True, False, None)


def escape_all(value: Any) -> str:
    """A JSON writer that spells every string character as \\uXXXX and puts spaces around."""
    if isinstance(value, str):
        return '"' + "".join(f"\\u{ord(char):04x}" for char in value) + '"'
    if isinstance(value, dict):
        return (
            "{ " + " , ".join(f"{escape_all(k)} : {escape_all(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)


def exponents(value: Any) -> str:
    """A JSON writer that spells every number in exponent form (123 as 1.230000e+02)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{exponents(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:e}"
    return json.dumps(value)


WRITERS = {
    "orjson": lambda entry: orjson.dumps(entry),
    "json-default": lambda entry: json.dumps(entry).encode(),
    "json-compact-utf8": lambda entry: json.dumps(
        entry, separators=(",", ":"), ensure_ascii=False
    ).encode(),
    "escaped-slash": lambda entry: json.dumps(entry).replace("/", "\\/").encode(),
    "escape-all": lambda entry: escape_all(entry).encode(),
    "exponents": lambda entry: exponents(entry).encode(),
}

scalars = st.one_of(st.sampled_from(TEXTS), st.sampled_from(NUMBERS))
entries = st.fixed_dictionaries(
    {
        "timestamp": st.sampled_from(
            ("2026-11-20T08:00:00.000000Z", "2026-11-20T09:00:00.5+01:00", "2026-11-20T08:30:00Z")
        ),
        "action": st.sampled_from(TEXTS),
        "outcome": st.sampled_from(("success", "failure")),
        "correlation_id": st.sampled_from(TEXTS),
        "service": st.sampled_from(TEXTS),
        "actor": st.fixed_dictionaries(
            {"type": st.sampled_from(TEXTS), "id": st.sampled_from(TEXTS)}
        ),
        "target": st.dictionaries(st.sampled_from(("project_id", "branch", "issue_key")), scalars),
    },
    optional={"error": st.sampled_from(TEXTS)},
)
FIELDS = (
    "since",
    "action",
    "actor_type",
    "actor_id",
    "target",
    "outcome",
    "error",
    "correlation_id",
    "service",
)


def text_of(value: object) -> str:
    """How a user would type a stored value on the command line."""
    return value if isinstance(value, str) else json.dumps(value)


def filter_like(
    draw: Callable[[st.SearchStrategy[Any]], Any], model: dict[str, Any]
) -> EntryFilter:
    """A filter built from one entry's values, so that it selects something."""
    chosen = draw(st.sets(st.sampled_from(FIELDS), max_size=3))
    kwargs: dict[str, Any] = {}
    for name in chosen:
        if name == "since":
            kwargs["since"] = datetime(2026, 11, 20, 8, 0, 0, 1, tzinfo=UTC)
        elif name == "action":
            action = model["action"]
            cut = draw(st.integers(0, len(action)))
            kwargs["actions"] = (
                draw(st.sampled_from((action, action[:cut] + "*", "*" + action[cut:]))),
            )
        elif name in ("actor_type", "actor_id"):
            kwargs[name] = model["actor"][name.removeprefix("actor_")]
        elif name == "target":
            if model["target"]:
                key = draw(st.sampled_from(sorted(model["target"])))
                kwargs["targets"] = ((key, text_of(model["target"][key])),)
        elif name == "error":
            kwargs["error"] = model.get("error", "rate_limit")
        else:
            kwargs[name] = model[name]
    return EntryFilter(**kwargs)


class TestNeedlesNeverChangeResults:
    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_search_equals_parsing_every_line(self, data: st.DataObject) -> None:
        """Whatever the JSON writer's spacing and escapes, needles select what parsing selects."""
        batch = data.draw(
            st.lists(st.tuples(entries, st.sampled_from(sorted(WRITERS))), min_size=1, max_size=20)
        )
        model = data.draw(st.sampled_from([entry for entry, _ in batch]))
        wanted = filter_like(data.draw, model)
        lines = [WRITERS[writer](entry) for entry, writer in batch]
        matcher = wanted.compile()
        expected = sorted(line for line in lines if matcher.matches(json.loads(line)))
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "audit.jsonl"
            path.write_bytes(b"".join(line + b"\n" for line in lines))
            found = search([TrailFile.open_stat(path)], wanted, ScanStats(), workers=1)
        assert sorted(line for _, _, line in found) == expected


SAMPLE_ENTRIES = [
    {
        "timestamp": "2026-11-20T08:00:00.000000Z",
        "action": action,
        "outcome": outcome,
        "correlation_id": "c/1",
        "service": "ümlaut",
        "actor": {"type": "poll_cycle", "id": 'quo"te'},
        "target": {"project_id": number, "branch": "a/b"},
        "error": "rate_limit",
    }
    for action in ("gitlab.api.get_mr_diff", "jira.api.get_issue")
    for outcome in ("success", "failure")
    for number in (123, 123.0, 45, True)
]
SAMPLE_FILTERS = [
    EntryFilter(actions=("gitlab.api.*",)),
    EntryFilter(actions=("*.get_issue",), outcome="failure"),
    EntryFilter(targets=(("project_id", "123"),)),
    EntryFilter(targets=(("project_id", "true"),)),
    EntryFilter(targets=(("branch", "a/b"),), correlation_id="c/1"),
    EntryFilter(service="ümlaut", actor_id='quo"te', actor_type="poll_cycle"),
    EntryFilter(error="rate_limit", since=datetime(2026, 11, 20, 7, tzinfo=UTC)),
]


class TestEveryWriter:
    @pytest.mark.parametrize("writer", sorted(WRITERS))
    def test_each_filter_kind_finds_what_parsing_finds(self, writer: str, tmp_path: Path) -> None:
        """Each kind of filter selects the same lines with needles as by parsing every line."""
        lines = [WRITERS[writer](entry) for entry in SAMPLE_ENTRIES]
        path = tmp_path / "audit.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        for wanted in SAMPLE_FILTERS:
            matcher = wanted.compile()
            expected = sorted(line for line in lines if matcher.matches(json.loads(line)))
            found = search([TrailFile.open_stat(path)], wanted, ScanStats(), workers=1)
            assert expected
            assert sorted(line for _, _, line in found) == expected, wanted
