"""Untrusted strings in output: terminal escapes and spreadsheet formulas are neutralised."""

from __future__ import annotations

import pytest

from auditkeep.query._format import csv_safe, describe_target, escape_terminal
from auditkeep.query._table import Column, fit, render_table


class TestEscapeTerminal:
    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("plain text, ünïcode ok", "plain text, ünïcode ok"),
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            ("line\nbreak\rreturn\ttab", "line\\x0abreak\\x0dreturn\\x09tab"),
            ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),
            ("sep\u2028para\u2029", "sep\\u2028para\\u2029"),
            ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
            ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ],
    )
    def test_control_and_direction_characters_print_as_escapes(self, text: str, shown: str) -> None:
        """Nothing that could drive a terminal or disguise text is printed raw."""
        assert escape_terminal(text) == shown


class TestCsvSafe:
    @pytest.mark.parametrize(
        ("cell", "safe"),
        [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("gitlab.api.get_mr_diff", "gitlab.api.get_mr_diff"),
            ("a=b", "a=b"),
            ("", ""),
        ],
    )
    def test_formula_starts_get_a_leading_quote(self, cell: str, safe: str) -> None:
        """Cells starting with = + - @ tab or CR are prefixed with a quote; others are unchanged."""
        assert csv_safe(cell) == safe


class TestCells:
    def test_target_reads_as_type_then_key_value_pairs(self) -> None:
        """A target prints as its resource type followed by its other fields in stored order."""
        target = {"resource_type": "branch", "project_id": 7, "branch": "main", "merged": True}
        assert describe_target(target) == "branch project_id=7 branch=main merged=true"


UUID = "0190a000-0000-7000-8000-0000000000aa"
COLUMNS = (
    Column("ID", 0),
    Column("TEXT", 1, wrap=True, min_width=8),
    Column("N", 2, right=True),
)


class TestFittingATable:
    def test_text_wraps_and_an_id_stays_whole(self) -> None:
        """Short of room, free text wraps onto more lines; the id is printed whole, once."""
        text = render_table(COLUMNS, [[UUID, "one two three four five", "7"]], width=52)
        assert text.splitlines() == [
            "ID                                    TEXT         N",
            f"{UUID}  one two      7",
            "                                      three four",
            "                                      five",
        ]
        assert max(len(line) for line in text.splitlines()) <= 52

    def test_least_important_columns_are_left_out_and_named(self) -> None:
        """When even the narrowest layout is too wide, columns go, from the highest rank."""
        text = render_table(COLUMNS, [[UUID, "words", "7"]], width=40)
        assert text.splitlines() == [
            "ID",
            UUID,
            "(TEXT, N left out to fit 40 columns; a",
            "wider terminal or --format json shows",
            "them)",
        ]

    def test_spare_room_goes_to_text_up_to_its_maximum(self) -> None:
        """A wide terminal leaves cells as long as they are, up to a wrapped column's maximum."""
        columns = (Column("A", 0), Column("B", 1, wrap=True, min_width=4, max_width=10))
        assert fit(columns, [3, 30], 200) == [3, 10]
        assert fit(columns, [3, 30], 12) == [3, 7]
        assert fit(columns, [3, 30], None) == [3, 10]

    def test_fewer_columns_with_room_are_preferred(self) -> None:
        """A less important column goes before a wrapped one is squeezed below 24 characters."""
        columns = (Column("A", 0), Column("B", 1, wrap=True), Column("C", 5))
        assert fit(columns, [10, 30, 20], 50) == [10, 30, None]

    def test_the_most_important_columns_are_squeezed_rather_than_left_out(self) -> None:
        """If room to read would cost one of the three most important columns, they squeeze."""
        columns = (Column("TIME", 0), Column("ACTION", 2, wrap=True), Column("ID", 1))
        assert fit(columns, [27, 30, 36], 80) == [27, 13, 36]

    def test_off_a_terminal_every_column_stays_and_only_long_text_wraps(self) -> None:
        """With no width, nothing is left out; text wraps only beyond its column's maximum."""
        text = render_table(COLUMNS, [[UUID, "word " * 20, "7"]])
        lines = text.splitlines()
        assert lines[0].split() == ["ID", "TEXT", "N"]
        assert len(lines) == 3  # 99 characters of text: two lines of at most 60
        assert max(len(line) for line in lines) <= 36 + 2 + 60 + 2 + 1
        assert "left out" not in text
