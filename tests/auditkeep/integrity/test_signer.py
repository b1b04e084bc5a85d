"""The separate signer: a real ``auditkeep signer`` process holds the key; the logger asks it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from prometheus_client import CollectorRegistry

from auditkeep.config import AuditConfig
from auditkeep.exceptions import ConfigError, SignerError
from auditkeep.integrity import _format
from auditkeep.integrity.keys import generate
from auditkeep.integrity.options import IntegrityOptions, integrity_from_env
from auditkeep.integrity.remote import RemoteSigner
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.memory import InMemorySink

VAR = "AUDIT_LOG_SIGNER_SOCKET"


class Signer:
    def __init__(self, tmp: Path) -> None:
        self.key = tmp / "signer-key.pem"
        generate(self.key)
        self.socket = tmp / "signer.sock"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *extra: str) -> None:
        inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auditkeep", "signer", "--key", str(self.key),
             "--socket", str(self.socket), *extra],
            env=inherited, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.proc.stderr.read() if self.proc.stderr else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.communicate(timeout=30)
            assert self.proc.returncode == 0
            self.proc = None

    @property
    def public(self) -> Any:
        return load_pem_public_key(Path(str(self.key) + ".pub").read_bytes())


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[Signer]:
    running = Signer(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _logger(sink: InMemorySink, tmp: Path, remote: RemoteSigner) -> AuditLogger:
    return AuditLogger(
        sink,
        service="svc",
        spool_dir=tmp / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
        integrity=IntegrityOptions(
            checkpoint_every=10, checkpoint_interval_s=0.05, signing_key=remote
        ),
    )


def _emit_until_checkpointed(logger: AuditLogger, sink: InMemorySink, n: int) -> None:
    for i in range(n):
        logger.emit("svc.work.done", details={"i": i})
    before = sum(b"chain.checkpoint" in line for line in sink.lines)
    deadline = time.monotonic() + 10
    while sum(b"chain.checkpoint" in line for line in sink.lines) == before:
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.01)


def test_the_signer_signs_every_checkpoint_and_the_agent_holds_no_key(
    tmp_path: Path, signer: Signer, chain_of: Callable[..., Any]
) -> None:
    env = {"AUDIT_LOG_SIGNER_SOCKET": str(signer.socket)}
    options = integrity_from_env(env)
    assert options is not None
    assert isinstance(options.signing_key, RemoteSigner)
    assert options.secret_texts() == ()  # nothing of the key is in this process
    sink = InMemorySink()
    logger = _logger(sink, tmp_path, options.signing_key)
    for _ in range(3):
        _emit_until_checkpointed(logger, sink, 25)
    logger.close(10)
    chain = chain_of(sink.lines, public_key=signer.public)
    assert len(chain.checkpoints) >= 4
    assert chain.final is not None
    assert chain.started["details"]["key_id"] == options.signing_key.key_id


def test_the_signer_never_signs_the_past_again(
    tmp_path: Path, signer: Signer, chain_of: Callable[..., Any]
) -> None:
    """An agent taken over asks the signer to re-sign history: refused. Only the next link
    of the chain's signed checkpoints is signed, and nothing after a final one."""
    sink = InMemorySink()
    remote = RemoteSigner(signer.socket)
    logger = _logger(sink, tmp_path, remote)
    _emit_until_checkpointed(logger, sink, 30)
    _emit_until_checkpointed(logger, sink, 30)
    checkpoints = [line for line in sink.lines if b"chain.checkpoint" in line]
    assert len(checkpoints) >= 2
    chain_id = orjson.loads(checkpoints[0])["details"]["chain_id"]
    forged = "0" * 64
    big = 10**6

    def refused(message: bytes, previous: bytes | None, why: str) -> None:
        with pytest.raises(SignerError, match=why):
            remote.sign(message, previous)

    first_hash = _format.line_hash(checkpoints[0])
    # a fresh first checkpoint over a rewritten history
    refused(
        _format.checkpoint_message(chain_id, 5, forged, None, False),
        None,
        "link to the newest",
    )
    # linking to an earlier checkpoint than the last one signed
    refused(
        _format.checkpoint_message(chain_id, big, forged, first_hash, False),
        checkpoints[0],
        "link to the newest",
    )
    # anything that is no checkpoint message
    refused(b"please sign this\n", None, "not a checkpoint message")
    # a previous line it did not sign
    other = "ab" * 16
    fake = checkpoints[0].replace(chain_id.encode(), other.encode())
    refused(
        _format.checkpoint_message(other, big, forged, _format.line_hash(fake), False),
        fake,
        "not one this signer signed",
    )
    # a prev_checkpoint that is not the line sent
    refused(
        _format.checkpoint_message(chain_id, big, forged, "1" * 64, False),
        checkpoints[-1],
        "not the hash of the previous checkpoint",
    )
    # None of that disturbed the real chain, which goes on and ends
    _emit_until_checkpointed(logger, sink, 30)
    logger.close(10)
    chain = chain_of(sink.lines, public_key=signer.public)
    assert chain.final is not None
    final = chain.lines[-1]
    refused(
        _format.checkpoint_message(chain_id, big, forged, _format.line_hash(final), False),
        final,
        "ended with a final checkpoint",
    )
    remote.close()


def test_a_signer_that_goes_away_loses_no_entry(
    tmp_path: Path, signer: Signer, chain_of: Callable[..., Any]
) -> None:
    """The signer stops mid-run: entries are still chained and delivered, the checkpoints
    that cannot be signed are missing (logged); once it is back, signing resumes."""
    sink = InMemorySink()
    logger = _logger(sink, tmp_path, RemoteSigner(signer.socket))
    _emit_until_checkpointed(logger, sink, 20)
    signer.stop()
    ids = [logger.emit("svc.work.done", details={"down": i}) for i in range(50)]
    time.sleep(0.3)  # checkpoints due meanwhile fail
    signer.start()
    _emit_until_checkpointed(logger, sink, 20)
    logger.close(10)
    chain = chain_of(sink.lines, public_key=signer.public)
    assert {e["event_id"] for e in chain.entries} >= set(ids)
    assert chain.final is not None


def test_setting_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{VAR}: no auditkeep signer answers"):
        integrity_from_env({VAR: str(tmp_path / "nothing.sock")})
    key = tmp_path / "k.pem"
    generate(key)
    with pytest.raises(ConfigError, match=f"^{VAR}: set it or AUDIT_LOG_SIGNING_KEY_FILE"):
        integrity_from_env({VAR: str(tmp_path / "s"), "AUDIT_LOG_SIGNING_KEY_FILE": str(key)})


def test_check_config_shows_the_signer(tmp_path: Path, signer: Signer) -> None:
    config = AuditConfig.from_env(
        {VAR: str(signer.socket), "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool")}, read_only=True
    )
    assert f"by the signer at {str(signer.socket)!r}" in config.summary()


def test_with_a_ledger_a_restarted_signer_still_refuses_the_past(tmp_path: Path) -> None:
    """--state: what the signer signed survives its restart, so an agent taken over cannot
    restart it (or wait for a crash) to have an older checkpoint linked again."""
    signer = Signer(tmp_path)
    ledger = tmp_path / "ledger"
    signer.start("--state", str(ledger))
    try:
        sink = InMemorySink()
        remote = RemoteSigner(signer.socket)
        logger = _logger(sink, tmp_path, remote)
        _emit_until_checkpointed(logger, sink, 30)
        _emit_until_checkpointed(logger, sink, 30)
        assert ledger.stat().st_mode & 0o777 == 0o600
        signer.stop()
        signer.start("--state", str(ledger))
        checkpoints = [line for line in sink.lines if b"chain.checkpoint" in line]
        chain_id = orjson.loads(checkpoints[0])["details"]["chain_id"]
        older = _format.checkpoint_message(
            chain_id, 10**6, "0" * 64, _format.line_hash(checkpoints[0]), False
        )
        with pytest.raises(SignerError, match="link to the newest"):
            remote.sign(older, checkpoints[0])
        logger.close(10)  # the real chain goes on and ends, signed
        assert orjson.loads(sink.lines[-1])["details"]["signature"]
    finally:
        signer.stop()


def test_signatures_that_were_never_written_block_nothing(
    tmp_path: Path, signer: Signer, chain_of: Callable[..., Any]
) -> None:
    """An optimistic try overtaken by new entries, or an answer lost on the way, leaves a
    signature the logger never writes: the signer must still sign the logger's next link
    (it only learns what is in the trail from lines it is shown)."""
    sink = InMemorySink()
    logger = _logger(sink, tmp_path, RemoteSigner(signer.socket))
    _emit_until_checkpointed(logger, sink, 30)
    newest = [line for line in sink.lines if b"chain.checkpoint" in line][-1]
    chain_id = orjson.loads(newest)["details"]["chain_id"]
    other = RemoteSigner(signer.socket)
    for final in (False, True):
        message = _format.checkpoint_message(
            chain_id, 10**6, "0" * 64, _format.line_hash(newest), final
        )
        assert other.sign(message, newest)
    other.close()
    _emit_until_checkpointed(logger, sink, 30)
    logger.close(10)
    chain = chain_of(sink.lines, public_key=signer.public)
    assert chain.final is not None
    assert chain.final["details"]["signature"]


def test_the_signer_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    generate(key)
    key.chmod(0o644)
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    result = subprocess.run(
        [sys.executable, "-m", "auditkeep", "signer", "--key", str(key),
         "--socket", str(tmp_path / "s.sock")],
        env=inherited, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("auditkeep signer: --key: ")
    assert "chmod 600" in line
    assert not (tmp_path / "s.sock").exists()
