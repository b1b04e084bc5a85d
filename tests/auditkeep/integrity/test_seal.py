"""Forward-secure seal: derivation, evolution, a state file that only moves forward (also
under concurrent processes), and a current key that cannot tag an earlier epoch."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep.exceptions import ConfigError
from auditkeep.integrity import _format
from auditkeep.integrity.options import IntegrityOptions
from auditkeep.integrity.seal import Sealer, generate_seal
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.memory import InMemorySink

VAR = "AUDIT_LOG_SEAL_KEY_FILE"


def _seal(tmp: Path, epoch_s: int = 60) -> tuple[Path, bytes, dict[str, Any]]:
    state = tmp / "seal"
    verify = generate_seal(state, epoch_s=epoch_s)
    info = orjson.loads(verify.read_bytes())
    return state, bytes.fromhex(info["seed"]), info


def _on_file(state: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(state.read_bytes())
    return data


def _at(info: dict[str, Any], epoch: int) -> float:
    """A moment inside ``epoch``."""
    return float(info["t0"] + epoch * info["epoch_s"]) + 0.5


def test_keygen_seal_writes_host_state_and_an_off_host_seed(tmp_path: Path) -> None:
    state, seed, info = _seal(tmp_path, epoch_s=30)
    assert state.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "seal.verify").stat().st_mode & 0o777 == 0o600
    on_file = _on_file(state)
    assert on_file["epoch"] == 0
    assert bytes.fromhex(on_file["key"]) == _format.seal_key0(seed)
    assert (on_file["t0"], on_file["epoch_s"]) == (info["t0"], 30)
    assert "seed" not in on_file
    assert seed.hex() not in state.read_text()
    with pytest.raises(FileExistsError):
        generate_seal(state)


def test_advance_derives_each_epoch_and_never_goes_back(tmp_path: Path) -> None:
    state, seed, info = _seal(tmp_path)
    sealer = Sealer.load(state)
    reached = 0
    for target in (1, 3, 3, 2, 0, 10, 7, 11):
        epoch = sealer.advance(_at(info, target))
        reached = max(reached, target)
        assert epoch == sealer.epoch == reached
        on_file = _on_file(state)
        assert on_file["epoch"] == reached
        assert bytes.fromhex(on_file["key"]) == _format.seal_key_at(seed, reached)
        assert sealer.secret_text() == on_file["key"]
        assert state.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seal", "seal.lock", "seal.verify"]


def test_the_old_key_is_gone_from_memory_and_file(tmp_path: Path) -> None:
    state, seed, info = _seal(tmp_path)
    sealer = Sealer.load(state)
    key0 = _format.seal_key0(seed)
    held = sealer._key  # the one buffer the sealer keeps its key in
    assert bytes(held) == key0
    sealer.advance(_at(info, 1))
    assert sealer._key is held  # overwritten in place, not rebound
    assert bytes(held) == _format.seal_key_at(seed, 1) != key0
    assert key0.hex() not in state.read_text()
    sealer.erase()
    assert bytes(held) == bytes(32)


def test_a_process_behind_the_file_adopts_the_newer_key(tmp_path: Path) -> None:
    state, seed, info = _seal(tmp_path)
    behind, ahead = Sealer.load(state), Sealer.load(state)
    ahead.advance(_at(info, 10))
    assert behind.advance(_at(info, 5)) == 10  # never writes the file back to 5
    assert _on_file(state)["epoch"] == 10
    assert bytes(behind._key) == _format.seal_key_at(seed, 10)
    message = _format.checkpoint_message("ab" * 16, 3, "cd" * 32, None, final=False)
    assert behind.tag(message) == ahead.tag(message)


_CHILD = """
import random, sys
from pathlib import Path
from auditkeep.integrity.seal import Sealer
state, t0, epoch_s, rounds, seed = Path(sys.argv[1]), *map(int, sys.argv[2:6])
rng = random.Random(seed)
sealer = Sealer.load(state)
for _ in range(rounds):
    epoch = sealer.advance(t0 + rng.randrange(200) * epoch_s + 0.5)
    print(epoch, sealer.secret_text(), flush=True)
"""


def test_processes_sharing_the_state_file_keep_it_monotonic_and_consistent(
    tmp_path: Path,
) -> None:
    """Four real processes advance one state file to random epochs at once. Every key any
    of them held is the seed's key for its epoch, and a reader polling the file meanwhile
    never sees the epoch go down (nor a torn file)."""
    state, seed, info = _seal(tmp_path)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(_on_file(state)["epoch"])  # a torn or partial file would not parse

    watcher = threading.Thread(target=watch)
    watcher.start()
    argv = [sys.executable, "-c", _CHILD, str(state), str(info["t0"]), str(info["epoch_s"])]
    children = [
        subprocess.Popen([*argv, "60", str(k)], stdout=subprocess.PIPE, text=True) for k in range(4)
    ]
    try:
        outputs = [child.communicate(timeout=60)[0] for child in children]
    finally:
        stop.set()
        watcher.join()
    assert [child.returncode for child in children] == [0, 0, 0, 0]
    held = [line.split() for out in outputs for line in out.splitlines()]
    assert len(held) == 4 * 60
    keys = {int(epoch): key for epoch, key in held}
    for epoch, key in keys.items():
        assert bytes.fromhex(key) == _format.seal_key_at(seed, epoch)
    for out in outputs:  # each process's own epochs only move forward
        epochs = [int(line.split()[0]) for line in out.splitlines()]
        assert epochs == sorted(epochs)
    assert seen == sorted(seen)
    final = _on_file(state)
    assert final["epoch"] == max(keys)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_current_key_cannot_tag_an_earlier_epoch(tmp_path: Path) -> None:
    """An attacker who copies the host's state file in epoch 5 holds key_5. The obvious
    forgeries of an epoch-4 tag all fail: key_5 used as is, evolved further, used as a
    seed, hashed, or with the epoch label changed; walking forward from key_5 never
    reaches key_4 (the evolution is SHA-256, one-way)."""
    state, seed, info = _seal(tmp_path)
    sealer = Sealer.load(state)
    sealer.advance(_at(info, 5))
    stolen = bytes.fromhex(_on_file(state)["key"])
    message = _format.checkpoint_message("ab" * 16, 41, "cd" * 32, "ef" * 32, final=False)
    genuine = _format.seal_tag(_format.seal_key_at(seed, 4), 4, message)
    forgeries = {
        "current key, earlier epoch": _format.seal_tag(stolen, 4, message),
        "evolved key": _format.seal_tag(_format.seal_evolve(stolen), 4, message),
        "current key as seed": _format.seal_tag(_format.seal_key_at(stolen, 4), 4, message),
        "hashed key": _format.seal_tag(hashlib.sha256(stolen).digest(), 4, message),
        "plain HMAC": hmac.new(stolen, message, hashlib.sha256).hexdigest(),
        "own epoch label": _format.seal_tag(stolen, 5, message),
    }
    for name, tag in forgeries.items():
        assert tag != genuine, name
    key = stolen
    earlier = {_format.seal_key_at(seed, e) for e in range(5)}
    for _ in range(10_000):
        key = _format.seal_evolve(key)
        assert key not in earlier
    # What the stolen key can do, the docs say too: tag epoch 5 and later.
    assert _format.seal_tag(stolen, 5, message) == _format.seal_tag(
        _format.seal_key_at(seed, 5), 5, message
    )


def test_the_logger_seals_every_checkpoint_with_its_epoch(
    tmp_path: Path, chain_of: Callable[..., Any]
) -> None:
    state, seed, info = _seal(tmp_path)
    sink = InMemorySink()
    logger = AuditLogger(
        sink,
        service="svc",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
        integrity=IntegrityOptions(
            checkpoint_every=5, checkpoint_interval_s=3600, seal=Sealer.load(state)
        ),
    )
    for i in range(12):
        logger.emit("svc.work.done", details={"i": i})
        time.sleep(0.005)
    logger.close(10)
    chain = chain_of(sink.lines, seed=seed)  # every tag checked against the seed
    assert chain.started["details"]["seal"] == "forward"
    assert chain.started["details"]["seal_epoch"] == 0
    assert chain.checkpoints
    for checkpoint in chain.checkpoints:
        epoch = checkpoint["details"]["seal"]["epoch"]
        stamp = datetime.fromisoformat(checkpoint["timestamp"]).timestamp()
        assert _format.seal_epoch_of(stamp, info["t0"], info["epoch_s"]) == epoch
    assert bytes(logger._chain._seal._key) == bytes(32)  # type: ignore[union-attr]  # erased


def test_the_key_evolves_at_the_epoch_boundary_while_idle(tmp_path: Path) -> None:
    state, seed, _ = _seal(tmp_path, epoch_s=1)
    logger = AuditLogger(
        InMemorySink(),
        service="svc",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
        integrity=IntegrityOptions(checkpoint_interval_s=3600, seal=Sealer.load(state)),
    )
    try:
        start = _on_file(state)["epoch"]
        deadline = time.monotonic() + 5
        while _on_file(state)["epoch"] < start + 2:
            assert time.monotonic() < deadline, "the key did not evolve"
            time.sleep(0.05)
    finally:
        logger.close(10)
    on_file = _on_file(state)
    assert bytes.fromhex(on_file["key"]) == _format.seal_key_at(seed, on_file["epoch"])


def test_the_seed_file_is_refused_on_the_host(tmp_path: Path) -> None:
    _seal(tmp_path)
    with pytest.raises(ConfigError, match=f"^{VAR}: .*the seed"):
        Sealer.load(tmp_path / "seal.verify")


def test_a_state_file_others_can_read_is_refused(tmp_path: Path) -> None:
    state, _, _ = _seal(tmp_path)
    os.chmod(state, 0o640)
    with pytest.raises(ConfigError, match=f"^{VAR}: .*mode 0640"):
        Sealer.load(state)


@pytest.mark.parametrize(
    "content",
    [b"", b"[]", b'{"format":1}', b'{"format":1,"t0":0,"epoch_s":60,"epoch":-1,"key":"00"}',
     b'{"format":1,"t0":0,"epoch_s":0,"epoch":0,"key":"' + b"0" * 64 + b'"}',
     b'{"format":2,"t0":0,"epoch_s":60,"epoch":0,"key":"' + b"0" * 64 + b'"}'],
)  # fmt: skip
def test_a_malformed_state_file_is_refused(tmp_path: Path, content: bytes) -> None:
    state = tmp_path / "seal"
    state.write_bytes(content)
    state.chmod(0o600)
    with pytest.raises(ConfigError, match=f"^{VAR}: .*not an auditkeep seal state file"):
        Sealer.load(state)


def test_one_setting_builds_loggers_one_after_another(
    tmp_path: Path, chain_of: Callable[..., Any]
) -> None:
    """configure() after close(): the second logger reads the seal again (the first one's
    copy was erased at close), and its tags still verify."""
    state, seed, _ = _seal(tmp_path)
    options = IntegrityOptions(checkpoint_interval_s=3600, seal=Sealer.load(state))
    for run in range(2):
        sink = InMemorySink()
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=tmp_path / f"spool{run}",
            metrics=AuditMetrics(CollectorRegistry()),
            redactor=SecretRedactor(),
            integrity=options,
        )
        logger.emit("svc.work.done")
        logger.close(10)
        assert chain_of(sink.lines, seed=seed).final is not None


def test_an_erased_sealer_refuses_to_work(tmp_path: Path) -> None:
    state, _, info = _seal(tmp_path)
    sealer = Sealer.load(state)
    sealer.erase()
    with pytest.raises(RuntimeError, match="erased"):
        sealer.tag(b"m")
    with pytest.raises(RuntimeError, match="erased"):
        sealer.advance(_at(info, 3))
    assert _on_file(state)["epoch"] == 0


def test_a_state_file_that_cannot_be_advanced_still_moves_the_key_forward(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock beside the state file cannot be opened (a directory stands there): the key
    evolves in memory (tags stay right), the file keeps its older key, and an error says so."""
    state, seed, info = _seal(tmp_path)
    (tmp_path / "seal.lock").mkdir()
    sealer = Sealer.load(state)
    with caplog.at_level("ERROR", logger="auditkeep.integrity"):
        assert sealer.advance(_at(info, 3)) == 3
    assert "cannot advance the seal state file" in caplog.text
    assert bytes(sealer._key) == _format.seal_key_at(seed, 3)
    assert _on_file(state)["epoch"] == 0


def test_the_seal_key_is_registered_with_the_redactor(tmp_path: Path) -> None:
    state, seed, _ = _seal(tmp_path)
    sink = InMemorySink()
    logger = AuditLogger(
        sink,
        service="svc",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=SecretRedactor(),
        integrity=IntegrityOptions(checkpoint_interval_s=3600, seal=Sealer.load(state)),
    )
    key = _on_file(state)["key"]  # the epoch the logger is in now
    logger.emit("svc.oops.logged", details={"state": state.read_text(), "note": f"k={key}"})
    logger.close(10)
    text = b"\n".join(sink.lines).decode()
    assert key not in text
    assert seed.hex() not in text
