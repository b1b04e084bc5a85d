"""A real filesystem that fills up and is freed again, under child processes configured by env.

Each test mounts a tmpfs of a few MiB (root only; skipped with the reason
otherwise), runs ``emitter.py`` children that know only ``AUDIT_LOG_*``, fills
the filesystem to its last byte, and accounts for every event_id whose
``emit()`` returned: it is in the destination file, or in the fallback and
counted in ``audit_log_dropped_entries_total`` — and that counter equals
exactly the number of entries missing from the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from auditkeep.testing import read_trail, validate_entries

if TYPE_CHECKING:
    from faultlab import Emitter, FaultLab

# Small buffers so that a few thousand entries exercise overflow, holding and the bound.
SETTINGS = {
    "service_name": "faults",
    "destination": "file",
    "file_max_bytes": "0",
    "buffer_size": "200",
    "batch_size": "50",
    "flush_interval_s": "0.1",
}
IDLE_CPU_LIMIT_S = 0.1  # over 1.5 s of waiting on a full disk: under 7 % of one core
PARTIAL_WRITE_ROOM = 3 * 4096  # left free before a burst, so that appends run out part-way


def emitter(lab: FaultLab, name: str, audit: Path, spool: Path, durability: str) -> Emitter:
    return lab.emitter(
        name, file_path=str(audit), spool_dir=str(spool), durability=durability, **SETTINGS
    )


def account(
    emitted: list[str], delivered: list[str], fallback: list[str], dropped: float
) -> set[str]:
    """The invariant: missing from the file => in the fallback, and counted, exactly."""
    missing = set(emitted) - set(delivered)
    assert set(delivered) <= set(emitted)  # nothing foreign, no half lines (event_ids parsed)
    assert missing <= set(fallback), "an entry is neither in the file nor in the fallback"
    assert len(missing) == dropped
    assert len(fallback) == len(set(fallback)), "an entry was copied to the fallback twice"
    return missing


class TestSharedFilesystem:
    @pytest.mark.parametrize("durability", ["memory", "spool"])
    def test_disk_full_then_freed_every_entry_is_accounted_for(
        self, lab: FaultLab, durability: str
    ) -> None:
        """File and spool on one full disk: nothing unaccounted, quick recovery, an idle worker."""
        disk = lab.small_fs("disk", "2m")
        audit, spool = disk.root / "audit.jsonl", disk.root / "spool"
        app = emitter(lab, "app", audit, spool, durability)
        before = app.emit("before", 300)
        assert app.flush(10)[0]

        disk.fill(leave_bytes=PARTIAL_WRITE_ROOM)
        during = app.emit("during", 2000)
        assert app.flush(0.5)[0] is False
        idle_cpu = app.cpu_while_idle(1.5)
        while_full = app.metrics()

        disk.free()
        after = app.emit("after", 300)  # spilled while the destination still backs off
        recovered, recovery_s = app.flush(10)
        late = app.emit("late", 100)
        assert app.flush(10)[0]
        metrics = app.metrics()
        settled_cpu = app.cpu_while_idle(0.5)
        running_segments = lab.segment_sizes(spool)
        assert app.close(5)

        delivered = lab.event_ids(read_trail(audit))
        fallback = app.fallback_ids()
        missing = account(before + during + after + late, delivered, fallback, metrics["dropped"])
        assert recovered
        assert recovery_s < 5
        assert idle_cpu < IDLE_CPU_LIMIT_S
        assert settled_cpu < IDLE_CPU_LIMIT_S
        assert app.slowest_emit_s < 0.5  # the caller is never held up by the full disk
        assert set(before) | set(after) | set(late) <= set(delivered)
        assert missing <= set(during)
        # The fallback holds what waited while the file failed (the outage and the entries
        # spilled right after it, while the file still backed off), each once, as counted;
        # nothing delivered before the outage or after the recovery.
        assert set(fallback) <= set(during) | set(after)
        assert metrics["fallback"] == len(fallback)
        assert while_full["spool_write_errors"] > 0
        assert "refuses writes" in app.stderr()
        assert "takes writes again" in app.stderr()
        # The spool gave its space back: only the empty segment being written, then nothing.
        assert running_segments in ([], [0])
        assert lab.segment_sizes(spool) == []
        validate_entries(read_trail(audit)[::50])


class TestSpoolFilesystemOnly:
    def test_a_full_spool_disk_costs_nothing_while_the_destination_works(
        self, lab: FaultLab, tmp_path: Path
    ) -> None:
        """Only the spool's disk is full: held entries go straight to the file; space comes back."""
        disk = lab.small_fs("spooldisk", "1m")
        audit, spool = tmp_path / "audit.jsonl", disk.root / "spool"
        app = emitter(lab, "app", audit, spool, "spool")
        before = app.emit("before", 300)
        assert app.flush(10)[0]

        disk.fill()
        during = app.emit("during", 1000)
        # Everything the spool took, or held, reaches the file while its disk is still full,
        # and the spool then holds no byte: delivered segments were deleted first.
        assert app.flush(10)[0]
        assert lab.segment_sizes(spool) in ([], [0])
        while_full = app.metrics()

        disk.free()
        after = app.emit("after", 300)
        assert app.flush(10)[0]
        metrics = app.metrics()
        assert app.close(5)

        delivered = lab.event_ids(read_trail(audit))
        fallback = app.fallback_ids()
        missing = account(before + during + after, delivered, fallback, metrics["dropped"])
        # The destination never failed, so the fallback holds exactly the dropped entries.
        assert set(fallback) == missing
        assert set(before) | set(after) <= set(delivered)
        assert while_full["spool_write_errors"] > 0
        assert "refuses writes" in app.stderr()
        assert "takes writes again" in app.stderr()
        assert lab.segment_sizes(spool) == []
        ack = next(spool.rglob("file.ack"))
        assert int(ack.read_text()) > 0


class TestRestartAfterPartialAppends:
    def test_after_a_graceful_close_the_next_process_delivers_the_rest(self, lab: FaultLab) -> None:
        """Appends cut short by the full disk, entries spilled after it was freed, a short close:
        the next process on the spool delivers all of it, and the two processes' accounts add up."""
        disk = lab.small_fs("disk", "2m")
        audit, spool = disk.root / "audit.jsonl", disk.root / "spool"
        first = emitter(lab, "first", audit, spool, "memory")
        before = first.emit("before", 200)
        assert first.flush(10)[0]
        disk.fill(leave_bytes=PARTIAL_WRITE_ROOM)
        during = first.emit("during", 1000)
        first.cpu_while_idle(1.0)  # the destination backs off; held entries are retried
        disk.free()
        after = first.emit("after", 500)  # spilled to the spool while the destination backs off
        first_dropped = first.metrics()["dropped"]
        first.close(0.2)  # whatever is not delivered by then stays in the spool

        second = emitter(lab, "second", audit, spool, "memory")
        delivered_ok, elapsed = second.flush(10)
        metrics = second.metrics()
        assert second.close(5)

        delivered = lab.event_ids(read_trail(audit))
        assert delivered_ok
        assert elapsed < 5
        missing = account(before + during + after, delivered, first.fallback_ids(), first_dropped)
        assert missing <= set(during)
        assert metrics["corrupt"] == 0  # every failed append was cut back: no torn record
        assert metrics["dropped"] == 0
        assert lab.segment_sizes(spool) == []

    def test_after_sigkill_the_next_process_delivers_what_was_written_ahead(
        self, lab: FaultLab
    ) -> None:
        """spool level, appends cut short, SIGKILL: every entry written ahead is delivered next."""
        disk = lab.small_fs("disk", "2m")
        audit, spool = disk.root / "audit.jsonl", disk.root / "spool"
        first = emitter(lab, "first", audit, spool, "spool")
        before = first.emit("before", 200)
        assert first.flush(10)[0]
        disk.fill(leave_bytes=PARTIAL_WRITE_ROOM)
        during = first.emit("during", 1000)
        first.cpu_while_idle(1.0)  # held entries are retried into the full spool meanwhile
        disk.free()
        after = first.emit("after", 500)  # written ahead to the spool before emit returned
        first.kill()

        second = emitter(lab, "second", audit, spool, "spool")
        delivered_ok, elapsed = second.flush(10)
        metrics = second.metrics()
        assert second.close(5)

        delivered = set(lab.event_ids(read_trail(audit)))
        assert delivered_ok
        assert elapsed < 5
        assert set(before) | set(after) <= delivered
        # Held in memory when SIGKILL came, but copied to the fallback while the file failed.
        assert set(during) <= delivered | set(first.fallback_ids())
        assert metrics["corrupt"] == 0
        assert lab.segment_sizes(spool) == []
