"""Shared fixtures: a clean correlation context and a fresh metrics registry per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from auditkeep.context import _actor, _correlation_id
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.memory import InMemorySink


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    """No test inherits a correlation scope from another."""
    tokens = (_correlation_id.set(None), _actor.set(None))
    yield
    _actor.reset(tokens[1])
    _correlation_id.reset(tokens[0])


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> AuditMetrics:
    return AuditMetrics(registry)


@pytest.fixture
def sink() -> InMemorySink:
    """Where the ``logger`` fixture delivers."""
    return InMemorySink()


@pytest.fixture
def logger(tmp_path: Path, sink: InMemorySink) -> Iterator[AuditLogger]:
    """A real logger delivering to ``sink`` with its own redactor and metrics, closed after."""
    audit = AuditLogger(
        sink,
        service="svc",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
    )
    try:
        yield audit
    finally:
        audit.close()
