"""emit() and audited() against hostile values: every entry written, valid and within the limit.

Values a caller passes (``target``, ``details``, ``actor``, ``error_message``,
``duration_ms``, ``http_status``) never make ``emit()`` raise: each call
writes one schema-valid JSON line of at most ``max_entry_bytes`` that says what
was cut (``truncated``) or replaced (``coerced``). Only a programming error in
the call (action, outcome, error class) raises, and only ``InvalidEntryError``.
"""

from __future__ import annotations

import enum
import gc
import operator
import re
import threading
import tracemalloc
import uuid
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

from auditkeep import Actor, ErrorClass, Outcome, load_schema
from auditkeep._event import ACTION_MAX_CHARS, ACTION_PATTERN
from auditkeep.exceptions import AuditError, InvalidEntryError
from auditkeep.logger import DEFAULT_MAX_ENTRY_BYTES, AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import REDACTED, SecretRedactor
from auditkeep.sinks.file import FileSink
from auditkeep.typing import SinkResult

VALIDATOR = Draft202012Validator(load_schema())
SECRET = "s3cr3t-registered-value"


class CollectingSink:
    """An in-memory destination whose lines can be taken (and forgotten) between checks."""

    name: ClassVar[str] = "collect"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[bytes] = []

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        with self._lock:
            self._lines.extend(lines)
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        return None

    def take(self) -> list[bytes]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines


def _make_logger(sink: Any, spool_dir: Path, **options: Any) -> AuditLogger:
    redactor = SecretRedactor()
    redactor.register(SECRET)
    return AuditLogger(
        sink,
        service="svc",
        spool_dir=spool_dir,
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=redactor,
        **options,
    )


def _checked(line: bytes, limit: int) -> dict[str, Any]:
    """One line is one JSON object, valid against the published schema, within the limit."""
    assert len(line) <= limit, len(line)
    assert b"\n" not in line
    entry = orjson.loads(line)
    assert type(entry) is dict
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in VALIDATOR.iter_errors(entry)]
    assert errors == []
    assert entry.get("truncated", True) is True
    assert entry.get("coerced", True) is True
    return entry


@pytest.fixture
def collect(tmp_path: Path) -> Iterator[tuple[AuditLogger, CollectingSink]]:
    sink = CollectingSink()
    logger = _make_logger(sink, tmp_path / "spool")
    try:
        yield logger, sink
    finally:
        logger.close()


def _emit_one(
    pair: tuple[AuditLogger, CollectingSink], action: str = "test.hostile", **arguments: Any
) -> dict[str, Any]:
    logger, sink = pair
    event_id = logger.emit(action, **arguments)
    assert logger.flush(5)
    [line] = sink.take()
    entry = _checked(line, DEFAULT_MAX_ENTRY_BYTES)
    assert entry["event_id"] == event_id
    return entry


# -- hostile values -------------------------------------------------------------


class FailingStr:
    """``str()`` raises; ``repr()`` works."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        return "FailingStr()"


class Unprintable:
    """Both ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class Shapeshifter:
    """Even ``isinstance()`` raises on it (it reads ``__class__``)."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("no class")


class Sneaky(str):
    """A str whose methods all raise."""

    __slots__ = ()

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __len__(self) -> int:
        raise RuntimeError("no len")

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def lower(self) -> str:
        raise RuntimeError("no lower")


class BrokenMapping(Mapping[str, Any]):
    """A mapping that fails part-way through being read."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield "first"
        raise RuntimeError("broken iterator")

    def __len__(self) -> int:
        raise RuntimeError("no len")


class Colour(enum.Enum):
    RED = 1


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _deep_self(levels: int) -> dict[str, Any]:
    """What _cyclic_dict() becomes: the loop followed until the depth limit."""
    value: dict[str, Any] = {"x": 1, "self": "[nested too deep]"}
    for _ in range(levels - 1):
        value = {"x": 1, "self": value}
    return value


DEEP_LIST = _deep_list(10_000)
DEEP_DICT = _deep_dict(10_000)


def _cyclic_list() -> list[Any]:
    loop: list[Any] = [1]
    loop.extend([loop] * 100)  # 100**6 leaves when walked 6 deep without a budget
    return loop


def _cyclic_dict() -> dict[str, Any]:
    loop: dict[str, Any] = {"x": 1}
    loop["self"] = loop
    return loop


class TestHostileValues:
    def test_lone_surrogates_everywhere_are_escaped_and_flagged(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """A path decoded with surrogateescape, in any string or key, is written as \\udcff."""
        path = b"/srv/\xff.txt".decode("utf-8", "surrogateescape")
        entry = _emit_one(
            collect,
            outcome="failure",
            target={"resource_type": "file", "path": path},
            details={path: path, "list": [path]},
            error_message=f"cannot open {path}",
            actor=Actor("webhook_event", path),
        )
        escaped = "/srv/\\udcff.txt"
        assert entry["target"] == {"resource_type": "file", "path": escaped}
        assert entry["details"] == {escaped: escaped, "list": [escaped]}
        assert entry["error_message"] == f"cannot open {escaped}"
        assert entry["actor"] == {"type": "webhook_event", "id": escaped}
        assert entry["coerced"] is True

    def test_integers_beyond_64_bits_are_written_as_text(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """orjson's range is [-2**63, 2**64 - 1]; beyond it an integer becomes its decimal text."""
        entry = _emit_one(
            collect,
            target={"resource_type": "x", "max": 2**64 - 1, "big": 2**64},
            details={"min": -(2**63), "small": -(2**63) - 1, "huge": 10**5000},
        )
        assert entry["target"] == {"resource_type": "x", "max": 2**64 - 1, "big": str(2**64)}
        assert entry["details"] == {
            "min": -(2**63),
            "small": str(-(2**63) - 1),
            "huge": "<int of 16610 bits>",
        }
        assert entry["coerced"] is True

    def test_nan_and_infinity_in_values_are_written_as_text(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """JSON has no NaN or infinity: they become "NaN", "Infinity", "-Infinity"."""
        entry = _emit_one(
            collect,
            target={"resource_type": "x", "ratio": float("nan")},
            details={"up": float("inf"), "down": [float("-inf")], "fine": 0.5},
        )
        assert entry["target"]["ratio"] == "NaN"
        assert entry["details"] == {"up": "Infinity", "down": ["-Infinity"], "fine": 0.5}
        assert entry["coerced"] is True

    @pytest.mark.parametrize(
        ("arguments", "expected"),
        [
            pytest.param(
                {"target": {"resource_type": "x", "tree": DEEP_LIST}},
                {"target": {"resource_type": "x", "tree": "[[[[[[[...]]]]]]]"}, "coerced": True},
                id="target-value",
            ),
            pytest.param(
                {"target": DEEP_LIST},
                {"target": {"resource_type": "none", "_value": "[[[[[[[...]]]]]]]"}},
                id="target-itself",
            ),
            pytest.param(
                {"details": {"tree": DEEP_DICT}},
                {
                    "details": {"tree": {"a": {"a": {"a": {"a": {"a": "[nested too deep]"}}}}}},
                    "truncated": True,
                },
                id="details",
            ),
        ],
    )
    def test_depth_10000_nesting(
        self,
        collect: tuple[AuditLogger, CollectingSink],
        arguments: dict[str, Any],
        expected: dict[str, Any],
    ) -> None:
        """Nesting 10,000 deep (RecursionError in str()) is cut to a bounded text or 6 levels."""
        entry = _emit_one(collect, **arguments)
        assert {key: entry[key] for key in expected} == expected

    def test_cycles_are_cut_and_the_walk_is_bounded(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """A dict holding itself is cut 6 levels deep; a list holding itself 100 times
        (100**6 leaves when walked 6 deep) is walked only up to the entry limit."""
        in_target = [1, _cyclic_list(), _cyclic_list()]
        entry = _emit_one(
            collect,
            target={"resource_type": "x", "loop": in_target},
            details={"dict": _cyclic_dict()},
        )
        assert entry["target"]["loop"] == str(in_target)
        assert entry["details"] == {"dict": _deep_self(5)}
        assert entry["truncated"] is True
        wide = _emit_one(collect, details={"list": _cyclic_list()})
        assert wide["details"]["_dropped_bytes"] >= DEFAULT_MAX_ENTRY_BYTES
        assert wide["truncated"] is True

    def test_failing_str_and_repr_are_named_by_their_class(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """An object whose __str__ raises is written via repr(), or as <unprintable Class>."""
        entry = _emit_one(
            collect,
            outcome="failure",
            target={"resource_type": "x", "a": FailingStr(), "b": Unprintable()},
            details={"a": FailingStr(), "b": [Unprintable()], "c": Shapeshifter()},
            error_message=Unprintable(),
            actor=Actor(Unprintable(), FailingStr()),  # type: ignore[arg-type]
        )
        assert entry["target"] == {
            "resource_type": "x",
            "a": "FailingStr()",
            "b": "<unprintable Unprintable>",
        }
        assert entry["details"]["a"] == "FailingStr()"
        assert entry["details"]["b"] == ["<unprintable Unprintable>"]
        assert entry["details"]["c"] == "<unprintable Shapeshifter>"
        assert entry["error_message"] == "<unprintable Unprintable>"
        assert entry["actor"] == {"type": "<unprintable Unprintable>", "id": "FailingStr()"}
        assert entry["coerced"] is True

    def test_a_failing_key_and_a_broken_mapping(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """A key whose str() fails and a mapping that fails while read are both recorded."""
        key, broken, nested = Unprintable(), BrokenMapping(), BrokenMapping()
        entry = _emit_one(collect, target=broken, details={key: 1, "broken": nested})
        # Its own str() (object's default) is what remains of the mapping.
        assert entry["target"] == {"resource_type": "none", "_value": object.__repr__(broken)}
        assert entry["details"]["<unprintable Unprintable>"] == 1
        assert entry["details"]["broken"] == object.__repr__(nested)
        assert entry["coerced"] is True

    @pytest.mark.parametrize(
        ("details", "expected"),
        [
            pytest.param([1, "two", None], {"_value": [1, "two", None]}, id="list"),
            pytest.param("just text", {"_value": "just text"}, id="str"),
            pytest.param((1, 2), {"_value": [1, 2]}, id="tuple"),
            pytest.param(42, {"_value": 42}, id="int"),
            pytest.param(b"raw", {"_value": "raw"}, id="bytes"),
        ],
    )
    def test_details_that_are_no_mapping_are_wrapped(
        self,
        collect: tuple[AuditLogger, CollectingSink],
        details: Any,
        expected: dict[str, Any],
    ) -> None:
        """details must be an object in the schema: a list or str is kept under "_value"."""
        entry = _emit_one(collect, details=details)
        assert (entry["details"], entry["coerced"]) == (expected, True)

    @pytest.mark.parametrize(
        ("target", "expected"),
        [
            pytest.param(["a", 1], {"resource_type": "none", "_value": "['a', 1]"}, id="list"),
            pytest.param("mr!45", {"resource_type": "none", "_value": "mr!45"}, id="str"),
            pytest.param({"resource_type": 5}, {"resource_type": "5"}, id="resource-type-int"),
            pytest.param(
                {"resource_type": ""}, {"resource_type": "none"}, id="resource-type-empty"
            ),
            pytest.param(
                {"resource_type": None}, {"resource_type": "none"}, id="resource-type-none"
            ),
        ],
    )
    def test_targets_the_schema_forbids_are_coerced(
        self,
        collect: tuple[AuditLogger, CollectingSink],
        target: Any,
        expected: dict[str, Any],
    ) -> None:
        """A target that is no mapping, or whose resource_type is no non-empty string."""
        entry = _emit_one(collect, target=target)
        assert (entry["target"], entry["coerced"]) == (expected, True)

    def test_bytes_are_decoded_invalid_bytes_escaped(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """Bytes are UTF-8 text; only invalid bytes (written as \\xNN) flag the entry coerced."""
        clean = _emit_one(collect, details={"out": b"ok \xc3\xa9"})
        assert (clean["details"], "coerced" in clean) == ({"out": "ok é"}, False)
        dirty = _emit_one(collect, target={"resource_type": "x", "raw": b"\xff\xfe"})
        assert (dirty["target"]["raw"], dirty["coerced"]) == ("\\xff\\xfe", True)

    def test_non_str_keys_are_their_text_and_collisions_are_flagged(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """1 -> "1", None -> "None"; when 1 and "1" meet, one value is kept, and flagged."""
        plain = _emit_one(collect, details={1: "a", None: "b", (1, 2): "c", Colour.RED: "d"})
        assert plain["details"] == {"1": "a", "None": "b", "(1, 2)": "c", "Colour.RED": "d"}
        assert "coerced" not in plain
        clash = _emit_one(collect, details={1: "int", "1": "str"})
        assert (clash["details"], clash["coerced"]) == ({"1": "str"}, True)
        in_target = _emit_one(collect, target={"resource_type": "x", 1: "int", "1": "str"})
        assert (in_target["target"], in_target["coerced"]) == (
            {"resource_type": "x", "1": "str"},
            True,
        )
        # Long keys cut to the same text: one value is kept, and the entry says so.
        long_keys = {"k" * 5000 + "a": 1, "k" * 5000 + "b": 2}
        cut = _emit_one(collect, target=long_keys)
        assert (len(cut["target"]), cut["truncated"], cut["coerced"]) == (2, True, True)
        # Distinct keys that clean unchanged are never flagged.
        plain_target = _emit_one(collect, target={"resource_type": "x", "1": 1, "2": 2})
        assert "coerced" not in plain_target

    def test_credential_keys_stay_redacted_on_the_slow_path(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """A value under a credential key is redacted also when the entry needed repair."""
        entry = _emit_one(
            collect,
            target={"resource_type": "x", "token": "\udcff" + SECRET},
            details={"password": 2**70, "note": f"{SECRET}\udcff"},
        )
        assert entry["target"]["token"] == REDACTED
        assert entry["details"] == {"password": REDACTED, "note": f"{REDACTED}\\udcff"}
        assert SECRET not in orjson.dumps(entry).decode()

    def test_common_types_are_their_text_without_a_flag(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """Enums, UUIDs, paths, sets and int/str subclasses are recorded as before, unflagged."""
        some_id = uuid.UUID("018bcfe5-6800-7fff-bffd-bf39fba1b200")
        entry = _emit_one(
            collect,
            target={"resource_type": "x", "status": HTTPStatus.NOT_FOUND, "id": some_id},
            details={"path": Path("/a/b"), "set": frozenset([1]), "outcome": Outcome.FAILURE},
        )
        assert entry["target"] == {"resource_type": "x", "status": 404, "id": str(some_id)}
        assert entry["details"] == {"path": "/a/b", "set": [1], "outcome": "failure"}
        assert ("coerced" in entry, "truncated" in entry) == (False, False)


class TestInlinePath:
    def test_common_entries_never_take_the_defensive_path(
        self, collect: tuple[AuditLogger, CollectingSink], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The benchmark's entry and plain nested details are cleaned inline (architecture.md)."""

        def refuse(*args: object, **kwargs: object) -> Any:
            raise AssertionError("defensive path taken")

        for name in ("_odd_target", "_odd_details"):
            monkeypatch.setattr(AuditLogger, name, refuse)
        for name in ("_odd_flat_value", "_odd_value", "text", "repair"):
            monkeypatch.setattr(SecretRedactor, name, refuse)
        for name in ("http_status", "duration_ms", "safe_str", "bytes_text"):
            monkeypatch.setattr(f"auditkeep._coerce.{name}", refuse)
        for name in ("safe_str", "bytes_text"):
            monkeypatch.setattr(f"auditkeep.redact.{name}", refuse)
        target = {"resource_type": "merge_request", "project_id": 123, "mr_iid": 7, "x": None}
        details = {"tokens": {"prompt": 1830}, "files": ["a.py", ("b", 1.5)], "ok": True}
        entry = _emit_one(
            collect,
            "gitlab.api.get_mr_details",
            outcome="failure",
            target=target,
            details=details,
            duration_ms=41.7,
            http_status=404,
            error_message="404 Not Found",
            actor=Actor("webhook_event", "delivery-1"),
        )
        assert (entry["target"], entry["error"], entry["http_status"]) == (target, "not_found", 404)
        assert entry["actor"] == {"type": "webhook_event", "id": "delivery-1"}
        assert entry["details"] == {
            "tokens": {"prompt": 1830},
            "files": ["a.py", ["b", 1.5]],
            "ok": True,
        }
        assert ("coerced" in entry, "truncated" in entry) == (False, False)


class TestMeasuredNumbers:
    """http_status and duration_ms are measured at run time: a bad one is dropped, never raised."""

    @pytest.mark.parametrize(
        ("status", "recorded"),
        [
            pytest.param(404, 404, id="404"),
            pytest.param(HTTPStatus.OK, 200, id="HTTPStatus"),
            pytest.param(float("inf"), None, id="inf"),
            pytest.param(float("nan"), None, id="nan"),
            pytest.param(404.0, None, id="float"),
            pytest.param(1000, None, id="1000"),
            pytest.param(99, None, id="99"),
            pytest.param(-1, None, id="negative"),
            pytest.param(True, None, id="bool"),
            pytest.param("200", None, id="str"),
            pytest.param(2**80, None, id="huge"),
        ],
    )
    def test_http_status_outside_100_599_is_dropped(
        self, collect: tuple[AuditLogger, CollectingSink], status: Any, recorded: int | None
    ) -> None:
        """Only an integer in 100-599 is recorded; anything else is dropped and flagged coerced."""
        entry = _emit_one(collect, outcome="failure", http_status=status)
        assert entry.get("http_status") == recorded
        assert entry.get("coerced", False) is (recorded is None)
        # A failure's error class comes from the status only when it was kept.
        assert entry["error"] == ("not_found" if recorded == 404 else "internal_error")

    @pytest.mark.parametrize(
        ("duration", "recorded", "coerced"),
        [
            pytest.param(12.34567, 12.346, False, id="float"),
            pytest.param(12, 12.0, False, id="int"),
            pytest.param(0.0, 0.0, False, id="zero"),
            pytest.param(float("inf"), None, True, id="inf"),
            pytest.param(float("-inf"), None, True, id="-inf"),
            pytest.param(float("nan"), None, True, id="nan"),
            pytest.param(-5.0, 0.0, True, id="negative"),
            pytest.param(10**400, None, True, id="int-beyond-float"),
            pytest.param("12", None, True, id="str"),
            pytest.param(True, None, True, id="bool"),
        ],
    )
    def test_duration_must_be_finite_and_not_negative(
        self,
        collect: tuple[AuditLogger, CollectingSink],
        duration: Any,
        recorded: float | None,
        coerced: bool,
    ) -> None:
        """NaN, infinities and non-numbers are dropped; a negative duration is clamped to 0."""
        entry = _emit_one(collect, duration_ms=duration)
        assert (entry.get("duration_ms"), entry.get("coerced", False)) == (recorded, coerced)


class TestProgrammingErrors:
    @pytest.mark.parametrize(
        "arguments",
        [
            pytest.param({"outcome": "bogus"}, id="outcome-bogus"),
            pytest.param({"outcome": ["success"]}, id="outcome-unhashable"),
            pytest.param({"outcome": None}, id="outcome-none"),
            pytest.param({"outcome": "shapeshifter"}, id="outcome-shapeshifter"),
            pytest.param({"outcome": "failure", "error": "bogus"}, id="error-bogus"),
            pytest.param({"error": "nope"}, id="error-bogus-on-success"),
            pytest.param({"outcome": "failure", "error": {}}, id="error-unhashable"),
        ],
    )
    def test_unknown_outcome_or_error_class_raises_the_documented_error(
        self, collect: tuple[AuditLogger, CollectingSink], arguments: dict[str, Any]
    ) -> None:
        """outcome="bogus" raised KeyError; now InvalidEntryError (a ValueError), no entry."""
        logger, sink = collect
        if arguments.get("outcome") == "shapeshifter":
            arguments = {"outcome": Shapeshifter()}  # built here: pytest's ids call isinstance()
        with pytest.raises(InvalidEntryError) as caught:
            logger.emit("test.invalid", **arguments)
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, AuditError)
        assert logger.flush(5)
        assert sink.take() == []

    @pytest.mark.parametrize(
        "action",
        [
            "Gitlab.api.get",
            "gitlab",
            "gitlab.api.get-mr",
            "gitlab..api",
            "gitlab.api.",
            "gitlab.api.get\n",
            "",
            "a." * 64 + "b",
            5,
            None,
            "shapeshifter",
            ["a.b"],
        ],
    )
    def test_invalid_action_raises_the_documented_error(
        self, collect: tuple[AuditLogger, CollectingSink], action: Any
    ) -> None:
        """An action outside the schema's pattern or over 128 characters is refused."""
        logger, sink = collect
        if action == "shapeshifter":
            action = Shapeshifter()  # built here: pytest's ids call isinstance()
        with pytest.raises(InvalidEntryError, match="action"):
            logger.emit(action)
        assert logger.flush(5)
        assert sink.take() == []

    def test_action_holding_a_credential_is_refused_without_repeating_it(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """A lower-case token that matches the pattern is still refused, and not echoed."""
        logger, _ = collect
        token = "ghp_" + "a" * 36
        with pytest.raises(InvalidEntryError) as caught:
            logger.emit(f"leak.{token}")
        assert token not in str(caught.value)

    def test_valid_actions_at_the_edges_are_accepted(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """128 characters and the SPEC's own names pass."""
        longest = "a" * 63 + "." + "b" * 64
        assert len(longest) == ACTION_MAX_CHARS
        for action in (longest, "auditkeep.chain.started", "k8s.api.read_pod_log", "a.b"):
            assert _emit_one(collect, action)["action"] == action

    def test_action_rules_are_the_schemas(self) -> None:
        """The code's action pattern and length are the published schema's."""
        action = load_schema()["properties"]["action"]
        assert (action["pattern"], action["maxLength"]) == (ACTION_PATTERN, ACTION_MAX_CHARS)

    def test_audited_checks_the_action_before_the_block_runs(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """audited("Bad Name") raises at once; the block never runs."""
        logger, _ = collect
        ran = []
        with pytest.raises(InvalidEntryError), logger.audited("Bad Name"):
            ran.append(True)
        assert ran == []

    def test_fail_with_an_unknown_error_class_raises_the_documented_error(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """call.fail("bogus") raises InvalidEntryError inside the block, where the bug is."""
        logger, _ = collect
        with pytest.raises(InvalidEntryError), logger.audited("test.fail") as call:
            call.fail("bogus")

    def test_closed_logger_message_does_not_echo_a_secret(self, tmp_path: Path) -> None:
        """LoggerClosedError names the refused action scrubbed and cut."""
        logger = _make_logger(CollectingSink(), tmp_path / "spool")
        logger.close()
        with pytest.raises(AuditError) as caught:
            logger.emit(f"x.{SECRET}")
        assert SECRET not in str(caught.value)


# -- the size limit ---------------------------------------------------------------


OVERSIZED: dict[str, dict[str, Any]] = {
    "5000-long-target-keys": {"target": {f"{i:05d}" + "k" * 3995: i for i in range(5000)}},
    "many-short-target-keys": {"target": {str(i): i for i in range(20_000)}},
    "long-target-values": {"target": {f"k{i}": "v" * 5000 for i in range(50)}},
    "many-details-keys": {"details": {str(i): [i] * 3 for i in range(100_000)}},
    "long-details-keys": {"details": {f"{i:03d}" + "k" * 9000: i for i in range(100)}},
    "long-actor-and-message": {
        "actor": Actor("t" * 100_000, "\x01" * 1_000_000),
        "outcome": "failure",
        "error_message": "m" * 1_000_000,
    },
    "four-byte-characters": {
        "actor": Actor("𝄞" * 10_000, "𝄞" * 10_000),
        "target": {"resource_type": "𝄞" * 10_000, "𝄞" * 5000: "𝄞" * 5000},
        "outcome": "failure",
        "error_message": "𝄞" * 10_000,
    },
    "quotes-and-backslashes": {
        "target": {'"' * 3000: "\\" * 5000, "resource_type": '"' * 5000},
        "details": {"\\": "\\" * 100_000},
    },
}


class TestEntryLimit:
    @pytest.mark.parametrize("limit", [1024, 4096, DEFAULT_MAX_ENTRY_BYTES])
    @pytest.mark.parametrize("shape", list(OVERSIZED))
    def test_no_entry_is_larger_than_the_limit(
        self, tmp_path: Path, limit: int, shape: str
    ) -> None:
        """Keys, their number, values and the actor all count: every shape ends under the limit."""
        sink = CollectingSink()
        logger = _make_logger(sink, tmp_path / "spool", max_entry_bytes=limit)
        try:
            event_id = logger.emit("test.oversized", **OVERSIZED[shape])
            assert logger.flush(5)
            [line] = sink.take()
        finally:
            logger.close()
        entry = _checked(line, limit)
        assert (entry["event_id"], entry["truncated"]) == (event_id, True)

    def test_5000_long_target_keys_at_spool_durability_are_delivered(self, tmp_path: Path) -> None:
        """The 20 MB entry of the issue: at durability=spool it is delivered, under the limit."""
        path = tmp_path / "audit.jsonl"
        registry = CollectorRegistry()
        logger = AuditLogger(
            FileSink(path, max_bytes=0),
            service="svc",
            spool_dir=tmp_path / "spool",
            durability="spool",
            metrics=AuditMetrics(registry),
        )
        try:
            event_id = logger.emit("test.wide", **OVERSIZED["5000-long-target-keys"])
        finally:
            assert logger.close(10)
        [line] = path.read_bytes().splitlines()
        entry = _checked(line, DEFAULT_MAX_ENTRY_BYTES)
        assert entry["event_id"] == event_id
        assert entry["truncated"] is True
        # The first keys are kept, cut, and the entry says how many were left out.
        kept = [k for k in entry["target"] if k not in ("resource_type", "_dropped_keys")]
        assert kept
        assert all(k.startswith(f"{i:05d}") for i, k in enumerate(kept))
        assert entry["target"]["_dropped_keys"] == 5000 - len(kept)
        assert registry.get_sample_value("audit_log_spool_corrupt_records_total") == 0

    def test_oversized_details_are_dropped_with_a_lower_bound_of_their_size(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """100,000 details keys: the walk stops at the limit, "_dropped_bytes" is at least that."""
        entry = _emit_one(collect, **OVERSIZED["many-details-keys"])
        assert entry["details"]["_dropped_bytes"] >= DEFAULT_MAX_ENTRY_BYTES
        assert entry["truncated"] is True

    def test_minimal_entry_fits_the_smallest_limit(self, tmp_path: Path) -> None:
        """The worst core entry (longest action and service, 4-byte characters) fits 1,024."""
        sink = CollectingSink()
        logger = AuditLogger(
            sink,
            service="s" * 64,
            spool_dir=tmp_path / "spool",
            metrics=AuditMetrics(CollectorRegistry()),
            max_entry_bytes=1024,
        )
        try:
            logger.emit(
                "a" * 63 + "." + "b" * 64,
                outcome="failure",
                error=ErrorClass.VALIDATION_ERROR,
                actor=Actor("𝄞\udcff" * 500, '"\\𝄞' * 500),
                target={"resource_type": "𝄞" * 500, **{f"𝄞{i}": "𝄞" * 99 for i in range(99)}},
                error_message="\udcff" * 5000,
                duration_ms=1.7976931348623157e308,
                http_status=599,
                details={"a": "𝄞" * 5000},
            )
            assert logger.flush(5)
            [line] = sink.take()
        finally:
            logger.close()
        entry = _checked(line, 1024)
        assert (entry["truncated"], entry["coerced"], entry["uncorrelated"]) == (True, True, True)

    @pytest.mark.parametrize(
        "service",
        ["", "x" * 65, "𝄞", "a\nb", "\udcff", 5],
    )
    def test_service_that_cannot_fit_every_entry_is_refused(
        self, tmp_path: Path, service: Any
    ) -> None:
        """The service is in every entry, even the smallest: at most 64 plain ASCII characters."""
        with pytest.raises(ValueError, match="service"):
            AuditLogger(CollectingSink(), service=service, spool_dir=tmp_path / "spool")


# -- caches -----------------------------------------------------------------------


class TestCaches:
    def test_30_distinct_1mb_keys_and_actor_ids_are_not_kept(self, tmp_path: Path) -> None:
        """Caches are bounded in bytes: 30 distinct 1 MB keys and actor ids leave < 1 MB behind."""
        sink = CollectingSink()
        logger = _make_logger(sink, tmp_path / "spool")
        try:
            logger.emit("test.big_keys", target={"resource_type": "x"}, details={"k": 1})
            assert logger.flush(5)
            sink.take()
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for i in range(30):
                    key = f"{i:02d}" + "k" * 1_000_000
                    logger.emit(
                        "test.big_keys",
                        target={"resource_type": "x", key: 1},
                        details={key: {key: 2}},
                        actor=Actor("webhook_event", key),
                    )
                    del key
                assert logger.flush(5)
                assert len(sink.take()) == 30
                gc.collect()
                retained = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
        finally:
            logger.close()
        assert retained < 1_000_000


# -- audited() ----------------------------------------------------------------------


class Boom(Exception):
    """The caller's own exception."""


class Unspeakable(Exception):
    """An exception whose str() raises, with an error class that is not one."""

    audit_error_class = "not-a-class"

    def __str__(self) -> str:
        raise RuntimeError("no str")


BAD_VALUES: dict[str, dict[str, Any]] = {
    "deep-target": {"target": {"resource_type": "x", "tree": DEEP_LIST}},
    "target-list": {"target": ["not", "a", "mapping"]},
    "target-broken": {"target": BrokenMapping()},
    "target-unprintable": {"target": {"resource_type": "x", "u": Unprintable()}},
    "details-list": {"details": [1, 2]},
    "details-deep": {"details": {"tree": DEEP_DICT}},
    "details-cycle": {"details": {"loop": _cyclic_list()}},
    "details-surrogate": {"details": {"\udcff": 2**70}},
    "actor-unprintable": {"actor": Actor(Unprintable(), Unprintable())},  # type: ignore[arg-type]
    "actor-not-an-actor": {"actor": Shapeshifter()},
}


class TestAuditedReRaises:
    @pytest.mark.parametrize("bad", list(BAD_VALUES))
    def test_context_manager_re_raises_the_callers_exact_exception(
        self, collect: tuple[AuditLogger, CollectingSink], bad: str
    ) -> None:
        """With bad target/details/actor, the block's exception object comes out untouched."""
        logger, sink = collect
        raised = Boom("the caller's")
        with pytest.raises(Boom) as caught, logger.audited("test.block", **BAD_VALUES[bad]):
            raise raised
        assert caught.value is raised
        assert caught.value.__context__ is None
        assert logger.flush(5)
        [line] = sink.take()
        entry = _checked(line, DEFAULT_MAX_ENTRY_BYTES)
        assert (entry["outcome"], entry["error_message"]) == ("failure", "Boom: the caller's")

    @pytest.mark.parametrize("bad", list(BAD_VALUES))
    def test_decorator_re_raises_the_callers_exact_exception(
        self, collect: tuple[AuditLogger, CollectingSink], bad: str
    ) -> None:
        """The same through the decorator."""
        logger, sink = collect
        raised = Boom("decorated")

        @logger.audited("test.decorated", **BAD_VALUES[bad])
        def work() -> None:
            raise raised

        with pytest.raises(Boom) as caught:
            work()
        assert caught.value is raised
        assert logger.flush(5)
        [line] = sink.take()
        _checked(line, DEFAULT_MAX_ENTRY_BYTES)

    @pytest.mark.parametrize("error", ["bogus", {}], ids=["unknown", "unhashable"])
    def test_bad_values_set_inside_the_block_do_not_replace_the_exception(
        self, collect: tuple[AuditLogger, CollectingSink], error: Any
    ) -> None:
        """http_status=inf, error="bogus", a failing message: the caller's exception still wins."""
        logger, sink = collect
        raised = Boom("inside")

        def block() -> None:
            with logger.audited("test.block") as call:
                call.http_status = float("inf")  # type: ignore[assignment]
                call.error = error
                call.error_message = Unprintable()  # type: ignore[assignment]
                call.target = DEEP_LIST  # type: ignore[assignment]
                call.details = "text"  # type: ignore[assignment]
                raise raised

        with pytest.raises(Boom) as caught:
            block()
        assert caught.value is raised
        assert logger.flush(5)
        [line] = sink.take()
        entry = _checked(line, DEFAULT_MAX_ENTRY_BYTES)
        assert (entry["error"], entry["coerced"]) == ("internal_error", True)

    def test_exception_with_failing_str_and_bogus_error_class_is_re_raised(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """classify_exception() and str(exc) both fail on it: it is still re-raised untouched."""
        logger, sink = collect
        raised = Unspeakable()
        with pytest.raises(Unspeakable) as caught, logger.audited("test.block"):
            raise raised
        assert caught.value is raised
        assert logger.flush(5)
        [line] = sink.take()
        entry = _checked(line, DEFAULT_MAX_ENTRY_BYTES)
        assert entry["error"] == "internal_error"
        assert entry["error_message"].startswith("Unspeakable: ")

    def test_closed_logger_does_not_replace_the_exception(self, tmp_path: Path) -> None:
        """A block that outlives its logger still raises its own exception."""
        logger = _make_logger(CollectingSink(), tmp_path / "spool")
        raised = Boom("late")

        def block() -> None:
            with logger.audited("test.block"):
                logger.close()
                raise raised

        with pytest.raises(Boom) as caught:
            block()
        assert caught.value is raised

    def test_target_callable_that_raises_does_not_stop_the_call(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """The function runs and returns; the entry says the target was lost."""
        logger, sink = collect

        @logger.audited("test.decorated", target=lambda mr: {"mr_iid": mr["iid"]})
        def work(mr: dict[str, int]) -> str:
            return "done"

        assert work({}) == "done"
        assert logger.flush(5)
        [line] = sink.take()
        entry = _checked(line, DEFAULT_MAX_ENTRY_BYTES)
        assert entry["target"] == {
            "resource_type": "none",
            "_value": "<target callable raised KeyError: 'iid'>",
        }
        assert (entry["outcome"], entry["coerced"]) == ("success", True)

    def test_bad_status_without_an_exception_is_recorded_not_raised(
        self, collect: tuple[AuditLogger, CollectingSink]
    ) -> None:
        """call.http_status = "500" (no exception): the block completes, the entry is coerced."""
        logger, sink = collect
        with logger.audited("test.block") as call:
            call.http_status = "500"  # type: ignore[assignment]
        assert logger.flush(5)
        [line] = sink.take()
        entry = _checked(line, DEFAULT_MAX_ENTRY_BYTES)
        assert (entry["outcome"], "http_status" in entry, entry["coerced"]) == (
            "success",
            False,
            True,
        )


# -- property-based: anything, into every argument ----------------------------------------


_ACTION = re.compile(ACTION_PATTERN.removeprefix("^").removesuffix("$"))
_OUTCOME_VALUES = frozenset(o.value for o in Outcome)
_ERROR_VALUES = frozenset(e.value for e in ErrorClass)

SPECIMENS: list[Any] = [
    Colour.RED,
    Outcome.FAILURE,
    HTTPStatus.NOT_FOUND,
    DEEP_LIST,
    DEEP_DICT,
    uuid.UUID(int=7),
    Path("/srv"),
    Actor("webhook_event", "d-1"),
    object(),
]


def _specimen(index: int) -> Any:
    return SPECIMENS[index]


TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=30)
LONG_TEXT = st.builds(
    operator.mul,
    st.sampled_from(["a", "é", "𝄞", "\x01", "\udcff", '"', "\\", "glpat-", "\u2028", SECRET]),
    st.integers(0, 5000),
)
INTS = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-(2**63) + 2),
    st.sampled_from([400, -5000]).map(lambda n: 10**n if n > 0 else -(10**-n)),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
ODD = st.one_of(
    st.builds(FailingStr),
    st.builds(Unprintable),
    st.builds(Shapeshifter),
    st.builds(Sneaky, TEXT),
    st.builds(BrokenMapping),
    # By index: hypothesis reprs its strategies, and repr(DEEP_LIST) raises.
    st.sampled_from(range(len(SPECIMENS))).map(_specimen),
    st.binary(max_size=30),
    st.builds(bytearray, st.binary(max_size=10)),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT, LONG_TEXT, ODD)
KEYS = st.one_of(
    TEXT,
    LONG_TEXT,
    INTS,
    FLOATS,
    st.none(),
    st.booleans(),
    st.builds(Unprintable),
    st.tuples(INTS, TEXT),
    st.sampled_from(["resource_type", "password", "token", "1", Colour.RED]),
)


@st.composite
def cyclic(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> Any:
    """A list or dict that holds itself (possibly many times)."""
    if draw(st.booleans()):
        loop: list[Any] = draw(st.lists(children, max_size=3))
        loop.extend([loop] * draw(st.integers(1, 60)))
        return loop
    holder: dict[Any, Any] = draw(st.dictionaries(KEYS, children, max_size=3))
    holder[draw(KEYS)] = holder
    return holder


VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.frozensets(st.one_of(TEXT, INTS, st.none()), max_size=3),
        st.dictionaries(KEYS, children, max_size=4),
        cyclic(children),
    ),
    max_leaves=8,
)
MAPPINGS = st.dictionaries(KEYS, VALUES, max_size=5)

ARGUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "outcome": st.one_of(
            st.sampled_from(["success", "failure", Outcome.SUCCESS, Outcome.FAILURE]),
            st.builds(Sneaky, st.sampled_from(["success", "failure"])),
            VALUES,
        ),
        "target": st.one_of(
            st.none(),
            MAPPINGS,
            st.fixed_dictionaries({"resource_type": SCALARS}, optional={"project_id": VALUES}),
            VALUES,
        ),
        "actor": st.one_of(
            st.none(), st.builds(Actor, TEXT, TEXT), st.builds(Actor, VALUES, VALUES), VALUES
        ),
        "error": st.one_of(
            st.none(), st.sampled_from([*ErrorClass, *(e.value for e in ErrorClass)]), VALUES
        ),
        "error_message": st.one_of(st.none(), TEXT, LONG_TEXT, VALUES),
        "duration_ms": st.one_of(st.none(), FLOATS, INTS, VALUES),
        "http_status": st.one_of(st.none(), st.integers(0, 1000), FLOATS, VALUES),
        "details": st.one_of(st.none(), MAPPINGS, VALUES),
    },
)
ACTION_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
ACTIONS = st.one_of(
    st.sampled_from(["gitlab.api.post_mr_note", "a.b", "a" * 63 + "." + "b" * 64]),
    # Valid names (st.from_regex costs ~3 ms a draw; this, a tenth of it).
    st.lists(st.text(ACTION_CHARS, min_size=1, max_size=12), min_size=2, max_size=4).map(".".join),
    VALUES,
)


def _as_text(value: object) -> str | None:
    try:
        return str.__str__(value) if isinstance(value, str) else None
    except Exception:  # noqa: BLE001 - the test's own oracle must survive Shapeshifter
        return None


def _invalid_call(action: object, arguments: dict[str, Any], redactor: SecretRedactor) -> bool:
    """Whether the call itself is wrong (action, outcome, error class), judged independently."""
    text = _as_text(action)
    if (
        text is None
        or len(text) > ACTION_MAX_CHARS
        or _ACTION.fullmatch(text) is None
        or redactor.clean(text)[0] != text
    ):
        return True
    if "outcome" in arguments and _as_text(arguments["outcome"]) not in _OUTCOME_VALUES:
        return True
    error = arguments.get("error")
    return error is not None and _as_text(error) not in _ERROR_VALUES


@pytest.fixture(scope="module")
def fuzz_loggers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[int, tuple[AuditLogger, CollectingSink]]]:
    """Two loggers for the whole run: the smallest allowed limit and the default one."""
    loggers = {}
    for limit in (1024, DEFAULT_MAX_ENTRY_BYTES):
        sink = CollectingSink()
        spool = tmp_path_factory.mktemp(f"fuzz-{limit}") / "spool"
        loggers[limit] = (_make_logger(sink, spool, max_entry_bytes=limit), sink)
    yield loggers
    for logger, _ in loggers.values():
        assert logger.close(10)


class TestAnythingIntoEveryArgument:
    @settings(
        max_examples=10_000,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(
        action=ACTIONS,
        arguments=ARGUMENTS,
        limit=st.sampled_from([1024, DEFAULT_MAX_ENTRY_BYTES]),
    )
    def test_emit_writes_one_valid_line_or_raises_the_documented_error(
        self,
        fuzz_loggers: dict[int, tuple[AuditLogger, CollectingSink]],
        action: Any,
        arguments: dict[str, Any],
        limit: int,
    ) -> None:
        """10,000 calls of arbitrary values: an id and one valid line, or InvalidEntryError."""
        logger, sink = fuzz_loggers[limit]
        invalid = _invalid_call(action, arguments, logger._redactor)
        try:
            event_id: str | None = logger.emit(action, **arguments)
        except InvalidEntryError:
            assert invalid, "raised for a valid call"
            event_id = None
        else:
            assert not invalid, "accepted an invalid call"
            assert isinstance(event_id, str)
        # The pipeline keeps delivering afterwards.
        sentinel = logger.emit("test.sentinel")
        assert logger.flush(5)
        entries = [_checked(line, limit) for line in sink.take()]
        expected = [sentinel] if event_id is None else [event_id, sentinel]
        assert [e["event_id"] for e in entries] == expected
        assert SECRET not in orjson.dumps(entries).decode()
