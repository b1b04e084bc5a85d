"""Finding the trail's files and scanning them: rotations, gzip, pieces, processes, pruning."""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditkeep.query import (
    EntryFilter,
    InputError,
    ScanStats,
    discover_files,
    rotation_family,
    search,
)
from auditkeep.query import _reader as reader
from auditkeep.query._reader import (
    MatchCollector,
    TrailFile,
    _Piece,
    _scan_piece,
    line_ranges,
)

sys.path.insert(0, str(Path(__file__).parent))
from trailkit import (
    BASE,
    Trail,
    build_trail,
    encode,
    make_entries,
    oracle_entries,
    oracle_malformed,
    oracle_query,
    stamp,
    uuid7_at,
    write_with_sink,
)


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    """One trail shared by the module's tests, which only read it."""
    return build_trail(tmp_path_factory.mktemp("trail"))


def oracle_entries_of(path: Path) -> list[dict[str, Any]]:
    return [entry for _, entry in oracle_entries([path])]


def touch(path: Path, content: bytes = b"") -> Path:
    path.write_bytes(content)
    return path


class TestDiscovery:
    def test_rotation_family_lists_backups_oldest_first_then_the_live_file(
        self, tmp_path: Path
    ) -> None:
        """Backups come in descending number, the live file last; other names are ignored."""
        live = touch(tmp_path / "audit.jsonl")
        one = touch(tmp_path / "audit.jsonl.1")
        two = touch(tmp_path / "audit.jsonl.2.gz")
        ten = touch(tmp_path / "audit.jsonl.10.gz")
        touch(tmp_path / "audit.jsonl.lock")
        touch(tmp_path / "audit.jsonl.bak")
        touch(tmp_path / "other.jsonl.1")
        assert rotation_family(live) == [ten, two, one, live]

    def test_plain_backup_wins_over_its_half_compressed_twin(self, tmp_path: Path) -> None:
        """While a backup is being compressed both forms exist; the complete plain one is read."""
        live = touch(tmp_path / "audit.jsonl")
        plain = touch(tmp_path / "audit.jsonl.1")
        touch(tmp_path / "audit.jsonl.1.gz", b"\x1f\x8b partial")
        assert rotation_family(live) == [plain, live]
        listed = discover_files([str(tmp_path)])
        assert [f.path for f in listed] == [live, plain]

    def test_directory_skips_hidden_lock_and_temporary_files(self, tmp_path: Path) -> None:
        """A directory yields its trail files, not the sink's lock file or a .gz.tmp."""
        live = touch(tmp_path / "audit.jsonl")
        touch(tmp_path / "audit.jsonl.lock")
        touch(tmp_path / "audit.jsonl.1.gz.tmp")
        touch(tmp_path / ".hidden")
        assert [f.path for f in discover_files([tmp_path])] == [live]

    def test_a_file_named_twice_is_read_once(self, trail: Trail) -> None:
        """The live file given directly and through a glob is one input."""
        by_both = discover_files([trail.live, f"{trail.live}*"])
        assert [f.path for f in by_both] == trail.files

    def test_gzip_is_recognised_by_content(self, tmp_path: Path) -> None:
        """A gzip file is detected by its magic bytes, whatever its name."""
        packed = touch(tmp_path / "packed.log", gzip.compress(b"{}\n"))
        plain = touch(tmp_path / "plain.gz", b"{}\n")
        found = {f.path: f.compressed for f in discover_files([packed, plain])}
        assert found == {packed: True, plain: False}

    def test_a_glob_without_match_is_an_input_error(self, tmp_path: Path) -> None:
        """A glob that matches nothing raises InputError naming it."""
        with pytest.raises(InputError, match=r"^no file matches .*\*\.nothing$"):
            discover_files([str(tmp_path / "*.nothing")])

    def test_default_with_no_file_is_an_input_error(self, tmp_path: Path) -> None:
        """A configured path with neither live file nor backups is an error."""
        missing = tmp_path / "audit.jsonl"
        with pytest.raises(InputError, match=r"^no audit trail at AUDIT_LOG_FILE_PATH="):
            discover_files([], default=str(missing))

    def test_backups_alone_are_read_when_the_live_file_is_gone(self, tmp_path: Path) -> None:
        """Right after a rotation the live file may be missing: its backups still count."""
        backup = touch(tmp_path / "audit.jsonl.1", b"{}\n")
        assert [f.path for f in discover_files([tmp_path / "audit.jsonl"])] == [backup]


class TestLineRanges:
    def test_regroups_arbitrary_blocks_into_whole_lines(self) -> None:
        """However the blocks are cut, the pieces hold exactly the original lines and offsets."""
        data = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i % 13)) for i in range(60))
        data += b'{"unterminated":'
        expected_lines = data.split(b"\n")
        for size in (1, 2, 7, 31, 64, 1000):
            blocks = [data[i : i + size] for i in range(0, len(data), size)]
            lines: list[bytes | bytearray] = []
            for buf, start, end, offset in line_ranges((b, len(b)) for b in blocks):
                assert data[offset + start : offset + end] == buf[start:end]
                lines.extend(buf[start:end].split(b"\n"))
            assert [line for line in lines if line] == expected_lines


class TestScan:
    def test_counts_malformed_lines_with_their_offsets(self, trail: Trail) -> None:
        """Every line that is not a JSON object is counted, in plain and gzipped files alike."""
        stats = ScanStats()
        search(discover_files([trail.live]), EntryFilter(), stats)
        assert stats.malformed_offsets == oracle_malformed(trail.files)
        assert stats.malformed_total == 4

    def test_any_split_into_pieces_gives_the_same_matches(self, tmp_path: Path) -> None:
        """Lines belong to the piece their first byte is in: none is lost or read twice."""
        path = tmp_path / "audit.jsonl"
        lines = [encode(entry) for entry in make_entries(40)]
        write_with_sink(path, lines, max_bytes=0, compress=False)
        trail_file = TrailFile.open_stat(path)
        matcher = EntryFilter().compile()
        for step in (1, 97, 250, 1024, 5000):
            collector = MatchCollector()
            bounds = list(range(0, trail_file.size, step))
            ends: list[int | None] = [*bounds[1:], None]
            for begin, end in zip(bounds, ends, strict=True):
                _scan_piece(_Piece(trail_file, begin, end), matcher, collector.collect, ScanStats())
            assert [line for _, _, line in collector.found] == lines

    def test_parallel_scan_equals_the_sequential_one(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Pieces scanned by forked workers merge into the same matches and statistics."""
        monkeypatch.setattr(reader, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(reader, "MIN_PIECE_BYTES", 4096)
        pools: list[int] = []
        real_pool = concurrent.futures.ProcessPoolExecutor

        def counted_pool(*args: Any, **kwargs: Any) -> Any:
            pools.append(kwargs["max_workers"])
            return real_pool(*args, **kwargs)

        monkeypatch.setattr(reader, "ProcessPoolExecutor", counted_pool)
        # Forking is skipped while other threads run (another test may have left one).
        expected_pools = [2] if threading.active_count() == 1 else []
        files = discover_files([trail.live])
        wanted = EntryFilter(outcome="failure")
        alone, shared = ScanStats(), ScanStats()
        sequential = search(files, wanted, alone, workers=1)
        parallel = search(files, wanted, shared, workers=2)
        assert (parallel, pools) == (sequential, expected_pools)
        assert [line for _, _, line in parallel] == oracle_query(
            trail.files, lambda e: e["outcome"] == "failure"
        )
        assert (shared.malformed_offsets, shared.files_read) == (
            alone.malformed_offsets,
            alone.files_read,
        )

    def test_small_inputs_are_scanned_in_this_process(
        self, trail: Trail, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Below PARALLEL_MIN_BYTES no worker process is started, however many files."""
        pools: list[object] = []
        monkeypatch.setattr(reader, "ProcessPoolExecutor", lambda *a, **k: pools.append(k))
        found = search(discover_files([trail.live]), EntryFilter(), ScanStats(), workers=2)
        assert (len(found), pools) == (len(trail.entries), [])

    def test_reads_concatenated_gzip_members(self, tmp_path: Path) -> None:
        """A gzip file made of several members (cat a.gz b.gz) is read whole."""
        first, second = (encode(entry) for entry in make_entries(2))
        path = tmp_path / "audit.jsonl.1.gz"
        path.write_bytes(gzip.compress(first + b"\n") + gzip.compress(second + b"\n"))
        found = search(discover_files([path]), EntryFilter(), ScanStats())
        assert [line for _, _, line in found] == [first, second]


class TestPruning:
    def test_skips_files_last_written_before_since(self, tmp_path: Path) -> None:
        """Backups whose mtime is older than --since (less the slack) are not read."""
        entries = make_entries(200)
        live = tmp_path / "audit.jsonl"
        write_with_sink(live, [encode(e) for e in entries], max_bytes=20_000, compress=True)
        files = discover_files([live])
        for trail_file in files:
            # As if written over time: each file last touched when its newest entry was.
            newest = max(e["timestamp"] for e in oracle_entries_of(trail_file.path))
            moment = datetime.fromisoformat(newest).timestamp()
            os.utime(trail_file.path, (moment, moment))
        since = datetime.fromisoformat(entries[180]["timestamp"])
        old_enough = [
            str(f.path)
            for f in files
            if max(e["timestamp"] for e in oracle_entries_of(f.path))
            < stamp(since - reader.PRUNE_SLACK)
        ]
        stats = ScanStats()
        wanted = EntryFilter(since=since)
        pruned = search(discover_files([live]), wanted, stats)
        everything = search(discover_files([live]), wanted, ScanStats(), prune=False)
        assert [line for _, _, line in pruned] == oracle_query(
            [f.path for f in files], lambda e: e["timestamp"] >= stamp(since)
        )
        assert pruned == everything
        assert stats.files_skipped == old_enough
        assert len(old_enough) >= 2

    def test_entries_replayed_late_are_still_found(self, tmp_path: Path) -> None:
        """A file whose last line is old (a spool replay) but which was written now is read."""
        recent, replayed = make_entries(2)
        recent["timestamp"] = stamp(BASE + timedelta(hours=5))
        live = tmp_path / "audit.jsonl"
        write_with_sink(live, [encode(recent), encode(replayed)], max_bytes=0, compress=False)
        moment = (BASE + timedelta(hours=5, seconds=1)).timestamp()
        os.utime(live, (moment, moment))
        found = search(
            discover_files([live]), EntryFilter(since=BASE + timedelta(hours=4)), ScanStats()
        )
        assert [line for _, _, line in found] == [encode(recent)]

    def test_a_uuid7_correlation_id_skips_files_written_before_it(self, tmp_path: Path) -> None:
        """Files last written before a UUIDv7 correlation id was made cannot hold its entries."""
        old = tmp_path / "audit.jsonl.1"
        live = tmp_path / "audit.jsonl"
        opened = BASE + timedelta(hours=3)
        correlation = uuid7_at(opened)
        entry = {**make_entries(1)[0], "correlation_id": correlation, "timestamp": stamp(opened)}
        write_with_sink(old, [encode(e) for e in make_entries(5)], max_bytes=0, compress=False)
        write_with_sink(live, [encode(entry)], max_bytes=0, compress=False)
        for path, moment in ((old, BASE), (live, opened)):
            os.utime(path, (moment.timestamp(), moment.timestamp()))
        stats = ScanStats()
        found = search(discover_files([live]), EntryFilter(correlation_id=correlation), stats)
        assert ([line for _, _, line in found], stats.files_skipped) == (
            [encode(entry)],
            [str(old)],
        )
