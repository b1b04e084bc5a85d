"""The spool under write faults: an append is all or nothing, ids never repeat, acks never raise.

``os.write`` and ``os.ftruncate`` are wrapped for the spool's segment files only,
so the rest of the process (pytest included) writes normally. The real full
filesystem is in ``test_full_disk.py``; here every partial-write shape is reached.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditkeep.delivery.spool import HEADER_BYTES, Spool
from auditkeep.exceptions import SpoolWriteError


class DiskFaults:
    """Makes writes to ``*.seg`` files stop after ``budget`` bytes with ENOSPC (None: no fault)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.budget: int | None = None
        self.truncate_fails = False
        self.short_writes = 0
        real_write, real_truncate = os.write, os.ftruncate

        def is_segment(fd: int) -> bool:
            try:
                return os.readlink(f"/proc/self/fd/{fd}").endswith(".seg")
            except OSError:
                return False

        def write(fd: int, data: bytes | memoryview) -> int:
            if self.budget is None or not is_segment(fd):
                return real_write(fd, data)
            if self.budget == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = min(len(data), self.budget)
            self.budget -= n
            if n < len(data):
                self.short_writes += 1
            return real_write(fd, bytes(data[:n]))

        def ftruncate(fd: int, length: int) -> None:
            if self.truncate_fails and is_segment(fd):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_truncate(fd, length)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "ftruncate", ftruncate)

    def off(self) -> None:
        self.budget, self.truncate_fails = None, False


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> DiskFaults:
    return DiskFaults(monkeypatch)


def payloads(n: int, prefix: str) -> list[bytes]:
    return [f'{{"n":"{prefix}{i}","pad":"{"x" * 40}"}}'.encode() for i in range(n)]


def record_size(payload: bytes) -> int:
    return HEADER_BYTES + len(payload)


def drain(spool: Spool, consumer: str = "file") -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while records := spool.read(consumer, 7):
        out.extend((r.id, r.payload) for r in records)
        spool.ack(consumer, records)
    return out


def segment_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


class TestPartialAppend:
    def test_a_short_write_is_cut_back_and_nothing_is_kept(
        self, tmp_path: Path, faults: DiskFaults
    ) -> None:
        """ENOSPC half-way through a batch: the segment is exactly as before, the ids unused."""
        spool = Spool(tmp_path, ["file"])
        first = payloads(10, "a")
        spool.append(first)
        before = segment_bytes(tmp_path)
        batch = payloads(5, "b")
        faults.budget = record_size(batch[0]) + record_size(batch[1]) // 2  # 1.5 records
        with pytest.raises(SpoolWriteError) as caught:
            spool.append(batch)
        assert caught.value.committed == 0
        assert caught.value.reason == "ENOSPC"
        assert faults.short_writes == 1
        assert segment_bytes(tmp_path) == before
        assert spool.pending("file") == 10
        faults.off()
        later = payloads(5, "c")
        assert spool.append(later) == 15
        got = drain(spool)
        assert [p for _, p in got] == first + later
        assert [i for i, _ in got] == list(range(1, 16))
        assert spool.corrupt_records == 0
        spool.close()

    def test_an_untruncatable_short_write_commits_its_whole_records(
        self, tmp_path: Path, faults: DiskFaults
    ) -> None:
        """If the cut fails too, the complete records count; nothing goes behind the torn rest."""
        spool = Spool(tmp_path, ["file"])
        spool.append(payloads(10, "a"))
        batch = payloads(5, "b")
        faults.budget = record_size(batch[0]) * 2 + 9  # two records and a torn header
        faults.truncate_fails = True
        with pytest.raises(SpoolWriteError) as caught:
            spool.append(batch)
        assert caught.value.committed == 2
        assert caught.value.last_id == 12
        assert spool.pending("file") == 12
        faults.off()
        assert spool.append(payloads(3, "c")) == 15  # ids go on after the committed ones
        expected = payloads(10, "a") + batch[:2] + payloads(3, "c")
        assert [p for _, p in drain(spool)] == expected
        assert spool.corrupt_records == 0  # this process never reads the torn bytes
        spool.close()

    def test_a_fresh_process_delivers_everything_after_partial_appends(
        self, tmp_path: Path, faults: DiskFaults
    ) -> None:
        """Reopened after partial appends (cut back or not): every kept record, once, in order."""
        spool = Spool(tmp_path, ["file"])
        kept = payloads(4, "a")
        spool.append(kept)
        for n, truncate_fails in enumerate((False, True, False, True)):
            batch = payloads(6, f"f{n}-")
            faults.budget, faults.truncate_fails = record_size(batch[0]) * 3 - 5, truncate_fails
            with pytest.raises(SpoolWriteError) as caught:
                spool.append(batch)
            kept += batch[: caught.value.committed]
            faults.off()
            ok = payloads(2, f"ok{n}-")
            spool.append(ok)
            kept += ok
        spool.close()

        again = Spool(tmp_path, ["file"])
        got = drain(again)
        assert [p for _, p in got] == kept
        ids = [i for i, _ in got]
        assert ids == sorted(set(ids))  # strictly increasing: no id given twice
        assert again.pending("file") == 0
        again.close()
        assert list(tmp_path.glob("*.seg")) == []

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        steps=st.lists(
            st.tuples(
                st.integers(1, 8),  # records in the append
                st.none() | st.integers(0, 600),  # bytes the disk takes before ENOSPC
                st.booleans(),  # the cut back fails too
                st.booleans(),  # deliver and ack what is pending after this step
                st.booleans(),  # close and reopen (a new process) after this step
            ),
            min_size=1,
            max_size=12,
        )
    )
    def test_whatever_the_faults_exactly_the_kept_records_are_delivered(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        faults: DiskFaults,
        steps: list[tuple[int, int | None, bool, bool, bool]],
    ) -> None:
        """Property: appends under random ENOSPC, acks and restarts deliver just what was kept."""
        directory = tmp_path_factory.mktemp("spool")
        spool = Spool(directory, ["file"], max_segment_bytes=400)
        expected: list[bytes] = []
        delivered: list[bytes] = []
        seen_ids: list[int] = []
        counter = iter(range(10**6))
        for size, budget, truncate_fails, deliver, reopen in steps:
            batch = payloads(size, f"{next(counter)}-")
            faults.budget, faults.truncate_fails = budget, truncate_fails
            try:
                spool.append(batch)
                expected += batch
            except SpoolWriteError as exc:
                expected += batch[: exc.committed]
            faults.off()
            if deliver:
                got = drain(spool)
                seen_ids += [i for i, _ in got]
                delivered += [p for _, p in got]
            if reopen:
                spool.close()
                spool = Spool(directory, ["file"], max_segment_bytes=400)
        got = drain(spool)
        seen_ids += [i for i, _ in got]
        delivered += [p for _, p in got]
        assert delivered == expected
        assert len(seen_ids) == len(set(seen_ids))
        assert spool.pending("file") == 0
        spool.close()
        assert list(directory.glob("*.seg")) == []


class TestReader:
    def test_an_unreadable_last_record_does_not_stay_pending(self, tmp_path: Path) -> None:
        """A corrupt final record: counted, skipped, and pending() drops to zero (no spin)."""
        spool = Spool(tmp_path, ["file"])
        spool.append(payloads(3, "a"))
        (segment,) = tmp_path.glob("*.seg")
        data = bytearray(segment.read_bytes())
        data[-3] ^= 0xFF  # inside the last record's payload: its checksum no longer holds
        segment.write_bytes(bytes(data))
        assert [p for _, p in drain(spool)] == payloads(3, "a")[:2]
        assert spool.corrupt_records == 1
        assert spool.pending("file") == 0
        assert spool.read("file", 10) == []
        spool.close()

    def test_read_after_looks_ahead_without_moving_the_position(self, tmp_path: Path) -> None:
        """read_after pages through what is pending; read still starts after the last ack."""
        spool = Spool(tmp_path, ["file"], max_segment_bytes=300)
        data = payloads(20, "a")
        for item in data:
            spool.append([item])
        seen: list[bytes] = []
        after = 0
        while records := spool.read_after("file", after, 3):
            seen += [r.payload for r in records]
            after = records[-1].id
        assert seen == data
        first = spool.read("file", 5)
        assert [r.payload for r in first] == data[:5]
        spool.ack("file", first)
        assert [r.id for r in spool.read_after("file", 0, 2)] == [6, 7]
        spool.close()


class TestAck:
    def test_a_refused_ack_write_frees_space_first_and_is_written_later(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ENOSPC on the ack file: no exception, delivered segments gone, the ack written later;
        a restart meanwhile replays from the stale ack: duplicates at most, never loss."""
        spool = Spool(tmp_path, ["file"], max_segment_bytes=300)
        for item in payloads(20, "a"):
            spool.append([item])
        spool.ack("file", spool.read("file", 10))
        assert (tmp_path / "file.ack").read_text() == "10"
        real_write_text = Path.write_text

        def refuse(path: Path, data: str, *args: object, **kwargs: object) -> int:
            if path.name.endswith(".ack.tmp"):
                real_write_text(path, "")  # the temporary file is created, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write_text(path, data)

        monkeypatch.setattr(Path, "write_text", refuse)
        spool.ack("file", spool.read("file", 100))  # must not raise
        assert spool.pending("file") == 0
        assert spool.total_bytes() == 0  # the delivered segments were deleted all the same
        assert (tmp_path / "file.ack").read_text() == "10"  # stale on disk
        assert not (tmp_path / "file.ack.tmp").exists()
        spool.append(payloads(5, "b"))
        spool.close()  # tries the ack again: still refused

        again = Spool(tmp_path, ["file"])  # a restart with the stale ack
        assert [p for _, p in drain(again)] == payloads(5, "b")  # nothing lost, ids not reused
        monkeypatch.setattr(Path, "write_text", real_write_text)  # space returns
        again.sync()
        assert (tmp_path / "file.ack").read_text() == "25"
        again.close()
