"""AUDIT_LOG_INTEGRITY and friends: read at start, one line naming the variable when wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from auditkeep.config import AuditConfig
from auditkeep.exceptions import ConfigError
from auditkeep.integrity import _format
from auditkeep.integrity.keys import generate
from auditkeep.integrity.options import integrity_from_env
from auditkeep.integrity.seal import generate_seal
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.testing import read_trail


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pem"
    generate(path)
    return path


@pytest.fixture
def seal(tmp_path: Path) -> Path:
    path = tmp_path / "seal"
    generate_seal(path)
    return path


def test_off_by_default() -> None:
    assert integrity_from_env({}) is None
    assert integrity_from_env({"AUDIT_LOG_INTEGRITY": "off"}) is None


def test_on_without_a_key_chains_unsigned() -> None:
    options = integrity_from_env({"AUDIT_LOG_INTEGRITY": "on"})
    assert options is not None
    assert options.signing_key is None
    assert options.checkpoint_every == _format.DEFAULT_CHECKPOINT_EVERY
    assert options.checkpoint_interval_s == _format.DEFAULT_CHECKPOINT_INTERVAL_S


def test_a_key_or_a_seal_turns_it_on(key: Path, seal: Path) -> None:
    options = integrity_from_env(
        {
            "AUDIT_LOG_SIGNING_KEY_FILE": str(key),
            "AUDIT_LOG_SEAL": "forward",
            "AUDIT_LOG_SEAL_KEY_FILE": str(seal),
            "AUDIT_LOG_CHECKPOINT_EVERY": "50",
            "AUDIT_LOG_CHECKPOINT_INTERVAL_S": "0.5",
        }
    )
    assert options is not None
    assert options.signing_key is not None
    assert options.seal is not None
    assert (options.checkpoint_every, options.checkpoint_interval_s) == (50, 0.5)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AUDIT_LOG_INTEGRITY": "maybe"}, "AUDIT_LOG_INTEGRITY"),
        (
            {"AUDIT_LOG_INTEGRITY": "on", "AUDIT_LOG_CHECKPOINT_EVERY": "0"},
            "AUDIT_LOG_CHECKPOINT_EVERY",
        ),
        ({"AUDIT_LOG_CHECKPOINT_EVERY": "9" * 40}, "AUDIT_LOG_CHECKPOINT_EVERY"),
        ({"AUDIT_LOG_CHECKPOINT_INTERVAL_S": "inf"}, "AUDIT_LOG_CHECKPOINT_INTERVAL_S"),
        ({"AUDIT_LOG_CHECKPOINT_INTERVAL_S": "0"}, "AUDIT_LOG_CHECKPOINT_INTERVAL_S"),
        ({"AUDIT_LOG_SEAL": "backward"}, "AUDIT_LOG_SEAL"),
        ({"AUDIT_LOG_SEAL": "forward"}, "AUDIT_LOG_SEAL_KEY_FILE"),
        ({"AUDIT_LOG_SEAL_KEY_FILE": "/x"}, "AUDIT_LOG_SEAL"),
        ({"AUDIT_LOG_SIGNING_KEY_FILE": "/nonexistent/k"}, "AUDIT_LOG_SIGNING_KEY_FILE"),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        integrity_from_env(env)
    assert caught.value.variable == variable


def test_off_with_a_key_is_a_contradiction(key: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        integrity_from_env({"AUDIT_LOG_INTEGRITY": "off", "AUDIT_LOG_SIGNING_KEY_FILE": str(key)})
    assert caught.value.variable == "AUDIT_LOG_INTEGRITY"


def test_configured_logger_chains_its_file(
    tmp_path: Path, key: Path, chain_of: Callable[..., Any]
) -> None:
    """The two lines the docs promise: a key and AUDIT_LOG_SIGNING_KEY_FILE."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    trail = tmp_path / "audit.jsonl"
    config = AuditConfig.from_env(
        {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(trail),
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_LOG_SIGNING_KEY_FILE": str(key),
        }
    )
    logger = config.build(metrics=AuditMetrics(CollectorRegistry()), redactor=SecretRedactor())
    logger.emit("svc.work.done")
    logger.close(10)
    public = load_pem_public_key((tmp_path / "signing.pem.pub").read_bytes())
    chain = chain_of(read_trail(trail), public_key=public)
    assert chain.final is not None


def test_check_config_reports_integrity_and_warns_when_unsigned(tmp_path: Path) -> None:
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    env = {**inherited, "AUDIT_LOG_INTEGRITY": "on", "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "s")}
    result = subprocess.run(
        [sys.executable, "-m", "auditkeep", "check-config"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "integrity:    chained, checkpoints every 1000 entries or 5 s, UNSIGNED" in result.stdout
    assert "warning: AUDIT_LOG_INTEGRITY is on without AUDIT_LOG_SIGNING_KEY_FILE" in result.stderr
