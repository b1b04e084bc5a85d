"""The spool write-ahead log: crash replay, corruption handling, reclaiming, slots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditkeep.delivery.slots import adopt_orphans, claim_spool_dir
from auditkeep.delivery.spool import HEADER_BYTES, Spool
from auditkeep.exceptions import SpoolError, SpoolFullError


def payloads(n: int, prefix: str = "e") -> list[bytes]:
    return [f'{{"n":"{prefix}{i}"}}'.encode() for i in range(n)]


def drain(spool: Spool, consumer: str, batch: int = 64) -> list[bytes]:
    out: list[bytes] = []
    while records := spool.read(consumer, batch):
        out.extend(r.payload for r in records)
        spool.ack(consumer, records)
    return out


class TestReadAck:
    def test_reads_in_order_across_segments_and_reclaims_them(self, tmp_path: Path) -> None:
        """Records come back in append order; delivered segments are deleted."""
        spool = Spool(tmp_path, ["file"], max_segment_bytes=1024)
        data = payloads(500)
        for item in data:
            spool.append([item])
        assert len(list(tmp_path.glob("*.seg"))) > 10
        assert drain(spool, "file", batch=37) == data
        assert spool.pending("file") == 0
        assert spool.total_bytes() == 0
        spool.close()
        assert list(tmp_path.glob("*.seg")) == []

    def test_unacknowledged_records_are_read_again(self, tmp_path: Path) -> None:
        """A batch read but not acknowledged (a failed delivery) comes back: at-least-once."""
        spool = Spool(tmp_path, ["file"])
        spool.append(payloads(10))
        first = spool.read("file", 4)
        again = spool.read("file", 4)
        assert [r.payload for r in again] == [r.payload for r in first]
        spool.ack("file", first)
        assert [r.payload for r in spool.read("file", 100)] == payloads(10)[4:]
        spool.close()

    def test_each_consumer_has_its_own_position(self, tmp_path: Path) -> None:
        """Two destinations read independently; a segment stays until both delivered it."""
        spool = Spool(tmp_path, ["file", "http"], max_segment_bytes=512)
        data = payloads(100)
        spool.append(data)
        assert drain(spool, "file") == data
        assert spool.total_bytes() > 0  # http still needs them
        assert drain(spool, "http") == data
        assert spool.total_bytes() == 0
        spool.close()


class TestRecovery:
    def test_reopen_replays_what_was_not_acknowledged(self, tmp_path: Path) -> None:
        """After a crash (no close), a new Spool on the directory replays the unacked tail."""
        spool = Spool(tmp_path, ["file"], max_segment_bytes=2048)
        data = payloads(300)
        spool.append(data)
        records = spool.read("file", 120)
        spool.ack("file", records)
        del spool  # simulated crash: nothing closed or synced explicitly

        reopened = Spool(tmp_path, ["file"], max_segment_bytes=2048)
        assert drain(reopened, "file") == data[120:]
        new = reopened.append([b'{"after":"restart"}'])
        assert new == 301  # ids continue past the old ones
        reopened.close()

    def test_torn_tail_is_skipped_and_counted(self, tmp_path: Path) -> None:
        """A record cut short by a crash is counted as corrupt; everything before it is replayed."""
        spool = Spool(tmp_path, ["file"])
        data = payloads(50)
        spool.append(data)
        spool.close()
        segment = next(tmp_path.glob("*.seg"))
        with segment.open("ab") as fh:
            fh.write(b"\xa7U\x00\x00\xff\x00\x00\x00")  # a header cut short

        reopened = Spool(tmp_path, ["file"])
        assert drain(reopened, "file") == data
        assert reopened.corrupt_records == 1
        reopened.close()

    def test_corrupt_record_in_the_middle_is_skipped_and_reading_resumes(
        self, tmp_path: Path
    ) -> None:
        """A flipped byte loses only its own record: the reader resynchronises on the next one."""
        spool = Spool(tmp_path, ["file"])
        data = payloads(20)
        spool.append(data)
        spool.close()
        segment = next(tmp_path.glob("*.seg"))
        raw = bytearray(segment.read_bytes())
        record_size = HEADER_BYTES + len(data[0])
        raw[5 * record_size + HEADER_BYTES + 2] ^= 0xFF  # inside record 6's payload
        segment.write_bytes(bytes(raw))

        reopened = Spool(tmp_path, ["file"])
        assert drain(reopened, "file") == data[:5] + data[6:]
        assert reopened.corrupt_records == 1
        reopened.close()


class TestLimits:
    def test_full_spool_refuses_instead_of_growing(self, tmp_path: Path) -> None:
        """Past max_bytes, append raises SpoolFullError (the pipeline then falls back loudly)."""
        spool = Spool(tmp_path, ["file"], max_bytes=4096)
        spool.append(payloads(50))
        with pytest.raises(SpoolFullError):
            spool.append(payloads(500))
        spool.close()

    def test_append_after_close_raises(self, tmp_path: Path) -> None:
        """A closed spool refuses appends instead of writing to a closed descriptor."""
        spool = Spool(tmp_path, ["file"])
        spool.close()
        spool.close()
        with pytest.raises(SpoolError):
            spool.append([b"x"])

    def test_group_commit_sync(self, tmp_path: Path) -> None:
        """append(sync=True) returns after an fsync that covers the record."""
        spool = Spool(tmp_path, ["file"])
        last = spool.append(payloads(3), sync=True)
        assert spool._synced_id >= last
        spool.close()


class TestSlots:
    def test_each_live_process_gets_its_own_slot(self, tmp_path: Path) -> None:
        """A second claimant (another process) gets the next slot while the first is held."""
        first = claim_spool_dir(tmp_path)
        code = (
            "import sys; from auditkeep.delivery.slots import claim_spool_dir;"
            f"print(claim_spool_dir({str(tmp_path)!r}).directory.name)"
        )
        other = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert (first.directory.name, other.stdout.strip()) == ("slot-0", "slot-1")
        first.release()

    def test_orphaned_slot_is_adopted_by_a_live_spool(self, tmp_path: Path) -> None:
        """Records left in a dead process's slot are moved into the live spool, none lost."""
        code = (
            "from auditkeep.delivery import Spool, claim_spool_dir;"
            f"c = claim_spool_dir({str(tmp_path)!r}); s = Spool(c.directory / 'file', ['file']);"
            "s.append([b'orphan-%d' % i for i in range(100)])"
        )
        subprocess.run([sys.executable, "-c", code], check=True)  # exits holding nothing
        mine = claim_spool_dir(tmp_path)
        assert mine.directory.name == "slot-0"  # the dead process's slot is free again
        os.rename(mine.directory, tmp_path / "slot-9")  # pretend the orphan is elsewhere
        mine.release()
        live_claim = claim_spool_dir(tmp_path)
        live = Spool(live_claim.directory / "file", ["file"])
        moved = adopt_orphans(tmp_path, live)
        assert moved == 100
        assert drain(live, "file") == [b"orphan-%d" % i for i in range(100)]
        assert list((tmp_path / "slot-9" / "file").glob("*.seg")) == []
        live.close()
        live_claim.release()
