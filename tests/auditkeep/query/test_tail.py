"""``auditkeep tail``: following the live file across rotations, truncations and torn lines."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from auditkeep.query import Follower, cli
from auditkeep.sinks.file import FileSink

sys.path.insert(0, str(Path(__file__).parent))
from trailkit import encode, make_entries

DEADLINE_S = 15.0


def take(source: queue.Queue[bytes], count: int, deadline_s: float = DEADLINE_S) -> list[bytes]:
    """Take ``count`` items, waiting at most until the deadline (no fixed sleeps)."""
    deadline = time.monotonic() + deadline_s
    items: list[bytes] = []
    while len(items) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            items.append(source.get(timeout=remaining))
        except queue.Empty:
            break
    return items


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[FileSink]:
    """A rotating, compressing file sink on tmp_path/audit.jsonl."""
    opened = FileSink(tmp_path / "audit.jsonl", max_bytes=3000, backups=20, compress=True)
    yield opened
    opened.close(1.0)


class TestFollower:
    def test_reads_across_sink_rotations_with_compression(
        self, tmp_path: Path, sink: FileSink
    ) -> None:
        """Every line reaches the follower once, in order, across several rotations to gzip."""
        live = tmp_path / "audit.jsonl"
        lines = [encode(entry) for entry in make_entries(40)]
        sink.write_batch(lines[:4])
        follower = Follower(live, poll_interval_s=0.01)
        got = follower.poll()
        for start in range(4, 40, 4):
            sink.write_batch(lines[start : start + 4])
            got.extend(follower.poll())
        follower.close()
        assert got == lines
        assert follower.rotations >= 5
        assert sorted(p.name for p in tmp_path.glob("audit.jsonl.*.gz"))[:1] == ["audit.jsonl.1.gz"]

    def test_late_write_to_a_renamed_file_is_read_within_the_grace(self, tmp_path: Path) -> None:
        """After an external rename, the old file is still read for the grace period."""
        live = tmp_path / "audit.jsonl"
        first, late, after = (encode(entry) for entry in make_entries(3))
        live.write_bytes(first + b"\n")
        clock = FakeClock()
        follower = Follower(live, poll_interval_s=0.01, rotation_grace_s=5.0, clock=clock)
        assert follower.poll() == [first]
        os.rename(live, tmp_path / "audit.jsonl.1")
        live.write_bytes(after + b"\n")
        assert follower.poll() == [after]
        with (tmp_path / "audit.jsonl.1").open("ab") as old:
            old.write(late + b"\n" + b'{"torn":')  # a late writer, then a crash mid-line
        clock.now += 1.0
        assert follower.poll() == [late]
        clock.now += 5.0
        assert follower.poll() == [b'{"torn":']
        assert follower.poll() == []
        follower.close()

    def test_partial_line_waits_for_its_newline(self, tmp_path: Path) -> None:
        """A line being written is returned only once it is complete."""
        live = tmp_path / "audit.jsonl"
        line = encode(make_entries(1)[0])
        live.write_bytes(line[:10])
        follower = Follower(live, poll_interval_s=0.01)
        assert follower.poll() == []
        with live.open("ab") as handle:
            handle.write(line[10:] + b"\n")
        assert follower.poll() == [line]
        follower.close()

    def test_truncated_file_is_read_again_from_the_start(self, tmp_path: Path) -> None:
        """After copytruncate the follower starts over at the top of the file."""
        live = tmp_path / "audit.jsonl"
        old, new = (encode(entry) for entry in make_entries(2))
        live.write_bytes(old + b"\n")
        follower = Follower(live, poll_interval_s=0.01)
        assert follower.poll() == [old]
        live.write_bytes(b"")
        assert follower.poll() == []
        with live.open("ab") as handle:
            handle.write(new + b"\n")
        assert follower.poll() == [new]
        follower.close()

    def test_follow_yields_until_stopped_from_another_thread(
        self, tmp_path: Path, sink: FileSink
    ) -> None:
        """follow() streams new lines and returns promptly once its stop event is set."""
        live = tmp_path / "audit.jsonl"
        lines = [encode(entry) for entry in make_entries(12)]
        sink.write_batch(lines[:2])
        follower = Follower(live, poll_interval_s=0.01)
        assert follower.poll() == lines[:2]
        received: queue.Queue[bytes] = queue.Queue()

        def consume() -> None:
            for line in follower.follow():
                received.put(line)

        thread = threading.Thread(target=consume)
        thread.start()
        try:
            got: list[bytes] = []
            for start in range(2, 12, 5):
                sink.write_batch(lines[start : start + 5])
                got.extend(take(received, 5))
        finally:
            follower.stop.set()
            thread.join(timeout=DEADLINE_S)
        assert got == lines[2:]
        assert not thread.is_alive()


def read_lines(stream: IO[bytes], into: queue.Queue[bytes]) -> None:
    for line in stream:
        into.put(line.rstrip(b"\n"))


class TestTailCommand:
    def test_follows_the_live_file_across_rotation_in_a_subprocess(
        self, tmp_path: Path, sink: FileSink
    ) -> None:
        """The last N matches print first, then new matches as written, until --max-entries."""
        live = tmp_path / "audit.jsonl"
        entries: list[dict[str, Any]] = make_entries(30, seed=11)
        for index, entry in enumerate(entries):
            failed = index % 5 == 2
            entry["outcome"] = "failure" if failed else "success"
            if failed:
                entry["error"] = "timeout"
            else:
                entry.pop("error", None)
                entry.pop("error_message", None)
        lines = [encode(entry) for entry in entries]
        failures = [
            line
            for line, entry in zip(lines, entries, strict=True)
            if entry["outcome"] == "failure"
        ]
        sink.write_batch(lines[:10])  # two failures already in the file
        command = [sys.executable, "-m", "auditkeep.query.cli", "tail", str(live)]
        command += ["--outcome", "failure", "--format", "json", "--lines", "1"]
        command += ["--max-entries", "5", "--duration-s", "30", "--poll-interval-s", "0.02"]
        received: queue.Queue[bytes] = queue.Queue()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            reader = threading.Thread(target=read_lines, args=(process.stdout, received))
            reader.start()
            try:
                got = take(received, 1)  # the newest failure already written: tail is following
                for start in range(10, 30, 5):
                    sink.write_batch(lines[start : start + 5])  # one failure per batch
                    got.extend(take(received, 1))
                code = process.wait(timeout=DEADLINE_S)
            finally:
                if process.poll() is None:
                    process.kill()
                reader.join(timeout=DEADLINE_S)
            errors = process.stderr.read()
        assert (code, got, errors) == (0, failures[1:6], b"")
        assert (tmp_path / "audit.jsonl.1.gz").exists()

    def test_no_match_before_the_duration_ends_exits_1(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """--duration-s bounds the run; nothing matched means exit code 1."""
        live = tmp_path / "audit.jsonl"
        live.write_bytes(encode(make_entries(1)[0]) + b"\n")
        code = cli.main(
            [
                "tail",
                str(live),
                "--service",
                "nobody",
                "--duration-s",
                "0.2",
                "--poll-interval-s",
                "0.05",
            ]
        )
        assert (code, capsysbinary.readouterr().out) == (1, b"")

    def test_missing_file_exits_2(
        self, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        """Following a file that does not exist is an error."""
        missing = tmp_path / "audit.jsonl"
        code = cli.main(["tail", str(missing), "--duration-s", "0.1"])
        assert (code, capsysbinary.readouterr().err) == (
            2,
            f"auditkeep: no such file: {missing}\n".encode(),
        )
