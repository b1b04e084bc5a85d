"""Tables for people: aligned columns that fit the terminal and never cut an id.

Every cell is escaped first (``escape_terminal``). Columns are of two kinds:

* **fixed** (times, ids, outcomes, numbers) are always printed whole, on one
  line, so a UUID can be copied with a double click;
* **wrapped** (actions, targets, error messages) are free text: when space is
  short they are wrapped onto more lines of the same row, never cut.

Given a width (the terminal's), ``fit`` leaves out the least important columns
until the rest fits with each wrapped column at its minimum, then hands the
spare room to the wrapped columns, most important first. A table that leaves
columns out ends with a line naming them. Without a width (output that is not
a terminal) every column is printed and only the wrapped columns' ``max_width``
applies.

Hand-written rather than ``rich``: the command line of a library must work
without optional packages, so this layout is needed anyway, and one renderer
means one behaviour to test; rich's markup would also have to be escaped in
every untrusted cell.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from auditkeep.query._format import TextOut, escape_terminal, query_row

GAP: Final = "  "
COMFORTABLE: Final = 24
"""The width a wrapped column gets before less important columns are kept."""
SHORT_TEXT: Final = 40
"""Wrapped cells up to this long get room to stay on one line before longer ones grow."""
ESSENTIAL: Final = 3
"""Columns of a rank below this are kept even if others must be squeezed for them."""


@dataclass(frozen=True, slots=True)
class Column:
    """How one column behaves when the table must fit a width.

    Attributes:
        name: The header.
        rank: Importance, 0 the most important: the highest rank is left out first.
        wrap: Free text that may be wrapped onto more lines (never cut); else fixed.
        right: Right-aligned (numbers).
        min_width: The narrowest a wrapped column gets before columns are left out.
        max_width: A wrapped column is wrapped beyond this width even with room to spare.
    """

    name: str
    rank: int
    wrap: bool = False
    right: bool = False
    min_width: int = 12
    max_width: int = 60


def _total(least: Sequence[int], kept: Iterable[int]) -> int:
    chosen = list(kept)
    return sum(least[i] for i in chosen) + len(GAP) * (len(chosen) - 1)


def _keep(columns: Sequence[Column], least: Sequence[int], width: int) -> set[int]:
    """The columns kept when each needs ``least``: the highest ranks go first."""
    kept = set(range(len(columns)))
    for index in sorted(kept, key=lambda i: -columns[i].rank):
        if _total(least, kept) <= width or len(kept) == 1:
            break
        kept.discard(index)
    return kept


def fit(columns: Sequence[Column], natural: Sequence[int], width: int | None) -> list[int | None]:
    """The width of each column for the cells' ``natural`` widths; None for one left out.

    Fewer columns with room to read them are preferred: the layout is first
    tried with every wrapped column at ``COMFORTABLE`` characters (or less if
    it needs less), and only if that leaves out one of the ``ESSENTIAL`` most
    important columns is it tried again with each at its ``min_width``.
    """
    wanted = [
        min(size, column.max_width) if column.wrap else size
        for column, size in zip(columns, natural, strict=True)
    ]
    if width is None:
        return list(wanted)
    least = [
        min(size, max(column.min_width, COMFORTABLE)) if column.wrap else size
        for column, size in zip(columns, wanted, strict=True)
    ]
    kept = _keep(columns, least, width)
    if any(column.rank < ESSENTIAL and i not in kept for i, column in enumerate(columns)):
        least = [
            min(size, column.min_width) if column.wrap else size
            for column, size in zip(columns, wanted, strict=True)
        ]
        kept = _keep(columns, least, width)
    widths: dict[int, int] = {index: least[index] for index in kept}
    spare = width - _total(least, kept)
    # The spare room goes first to short texts (an action name), most important
    # first, so that they need not wrap; then to the wrapped columns in proportion
    # to what each lacks; what rounding leaves goes to the most important.
    for index in sorted(kept, key=lambda i: columns[i].rank):
        grow = min(spare, min(wanted[index], SHORT_TEXT) - widths[index])
        if grow > 0:
            widths[index] += grow
            spare -= grow
    least = [widths.get(index, size) for index, size in enumerate(least)]
    lacking = {index: wanted[index] - widths[index] for index in kept}
    short = sum(lacking.values())
    if short <= spare:
        return [wanted[index] if index in kept else None for index in range(len(columns))]
    for index in kept:
        widths[index] += spare * lacking[index] // short
    left = spare - sum(widths[i] - least[i] for i in kept)
    for index in sorted(kept, key=lambda i: columns[i].rank):
        grow = min(left, wanted[index] - widths[index])
        if grow > 0:
            widths[index] += grow
            left -= grow
    return [widths.get(index) for index in range(len(columns))]


_BREAK_AFTER: Final = re.compile(r"[^ ./,:]*[ ./,:]+|[^ ./,:]+")


def _wrapped(text: str, width: int) -> list[str]:
    """Text cut into lines of at most ``width``: after a space, dot, slash, comma or colon."""
    lines: list[str] = []
    line = ""
    for piece in _BREAK_AFTER.findall(text):
        if len(line) + len(piece.rstrip(" ")) > width and line:
            lines.append(line.rstrip(" "))
            line = ""
        line += piece
        while len(line.rstrip(" ")) > width:  # a piece longer than a line: split it
            lines.append(line[:width])
            line = line[width:]
    if line.strip(" ") or not lines:
        lines.append(line.rstrip(" "))
    return lines


def _lines(columns: Sequence[Column], widths: Sequence[int | None], cells: Sequence[str]) -> str:
    """One row, as one or more lines: wrapped cells continue below, the others stay whole."""
    stacks: list[tuple[Column, int, list[str]]] = []
    for column, width, cell in zip(columns, widths, cells, strict=True):
        if width is not None:
            stacks.append((column, width, _wrapped(cell, width) if column.wrap else [cell]))
    height = max((len(stack) for _, _, stack in stacks), default=1)
    out = []
    for line in range(height):
        parts = []
        for column, width, stack in stacks:
            text = stack[line] if line < len(stack) else ""
            parts.append(text.rjust(width) if column.right else text.ljust(width))
        out.append(GAP.join(parts).rstrip() + "\n")
    return "".join(out)


def fill(line: str, width: int | None) -> str:
    """A line of text around a table, wrapped at spaces to ``width`` (ids have none)."""
    if width is None:
        return line + "\n"
    return textwrap.fill(line, max(width, 20), break_long_words=False) + "\n"


def left_out_note(columns: Sequence[Column], widths: Sequence[int | None], width: int) -> str:
    """The closing line of a table that had to leave columns out ("" when none was)."""
    names = [column.name for column, size in zip(columns, widths, strict=True) if size is None]
    if not names:
        return ""
    return fill(
        f"({', '.join(names)} left out to fit {width} columns; "
        "a wider terminal or --format json shows them)",
        width,
    )


def render_table(
    columns: Sequence[Column], rows: Iterable[Sequence[str]], *, width: int | None = None
) -> str:
    """Lay rows out under a header, fitting ``width`` if given; every cell is escaped first."""
    cells = [[escape_terminal(cell) for cell in row] for row in rows]
    natural = [len(column.name) for column in columns]
    for row in cells:
        for index, cell in enumerate(row):
            natural[index] = max(natural[index], len(cell))
    widths = fit(columns, natural, width)
    out = [_lines(columns, widths, [column.name for column in columns])]
    out.extend(_lines(columns, widths, row) for row in cells)
    if width is not None:
        out.append(left_out_note(columns, widths, width))
    return "".join(out)


class StreamTable:
    """A table written one row at a time (``tail``): widths chosen once, from typical cells.

    A fixed cell longer than its column is still printed whole and pushes the
    rest of its line to the right; wrapped cells wrap as in ``render_table``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        out: TextOut,
        columns: Sequence[Column],
        typical: Sequence[int],
        *,
        width: int | None = None,
    ) -> None:
        self._out = out
        self._columns = columns
        self._widths = fit(columns, typical, width)
        self._width = width
        self._header_written = False

    def write(self, cells: Sequence[str]) -> None:
        """Write one row (the header first)."""
        if not self._header_written:
            self._out.write(
                _lines(self._columns, self._widths, [column.name for column in self._columns])
            )
            if self._width is not None:
                self._out.write(left_out_note(self._columns, self._widths, self._width))
            self._header_written = True
        self._out.write(
            _lines(self._columns, self._widths, [escape_terminal(cell) for cell in cells])
        )


QUERY_TABLE: Final = (
    Column("TIME", 0),
    Column("ACTION", 2, wrap=True, max_width=40),
    Column("ACTOR", 6),
    Column("TARGET", 4, wrap=True, min_width=16),
    Column("OUTCOME", 3),
    Column("ERROR", 5, wrap=True, min_width=16),
    Column("MS", 7, right=True),
    Column("STATUS", 8, right=True),
    Column("CORRELATION_ID", 1),
)
"""The ``query`` and ``tail`` columns, in ``query_row`` order; left out from STATUS up."""
QUERY_TYPICAL: Final = (27, 33, 50, 40, 7, 40, 6, 6, 36)
"""Widths ``tail`` lays its rows out for (it cannot look ahead): ``webhook_event:<uuid>`` fits."""


def render_query_table(entries: Iterable[Mapping[str, Any]], *, width: int | None = None) -> str:
    """The ``query`` table of some entries."""
    return render_table(QUERY_TABLE, [query_row(entry) for entry in entries], width=width)
