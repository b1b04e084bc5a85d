"""Retention and the disk-space ladder: rotation never deletes an entry silently.

Real files, real rotations, the real ``auditkeep query`` command reading them
back, real ``statvfs``; the low-space threshold is crossed on a small tmpfs
mounted for the test (root only: skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep._disk import DiskWatch, FreeSpaceThreshold
from auditkeep._retention import ROTATED_OUT_ACTION
from auditkeep.config import AuditConfig
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.file import FileSink, rotated_files
from auditkeep.testing import validate_entries

_ROOT = Path(__file__).resolve().parents[2]
# The library's and the agent's sources (two distributions), for child processes.
SRC_DIRS = (_ROOT / "packages" / "auditkeep" / "src", _ROOT / "src")
PYTHONPATH = os.pathsep.join(str(d) for d in SRC_DIRS)
_RUN_CLI = "import sys; from auditkeep.cli import main; sys.exit(main())"
TMPFS_BYTES = 512 * 1024


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": PYTHONPATH}
    return subprocess.run(
        [sys.executable, "-c", _RUN_CLI, *args],
        env={**child_env, **(env or {})},
        capture_output=True,
        timeout=120,
        check=False,
    )


def _query(*paths: Path) -> list[dict[str, Any]]:
    """Every entry `auditkeep query` finds in ``paths`` (as stored, one JSON line each)."""
    proc = _cli("query", "--format", "json", *map(str, paths))
    assert proc.returncode == 0, proc.stderr
    return validate_entries(proc.stdout.splitlines())


def _numbers(directory: Path, name: str) -> list[int]:
    pattern = re.compile(re.escape(name) + r"\.([1-9][0-9]*)(\.gz)?")
    return sorted(int(m[1]) for p in directory.iterdir() if (m := pattern.fullmatch(p.name)))


def _file_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    trail = tmp_path / "trail"
    trail.mkdir(exist_ok=True)
    return {
        "AUDIT_LOG_DESTINATION": "file",
        "AUDIT_LOG_FILE_PATH": str(trail / "audit.jsonl"),
        "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "AUDIT_LOG_SERVICE_NAME": "retention-test",
        "AUDIT_LOG_FILE_MAX_BYTES": "65536",
        "AUDIT_LOG_FILE_BACKUPS": "2",
        "HOME": str(tmp_path / "home"),
        **settings,
    }


def _emit_many(env: dict[str, str], count: int, metrics: AuditMetrics) -> list[str]:
    """Emit ``count`` ~0.6 KiB entries through a logger built from ``env``; close it."""
    logger = AuditConfig.from_env(env).build(metrics=metrics, redactor=SecretRedactor())
    ids: list[str] = []
    try:
        for i in range(count):
            ids.append(logger.emit("test.retention.write", details={"i": i, "pad": "x" * 500}))
            if i % 50 == 49:
                assert logger.flush(10)  # many batches, so many rotations
        # A rotation's own record is an entry too: flush until nothing new arrives.
        assert logger.flush(10)
        assert logger.flush(10)
    finally:
        assert logger.close(10)
    return ids


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 512 KiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class TestKeep:
    def test_default_retention_never_deletes_and_query_reads_every_rotation(
        self, tmp_path: Path
    ) -> None:
        """Default settings, BACKUPS=2, ~40 rotations: every emitted id is read back by query."""
        env = _file_env(tmp_path)
        metrics = AuditMetrics(CollectorRegistry())
        ids = _emit_many(env, 4000, metrics)
        trail = tmp_path / "trail"
        numbers = _numbers(trail, "audit.jsonl")
        assert numbers == list(range(1, len(numbers) + 1))  # contiguous, nothing skipped
        assert len(numbers) > 10 * 2  # far past AUDIT_LOG_FILE_BACKUPS=2
        by_file = [e["event_id"] for e in _query(trail / "audit.jsonl")]
        by_dir = [e["event_id"] for e in _query(trail)]
        assert (len(by_file), set(by_file)) == (len(ids), set(ids))
        assert sorted(by_dir) == sorted(by_file)
        assert metrics.registry.get_sample_value("audit_log_rotation_deleted_files_total") == 0

    def test_keep_with_gzip_numbers_on_and_loses_nothing(self, tmp_path: Path) -> None:
        """FileSink's default with compress: .1.gz … .N.gz contiguous, every line present."""
        path = tmp_path / "audit.log"
        sink = FileSink(path, max_bytes=4096, backups=1, compress=True)
        lines = [orjson.dumps({"id": i, "pad": "y" * 100}) for i in range(2000)]
        for start in range(0, len(lines), 7):
            sink.write_batch(lines[start : start + 7])
        sink.close(1.0)
        numbers = _numbers(tmp_path, "audit.log")
        assert numbers == list(range(1, len(numbers) + 1))
        assert len(numbers) > 50
        assert {p.name for p in rotated_files(path)[:-1]} == {f"audit.log.{n}.gz" for n in numbers}
        found = [
            orjson.loads(line)["id"] for f in rotated_files(path) for line in _plain(f).splitlines()
        ]
        assert found == list(range(2000))


def _plain(path: Path) -> bytes:
    import gzip

    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


class TestDelete:
    def test_every_deletion_is_an_entry_and_a_metric(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """retention=delete: lines present + entries deleted == lines written, each recorded."""
        env = _file_env(tmp_path, AUDIT_LOG_FILE_RETENTION="delete")
        metrics = AuditMetrics(CollectorRegistry())
        ids = _emit_many(env, 4000, metrics)
        trail = tmp_path / "trail"
        files = metrics.registry.get_sample_value("audit_log_rotation_deleted_files_total") or 0
        deleted = metrics.registry.get_sample_value("audit_log_rotation_deleted_entries_total") or 0
        # A deletion during close() cannot be an entry any more; it is logged instead.
        untold = sum("during shutdown" in r.getMessage() for r in caplog.records)
        entries = _query(trail / "audit.jsonl")
        records = [e for e in entries if e["action"] == ROTATED_OUT_ACTION]
        written = len(ids) + files - untold  # the test's entries plus the deletion records
        assert _numbers(trail, "audit.jsonl") == [1, 2]
        assert files > 5
        assert records
        assert len(entries) + deleted == written
        survivors = {e["event_id"] for e in entries} & set(ids)
        assert survivors == set(ids[len(ids) - len(survivors) :])  # the newest survive
        for record in records:
            details = record["details"]
            assert record["target"] == {
                "resource_type": "audit_file",
                "path": str(trail / "audit.jsonl.3"),
            }
            assert (details["file"], details["retention"], details["backups"]) == (
                "audit.jsonl.3",
                "delete",
                2,
            )
            assert details["entries"] > 0
            assert details["bytes"] >= details["entries"] * 100
            assert details["first_timestamp"] <= details["last_timestamp"]
            uuid.UUID(record["event_id"])

    def test_without_a_callback_each_deletion_is_logged(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bare FileSink with retention=delete names every deleted file in a warning."""
        path = tmp_path / "audit.log"
        sink = FileSink(path, max_bytes=1024, backups=1, retention="delete")
        for i in range(40):
            ts = f"2026-01-01T00:00:{i:02d}.000Z"
            later = ts.replace(".000Z", ".500Z")
            sink.write_batch(
                [orjson.dumps({"timestamp": t, "i": i, "pad": "z" * 300}) for t in (ts, later)]
            )
        sink.close(1.0)
        lines = [r.getMessage() for r in caplog.records if r.name == "auditkeep.sinks.file"]
        assert {r.levelname for r in caplog.records} == {"WARNING"}
        present = sum(len(_plain(f).splitlines()) for f in rotated_files(path))
        assert all(
            line.startswith(f"auditkeep: retention=delete deleted {str(path) + '.2'!r}: ")
            for line in lines
        )
        counts = [re.search(r" (\d+) entries", line) for line in lines]
        deleted = sum(int(found[1]) for found in counts if found is not None)
        assert (len(lines) > 10, present + deleted) == (True, 80)
        assert "2026-01-01T00:00:00.000Z .. 2026-01-01T00:00:00.500Z" in lines[0]


class TestDiskSpace:
    def test_free_space_gauge_is_statvfs(self, small_fs: Path, tmp_path: Path) -> None:
        """audit_log_disk_free_bytes / _size_bytes are f_bavail / f_blocks times f_frsize."""
        metrics = AuditMetrics(CollectorRegistry())
        metrics.disk.watch("file", small_fs, FreeSpaceThreshold(), monitor=False)
        metrics.disk.watch("spool", tmp_path, FreeSpaceThreshold(), monitor=False)
        (small_fs / "filler").write_bytes(b"f" * 100_000)
        stat = os.statvfs(small_fs)
        value = metrics.registry.get_sample_value
        assert (
            value("audit_log_disk_free_bytes", {"path": "file"}),
            value("audit_log_disk_size_bytes", {"path": "file"}),
            value("audit_log_disk_space_low", {"path": "file"}),
        ) == (stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize, 0)
        assert stat.f_blocks * stat.f_frsize == TMPFS_BYTES
        spool = os.statvfs(tmp_path)
        assert value("audit_log_disk_size_bytes", {"path": "spool"}) == (
            spool.f_blocks * spool.f_frsize
        )

    def test_crossing_the_threshold_warns_once_and_flips_the_gauge(
        self, small_fs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Below AUDIT_LOG_DISK_WARN_FREE: one warning, gauge 1; back above: one line, 0."""
        env = {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(small_fs / "audit.jsonl"),
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_LOG_DISK_WARN_FREE": "262144",  # bytes: half the tmpfs, not the spool's disk
            "HOME": str(tmp_path / "home"),
        }
        metrics = AuditMetrics(CollectorRegistry())
        logger = AuditConfig.from_env(env).build(metrics=metrics, redactor=SecretRedactor())

        def low() -> float | None:
            return metrics.registry.get_sample_value("audit_log_disk_space_low", {"path": "file"})

        def logged() -> list[str]:
            lines = [r.getMessage() for r in caplog.records if r.name == "auditkeep.disk"]
            caplog.clear()
            return lines

        try:
            assert (low(), logged()) == (0, [])
            (small_fs / "filler").write_bytes(b"f" * 300_000)
            assert [low(), low(), low()] == [1, 1, 1]
            warned = logged()
            event_id = logger.emit("test.disk.low")  # the caller is unharmed
            assert logger.flush(10)
            (small_fs / "filler").unlink()
            assert [low(), low()] == [0, 0]
            recovered = logged()
        finally:
            logger.close(10)
        assert len(warned) == 1
        assert warned[0].startswith(
            "auditkeep: WARNING: low disk space where the audit file lives: "
        )
        assert "below AUDIT_LOG_DISK_WARN_FREE=262144 bytes" in warned[0]
        assert str(small_fs) in warned[0]
        assert len(recovered) == 1
        assert "above AUDIT_LOG_DISK_WARN_FREE again" in recovered[0]
        stored = [
            orjson.loads(line) for line in (small_fs / "audit.jsonl").read_bytes().splitlines()
        ]
        assert [e["event_id"] for e in stored] == [event_id]

    def test_monitor_thread_warns_without_a_scrape(self, small_fs: Path) -> None:
        """Nobody scrapes: the process's monitor thread still writes the warning (child process)."""
        (small_fs / "filler").write_bytes(b"f" * 400_000)
        code = (
            "import time, auditkeep._disk as d\n"
            "d.CHECK_INTERVAL_S = 0.05\n"
            "w = d.DiskWatch()\n"
            f"w.watch('file', {str(small_fs)!r}, d.FreeSpaceThreshold(percent=50))\n"
            "time.sleep(1.0)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": PYTHONPATH},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = proc.stderr.splitlines()
        assert (proc.returncode, len(lines)) == (0, 1), proc.stderr
        assert lines[0].startswith("auditkeep: WARNING: low disk space where the audit file lives")

    def test_check_config_warns_when_already_low(self, small_fs: Path, tmp_path: Path) -> None:
        """check-config: a valid configuration on a nearly full disk exits 0 with a warning."""
        (small_fs / "filler").write_bytes(b"f" * 480_000)
        env = {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(small_fs / "audit.jsonl"),
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "HOME": str(tmp_path / "home"),
        }
        proc = _cli("check-config", env=env)
        lines = proc.stderr.decode().splitlines()
        assert (proc.returncode, len(lines)) == (0, 1), proc.stderr
        assert "low disk space where the audit file lives" in lines[0]
        assert b"configuration OK" in proc.stdout

    def test_vanished_directory_stops_being_watched(self, tmp_path: Path) -> None:
        """A watched directory that is removed drops out of the readings instead of failing."""
        gone = tmp_path / "gone"
        gone.mkdir()
        watch = DiskWatch()
        watch.watch("spool", gone, FreeSpaceThreshold(), monitor=False)
        assert [r.label for r in watch.check()] == ["spool"]
        shutil.rmtree(gone)
        assert watch.check() == []
        with contextlib.suppress(FileNotFoundError):
            gone.rmdir()
