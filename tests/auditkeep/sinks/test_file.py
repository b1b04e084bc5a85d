"""FileSink: real files, real processes, every line accounted for."""

from __future__ import annotations

import gzip
import os
import select
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditkeep import Sink, SinkResult, SinkStatus
from auditkeep.sinks.file import FileSink, install_sighup_reopen, rotated_files

# Writes 10-line batches until stdin closes. Each "mark" on stdin is answered with
# "marked" after 5 more batches, so the test knows writing went on past its change.
CONTINUOUS_WRITER = r"""
import os, select, sys
import orjson
from auditkeep import SinkResult
from auditkeep.sinks.file import FileSink, install_sighup_reopen

install_sighup_reopen()
sink = FileSink(sys.argv[1], max_bytes=0)
next_id = 0

def write_batch():
    global next_id
    batch = [orjson.dumps({"id": i}) for i in range(next_id, next_id + 10)]
    if sink.write_batch(batch) is not SinkResult.SUCCESS:
        sys.exit("write_batch did not succeed")
    next_id += 10

write_batch()
os.write(1, b"ready\n")
while True:
    write_batch()
    if select.select([0], [], [], 0)[0]:
        if not os.read(0, 64):
            break
        for _ in range(5):
            write_batch()
        os.write(1, b"marked\n")
sink.close(5.0)
os.write(1, b"%d\n" % next_id)
"""

# Waits for a line on stdin, then writes ids 0..count-1 in batches of 1 to 37 lines.
COUNTED_WRITER = r"""
import sys
import orjson
from auditkeep import SinkResult
from auditkeep.sinks.file import FileSink

path, count, max_bytes, compress, writer = sys.argv[1:]
count = int(count)
sink = FileSink(path, max_bytes=int(max_bytes), backups=1000, compress=compress == "gz")
sys.stdin.readline()
next_id, size = 0, 1
while next_id < count:
    ids = range(next_id, min(next_id + size, count))
    batch = [orjson.dumps({"writer": writer, "id": i}) for i in ids]
    if sink.write_batch(batch) is not SinkResult.SUCCESS:
        sys.exit("write_batch did not succeed")
    next_id += len(batch)
    size = size % 37 + 1
sink.close(5.0)
"""

# With a 1000-byte file size limit, a second 600-byte batch is written only in part.
SIZE_LIMITED_WRITER = r"""
import resource, signal, sys
from auditkeep.sinks.file import FileSink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
sink = FileSink(sys.argv[1], max_bytes=0)
first = sink.write_batch([b"a" * 599])
second = sink.write_batch([b"b" * 599])
print(first.status.value, second.status.value)
"""


def _line(i: int, writer: str = "t") -> bytes:
    return orjson.dumps({"writer": writer, "id": i})


def _batches(ids: range, writer: str = "t") -> list[list[bytes]]:
    """Split ids into batches of 1 to 199 lines, so batch sizes vary."""
    batches: list[list[bytes]] = []
    start, size = ids.start, 1
    while start < ids.stop:
        stop = min(start + size, ids.stop)
        batches.append([_line(i, writer) for i in range(start, stop)])
        start, size = stop, size % 199 + 1
    return batches


def _contents(file: Path) -> bytes:
    data = file.read_bytes()
    return gzip.decompress(data) if file.name.endswith(".gz") else data


def _read_entries(path: Path) -> list[dict[str, Any]]:
    """Every entry in the live file and its backups, oldest first; fails on a split line."""
    entries: list[dict[str, Any]] = []
    for file in rotated_files(path):
        data = _contents(file)
        assert data == b"" or data.endswith(b"\n"), file
        entries.extend(orjson.loads(line) for line in data.splitlines())
    return entries


def _ids(entries: list[dict[str, Any]], writer: str = "t") -> list[int]:
    return [entry["id"] for entry in entries if entry["writer"] == writer]


def _open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _reply(proc: subprocess.Popen[bytes]) -> bytes:
    """One line from the child's unbuffered stdout, waiting at most 30 s."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "child did not answer"
    return proc.stdout.readline().strip()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
def sighup_restored() -> Any:
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)


class TestConstruction:
    def test_is_a_sink(self, path: Path) -> None:
        """FileSink satisfies the Sink protocol and is named "file"."""
        sink = FileSink(path)
        assert isinstance(sink, Sink)
        assert FileSink.name == "file"
        sink.close(1.0)

    def test_repr(self, path: Path) -> None:
        """The repr shows the path and the rotation settings."""
        sink = FileSink(path, max_bytes=1024, backups=3, compress=True)
        assert (
            repr(sink) == f"FileSink(path={str(path)!r}, max_bytes=1024, backups=3, compress=True, "
            "retention='keep')"
        )
        sink.close(1.0)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"max_bytes": -1}, "max_bytes must be an int >= 0"),
            ({"backups": -1}, "backups must be an int >= 0"),
            ({"max_bytes": True}, "max_bytes must be an int >= 0"),
            ({"max_bytes": 1024, "backups": 0}, "backups must be >= 1 when max_bytes > 0"),
            ({"max_bytes": 0, "compress": True}, "compress=True needs rotation"),
            ({"file_mode": 0o400}, "file_mode must be permission bits"),
            ({"file_mode": 0o4600}, "file_mode must be permission bits"),
        ],
    )
    def test_rejects_impossible_arguments(
        self, path: Path, kwargs: dict[str, Any], message: str
    ) -> None:
        """Out-of-range values and impossible combinations raise ValueError."""
        with pytest.raises(ValueError, match=message):
            FileSink(path, **kwargs)

    def test_allows_no_backups_without_rotation(self, path: Path) -> None:
        """backups=0 is accepted when rotation is disabled."""
        sink = FileSink(path, max_bytes=0, backups=0)
        assert sink.write_batch([b"{}"]) is SinkResult.SUCCESS
        sink.close(1.0)

    def test_missing_directory_raises(self, tmp_path: Path) -> None:
        """A missing parent directory raises FileNotFoundError naming that directory."""
        missing = tmp_path / "nowhere"
        with pytest.raises(FileNotFoundError, match="directory of the audit file does not exist"):
            FileSink(missing / "audit.log")


class TestWrite:
    def test_writes_lines_exactly_with_private_mode(self, path: Path) -> None:
        """Lines appear byte for byte, newline-terminated, in files created 0o600."""
        sink = FileSink(path)
        assert sink.write_batch([b'{"a":1}', b'{"b":2}']) is SinkResult.SUCCESS
        assert sink.write_batch([]) is SinkResult.SUCCESS
        assert sink.write_batch([b'{"c":3}']) is SinkResult.SUCCESS
        sink.close(1.0)
        assert path.read_bytes() == b'{"a":1}\n{"b":2}\n{"c":3}\n'
        assert (_mode(path), _mode(Path(f"{path}.lock"))) == (0o600, 0o600)

    def test_appends_to_an_existing_file(self, path: Path) -> None:
        """An existing file is appended to, not truncated."""
        path.write_bytes(b'{"old":1}\n')
        sink = FileSink(path)
        sink.write_batch([b'{"new":2}'])
        sink.close(1.0)
        assert path.read_bytes() == b'{"old":1}\n{"new":2}\n'

    def test_file_mode_ignores_umask(self, path: Path) -> None:
        """Created files get exactly file_mode even when the umask would narrow it."""
        old_umask = os.umask(0o077)
        try:
            sink = FileSink(path, max_bytes=64, file_mode=0o640, compress=True)
            sink.write_batch([b"x" * 40])
            sink.write_batch([b"y" * 40])
            sink.close(1.0)
        finally:
            os.umask(old_umask)
        modes = {file.name: _mode(file) for file in path.parent.iterdir()}
        assert modes == {"audit.log": 0o640, "audit.log.1.gz": 0o640, "audit.log.lock": 0o640}

    def test_fsync_option_writes_every_batch(self, path: Path) -> None:
        """With fsync=True batches are written the same way and flush reports success."""
        sink = FileSink(path, fsync=True)
        sink.write_batch([b"1", b"2"])
        assert sink.flush(1.0) is True
        sink.close(1.0)
        assert path.read_bytes() == b"1\n2\n"

    def test_threads_share_one_sink(self, path: Path) -> None:
        """Threads writing through one rotating sink keep every line once and in order."""
        sink = FileSink(path, max_bytes=16 * 1024, backups=500)
        writers = ["a", "b", "c", "d"]
        results: dict[str, set[SinkResult]] = {}

        def write(writer: str) -> None:
            results[writer] = {sink.write_batch(b) for b in _batches(range(5000), writer)}

        threads = [threading.Thread(target=write, args=(writer,)) for writer in writers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sink.close(1.0)
        entries = _read_entries(path)
        assert results == {w: {SinkResult.SUCCESS} for w in writers}
        assert {w: _ids(entries, w) for w in writers} == {w: list(range(5000)) for w in writers}
        assert len(entries) == 4 * 5000


class TestRotation:
    def test_rotates_under_load_without_losing_or_splitting(self, path: Path) -> None:
        """50,000 lines through 64 KiB files: each id once, in order, no file over the limit."""
        max_bytes = 64 * 1024
        sink = FileSink(path, max_bytes=max_bytes, backups=100)
        results = {sink.write_batch(batch) for batch in _batches(range(50_000))}
        sink.close(1.0)
        files = rotated_files(path)
        assert results == {SinkResult.SUCCESS}
        assert _ids(_read_entries(path)) == list(range(50_000))
        assert [f.name for f in files] == [
            f"audit.log.{n}" for n in range(len(files) - 1, 0, -1)
        ] + ["audit.log"]
        assert len(files) > 10
        assert max(f.stat().st_size for f in files) <= max_bytes
        assert {_mode(f) for f in files} == {0o600}

    def test_batch_larger_than_max_bytes_gets_a_file_of_its_own(self, path: Path) -> None:
        """A batch larger than max_bytes is never split: it fills one file on its own."""
        sink = FileSink(path, max_bytes=100, backups=5)
        big = [b"b" * 60, b"c" * 60]
        for batch in ([b"a" * 10], big, [b"d" * 10]):
            assert sink.write_batch(batch) is SinkResult.SUCCESS
        sink.close(1.0)
        assert [_contents(f) for f in rotated_files(path)] == [
            b"a" * 10 + b"\n",
            b"b" * 60 + b"\n" + b"c" * 60 + b"\n",
            b"d" * 10 + b"\n",
        ]

    def test_compresses_rotated_files(self, path: Path) -> None:
        """With compress=True every backup is a complete .gz file and nothing else is left."""
        sink = FileSink(path, max_bytes=16 * 1024, backups=100, compress=True)
        results = {sink.write_batch(batch) for batch in _batches(range(5000))}
        sink.close(1.0)
        names = {f.name for f in path.parent.iterdir()}
        backups = len(names) - 2
        assert results == {SinkResult.SUCCESS}
        assert backups > 3
        assert names == {"audit.log", "audit.log.lock"} | {
            f"audit.log.{n}.gz" for n in range(1, backups + 1)
        }
        assert _ids(_read_entries(path)) == list(range(5000))
        assert max(len(_contents(f)) for f in rotated_files(path)) <= 16 * 1024

    def test_keeps_only_the_configured_backups(self, path: Path) -> None:
        """retention="delete", backups=2: only path, path.1 and path.2 remain, the newest lines."""
        sink = FileSink(path, max_bytes=4096, backups=2, retention="delete")
        for batch in _batches(range(5000)):
            sink.write_batch(batch)
        sink.close(1.0)
        ids = _ids(_read_entries(path))
        assert {f.name for f in path.parent.iterdir()} == {
            "audit.log",
            "audit.log.1",
            "audit.log.2",
            "audit.log.lock",
        }
        assert ids == list(range(5000 - len(ids), 5000))
        assert 0 < len(ids) < 5000

    def test_rotated_files_lists_backups_oldest_first(self, path: Path) -> None:
        """rotated_files orders backups by number, highest first, ignoring other names."""
        names = ["audit.log", "audit.log.1", "audit.log.2.gz", "audit.log.3", "audit.log.10"]
        for name in [*names, "audit.log.lock", "audit.log.1.gz.tmp", "audit.log.x", "other.1"]:
            (path.parent / name).write_bytes(b"")
        (path.parent / "audit.log.4").mkdir()
        assert [f.name for f in rotated_files(path)] == [
            "audit.log.10",
            "audit.log.3",
            "audit.log.2.gz",
            "audit.log.1",
            "audit.log",
        ]

    def test_rotated_files_of_a_missing_directory_is_empty(self, tmp_path: Path) -> None:
        """rotated_files returns no files when the directory does not exist."""
        assert rotated_files(tmp_path / "nowhere" / "audit.log") == []


class TestExternalRotation:
    def test_follows_a_rename_on_the_next_write(self, path: Path) -> None:
        """After the file is renamed away the next batch goes to a new file at path."""
        sink = FileSink(path, max_bytes=0)
        sink.write_batch([b"1"])
        path.rename(f"{path}.1")
        sink.write_batch([b"2"])
        path.unlink()
        sink.write_batch([b"3"])
        sink.close(1.0)
        assert (Path(f"{path}.1").read_bytes(), path.read_bytes()) == (b"1\n", b"3\n")

    def test_reopen_creates_the_new_file_at_once(self, path: Path) -> None:
        """reopen() opens a fresh file at path before any further write, leaking nothing."""
        fds = _open_fds()
        sink = FileSink(path, max_bytes=0)
        sink.write_batch([b"1"])
        path.rename(f"{path}.1")
        sink.reopen()
        assert path.read_bytes() == b""
        sink.write_batch([b"2"])
        sink.close(1.0)
        assert (Path(f"{path}.1").read_bytes(), path.read_bytes()) == (b"1\n", b"2\n")
        assert _open_fds() == fds

    @pytest.mark.usefixtures("sighup_restored")
    def test_sighup_reopens_and_chains(self, path: Path) -> None:
        """SIGHUP reopens live sinks once and still calls the handler installed before."""
        received: list[int] = []
        signal.signal(signal.SIGHUP, lambda signum, frame: received.append(signum))
        install_sighup_reopen()
        install_sighup_reopen()
        sink = FileSink(path, max_bytes=0)
        path.rename(f"{path}.1")
        signal.raise_signal(signal.SIGHUP)
        assert (path.exists(), received) == (True, [signal.SIGHUP])
        sink.close(1.0)

    def test_install_outside_main_thread_raises(self) -> None:
        """install_sighup_reopen refuses to run outside the main thread."""
        errors: list[BaseException] = []

        def install() -> None:
            try:
                install_sighup_reopen()
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=install)
        thread.start()
        thread.join()
        assert [str(e) for e in errors] == [
            "install_sighup_reopen() must be called from the main thread"
        ]

    def test_logrotate_create_mode_with_and_without_sighup(self, path: Path) -> None:
        """A busy writer survives rename+SIGHUP then a bare rename: every id once, in order."""
        with subprocess.Popen(
            [sys.executable, "-c", CONTINUOUS_WRITER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        ) as proc:
            assert proc.stdin is not None
            try:
                assert _reply(proc) == b"ready"
                path.rename(f"{path}.1")
                proc.send_signal(signal.SIGHUP)
                proc.stdin.write(b"mark\n")
                assert _reply(proc) == b"marked"
                Path(f"{path}.1").rename(f"{path}.2")
                path.rename(f"{path}.1")
                proc.stdin.write(b"mark\n")
                assert _reply(proc) == b"marked"
                proc.stdin.close()
                total = int(_reply(proc))
                assert proc.wait(timeout=30) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
        files = rotated_files(path)
        ids = [entry["id"] for entry in _read_entries(path)]
        assert [f.name for f in files] == ["audit.log.2", "audit.log.1", "audit.log"]
        assert all(f.stat().st_size > 0 for f in files)
        assert ids == list(range(total))


class TestProcesses:
    @pytest.mark.parametrize("compress", ["plain", "gz"])
    def test_two_processes_rotating_one_destination(self, path: Path, compress: str) -> None:
        """Two processes that both rotate one file keep every line once, whole and in order."""
        count, max_bytes = 15_000, 16 * 1024
        command = [sys.executable, "-c", COUNTED_WRITER, str(path), str(count), str(max_bytes)]
        procs = [subprocess.Popen([*command, compress, w], stdin=subprocess.PIPE) for w in "ab"]
        try:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.close()
            assert [proc.wait(timeout=60) for proc in procs] == [0, 0]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        files = rotated_files(path)
        entries = _read_entries(path)
        assert {w: _ids(entries, w) for w in ("a", "b")} == {
            "a": list(range(count)),
            "b": list(range(count)),
        }
        assert len(entries) == 2 * count
        assert len(files) > 10
        assert max(len(_contents(f)) for f in files) <= max_bytes
        suffix = ".gz" if compress == "gz" else ""
        assert [f.name for f in files[:-1]] == [
            f"audit.log.{n}{suffix}" for n in range(len(files) - 1, 0, -1)
        ]

    def test_forked_child_takes_its_own_lock(self, path: Path) -> None:
        """A child forked after the sink opened still excludes its parent: no line lost."""
        sink = FileSink(path, max_bytes=8 * 1024, backups=500)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                results = {sink.write_batch(b) for b in _batches(range(10_000), "child")}
                code = 0 if results == {SinkResult.SUCCESS} else 1
            finally:
                os._exit(code)
        results = {sink.write_batch(b) for b in _batches(range(10_000), "parent")}
        _, status = os.waitpid(pid, 0)
        sink.close(1.0)
        entries = _read_entries(path)
        assert (results, os.waitstatus_to_exitcode(status)) == ({SinkResult.SUCCESS}, 0)
        assert {w: _ids(entries, w) for w in ("parent", "child")} == {
            "parent": list(range(10_000)),
            "child": list(range(10_000)),
        }
        assert len(entries) == 20_000


class TestErrors:
    def test_returns_retry_when_path_is_not_a_file_then_recovers(self, path: Path) -> None:
        """With path replaced by a directory write_batch returns RETRY, then recovers."""
        sink = FileSink(path)
        sink.write_batch([b"1"])
        path.unlink()
        path.mkdir()
        assert sink.write_batch([b"2"]).status is SinkStatus.RETRY
        assert sink.write_batch([b"2"]).status is SinkStatus.RETRY
        path.rmdir()
        assert sink.write_batch([b"2"]) is SinkResult.SUCCESS
        sink.close(1.0)
        assert path.read_bytes() == b"2\n"

    def test_returns_retry_when_directory_is_gone(self, tmp_path: Path) -> None:
        """With the whole directory removed write_batch returns RETRY instead of raising."""
        directory = tmp_path / "logs"
        directory.mkdir()
        sink = FileSink(directory / "audit.log")
        for file in directory.iterdir():
            file.unlink()
        directory.rmdir()
        assert sink.write_batch([b"1"]).status is SinkStatus.RETRY
        sink.close(1.0)

    def test_partial_batch_is_cut_before_retry(self, path: Path) -> None:
        """A batch cut short by a full file is removed, so the file ends on a whole line."""
        result = subprocess.run(
            [sys.executable, "-c", SIZE_LIMITED_WRITER, str(path)],
            capture_output=True,
            check=True,
            timeout=30,
        )
        assert result.stdout == b"success retry\n"
        assert path.read_bytes() == b"a" * 599 + b"\n"


class TestClose:
    def test_close_is_idempotent_and_later_writes_retry(self, path: Path) -> None:
        """close() releases the descriptors, may run twice, and later writes return RETRY."""
        fds = _open_fds()
        sink = FileSink(path)
        sink.write_batch([b"1"])
        sink.close(1.0)
        assert _open_fds() == fds
        sink.close(1.0)
        assert sink.write_batch([b"2"]).status is SinkStatus.RETRY
        assert sink.write_batch([]).status is SinkStatus.RETRY
        assert sink.flush(1.0) is True
        sink.reopen()
        assert path.read_bytes() == b"1\n"
