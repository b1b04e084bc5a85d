"""Entry identity and shape: UUIDv7 event ids, the published schema, and reading entries back."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from auditkeep import (
    Actor,
    AuditEvent,
    ErrorClass,
    Outcome,
    correlation_scope,
    load_schema,
    new_event_id,
)
from auditkeep import _ids as ids
from auditkeep.logger import AuditLogger
from auditkeep.sinks.memory import InMemorySink

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
MR_TARGET = {"resource_type": "merge_request", "project_id": 123, "mr_iid": 45}


@pytest.fixture(scope="module")
def validator() -> Any:
    """A Draft 2020-12 validator of the published schema, with format checks on."""
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _lines(logger: AuditLogger, sink: InMemorySink) -> list[bytes]:
    assert logger.flush(5)
    return sink.lines


def _entries(logger: AuditLogger, sink: InMemorySink) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in _lines(logger, sink)]


def _schema_errors(validator: Any, entry: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [tuple(e.absolute_schema_path) for e in validator.iter_errors(entry)]


def _pop_timestamp(entry: dict[str, Any]) -> dict[str, Any]:
    """Check the timestamp is canonical UTC and return the rest of the entry."""
    rest = dict(entry)
    stamp = rest.pop("timestamp")
    assert TIMESTAMP.match(stamp), stamp
    assert datetime.fromisoformat(stamp).utcoffset() is not None
    return rest


def _node(event_id: str) -> str:
    return event_id.rsplit("-", 1)[1]


def _pin_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    # Start the 26-bit counter at 0 so a run of ids cannot straddle its wrap
    # (see test_ids_stay_ordered_when_the_counter_wraps_within_a_millisecond).
    node, _ = ids._state
    monkeypatch.setattr(ids, "_state", (node, itertools.count(0)))


class TestEventIds:
    def test_ids_are_canonical_uuid7_with_rfc4122_variant(self) -> None:
        """Every id is a lowercase canonical UUID, version 7, RFC 4122 variant."""
        generated = [new_event_id() for _ in range(5000)]
        parsed = [uuid.UUID(i) for i in generated]
        assert [str(u) for u in parsed] == generated
        assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}

    def test_id_carries_the_unix_milliseconds_it_was_made_at(self) -> None:
        """The first 48 bits of an id are the Unix time in milliseconds."""
        before = time.time_ns() // 1_000_000
        event_id = new_event_id()
        after = time.time_ns() // 1_000_000
        assert before <= int(event_id.replace("-", "")[:12], 16) <= after
        fixed = new_event_id(1_736_951_535_123_456_789)
        assert int(fixed.replace("-", "")[:12], 16) == 1_736_951_535_123

    def test_200k_ids_from_one_thread_are_unique_and_sorted(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """200,000 ids made in a row by one thread are all distinct and in increasing order."""
        _pin_counter(monkeypatch)
        generated = [new_event_id() for _ in range(200_000)]
        assert generated == sorted(set(generated))

    def test_ids_stay_ordered_when_the_counter_wraps_within_a_millisecond(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ids made in one millisecond stay ordered even when the counter wraps."""
        node, _ = ids._state
        monkeypatch.setattr(ids, "_state", (node, itertools.count(ids._COUNTER_MASK - 1)))
        now_ns = 1_736_951_535_123_000_000
        generated = [new_event_id(now_ns) for _ in range(4)]
        assert generated == sorted(set(generated))

    def test_ids_from_four_threads_are_unique_and_ordered_per_thread(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Four threads generating at once never produce the same id; each sees its own in order."""
        _pin_counter(monkeypatch)
        start = threading.Barrier(4)
        per_thread: list[list[str]] = [[] for _ in range(4)]

        def generate(out: list[str]) -> None:
            start.wait()
            out.extend(new_event_id() for _ in range(50_000))

        threads = [threading.Thread(target=generate, args=(out,)) for out in per_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everything = [i for out in per_thread for i in out]
        assert len(everything) == 200_000
        assert sorted(set(everything)) == sorted(everything)
        assert [out == sorted(out) for out in per_thread] == [True] * 4

    def test_forked_child_draws_a_new_node(self) -> None:
        """A forked child re-draws the node, so its ids never collide with the parent's."""
        parent_before = [new_event_id() for _ in range(1000)]
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a threaded process; the child
            # only computes ids and writes them, which is fork-safe.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                os.close(read_fd)
                data = memoryview("\n".join(new_event_id() for _ in range(1000)).encode())
                while data:
                    data = data[os.write(write_fd, data) :]
            finally:
                os._exit(0)
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        child = b"".join(chunks).decode().split("\n")
        parent_after = [new_event_id() for _ in range(1000)]

        parent_nodes = {_node(i) for i in parent_before + parent_after}
        child_nodes = {_node(i) for i in child}
        assert len(parent_nodes) == 1
        assert len(child_nodes) == 1
        assert child_nodes != parent_nodes
        assert set(child) & set(parent_before + parent_after) == set()
        assert {(uuid.UUID(i).version, uuid.UUID(i).variant) for i in child} == {(7, uuid.RFC_4122)}


class TestEmittedEntriesMatchTheSchema:
    def test_success_outside_any_scope(
        self, logger: AuditLogger, sink: InMemorySink, validator: Any
    ) -> None:
        """Outside a scope an entry is flagged uncorrelated, uses its own id, and is valid."""
        event_id = logger.emit(
            "gitlab.api.get_mr_details", target=MR_TARGET, duration_ms=12.5, http_status=200
        )
        [entry] = _entries(logger, sink)
        assert _pop_timestamp(entry) == {
            "schema_version": 1,
            "event_id": event_id,
            "event_type": "audit",
            "action": "gitlab.api.get_mr_details",
            "actor": {"type": "system", "id": "unscoped"},
            "target": MR_TARGET,
            "outcome": "success",
            "correlation_id": event_id,
            "uncorrelated": True,
            "service": "svc",
            "duration_ms": 12.5,
            "http_status": 200,
        }
        assert _schema_errors(validator, entry) == []

    def test_success_inside_a_scope(
        self, logger: AuditLogger, sink: InMemorySink, validator: Any
    ) -> None:
        """Inside a scope an entry carries the scope's id and actor and no uncorrelated flag."""
        with correlation_scope(Actor("webhook_event", "delivery-1")) as cid:
            event_id = logger.emit("gitlab.api.post_mr_note", target=MR_TARGET)
        [entry] = _entries(logger, sink)
        assert _pop_timestamp(entry) == {
            "schema_version": 1,
            "event_id": event_id,
            "event_type": "audit",
            "action": "gitlab.api.post_mr_note",
            "actor": {"type": "webhook_event", "id": "delivery-1"},
            "target": MR_TARGET,
            "outcome": "success",
            "correlation_id": cid,
            "service": "svc",
        }
        assert cid != event_id
        assert _schema_errors(validator, entry) == []

    def test_failure_takes_its_error_class_from_the_http_status(
        self, logger: AuditLogger, sink: InMemorySink, validator: Any
    ) -> None:
        """A failure without an error class gets one from http_status (429 -> rate_limit)."""
        with correlation_scope(Actor("poll_cycle", "poll-7")) as cid:
            event_id = logger.emit(
                "jira.api.get_issue",
                outcome=Outcome.FAILURE,
                target={"resource_type": "issue", "issue_key": "OPS-1"},
                error_message="429 Too Many Requests",
                duration_ms=3.25,
                http_status=429,
            )
        [entry] = _entries(logger, sink)
        assert _pop_timestamp(entry) == {
            "schema_version": 1,
            "event_id": event_id,
            "event_type": "audit",
            "action": "jira.api.get_issue",
            "actor": {"type": "poll_cycle", "id": "poll-7"},
            "target": {"resource_type": "issue", "issue_key": "OPS-1"},
            "outcome": "failure",
            "error": "rate_limit",
            "error_message": "429 Too Many Requests",
            "correlation_id": cid,
            "service": "svc",
            "duration_ms": 3.25,
            "http_status": 429,
        }
        assert _schema_errors(validator, entry) == []

    def test_failure_without_status_or_class_is_internal_error(
        self, logger: AuditLogger, sink: InMemorySink, validator: Any
    ) -> None:
        """A failure with neither error class nor status is recorded as internal_error."""
        event_id = logger.emit("gitlab.api.clone_repo", outcome="failure")
        [entry] = _entries(logger, sink)
        assert _pop_timestamp(entry) == {
            "schema_version": 1,
            "event_id": event_id,
            "event_type": "audit",
            "action": "gitlab.api.clone_repo",
            "actor": {"type": "system", "id": "unscoped"},
            "target": {"resource_type": "none"},
            "outcome": "failure",
            "error": "internal_error",
            "correlation_id": event_id,
            "uncorrelated": True,
            "service": "svc",
        }
        assert _schema_errors(validator, entry) == []

    def test_entry_with_nested_details(
        self, logger: AuditLogger, sink: InMemorySink, validator: Any
    ) -> None:
        """Details keep their nested structure and the entry stays valid."""
        details = {
            "model": "gpt",
            "tokens": {"prompt": 1830, "completion": 412},
            "files": ["a.py", "b.py"],
            "ratio": 0.5,
            "cached": False,
            "note": None,
        }
        with correlation_scope(Actor("admin_action", "ops")) as cid:
            event_id = logger.emit(
                "copilot.sdk.response_received",
                target={"resource_type": "llm", "project_id": 1, "mr_iid": 2},
                details=details,
            )
        [entry] = _entries(logger, sink)
        assert _pop_timestamp(entry) == {
            "schema_version": 1,
            "event_id": event_id,
            "event_type": "audit",
            "action": "copilot.sdk.response_received",
            "actor": {"type": "admin_action", "id": "ops"},
            "target": {"resource_type": "llm", "project_id": 1, "mr_iid": 2},
            "outcome": "success",
            "correlation_id": cid,
            "service": "svc",
            "details": details,
        }
        assert _schema_errors(validator, entry) == []

    def test_audited_block_entries_are_valid(
        self, logger: AuditLogger, sink: InMemorySink, validator: Any
    ) -> None:
        """Entries written by audited() (success, refused call, exception) all validate."""
        with correlation_scope(Actor("webhook_event", "d-2")):
            with logger.audited("gitlab.api.get_project_info", target={"resource_type": "project"}):
                pass
            with logger.audited("gitlab.api.post_mr_note", target=MR_TARGET) as call:
                call.http_status = 403
            with (
                pytest.raises(TimeoutError),
                logger.audited("gitlab.api.get_mr_diff", target=MR_TARGET),
            ):
                raise TimeoutError("read timed out")
        entries = _entries(logger, sink)
        assert [(e["action"], e["outcome"], e.get("error")) for e in entries] == [
            ("gitlab.api.get_project_info", "success", None),
            ("gitlab.api.post_mr_note", "failure", "auth_failure"),
            ("gitlab.api.get_mr_diff", "failure", "timeout"),
        ]
        assert [_schema_errors(validator, e) for e in entries] == [[], [], []]


class TestReadingEntriesBack:
    def test_from_json_round_trips_an_emitted_line(
        self, logger: AuditLogger, sink: InMemorySink
    ) -> None:
        """AuditEvent.from_json reads back every field of an emitted line, unchanged."""
        with correlation_scope(Actor("webhook_event", "delivery-9")) as cid:
            event_id = logger.emit(
                "gitlab.api.push_branch",
                outcome=Outcome.FAILURE,
                target={"resource_type": "branch", "project_id": 5, "branch": "feat/x"},
                error=ErrorClass.GIT_ERROR,
                error_message="rejected: non-fast-forward",
                duration_ms=81.0,
                details={"commit_sha": "abc123"},
            )
        [line] = _lines(logger, sink)
        event = AuditEvent.from_json(line)
        wire = orjson.loads(line)
        assert event == AuditEvent(
            event_id=event_id,
            timestamp=wire["timestamp"],
            action="gitlab.api.push_branch",
            actor=Actor("webhook_event", "delivery-9"),
            target={"resource_type": "branch", "project_id": 5, "branch": "feat/x"},
            outcome=Outcome.FAILURE,
            correlation_id=cid,
            service="svc",
            error=ErrorClass.GIT_ERROR,
            error_message="rejected: non-fast-forward",
            duration_ms=81.0,
            details={"commit_sha": "abc123"},
        )
        # And back: the fields present on the wire are exactly the event's values.
        back = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name in wire}
        back["actor"] = event.actor.to_dict()
        assert back == wire
        assert AuditEvent.from_json(line.decode()) == event

    def test_from_json_tolerates_unknown_keys(self) -> None:
        """Extra keys added by a producer do not stop a reader."""
        line = orjson.dumps(
            {
                "schema_version": 1,
                "event_id": "018bcfe5-6800-7fff-bffd-bf39fba1b200",
                "timestamp": "2025-01-15T14:32:15.123Z",
                "event_type": "audit",
                "action": "jira.api.add_comment",
                "actor": {"type": "poll_cycle", "id": "p"},
                "target": {"resource_type": "issue", "issue_key": "A-1"},
                "outcome": "success",
                "correlation_id": "018bcfe5-6800-7fff-bffd-bf39fba1b201",
                "service": "svc",
                "deployment": "blue",
            }
        )
        assert AuditEvent.from_json(line) == AuditEvent(
            event_id="018bcfe5-6800-7fff-bffd-bf39fba1b200",
            timestamp="2025-01-15T14:32:15.123Z",
            action="jira.api.add_comment",
            actor=Actor("poll_cycle", "p"),
            target={"resource_type": "issue", "issue_key": "A-1"},
            outcome=Outcome.SUCCESS,
            correlation_id="018bcfe5-6800-7fff-bffd-bf39fba1b201",
            service="svc",
        )


def _auditkeep_command() -> list[str]:
    beside = Path(sys.executable).with_name("auditkeep")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("auditkeep")
    return [found] if found else [sys.executable, "-m", "auditkeep.cli"]


def _valid_entry() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": "018bcfe5-6800-7fff-bffd-bf39fba1b200",
        "timestamp": "2025-01-15T14:32:15.123Z",
        "event_type": "audit",
        "action": "gitlab.api.post_mr_note",
        "actor": {"type": "webhook_event", "id": "d1"},
        "target": {"resource_type": "merge_request", "project_id": 123, "mr_iid": 45},
        "outcome": "success",
        "correlation_id": "018bcfe5-6800-7fff-bffd-bf39fba1b201",
        "service": "gitlab-copilot-agent",
    }


class TestPublishedSchema:
    def test_cli_prints_the_published_schema(self) -> None:
        """`auditkeep schema` prints JSON equal to load_schema()."""
        proc = subprocess.run(
            [*_auditkeep_command(), "schema"], capture_output=True, timeout=60, check=False
        )
        assert (proc.returncode, proc.stderr.decode()) == (0, "")
        assert orjson.loads(proc.stdout) == load_schema()

    def test_reference_entry_is_valid(self, validator: Any) -> None:
        """The SPEC's example entry (with an event id) is accepted."""
        assert _schema_errors(validator, _valid_entry()) == []

    @pytest.mark.parametrize(
        ("change", "errors"),
        [
            pytest.param(
                {"outcome": "failure"},
                [("allOf", 0, "then", "required")],
                id="failure-without-error",
            ),
            pytest.param(
                {"error": "timeout"}, [("allOf", 1, "then", "not")], id="success-with-error"
            ),
            pytest.param(
                {"timestamp": "2025-01-15T14:32:15.123"},
                [("properties", "timestamp", "pattern")],
                id="timestamp-without-timezone",
            ),
            pytest.param(
                {"timestamp": "2025-01-15 14:32:15Z"},
                [("properties", "timestamp", "pattern")],
                id="timestamp-not-iso",
            ),
            pytest.param(
                {"event_id": "not-a-uuid"},
                [("properties", "event_id", "pattern")],
                id="event-id-not-uuid",
            ),
            pytest.param(
                {"event_id": "2f1b8a52-3c2e-4d47-9b8e-0c6a1f2d3e4f"},
                [("properties", "event_id", "pattern")],
                id="event-id-uuid4",
            ),
            pytest.param(
                {"correlation_id": "delivery-1"},
                [("properties", "correlation_id", "pattern")],
                id="correlation-id-not-uuid",
            ),
            pytest.param(
                {"outcome": "maybe"}, [("properties", "outcome", "enum")], id="unknown-outcome"
            ),
        ],
    )
    def test_schema_rejects(
        self, validator: Any, change: dict[str, Any], errors: list[tuple[Any, ...]]
    ) -> None:
        """The schema rejects each malformed entry, for exactly the expected reason."""
        assert _schema_errors(validator, {**_valid_entry(), **change}) == errors
