"""Shared fixtures: a clean correlation context and a fresh metrics registry per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from auditrail.context import _actor, _correlation_id
from auditrail.metrics import AuditMetrics


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
