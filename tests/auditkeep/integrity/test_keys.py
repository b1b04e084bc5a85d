"""Signing keys: openssl's keys work, keygen's files, refusals at start, and no secret leaks."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from prometheus_client import CollectorRegistry

from auditkeep.config import AuditConfig
from auditkeep.exceptions import ConfigError
from auditkeep.integrity import _format
from auditkeep.integrity.keys import load_signing_key
from auditkeep.integrity.options import IntegrityOptions
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import read_trail

VAR = "AUDIT_LOG_SIGNING_KEY_FILE"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "auditkeep", *args],
        env={**inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def openssl_key(tmp_path: Path) -> Path:
    key = tmp_path / "signing.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(key))
    key.chmod(0o600)
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(tmp_path / "signing.pub"))
    return key


def _signed_logger(sink: InMemorySink, tmp: Path, key: Path) -> AuditLogger:
    return AuditLogger(
        sink,
        service="svc",
        spool_dir=tmp / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
        integrity=IntegrityOptions(
            checkpoint_every=10, checkpoint_interval_s=3600, signing_key=load_signing_key(key)
        ),
    )


def test_an_openssl_key_signs_checkpoints_that_openssl_verifies(
    tmp_path: Path, openssl_key: Path, chain_of: Callable[..., Any]
) -> None:
    sink = InMemorySink()
    logger = _signed_logger(sink, tmp_path, openssl_key)
    for i in range(25):
        logger.emit("svc.work.done", details={"i": i})
        if i == 12:  # let the checkpoint thread sign one
            deadline = time.monotonic() + 5
            while not any(b"chain.checkpoint" in line for line in sink.lines):
                assert time.monotonic() < deadline
                time.sleep(0.01)
    logger.close(10)
    public = load_pem_public_key((tmp_path / "signing.pub").read_bytes())
    chain = chain_of(sink.lines, public_key=public)  # every signature checked
    assert len(chain.checkpoints) >= 2
    assert chain.final is not None
    started = chain.started["details"]
    raw_public = public.public_bytes_raw()  # type: ignore[union-attr]
    assert started["key_id"] == _format.key_id(raw_public)
    assert started["public_key_fingerprint"] == _format.fingerprint(raw_public)
    # And an independent implementation agrees: openssl checks the final signature.
    d = chain.final["details"]
    msg, sig = tmp_path / "msg", tmp_path / "sig"
    msg.write_bytes(
        _format.checkpoint_message(
            d["chain_id"], d["seq"], d["head"], d["prev_checkpoint"], final=True
        )
    )
    sig.write_bytes(base64.b64decode(d["signature"]))
    openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "signing.pub"), "-rawin",
            "-in", str(msg), "-sigfile", str(sig))  # fmt: skip
    sig.write_bytes(bytes(64))
    with pytest.raises(subprocess.CalledProcessError):
        openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "signing.pub"),
                "-rawin", "-in", str(msg), "-sigfile", str(sig))  # fmt: skip


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    result = run("keygen", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    key = load_signing_key(out)
    assert key.key_id in result.stdout
    public = load_pem_public_key((tmp_path / "k.pem.pub").read_bytes())
    assert _format.key_id(public.public_bytes_raw()) == key.key_id  # type: ignore[union-attr]
    # openssl reads it as the Ed25519 PKCS#8 key it is
    text = subprocess.run(
        ["openssl", "pkey", "-in", str(out), "-noout", "-text"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert "ED25519 Private-Key" in text
    before = out.read_bytes()
    again = run("keygen", str(out))
    assert again.returncode == 2
    assert "refusing to replace" in again.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(openssl_key: Path, mode: int) -> None:
    openssl_key.chmod(mode)
    with pytest.raises(ConfigError, match=f"^{VAR}: .*has mode {mode:04o}.*chmod 600"):
        load_signing_key(openssl_key)


def test_a_key_owned_by_someone_else_is_refused(openssl_key: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can give a file away")
    os.chown(openssl_key, 65534, -1)
    with pytest.raises(ConfigError, match=f"^{VAR}: .*owned by uid 65534"):
        load_signing_key(openssl_key)


def test_check_config_refuses_a_readable_key_in_one_line(openssl_key: Path) -> None:
    openssl_key.chmod(0o644)
    result = run("check-config", env={VAR: str(openssl_key)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"auditkeep: invalid configuration: {VAR}: ")
    assert "chmod 600" in line


@pytest.mark.parametrize("kind", ["garbage", "rsa", "encrypted", "public", "directory", "missing"])
def test_what_is_not_an_ed25519_private_key_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "key.pem"
    secretish = "glpat-Abcdefghijklmnop1234"
    if kind == "garbage":
        path.write_text(f"-----BEGIN PRIVATE KEY-----\n{secretish}\n-----END PRIVATE KEY-----\n")
    elif kind == "rsa":
        openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024",
                "-out", str(path))  # fmt: skip
    elif kind == "encrypted":
        openssl("genpkey", "-algorithm", "ed25519", "-aes256", "-pass", "pass:hunter2hunter2",
                "-out", str(path))  # fmt: skip
    elif kind == "public":
        openssl("genpkey", "-algorithm", "ed25519", "-out", str(tmp_path / "k"))
        openssl("pkey", "-in", str(tmp_path / "k"), "-pubout", "-out", str(path))
    elif kind == "directory":
        path.mkdir()
    if path.is_file():
        path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_signing_key(path)
    message = str(caught.value)
    assert message.startswith(f"{VAR}: ")
    assert secretish not in message
    assert "\n" not in message


def test_key_material_never_reaches_the_trail_or_the_tools(
    tmp_path: Path, openssl_key: Path
) -> None:
    """The private key's spellings are registered with the redactor: an entry that quotes
    the key file (by mistake) records it scrubbed; check-config and reprs never show it."""
    pem = openssl_key.read_text()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    raw = load_signing_key(openssl_key).private.private_bytes_raw()
    spellings = [body, raw.hex(), base64.b64encode(raw).decode().rstrip("=")]
    trail = tmp_path / "audit.jsonl"
    env = {
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(trail),
        "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        VAR: str(openssl_key),
    }
    config = AuditConfig.from_env(env)
    logger = config.build(metrics=AuditMetrics(CollectorRegistry()), redactor=SecretRedactor())
    logger.emit("svc.oops.logged", details={"pem": pem, "hex": raw.hex(), "b64": spellings[2]})
    logger.emit("svc.oops.logged", error_message=pem, outcome="failure")
    logger.close(10)
    written = b"\n".join(read_trail(trail)).decode()
    assert orjson.loads(read_trail(trail)[0])["action"] == _format.ACTION_STARTED
    checked = run("check-config", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "integrity:    chained" in checked.stdout
    for text in (written, checked.stdout, checked.stderr, repr(config), repr(config.integrity)):
        for spelling in spellings:
            assert spelling not in text
            assert spelling[:24] not in text
