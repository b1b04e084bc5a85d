"""The sink contract: a sink's whole answer is the ``SinkResult`` it returns.

The pipeline reads nothing else from a sink: no ``retry_after_s`` or ``last_error``
attribute set on the side. A pause the destination asks for and the reason for a
refusal travel in the result.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.memory import InMemorySink
from auditkeep.typing import SinkResult, SinkStatus

CONTRACT = {"name", "write_batch", "flush", "close"}


class Scripted:
    """Answers from a script, then SUCCESS; records when each attempt came and what the
    pipeline looked up on it."""

    name: ClassVar[str] = "scripted"

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.attempts: list[float] = []
        self.delivered: list[bytes] = []
        self.looked_up: set[str] = set()
        self.lock = threading.Lock()

    def __getattribute__(self, attr: str) -> Any:
        if not attr.startswith("__") and attr not in (
            "answers",
            "attempts",
            "delivered",
            "looked_up",
            "lock",
        ):
            object.__getattribute__(self, "looked_up").add(attr)
        return object.__getattribute__(self, attr)

    def write_batch(self, lines: Sequence[bytes]) -> Any:
        with self.lock:
            self.attempts.append(time.monotonic())
            answer = self.answers.pop(0) if self.answers else SinkResult.SUCCESS
            if answer is SinkResult.SUCCESS:
                self.delivered.extend(lines)
            return answer

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        return None


def logger_for(sink: Any, spool: Path, **settings: Any) -> AuditLogger:
    return AuditLogger(
        sink,
        service="svc",
        spool_dir=spool,
        metrics=AuditMetrics(CollectorRegistry()),
        fallback=InMemorySink(),
        flush_interval_s=0.01,
        retry_initial_s=0.01,
        retry_max_s=0.02,
        **settings,
    )


def deliver(sink: Any, spool: Path, entries: int = 1) -> list[str]:
    """Emit ``entries`` through ``sink``, wait until all are delivered, close; their ids."""
    logger = logger_for(sink, spool)
    try:
        ids = [logger.emit("test.contract") for _ in range(entries)]
        assert logger.flush(10)
    finally:
        logger.close(5)
    return ids


class TestSinkResult:
    def test_the_plain_answers_and_the_detailed_ones(self) -> None:
        """SUCCESS/RETRY/FAILURE are answers without detail; retry() and failure() add it."""
        assert (SinkResult.SUCCESS.ok, SinkResult.RETRY.ok, SinkResult.FAILURE.ok) == (
            True,
            False,
            False,
        )
        assert SinkResult.retry("HTTP 429", after_s=2) == SinkResult(
            SinkStatus.RETRY, "HTTP 429", 2
        )
        assert SinkResult.failure("HTTP 400").status is SinkStatus.FAILURE
        assert SinkResult.retry().status is SinkResult.RETRY.status

    @pytest.mark.parametrize("hint", [-1.0, math.nan, math.inf])
    def test_a_pause_must_be_finite_seconds(self, hint: float) -> None:
        with pytest.raises(ValueError, match="retry_after_s"):
            SinkResult.retry(after_s=hint)

    def test_only_a_retry_asks_for_a_pause(self) -> None:
        with pytest.raises(ValueError, match="RETRY"):
            SinkResult(SinkStatus.FAILURE, "no", 5.0)


class TestThePipelineReadsOnlyTheResult:
    def test_nothing_but_the_contract_is_looked_up_on_a_sink(self, tmp_path: Path) -> None:
        """Retries, a refusal and a success: the pipeline touches name and the three methods."""
        sink = Scripted(SinkResult.retry("busy", after_s=0.01), SinkResult.failure("bad"))
        deliver(sink, tmp_path, entries=2)
        assert sink.looked_up <= CONTRACT, sink.looked_up - CONTRACT

    def test_the_pause_asked_for_in_the_result_is_kept(self, tmp_path: Path) -> None:
        """retry(after_s=0.5): the next attempt waits 0.5 s, far above the backoff (10 ms),
        even when flush() asks for an attempt now."""
        sink = Scripted(SinkResult.retry("HTTP 429 Too Many Requests", after_s=0.5))
        [event_id] = deliver(sink, tmp_path)
        first, second = sink.attempts[:2]
        assert second - first >= 0.45
        assert [orjson.loads(line)["event_id"] for line in sink.delivered] == [event_id]

    def test_the_reason_of_a_refusal_is_in_the_warning(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """failure("quota exceeded"): dead-lettered, and the warning says why."""
        deliver(Scripted(SinkResult.failure("quota exceeded for tenant 7")), tmp_path)
        [warning] = [r for r in caplog.records if r.name == "auditkeep.delivery"]
        assert warning.levelno == logging.WARNING
        assert "permanently refused 1 entries (quota exceeded for tenant 7)" in warning.getMessage()

    def test_an_answer_that_is_no_result_is_a_retry_and_is_reported(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A sink that returns None (a bug): retried like a failure, reported, nothing lost."""
        sink = Scripted(None, "yes")
        [event_id] = deliver(sink, tmp_path)
        assert [orjson.loads(line)["event_id"] for line in sink.delivered] == [event_id]
        messages = [r.getMessage() for r in caplog.records if r.name == "auditkeep.delivery"]
        assert any("scripted answered NoneType, not a SinkResult" in m for m in messages)
