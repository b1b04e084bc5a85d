"""Times on the command line and the canonical sort key of entry timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auditkeep._ids import new_event_id
from auditkeep.query._timeparse import parse_time, timestamp_key, uuid7_datetime

NOW = datetime(2026, 11, 28, 15, 30, 45, 123456, tzinfo=UTC)


class TestParseTime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
            ("2026-11-27T08:00", datetime(2026, 11, 27, 8, tzinfo=UTC)),
            ("2026-11-27T08:00:00Z", datetime(2026, 11, 27, 8, tzinfo=UTC)),
            ("2026-11-27T09:00:00+01:00", datetime(2026, 11, 27, 8, tzinfo=UTC)),
            ("90s", NOW - timedelta(seconds=90)),
            ("30m", NOW - timedelta(minutes=30)),
            ("24h", NOW - timedelta(hours=24)),
            ("7d", NOW - timedelta(days=7)),
            ("2w", NOW - timedelta(weeks=2)),
            ("now", NOW),
            ("today", datetime(2026, 11, 28, tzinfo=UTC)),
            ("Yesterday", datetime(2026, 11, 27, tzinfo=UTC)),
        ],
    )
    def test_accepts_iso_relative_and_named_times(self, text: str, expected: datetime) -> None:
        """ISO 8601 (no offset means UTC), durations back from now and now/today/yesterday."""
        assert parse_time(text, now=NOW) == expected

    def test_rejects_anything_else_with_the_accepted_forms(self) -> None:
        """An unknown form raises ValueError that lists what is accepted."""
        with pytest.raises(ValueError, match=r"^not a time: 'soon' \(use ISO 8601"):
            parse_time("soon", now=NOW)


class TestTimestampKey:
    @pytest.mark.parametrize(
        ("stored", "key"),
        [
            ("2026-11-28T03:25:31.123456Z", "2026-11-28T03:25:31.123456Z"),
            ("2026-11-28T03:25:31.123Z", "2026-11-28T03:25:31.123000Z"),
            ("2026-11-28T03:25:31.123456789Z", "2026-11-28T03:25:31.123456Z"),
            ("2026-11-28T05:25:31.5+02:00", "2026-11-28T03:25:31.500000Z"),
            ("2026-11-28T03:25:31", "2026-11-28T03:25:31.000000Z"),
            ("yesterday", None),
            (1764300331, None),
            (None, None),
        ],
    )
    def test_maps_every_precision_and_offset_to_one_sortable_form(
        self, stored: object, key: str | None
    ) -> None:
        """Timestamps become UTC with six fraction digits, so string order is time order."""
        assert timestamp_key(stored) == key


class TestUuid7:
    def test_reads_the_creation_time_of_a_uuid7_only(self) -> None:
        """A UUIDv7 made by the logger yields its millisecond timestamp; a UUIDv4 yields None."""
        made = datetime(2026, 11, 20, 8, 0, 0, 123456, tzinfo=UTC)
        event_id = new_event_id(int(made.timestamp()) * 10**9 + 123_456_000)
        assert uuid7_datetime(event_id) == made.replace(microsecond=123000)
        assert uuid7_datetime("4b0e778e-615b-4217-a1ab-c2545321379b") is None
