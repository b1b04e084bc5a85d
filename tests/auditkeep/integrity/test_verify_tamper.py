"""``auditkeep verify`` against trails written by the real logger, tampered one way at a time.

The trail: two real processes (``verify_child.py``, configured only through
AUDIT_LOG_*) write one file destination at the same time, rotated every
64 KiB with gzip and signed with a key from ``auditkeep keygen``'s code. It is
built once; each test tampers a copy (a gzip backup is inflated, edited and
compressed again) and checks that verify names the kind, the file and the
line, with the exit code. The untouched trail, a trail with the library's own
at-least-once duplicates and spool reordering (a real destination that loses
acks and refuses batches), a real SIGKILL, and a record forged into the real
spool are the other cases.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from auditkeep.delivery import _records
from auditkeep.integrity import _format
from auditkeep.integrity.keys import generate, load_signing_key
from auditkeep.integrity.options import IntegrityOptions
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.query import discover_files
from auditkeep.sinks.file import FileSink
from auditkeep.testing import validate_entries
from auditkeep.typing import SinkResult

sys.path.insert(0, str(Path(__file__).parent))
import itertools

from verifykit import cli, iso, run_verify, where, write_public_key

from auditkeep.integrity._judging import unix_time

CHILD = Path(__file__).with_name("verify_child.py")
PER_PROCESS = 700
EVERY = 50


@dataclass(frozen=True)
class Spot:
    """Where one chain entry is stored."""

    file: Path
    line: int  # 1-based
    raw: bytes
    entry: dict[str, Any]


def read_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def write_lines(path: Path, lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    compressed = path.read_bytes()[:2] == b"\x1f\x8b"
    path.write_bytes(gzip.compress(data) if compressed else data)


def index_trail(live: Path) -> dict[tuple[str, int], Spot]:
    spots: dict[tuple[str, int], Spot] = {}
    for trail_file in discover_files([live]):
        for number, raw in enumerate(read_lines(trail_file.path), 1):
            entry = orjson.loads(raw)
            spots[(entry["chain"]["id"], entry["chain"]["seq"])] = Spot(
                trail_file.path, number, raw, entry
            )
    return spots


def child_env(live: Path, key: Path, spool: Path) -> dict[str, str]:
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return {
        **inherited,
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(live),
        "AUDIT_LOG_FILE_MAX_BYTES": str(64 * 1024),
        "AUDIT_LOG_FILE_BACKUPS": "1000",
        "AUDIT_LOG_FILE_COMPRESS": "true",
        "AUDIT_LOG_SIGNING_KEY_FILE": str(key),
        "AUDIT_LOG_CHECKPOINT_EVERY": str(EVERY),
        "AUDIT_LOG_SPOOL_DIR": str(spool),
        "AUDIT_LOG_SERVICE_NAME": "verify-test",
        "AUDIT_LOG_FLUSH_INTERVAL_S": "0.01",
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trail of two processes writing one rotated, gzipped file; the folder holding it."""
    base = tmp_path_factory.mktemp("trail")
    keys = tmp_path_factory.mktemp("keys")
    generate(keys / "signing.pem")
    start_at = str(time.time() + 2)
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(PER_PROCESS), tag, start_at],
            env=child_env(base / "audit.jsonl", keys / "signing.pem", keys / f"spool-{tag}"),
        )
        for tag in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    shutil.copy(keys / "signing.pem.pub", base.parent / "signing.pub")
    return base


@pytest.fixture
def trail(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trail to tamper with; returns the live file."""
    copy = tmp_path / "trail"
    shutil.copytree(built, copy)
    return copy / "audit.jsonl"


@pytest.fixture
def public(built: Path) -> Path:
    return built.parent / "signing.pub"


def verify_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = cli("--json", *args)
    assert result.stderr == ""
    return result.returncode, orjson.loads(result.stdout)


def chains(spots: dict[tuple[str, int], Spot]) -> list[str]:
    return sorted({chain_id for chain_id, _ in spots})


def sealed_spot(
    spots: dict[tuple[str, int], Spot], *, compressed: bool, checkpoint: bool = False
) -> tuple[str, int, Spot]:
    """An entry inside the sealed part (a later checkpoint covers it, and the next entry is
    in the same file), in a gzip backup or in the live file (or, when the live file has
    just been rotated and holds none, in any file)."""
    last: dict[str, int] = {}
    for chain_id, seq in spots:
        last[chain_id] = max(last.get(chain_id, 0), seq)
    middle = sorted(spots.items(), key=lambda item: abs(item[0][1] - PER_PROCESS // 2))
    for strict in (True, False):
        for (chain_id, seq), spot in middle:
            is_gz = spot.file.name.endswith(".gz")
            is_cp = spot.entry["action"] == _format.ACTION_CHECKPOINT
            after = spots.get((chain_id, seq + 1))
            if (
                2 < seq < last[chain_id] - 3
                and (is_gz == compressed or not strict)
                and is_cp == checkpoint
                and after is not None
                and after.file == spot.file
            ):
                return chain_id, seq, spot
    raise AssertionError("no such entry")


def edit(spot: Spot, change: Callable[[list[bytes], int], object]) -> None:
    lines = read_lines(spot.file)
    assert lines[spot.line - 1] == spot.raw
    change(lines, spot.line - 1)
    write_lines(spot.file, lines)


class TestUntouched:
    def test_two_processes_rotated_gzipped_verify_with_exit_0(
        self, built: Path, public: Path
    ) -> None:
        """Both chains verified and closed; every file read; the processes really interleave."""
        live = built / "audit.jsonl"
        files = discover_files([live])
        assert len(files) >= 3
        assert any(f.compressed for f in files)
        spots = index_trail(live)
        assert len(chains(spots)) == 2
        validate_entries([spot.raw for spot in spots.values()])
        # Interleaved: some file holds lines of both chains, alternating more than once.
        mixed = 0
        for trail_file in files:
            ids = [orjson.loads(raw)["chain"]["id"] for raw in read_lines(trail_file.path)]
            mixed += sum(1 for x, y in itertools.pairwise(ids) if x != y)
        assert mixed > 2
        code, report = verify_json("--public-key", str(public), str(live))
        assert code == 0, report
        assert report["result"] == "verified"
        assert len(report["files"]) == len(files)
        assert [c["status"] for c in report["chains"]] == ["verified", "verified"]
        for chain in report["chains"]:
            assert chain["closed"]
            assert chain["unsealed_tail"] == 0
            assert chain["entries"] == chain["last_seq"] + 1 > PER_PROCESS
            assert chain["verified_checkpoint_seq"] == chain["last_seq"]
            assert chain["problems"] == []

    def test_text_report_and_the_directory_form(self, built: Path, public: Path) -> None:
        result = cli("--public-key", str(public), str(built))
        assert result.returncode == 0, result.stdout
        assert result.stdout.count("VERIFIED: chain ") == 2
        assert result.stdout.splitlines()[-1].startswith("VERIFIED: 2 chains")


class TestTampered:
    def test_a_modified_entry_in_a_gzip_backup(self, trail: Path, public: Path) -> None:
        spots = index_trail(trail)
        chain_id, seq, spot = sealed_spot(spots, compressed=True)
        edit(
            spot, lambda lines, i: lines.__setitem__(i, lines[i].replace(b"padding", b"Padding", 1))
        )
        code, report = verify_json("--public-key", str(public), str(trail))
        assert code == 1
        problems = [p for c in report["chains"] for p in c["problems"]]
        assert [(p["kind"], p["file"], p["line"], p["seq"]) for p in problems] == [
            ("modified", str(spot.file), spot.line, seq)
        ]
        statuses = {c["chain_id"]: c["status"] for c in report["chains"]}
        assert statuses[chain_id] == "problems"
        assert sorted(statuses.values()) == ["problems", "verified"]

    def test_a_deleted_entry_is_a_gap_before_the_next_one(self, trail: Path, public: Path) -> None:
        spots = index_trail(trail)
        chain_id, seq, spot = sealed_spot(spots, compressed=False)
        after = spots[(chain_id, seq + 1)]
        edit(spot, lambda lines, i: lines.pop(i))
        line = after.line - 1 if after.file == spot.file and after.line > spot.line else after.line
        report = run_verify([trail], keys=[])  # links alone find a gap
        assert where(report) == [("deleted", after.file.name, line)]
        assert report.all_problems[0].seq == seq + 1
        assert f"seq {seq} missing" in report.all_problems[0].message
        assert cli("--public-key", str(public), str(trail)).returncode == 1

    def test_an_inserted_entry_claiming_an_existing_seq(self, trail: Path, public: Path) -> None:
        spots = index_trail(trail)
        _chain_id, _seq, spot = sealed_spot(spots, compressed=True)
        forged = orjson.loads(spot.raw)
        forged["details"]["note"] = "approved by nobody"
        edit(spot, lambda lines, i: lines.insert(i + 2, orjson.dumps(forged)))
        code, report = verify_json("--public-key", str(public), str(trail))
        assert code == 1
        problems = [p for c in report["chains"] for p in c["problems"]]
        assert [(p["kind"], p["file"], p["line"]) for p in problems] == [
            ("inserted", str(spot.file), spot.line + 2)
        ]

    def test_an_inserted_entry_without_a_chain(self, trail: Path, public: Path) -> None:
        spots = index_trail(trail)
        _, _, spot = sealed_spot(spots, compressed=False)
        plain = orjson.loads(spot.raw)
        del plain["chain"]
        plain["event_id"] = "01a22057-2735-729e-bb1e-512c3d4713a0"
        # A minute before its neighbours: not at any close, where an unchained entry is
        # what a caller racing close() leaves (a notice: test_verify_cli.py).
        stamp = unix_time(plain["timestamp"])
        assert stamp is not None
        plain["timestamp"] = iso(stamp - 60)
        edit(spot, lambda lines, i: lines.insert(i, orjson.dumps(plain)))
        code, report = verify_json("--public-key", str(public), str(trail))
        assert code == 1
        assert [(p["kind"], p["file"], p["line"]) for p in report["problems"]] == [
            ("unchained", str(spot.file), spot.line)
        ]

    def test_reordered_lines_are_a_notice_unless_strict(self, trail: Path, public: Path) -> None:
        """Arrival order is not evidence (the spool reorders): a swap is noted, not failed."""
        spots = index_trail(trail)
        chain_id, seq, spot = sealed_spot(spots, compressed=False)
        later = spots[(chain_id, seq + 1)]
        assert later.file == spot.file
        lines = read_lines(spot.file)
        lines[spot.line - 1], lines[later.line - 1] = lines[later.line - 1], lines[spot.line - 1]
        write_lines(spot.file, lines)
        code, report = verify_json("--public-key", str(public), str(trail))
        assert code == 0
        notices = [n for c in report["chains"] for n in c["notices"]]
        assert [(n["kind"], n["file"], n["line"]) for n in notices] == [
            ("reordered", str(spot.file), later.line)
        ]
        code, report = verify_json("--strict-order", "--public-key", str(public), str(trail))
        assert code == 1
        problems = [p for c in report["chains"] for p in c["problems"]]
        assert [(p["kind"], p["line"]) for p in problems] == [("reordered", later.line)]

    @pytest.mark.parametrize("how", ["bad", "missing"])
    def test_a_checkpoint_signature(self, trail: Path, public: Path, how: str) -> None:
        spots = index_trail(trail)
        _, _, spot = sealed_spot(spots, compressed=True, checkpoint=True)
        entry = orjson.loads(spot.raw)
        signature = entry["details"]["signature"]
        if how == "bad":
            flipped = "A" if signature[5] != "A" else "B"
            entry["details"]["signature"] = signature[:5] + flipped + signature[6:]
        else:
            entry["details"]["signature"] = None
        edit(spot, lambda lines, i: lines.__setitem__(i, orjson.dumps(entry)))
        code, report = verify_json("--public-key", str(public), str(trail))
        assert code == 1
        problems = [p for c in report["chains"] for p in c["problems"]]
        found = {p["kind"] for p in problems}
        # The line's bytes changed too, so the next entry's link also names it.
        assert found == {f"{how}_signature", "modified"}
        assert {(p["file"], p["line"]) for p in problems} == {(str(spot.file), spot.line)}

    def test_a_forged_checkpoint_head(self, trail: Path, public: Path) -> None:
        """Claiming another head breaks the signature even with the link kept consistent."""
        spots = index_trail(trail)
        _, _, spot = sealed_spot(spots, compressed=True, checkpoint=True)
        entry = orjson.loads(spot.raw)
        entry["details"]["head"] = "0" * 64
        edit(spot, lambda lines, i: lines.__setitem__(i, orjson.dumps(entry)))
        report = run_verify([trail], keys=[])
        assert ("forged", spot.file.name, spot.line) in where(report)

    def test_an_unknown_key(self, trail: Path) -> None:
        other = write_public_key(Ed25519PrivateKey.generate(), trail.parent.parent / "other.pub")
        code, report = verify_json("--public-key", str(other), str(trail))
        assert code == 1
        for chain in report["chains"]:
            assert {p["kind"] for p in chain["problems"]} == {"unknown_key"}
            assert len(chain["problems"]) == chain["checkpoints"]

    def test_a_cut_off_end_is_incomplete_never_verified(self, trail: Path, public: Path) -> None:
        """The final checkpoint and the entries before it removed: ended without close."""
        spots = index_trail(trail)
        chain_id = chains(spots)[0]
        last = max(seq for cid, seq in spots if cid == chain_id)
        cut = range(last - 7, last + 1)
        by_file: dict[Path, list[int]] = {}
        for seq in cut:
            by_file.setdefault(spots[(chain_id, seq)].file, []).append(spots[(chain_id, seq)].line)
        for path, numbers in by_file.items():
            lines = read_lines(path)
            write_lines(path, [raw for n, raw in enumerate(lines, 1) if n not in numbers])
        checkpoints = [
            seq
            for (cid, seq), spot in spots.items()
            if cid == chain_id
            and spot.entry["action"] == _format.ACTION_CHECKPOINT
            and seq < last - 7
        ]
        code, report = verify_json("--public-key", str(public), str(trail))
        assert code == 3
        chain = next(c for c in report["chains"] if c["chain_id"] == chain_id)
        assert chain["status"] == "incomplete"
        assert not chain["closed"]
        assert chain["verified_checkpoint_seq"] == max(checkpoints)
        assert chain["unsealed_tail"] == last - 7 - max(checkpoints) - 1
        (notice,) = [n for n in chain["notices"] if n["kind"] == "truncated"]
        assert (
            f"ended without close after the checkpoint at seq {max(checkpoints)}"
            in notice["message"]
        )

    def test_an_unreadable_gzip_backup(self, trail: Path, public: Path) -> None:
        backup = next(f.path for f in discover_files([trail]) if f.compressed)
        data = backup.read_bytes()
        backup.write_bytes(data[: len(data) // 2])
        code, report = verify_json("--public-key", str(public), str(trail))
        assert code == 1
        assert [p["kind"] for p in report["problems"]] == ["unreadable"]
        assert report["problems"][0]["file"] == str(backup)


def test_a_crash_ends_without_close_after_a_checkpoint(tmp_path: Path) -> None:
    """SIGKILL after the entries: exit 3, 'ended without close after the checkpoint at seq N'."""
    generate(tmp_path / "k.pem")
    live = tmp_path / "audit.jsonl"
    env = child_env(live, tmp_path / "k.pem", tmp_path / "spool")
    env["AUDIT_LOG_DURABILITY"] = "spool"
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "230", "c", "--hang"], env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    result = cli("--json", "--public-key", str(tmp_path / "k.pem.pub"), str(live))
    assert result.returncode == 3, result.stdout
    (chain,) = orjson.loads(result.stdout)["chains"]
    assert chain["problems"] == []
    assert not chain["closed"]
    assert chain["verified_checkpoint_seq"] is not None
    (notice,) = [n for n in chain["notices"] if n["kind"] == "truncated"]
    assert notice["message"].startswith(
        f"ended without close after the checkpoint at seq {chain['verified_checkpoint_seq']}"
    )


class LossyFileSink(FileSink):
    """The real file destination, made unreliable the way networks are.

    Batch 2 is written but answered RETRY (a lost ack: at-least-once repeats
    it); batches 4 and 5 are refused outright (they go to the spool and come
    back after later entries: reordering).
    """

    name: ClassVar[str] = "file"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), max_bytes=0)
        self.calls = 0

    def write_batch(self, lines: Any) -> SinkResult:
        self.calls += 1
        if self.calls in (4, 5):
            return SinkResult.retry()
        result = super().write_batch(lines)
        return SinkResult.retry() if self.calls == 2 else result


def test_library_duplicates_and_spool_reordering_verify(tmp_path: Path) -> None:
    generate(tmp_path / "k.pem")
    live = tmp_path / "audit.jsonl"
    logger = AuditLogger(
        LossyFileSink(live),
        service="verify-test",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        integrity=IntegrityOptions(
            checkpoint_every=25, signing_key=load_signing_key(tmp_path / "k.pem")
        ),
        max_batch_events=20,
        flush_interval_s=0.01,
        retry_initial_s=0.05,
        retry_max_s=0.1,
    )
    for i in range(300):
        logger.emit("svc.work.done", details={"i": i})
        if i % 20 == 19:
            time.sleep(0.02)  # batches of about twenty
    assert logger.close(20)
    lines = read_lines(live)
    seqs = [orjson.loads(raw)["chain"]["seq"] for raw in lines]
    assert len(seqs) > len(set(seqs)), "the lost ack repeated no entry"
    assert seqs != sorted(set(seqs)), "nothing came back out of order"
    result = cli("--json", "--public-key", str(tmp_path / "k.pem.pub"), str(live))
    report = orjson.loads(result.stdout)
    assert result.returncode == 0, report
    (chain,) = report["chains"]
    assert chain["closed"]
    assert chain["duplicates"] == len(seqs) - len(set(seqs))
    assert chain["entries"] == len(set(seqs)) == chain["last_seq"] + 1


@pytest.mark.parametrize("forgery", ["unchained", "unchained_at_close", "next_seq", "existing_seq"])
def test_a_record_forged_into_the_spool_is_delivered_and_flagged(
    tmp_path: Path, forgery: str
) -> None:
    """A record with a valid CRC in the spool: the next start delivers it; verify flags it.

    Without a chain and stamped a minute before the chain closed: a problem (exit 1).
    Without a chain and stamped as the chain closed, it looks like an entry that
    raced close(), which the writer delivers unchained: a notice at its line, exit 3
    (never "verified").
    """
    generate(tmp_path / "k.pem")
    live, spool = tmp_path / "audit.jsonl", tmp_path / "spool"
    env = child_env(live, tmp_path / "k.pem", spool)
    env["AUDIT_LOG_FILE_MAX_BYTES"] = "0"
    env["AUDIT_LOG_FILE_COMPRESS"] = "false"
    subprocess.run([sys.executable, str(CHILD), "60", "a"], env=env, check=True, timeout=60)
    genuine = read_lines(live)
    last = orjson.loads(genuine[-1])
    victim = orjson.loads(genuine[10])
    forged = dict(victim, event_id="01a22057-2735-729e-bb1e-512c3d4713a0")
    forged["details"] = {"i": 10, "note": "merged by the agent, approved"}
    if forgery.startswith("unchained"):
        del forged["chain"]
        if forgery == "unchained":
            stamp = unix_time(victim["timestamp"])
            assert stamp is not None
            forged["timestamp"] = iso(stamp - 60)
    elif forgery == "next_seq":
        # Plausible: continues the chain from its last line, as the writer would.
        forged["chain"] = {
            "id": last["chain"]["id"],
            "seq": last["chain"]["seq"] + 1,
            "prev": _format.line_hash(genuine[-1]),
        }
    payload = orjson.dumps(forged)
    (destination,) = [p for p in spool.glob("slot-*/*") if p.is_dir()]
    ack_file = destination / f"{destination.name}.ack"
    ack = int(ack_file.read_text().strip() or 0) if ack_file.exists() else 0
    segment = destination / _records.segment_name(ack + 1)
    segment.write_bytes(_records.encode(ack + 1, 1, payload))
    # The next start on this spool delivers it, as it delivers everything.
    subprocess.run([sys.executable, str(CHILD), "5", "b"], env=env, check=True, timeout=60)
    stored = read_lines(live)
    assert payload in stored
    line = stored.index(payload) + 1
    result = cli("--json", "--public-key", str(tmp_path / "k.pem.pub"), str(live))
    report = orjson.loads(result.stdout)
    if forgery == "unchained_at_close":
        assert result.returncode == 3, result.stdout
        assert [(n["kind"], n["line"]) for n in report["notices"]] == [("unchained", line)]
        return
    assert result.returncode == 1, result.stdout
    problems = report["problems"] + [p for c in report["chains"] for p in c["problems"]]
    assert [(p["kind"], p["line"]) for p in problems] == [
        (
            {"unchained": "unchained", "next_seq": "inserted", "existing_seq": "inserted"}[forgery],
            line,
        )
    ]


_PARALLEL_CHECK = """
import sys
from pathlib import Path

import orjson

from auditkeep.integrity import _reading, verify
from auditkeep.query import discover_files

_reading.PARALLEL_MIN_BYTES = 0
pools = []
real_pool = _reading.ProcessPoolExecutor


def counted(*args, **kwargs):
    pools.append(1)
    return real_pool(*args, **kwargs)


_reading.ProcessPoolExecutor = counted
key_id, key = verify.load_public_key(Path(sys.argv[2]))
options = verify.VerifyOptions(public_keys={key_id: key})
files = discover_files([sys.argv[1]])
reports = []
for workers in (1, 2):
    found = verify.verify(files, options, workers=workers).as_dict()
    del found["seconds"]
    reports.append(found)
sys.stdout.buffer.write(orjson.dumps({"pools": len(pools), "reports": reports}))
"""


@pytest.mark.parametrize("tamper", ["none", "modified", "deleted", "inserted"])
def test_reading_in_parallel_reports_the_same(trail: Path, public: Path, tamper: str) -> None:
    """One process per file, chains stitched in the parent: the same report as one process.

    Run in a fresh process: verify reads in one process when other threads run
    (forking them is unsafe), as they may in this one.
    """
    spots = index_trail(trail)
    _, _, spot = sealed_spot(spots, compressed=True)
    if tamper == "modified":
        edit(spot, lambda lines, i: lines.__setitem__(i, lines[i].replace(b"padding", b"pad", 1)))
    elif tamper == "deleted":
        edit(spot, lambda lines, i: lines.pop(i))
    elif tamper == "inserted":
        forged = orjson.loads(spot.raw)
        forged["details"]["note"] = "approved by nobody"
        edit(spot, lambda lines, i: lines.insert(0, orjson.dumps(forged)))
    result = subprocess.run(
        [sys.executable, "-c", _PARALLEL_CHECK, str(trail), str(public)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    found = orjson.loads(result.stdout)
    assert found["pools"] == 1  # the second run really read in parallel
    serial, parallel = found["reports"]
    assert serial == parallel
    assert (serial["exit_code"] == 0) == (tamper == "none")
