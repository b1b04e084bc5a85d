"""Real processes: two chains interleaved in one file, rotation and gzip, SIGTERM, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from auditkeep.integrity import _format
from auditkeep.integrity.keys import generate
from auditkeep.testing import read_trail

CHILD = Path(__file__).with_name("chain_child.py")


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pem"
    generate(path)
    return path


def _env(tmp: Path, key: Path, **extra: str) -> dict[str, str]:
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return {
        **inherited,
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(tmp / "audit.jsonl"),
        "AUDIT_LOG_SPOOL_DIR": str(tmp / "spool"),
        "AUDIT_LOG_SIGNING_KEY_FILE": str(key),
        "AUDIT_LOG_CHECKPOINT_EVERY": "100",
        "AUDIT_LOG_CHECKPOINT_INTERVAL_S": "0.2",
        **extra,
    }


def _spawn(env: dict[str, str], count: int, pause: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(count), str(pause)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _chains(lines: list[bytes]) -> dict[str, list[bytes]]:
    """Lines by chain id, in file order."""
    chains: dict[str, list[bytes]] = defaultdict(list)
    for line in lines:
        chains[orjson.loads(line)["chain"]["id"]].append(line)
    return dict(chains)


def test_two_processes_interleaved_through_rotation_and_gzip(
    tmp_path: Path, key: Path, chain_of: Callable[..., Any], seq_order: Callable[..., Any]
) -> None:
    """Two processes write one trail at once, rotated every 64 KiB and gzipped: each has its
    own chain, gap-free and signed across the rotated files, closed by a final checkpoint."""
    env = _env(
        tmp_path,
        key,
        AUDIT_LOG_FILE_MAX_BYTES="65536",
        AUDIT_LOG_FILE_COMPRESS="true",
    )
    children = [_spawn(env, 1500, 0.0002) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], [e for _, e in outputs]
    assert list(tmp_path.glob("audit.jsonl.*.gz"))  # it did rotate and compress
    chains = _chains(read_trail(tmp_path / "audit.jsonl"))
    assert len(chains) == 2
    public = load_pem_public_key((tmp_path / "signing.pem.pub").read_bytes())
    emitted = {i for out, _ in outputs for i in out.decode().split()}
    found: set[str] = set()
    for lines in chains.values():
        chain = chain_of(seq_order(lines), public_key=public)
        assert chain.final is not None
        assert len(chain.checkpoints) >= 15  # every 100 entries
        found |= {e["event_id"] for e in chain.entries if e["action"] == "svc.child.work"}
    assert found == emitted
    assert len(emitted) == 3000


def test_sigterm_closes_the_chain(
    tmp_path: Path, key: Path, chain_of: Callable[..., Any], seq_order: Callable[..., Any]
) -> None:
    child = _spawn(_env(tmp_path, key), 0, 0.001)
    assert child.stdout is not None
    deadline = time.monotonic() + 30
    ids: list[str] = []
    while len(ids) < 300:
        assert time.monotonic() < deadline
        ids.append(child.stdout.readline().decode().strip())
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=60)
    ids += rest.decode().split()
    [lines] = _chains(read_trail(tmp_path / "audit.jsonl")).values()
    public = load_pem_public_key((tmp_path / "signing.pem.pub").read_bytes())
    chain = chain_of(seq_order(lines), public_key=public)
    assert chain.final is not None
    found = {e["event_id"] for e in chain.entries if e["action"] == "svc.child.work"}
    assert set(ids) <= found


def test_a_killed_process_leaves_a_chain_without_end_and_the_spool_completes_it(
    tmp_path: Path, key: Path, chain_of: Callable[..., Any], seq_order: Callable[..., Any]
) -> None:
    """SIGKILL: no final checkpoint. With AUDIT_LOG_DURABILITY=spool, what had not reached
    the file is replayed by the next process byte for byte: the dead chain links to its
    last entry, every id the child reported is there, and the chain is still open."""
    env = _env(tmp_path, key, AUDIT_LOG_DURABILITY="spool")
    child = _spawn(env, 0, 0.0005)
    assert child.stdout is not None
    ids = [child.stdout.readline().decode().strip() for _ in range(500)]
    child.kill()
    rest, _ = child.communicate(timeout=60)
    ids += rest.decode().split()
    # The next process replays the dead one's spool, then closes its own chain.
    later = _spawn(env, 1, 0)
    later.communicate(timeout=60)
    assert later.returncode == 0
    chains = _chains(read_trail(tmp_path / "audit.jsonl"))
    assert len(chains) == 2
    public = load_pem_public_key((tmp_path / "signing.pem.pub").read_bytes())
    dead = next(
        lines for lines in chains.values() if orjson.loads(lines[0])["details"]["pid"] == child.pid
    )
    # Replay may repeat what was written just before the kill (at least once): duplicates
    # must be identical, and the dead chain must link through.
    chain = chain_of(seq_order(dead), public_key=public)
    assert chain.final is None  # ended without close
    assert chain.checkpoints  # but signed up to its last checkpoint
    found = {e["event_id"] for e in chain.entries if e["action"] == "svc.child.work"}
    assert set(ids) <= found
    assert all(line.startswith(b"{") for line in read_trail(tmp_path / "audit.jsonl"))
    assert _format.ACTION_STARTED.encode() in chains[next(iter(set(chains) - {chain.chain_id}))][0]
