"""``DeliveryOptions``: every delivery setting and default in one frozen object, checked once."""

from __future__ import annotations

import ast
import dataclasses
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

import pytest
from prometheus_client import CollectorRegistry

import auditkeep
from auditkeep.config import AuditConfig
from auditkeep.delivery import DeliveryOptions, DeliveryPipeline, DeliverySettings, Durability
from auditkeep.delivery.options import DEFAULTS
from auditkeep.exceptions import InvalidOptionError
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.memory import InMemorySink
from auditkeep.typing import SinkResult

SRC = Path(auditkeep.__file__).resolve().parent.parent
OPTIONS = Path("auditkeep", "delivery", "options.py")
FIELDS = frozenset(f.name for f in dataclasses.fields(DeliveryOptions))
# Names the same settings had before, in the modules that each kept a copy.
OLD_NAMES = frozenset({"buffer_size", "batch_size", "exit_timeout_s", "max_segment_bytes"})
OLD_DEADLINES = frozenset({"exit_timeout_s", "EXIT_TIMEOUT_S", "SHUTDOWN_TIMEOUT_S"})


def literal_defaults(root: Path) -> list[str]:
    """Every literal default given to a delivery setting outside options.py."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative == OPTIONS:
            continue
        for node in ast.walk(ast.parse(path.read_bytes())):
            pairs: list[tuple[str, ast.expr | None]] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs += zip(
                    [a.arg for a in positional[len(positional) - len(args.defaults) :]],
                    args.defaults,
                    strict=True,
                )
                pairs += [
                    (a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                ]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                pairs.append((node.target.id, node.value))
            for name, default in pairs:
                if name in FIELDS | OLD_NAMES and isinstance(default, ast.Constant):
                    found.append(f"{relative}:{default.lineno}: {name} = {default.value!r}")
    return found


def deadline_names(root: Path) -> list[str]:
    """Every identifier that names the shutdown deadline other than shutdown_timeout_s."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_bytes())):
            name = (
                node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else node.arg
                if isinstance(node, ast.arg | ast.keyword)
                else None
            )
            if name in OLD_DEADLINES:
                found.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}: {name}")
    return found


class TestOneDeclaration:
    def test_no_delivery_default_is_written_twice(self) -> None:
        """No literal default for a delivery setting anywhere in src/ but options.py."""
        assert literal_defaults(SRC) == []

    def test_the_shutdown_deadline_has_one_name(self) -> None:
        """shutdown_timeout_s everywhere (the variable is AUDIT_LOG_SHUTDOWN_TIMEOUT_S)."""
        assert deadline_names(SRC) == []

    def test_the_keyword_names_are_the_options_fields(self) -> None:
        """DeliverySettings (AuditLogger's keywords) lists exactly DeliveryOptions' fields."""
        assert set(get_type_hints(DeliverySettings)) == FIELDS

    def test_the_logger_the_config_and_the_pipeline_use_the_same_defaults(
        self, tmp_path: Path
    ) -> None:
        """Unset everywhere, every part ends up with DEFAULTS."""
        metrics = AuditMetrics(CollectorRegistry())
        logger = AuditLogger(InMemorySink(), service="svc", spool_dir=tmp_path, metrics=metrics)
        try:
            config = AuditConfig.from_env({"AUDIT_LOG_SPOOL_DIR": str(tmp_path / "s")})
            pipeline = logger.pipeline
            assert pipeline is not None
            assert (logger.delivery, config.delivery, pipeline.options) == (DEFAULTS,) * 3
            assert logger.shutdown_timeout_s == DEFAULTS.shutdown_timeout_s
        finally:
            logger.close()

    def test_keywords_apply_over_the_options_object(self, tmp_path: Path) -> None:
        """delivery=DeliveryOptions(...) plus keywords: the keywords win, field by field."""
        logger = AuditLogger(
            InMemorySink(),
            service="svc",
            spool_dir=tmp_path,
            metrics=AuditMetrics(CollectorRegistry()),
            delivery=DeliveryOptions(durability=Durability.SPOOL, max_buffer_events=300),
            max_buffer_events=200,
            max_batch_events=100,
        )
        try:
            assert logger.delivery == DeliveryOptions(
                durability=Durability.SPOOL, max_buffer_events=200, max_batch_events=100
            )
        finally:
            logger.close()


class TestValidation:
    @pytest.mark.parametrize(
        ("settings", "option"),
        [
            ({"max_buffer_events": 0}, "max_buffer_events"),
            ({"max_buffer_events": True}, "max_buffer_events"),
            ({"max_buffer_events": 100, "max_batch_events": 200}, "max_batch_events"),
            ({"max_held_events": -1}, "max_held_events"),
            ({"flush_interval_s": 0}, "flush_interval_s"),
            ({"flush_interval_s": math.nan}, "flush_interval_s"),
            ({"retry_initial_s": math.inf}, "retry_initial_s"),
            ({"retry_initial_s": 1.0, "retry_max_s": 0.5}, "retry_max_s"),
            ({"shutdown_timeout_s": -1}, "shutdown_timeout_s"),
            ({"durability": "sometimes"}, "durability"),
            ({"spool_max_bytes": 0}, "spool_max_bytes"),
        ],
    )
    def test_a_value_out_of_range_names_its_option(
        self, settings: dict[str, Any], option: str
    ) -> None:
        """The constructor checks; the error is an InvalidOptionError (a ValueError) naming it."""
        with pytest.raises(InvalidOptionError) as caught:
            DeliveryOptions(**settings)
        assert caught.value.option == option
        assert isinstance(caught.value, ValueError)
        assert str(caught.value).startswith(f"{option}: ")

    def test_the_batch_follows_a_small_buffer(self) -> None:
        """Unset, the batch is 512, or the buffer size when that is smaller."""
        assert [DeliveryOptions(max_buffer_events=n).batch_events for n in (100, 5000)] == [
            100,
            512,
        ]

    def test_durability_by_name(self) -> None:
        """A level's name, in any letter case, is the level."""
        options = DeliveryOptions(durability=" FSYNC ")  # type: ignore[arg-type]
        assert options.durability is Durability.FSYNC

    def test_the_logger_refuses_an_option_before_claiming_a_slot(self, tmp_path: Path) -> None:
        """An invalid keyword fails the constructor, and no spool slot is left claimed."""
        with pytest.raises(InvalidOptionError, match="max_batch_events"):
            AuditLogger(InMemorySink(), service="svc", spool_dir=tmp_path, max_batch_events=0)
        assert list(tmp_path.iterdir()) == []

    def test_options_are_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            DEFAULTS.max_buffer_events = 1  # type: ignore[misc]


class Hanging:
    """A destination whose write never returns until released."""

    name: ClassVar[str] = "hang"

    def __init__(self) -> None:
        self.release = threading.Event()

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        self.release.wait(30)
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        self.release.set()


class TestShutdownDeadline:
    def test_close_without_an_argument_keeps_to_shutdown_timeout_s(self, tmp_path: Path) -> None:
        """A hung destination: close() gives up after shutdown_timeout_s and spools the rest."""
        sink = Hanging()
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=tmp_path,
            metrics=AuditMetrics(CollectorRegistry()),
            fallback=InMemorySink(),
            shutdown_timeout_s=0.3,
            flush_interval_s=0.01,
        )
        for _ in range(10):
            logger.emit("test.deadline")
        time.sleep(0.1)  # the worker is inside write_batch now
        started = time.monotonic()
        assert logger.close() is False
        assert 0.25 <= time.monotonic() - started < 2.0
        pipeline_spool = tmp_path / "slot-0" / "hang"
        assert any(pipeline_spool.glob("*.seg"))

    def test_a_pipeline_alone_takes_the_same_options(self, tmp_path: Path) -> None:
        """DeliveryPipeline(options=...) is the same object the logger passes on."""
        from auditkeep.delivery import Spool

        options = DeliveryOptions(max_buffer_events=10, max_batch_events=5)
        pipeline = DeliveryPipeline(
            InMemorySink(),
            Spool(tmp_path / "slot-0" / "memory", ["memory"]),
            fallback=InMemorySink(),
            metrics=AuditMetrics(CollectorRegistry()),
            options=options,
        )
        try:
            assert (pipeline.options, pipeline.max_buffer_events) == (options, 10)
        finally:
            assert pipeline.close(1)
