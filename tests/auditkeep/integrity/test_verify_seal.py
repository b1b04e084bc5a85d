"""Forward-secure seal, as ``verify --seal-key`` checks it.

Acceptance (issue 14): an attacker holding the CURRENT epoch key (and the
signing key: both live in the agent's process) cannot produce a trail for an
earlier epoch that verifies, and the verifier rejects a tag made with another
epoch's key (the CVE-2023-31439 lesson: each tag is checked against its own
epoch's key, and its checkpoint's time against that epoch's window).

Trails here come from ``FormatWriter`` (the attacker needs to choose keys and
clocks); the last test runs the real logger with AUDIT_LOG_SEAL=forward.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkeep.integrity import _format
from auditkeep.integrity.keys import generate
from auditkeep.integrity.seal import generate_seal
from auditkeep.integrity.verify import EXIT_PROBLEM, EXIT_USAGE, EXIT_VERIFIED, SealSeed

sys.path.insert(0, str(Path(__file__).parent))
from verifykit import FormatWriter, cli, kinds, run_verify, write_lines, write_seal_seed

EPOCH_S = 10
SEED = os.urandom(32)
NOW = time.time()
T0 = int(NOW) - 3600
SEAL = SealSeed(SEED, T0, EPOCH_S)
KEY = Ed25519PrivateKey.generate()
START_EPOCH = 100  # the trail's first entry is stamped in epoch 100, the last in 104


def epoch_start(epoch: int) -> float:
    return float(T0 + epoch * EPOCH_S)


def sealed_trail(**hooks: object) -> list[bytes]:
    """220 entries 0.2 s apart (epochs 100-104), a checkpoint every 20 (4 s), signed, sealed."""
    writer = FormatWriter(
        key=KEY,
        seal_key=_format.seal_key_at(SEED, START_EPOCH),
        seal_epoch=START_EPOCH,
        seal_t0=T0,
        seal_epoch_s=EPOCH_S,
        every=20,
        start=epoch_start(START_EPOCH) + 0.5,
        step=0.2,
        **hooks,  # type: ignore[arg-type]
    )
    writer.entry(220)
    return writer.close()


def verify_lines(tmp_path: Path, lines: list[bytes]) -> tuple[int, list[str]]:
    report = run_verify(
        [write_lines(tmp_path / "audit.jsonl", lines)], keys=[KEY], seal=SEAL, now=NOW
    )
    return report.exit_code, kinds(report)


def epochs(lines: list[bytes]) -> list[int]:
    found = []
    for line in lines:
        entry = orjson.loads(line)
        if entry["action"] == _format.ACTION_CHECKPOINT:
            found.append(entry["details"]["seal"]["epoch"])
    return found


def test_a_genuine_sealed_trail_verifies(tmp_path: Path) -> None:
    lines = sealed_trail()
    assert sorted(set(epochs(lines))) == [100, 101, 102, 103, 104]
    assert verify_lines(tmp_path, lines) == (EXIT_VERIFIED, [])


def test_the_current_key_cannot_seal_an_earlier_epoch(tmp_path: Path) -> None:
    """Every checkpoint tagged with epoch 104's key (the current one), claiming its real epoch."""
    current = _format.seal_key_at(SEED, 104)

    def attacker(epoch: int, _key: bytes, message: bytes) -> tuple[int, str]:
        return epoch, _format.seal_tag(current, epoch, message)

    code, found = verify_lines(tmp_path, sealed_trail(seal_hook=attacker))
    assert code == EXIT_PROBLEM
    # Only the checkpoints of epoch 104 itself verify; every earlier one is refused.
    assert set(found) == {"bad_seal"}
    assert len(found) == sum(1 for e in epochs(sealed_trail()) if e < 104)


def test_claiming_the_current_epoch_for_old_checkpoints_is_refused(tmp_path: Path) -> None:
    """Valid epoch-104 tags on checkpoints stamped in epochs 100-103: outside their window."""
    current = _format.seal_key_at(SEED, 104)

    def attacker(_epoch: int, _key: bytes, message: bytes) -> tuple[int, str]:
        return 104, _format.seal_tag(current, 104, message)

    code, found = verify_lines(tmp_path, sealed_trail(seal_hook=attacker))
    assert code == EXIT_PROBLEM
    assert set(found) == {"seal_epoch_mismatch"}


def test_restamping_the_checkpoints_into_the_current_epoch_is_refused(tmp_path: Path) -> None:
    """Checkpoints moved into epoch 104 too: the entries they seal are older than the epoch."""
    current = _format.seal_key_at(SEED, 104)

    def attacker(_epoch: int, _key: bytes, message: bytes) -> tuple[int, str]:
        return 104, _format.seal_tag(current, 104, message)

    code, found = verify_lines(
        tmp_path,
        sealed_trail(seal_hook=attacker, checkpoint_clock=lambda t: max(t, epoch_start(104) + 1)),
    )
    assert code == EXIT_PROBLEM
    assert set(found) == {"seal_epoch_mismatch"}
    assert any("stamped before epoch 104 began" in p for p in _messages(tmp_path))


def _messages(tmp_path: Path) -> list[str]:
    report = run_verify([tmp_path / "audit.jsonl"], keys=[KEY], seal=SEAL, now=NOW)
    return [p.message for p in report.all_problems]


@pytest.mark.parametrize("other", [-1, +1], ids=["previous-epoch-key", "next-epoch-key"])
def test_a_tag_made_with_another_epochs_key_is_rejected(tmp_path: Path, other: int) -> None:
    """One checkpoint (of epoch 102) tagged with epoch 101's or 103's key, claiming 102."""
    marked: list[int] = []

    def wrong_key(epoch: int, key: bytes, message: bytes) -> tuple[int, str]:
        if epoch == 102 and not marked:
            marked.append(epoch)
            return epoch, _format.seal_tag(_format.seal_key_at(SEED, epoch + other), epoch, message)
        return epoch, _format.seal_tag(key, epoch, message)

    lines = sealed_trail(seal_hook=wrong_key)
    report = run_verify(
        [write_lines(tmp_path / "audit.jsonl", lines)], keys=[KEY], seal=SEAL, now=NOW
    )
    assert report.exit_code == EXIT_PROBLEM
    (problem,) = report.all_problems
    assert problem.kind == "bad_seal"
    assert orjson.loads(lines[problem.line - 1])["details"]["seal"]["epoch"] == 102  # type: ignore[operator]


def test_a_tag_of_another_epoch_claimed_as_its_own_is_rejected(tmp_path: Path) -> None:
    """The CVE shape: a correct tag for epoch 101 on a checkpoint stamped in epoch 102
    (its second one, well past the tolerance at the boundary)."""
    seen: list[int] = []

    def replay(epoch: int, key: bytes, message: bytes) -> tuple[int, str]:
        if epoch == 102:
            seen.append(epoch)
        if len(seen) == 2 and epoch == 102:
            return 101, _format.seal_tag(_format.seal_key_at(SEED, 101), 101, message)
        return epoch, _format.seal_tag(key, epoch, message)

    code, found = verify_lines(tmp_path, sealed_trail(seal_hook=replay))
    assert code == EXIT_PROBLEM
    # Stamped outside epoch 101, and an epoch lower than the checkpoint's before it.
    assert found == ["seal_epoch_mismatch", "seal_epoch_mismatch"]
    report = run_verify([tmp_path / "audit.jsonl"], keys=[KEY], seal=SEAL, now=NOW)
    assert len({p.line for p in report.all_problems}) == 1


def test_a_missing_seal_and_an_absurd_epoch(tmp_path: Path) -> None:
    count: list[int] = []

    def odd(epoch: int, key: bytes, message: bytes) -> tuple[int, str]:
        count.append(epoch)
        if len(count) == 3:
            return 10**12, _format.seal_tag(key, epoch, message)
        return epoch, _format.seal_tag(key, epoch, message)

    code, found = verify_lines(tmp_path, sealed_trail(seal_hook=odd))
    assert (code, found) == (EXIT_PROBLEM, ["bad_seal"])
    unsealed = FormatWriter(key=KEY, every=20, start=epoch_start(100) + 1, step=0.2)
    unsealed.entry(30)
    code, found = verify_lines(tmp_path, unsealed.close())
    assert code == EXIT_PROBLEM
    assert set(found) == {"bad_seal"}


def test_seal_key_file_mistakes_are_usage_errors(tmp_path: Path) -> None:
    trail = write_lines(tmp_path / "audit.jsonl", sealed_trail())
    generate_seal(tmp_path / "seal")
    state = cli("--seal-key", str(tmp_path / "seal"), str(trail))
    assert state.returncode == EXIT_USAGE
    assert "give the .verify file" in state.stderr
    (tmp_path / "junk").write_text("not json")
    junk = cli("--seal-key", str(tmp_path / "junk"), str(trail))
    assert (junk.returncode, junk.stdout) == (EXIT_USAGE, "")
    good = write_seal_seed(SEED, T0, EPOCH_S, tmp_path / "seal2.verify")
    # The seal alone authenticates (a seal without a signing key is a mode of its own).
    assert cli("--seal-key", str(good), str(trail)).returncode == EXIT_VERIFIED


def test_the_real_logger_with_a_forward_seal_verifies(tmp_path: Path) -> None:
    """AUDIT_LOG_SEAL=forward, 1 s epochs: several epochs, each tag its own, exit 0."""
    generate(tmp_path / "k.pem")
    generate_seal(tmp_path / "seal", epoch_s=1)
    live = tmp_path / "audit.jsonl"
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    env = {
        **inherited,
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(live),
        "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "AUDIT_LOG_SIGNING_KEY_FILE": str(tmp_path / "k.pem"),
        "AUDIT_LOG_SEAL": "forward",
        "AUDIT_LOG_SEAL_KEY_FILE": str(tmp_path / "seal"),
        "AUDIT_LOG_CHECKPOINT_INTERVAL_S": "0.2",
        "AUDIT_LOG_SERVICE_NAME": "verify-test",
    }
    child = Path(__file__).with_name("verify_child.py")
    subprocess.run(
        [sys.executable, str(child), "300", "s", "--slow"], env=env, check=True, timeout=60
    )
    lines = live.read_bytes().splitlines()
    assert len(set(epochs(lines))) >= 2
    result = cli(
        "--public-key",
        str(tmp_path / "k.pem.pub"),
        "--seal-key",
        str(tmp_path / "seal.verify"),
        str(live),
    )
    assert result.returncode == 0, result.stdout
    assert "checked signatures and seals" in result.stdout
