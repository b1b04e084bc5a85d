"""One rule for a file destination's rotated backups, shared by the sink, the query and testing."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import orjson

from auditkeep import _rotation
from auditkeep.query import discover_files, rotation_family
from auditkeep.sinks.file import rotated_files
from auditkeep.testing import read_trail

sys.path.insert(0, str(Path(__file__).parent / "query"))
from trailkit import write_with_sink


def _compressed_trail(directory: Path, count: int = 600) -> tuple[Path, list[bytes]]:
    """A trail written by the real FileSink with gzip rotation; the lines that went in."""
    live = directory / "audit.jsonl"
    lines = [orjson.dumps({"event_id": f"id-{i:05d}", "pad": "x" * 200}) for i in range(count)]
    write_with_sink(live, lines, max_bytes=64 * 1024, compress=True)
    return live, lines


def _leave_a_twin(live: Path) -> Path:
    """What a crash between the sink's rename of the finished .gz and its unlink leaves."""
    packed = live.with_name(live.name + ".1.gz")
    plain = live.with_name(live.name + ".1")
    plain.write_bytes(gzip.decompress(packed.read_bytes()))
    return plain


class TestOneRotationRule:
    def test_the_sink_and_the_query_use_the_same_function(self) -> None:
        """sinks.file.rotated_files and query.rotation_family are one function."""
        assert rotated_files is rotation_family is _rotation.rotation_family

    def test_read_trail_reads_a_backup_present_plain_and_gzipped_once(self, tmp_path: Path) -> None:
        """With audit.jsonl.1 and audit.jsonl.1.gz both present, every line is read once."""
        live, lines = _compressed_trail(tmp_path)
        plain = _leave_a_twin(live)
        assert plain.with_name(plain.name + ".gz").exists()
        assert sorted(read_trail(live)) == sorted(lines)

    def test_the_plain_copy_wins_while_the_gzip_one_is_half_written(self, tmp_path: Path) -> None:
        """gzip writes X.gz progressively: the complete plain X is the one listed and read."""
        live, lines = _compressed_trail(tmp_path)
        plain = _leave_a_twin(live)
        packed = plain.with_name(plain.name + ".gz")
        packed.write_bytes(packed.read_bytes()[:100])  # still being written
        family = rotated_files(live)
        assert plain in family
        assert packed not in family
        assert sorted(read_trail(live)) == sorted(lines)

    def test_a_directory_given_to_the_query_reads_the_twin_once(self, tmp_path: Path) -> None:
        """A directory holding both forms of a backup yields the plain one only."""
        live, _ = _compressed_trail(tmp_path)
        plain = _leave_a_twin(live)
        names = [trail_file.path.name for trail_file in discover_files([tmp_path])]
        assert plain.name in names
        assert plain.name + ".gz" not in names
