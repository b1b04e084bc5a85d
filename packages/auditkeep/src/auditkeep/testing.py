"""Helpers for testing code that emits audit entries, and for reading a trail back.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import gzip
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from auditkeep._event import load_schema
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor, default_redactor
from auditkeep.sinks.file import rotated_files
from auditkeep.sinks.memory import InMemorySink

__all__ = ["capture_events", "isolated_secrets", "read_trail", "validate_entries"]


@contextlib.contextmanager
def isolated_secrets(redactor: SecretRedactor = default_redactor) -> Iterator[None]:
    """Forget, on exit, every secret registered with ``redactor`` inside the block.

    For tests that feed random values to code that registers them (a fuzzed settings
    loader registers the refused value's encodings, so that an error message cannot show
    it): without this, one run's random "secret" redacts unrelated text in later tests.
    """
    with redactor._lock:
        saved = redactor._secrets, redactor._margin
    try:
        yield
    finally:
        with redactor._lock:
            redactor._secrets, redactor._margin = saved
            redactor._forget()


def read_trail(path: str | Path) -> list[bytes]:
    """Every line of a file destination and its rotations (gzip included), oldest file first."""
    lines: list[bytes] = []
    for file in rotated_files(path):
        if file.name.endswith(".gz"):
            with gzip.open(file, "rb") as fh:
                lines.extend(fh.read().splitlines())
        else:
            lines.extend(file.read_bytes().splitlines())
    return lines


def validate_entries(lines: Sequence[bytes]) -> list[dict[str, Any]]:
    """Parse each line and validate it against the published schema (needs ``jsonschema``).

    Raises:
        jsonschema.ValidationError: on the first entry that breaks the schema.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        load_schema(), format_checker=jsonschema.FormatChecker()
    )
    entries = []
    for line in lines:
        entry: dict[str, Any] = orjson.loads(line)
        validator.validate(entry)
        entries.append(entry)
    return entries


@contextlib.contextmanager
def capture_events(service: str = "test") -> Iterator[tuple[AuditLogger, InMemorySink]]:
    """A logger writing to memory, with its own metrics registry and spool.

    The sink holds every entry once the block has flushed the logger.
    """
    from prometheus_client import CollectorRegistry

    sink = InMemorySink()
    with tempfile.TemporaryDirectory(prefix="auditkeep-capture-") as spool:
        logger = AuditLogger(
            sink, service=service, spool_dir=spool, metrics=AuditMetrics(CollectorRegistry())
        )
        try:
            yield logger, sink
        finally:
            logger.close()
