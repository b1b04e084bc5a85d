"""Untrusted strings in output: terminal escapes and spreadsheet formulas are neutralised."""

from __future__ import annotations

import pytest

from auditrail.query._format import csv_safe, describe_target, escape_terminal, shorten


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

    def test_long_cells_are_cut_with_an_ellipsis(self) -> None:
        """A cell wider than its column ends in an ellipsis at exactly the width."""
        assert (shorten("abcdefgh", 5), shorten("abc", 5)) == ("abcd…", "abc")
