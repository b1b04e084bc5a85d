"""What a scalar JSON cannot hold becomes in an entry, and the cuts of already-scrubbed text.

The scrubber (``auditkeep.redact``) cleans the common types inline; the
helpers here run only for unusual input (a failing ``__str__``, invalid UTF-8,
an integer beyond 64 bits, NaN, a measured number out of range), so they favour
never raising over speed. Every helper reports what it did as flags:
``TRUNCATED`` (something was cut or left out) and ``COERCED`` (something was
replaced by a stand-in or escaped, so the entry no longer holds the value
exactly as given). Nothing here scrubs: ``safe_str`` is handed the scrubber's
cut, and ``cut`` is only for text the scrubber already cleaned.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import Final

TRUNCATED: Final = 1
COERCED: Final = 2
CHANGED: Final = 4
"""A mapping key cleaned to other text: two keys may have become one."""

ScrubCut = Callable[[str, int], str]
"""Scrub ``text``, then shorten it to the given length (``SecretRedactor.scrub_then_cut``)."""

# orjson encodes integers in [-2**63, 2**64 - 1] and refuses the rest.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
# Bigger integers are written as decimal text up to this size; Python itself
# refuses int->str beyond 4,300 digits by default, and such a number is noise.
_DECIMAL_BITS: Final = 4096
_INF: Final = float("inf")
CUT_MARK: Final = "…[truncated]"


def type_name(value: object) -> str:
    """The qualified name of ``value``'s class (a metaclass cannot make this raise)."""
    try:
        name = type.__getattribute__(type(value), "__qualname__")
    except Exception:  # noqa: BLE001 - a name is a courtesy
        return "object"
    return name if type(name) is str else "object"


class _BoundedRepr(reprlib.Repr):
    """reprlib bounds depth and length, so a structure nested 10,000 deep (whose
    str() raises RecursionError) still gets a text; a leaf whose ``__repr__``
    fails is named by its class (not by its address, as reprlib does). Its cuts
    of strings and leaves go through ``scrub_cut``: scrubbed first, then cut
    (reprlib's own cut keeps both ends of a string, and with them a secret's)."""

    def __init__(self, scrub_cut: ScrubCut) -> None:
        super().__init__()
        self.maxlevel = 6
        self.maxstring = 256
        self.maxother = 256
        self._scrub_cut = scrub_cut

    def repr_str(self, x: str, level: int) -> str:
        return repr(self._scrub_cut(x, self.maxstring))

    def repr_instance(self, x: object, level: int) -> str:
        try:
            text = repr(x)
        except Exception:  # noqa: BLE001 - the caller's __repr__ may raise anything
            return f"<unprintable {type_name(x)}>"
        return self._scrub_cut(text, self.maxother)


def safe_str(value: object, scrub_cut: ScrubCut) -> tuple[str, int]:
    """``str(value)``; a bounded repr when that raises; a stand-in naming the class last."""
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - the caller's __str__ may raise anything
        try:
            text = _BoundedRepr(scrub_cut).repr(value)
        except Exception:  # noqa: BLE001 - and so may its __repr__
            return f"<unprintable {type_name(value)}>", COERCED
        return (text if type(text) is str else str.__str__(text)), COERCED
    return (text if type(text) is str else str.__str__(text)), 0


def bytes_text(value: bytes | bytearray | memoryview, max_chars: int) -> tuple[str, int]:
    """Bytes as UTF-8 text, invalid bytes written as ``\\xNN`` (flagged coerced).

    Longer values are cut at ``4 * max_chars`` bytes, which decode to at least
    ``max_chars`` characters: the caller passes more than its scrubbed window,
    so the scrubber, not this cut, decides what of the text is kept.
    """
    flags = 0
    limit = 4 * max_chars
    if len(value) > limit:
        value = value[:limit]
        flags |= TRUNCATED
    raw = bytes(value)
    try:
        return raw.decode("utf-8"), flags
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), flags | COERCED


def big_int_text(value: int) -> str:
    """An integer orjson cannot encode, as decimal text (or its size, when absurd)."""
    bits = value.bit_length()
    if bits <= _DECIMAL_BITS:
        return str(value)
    return f"<int of {bits} bits>"


def nonfinite_text(value: float) -> str:
    """NaN and the infinities as JSON5/JavaScript spell them (JSON has no such number)."""
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def http_status(value: object) -> tuple[int | None, int]:
    """An HTTP status as recorded: an integer in 100-599, else dropped (flagged coerced)."""
    try:
        # int.__int__ rather than int(): a subclass's own __int__ is not called.
        if isinstance(value, int) and not isinstance(value, bool):
            status = int.__int__(value)
            return (status, 0) if 100 <= status <= 599 else (None, COERCED)
    except Exception:  # noqa: BLE001 - even isinstance() runs the caller's __class__
        return None, COERCED
    return None, COERCED


def duration_ms(value: object) -> tuple[float | None, int]:
    """A duration as recorded: finite and rounded to 1 us; negative is clamped to 0.

    NaN, the infinities and anything that is not a number are dropped (flagged
    coerced): a duration is measured at run time, so a bad one is recorded as
    unknown rather than refusing the entry.
    """
    try:
        if isinstance(value, float):
            number = float.__float__(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = int.__float__(value)  # OverflowError beyond ~1e308
        else:
            return None, COERCED
    except Exception:  # noqa: BLE001 - OverflowError, or the caller's __class__
        return None, COERCED
    if number != number or number in (_INF, -_INF):
        return None, COERCED
    if number < 0:
        return 0.0, COERCED
    return (round(number, 3) if number > 0 else 0.0), 0


def cut(text: str, max_chars: int) -> str:
    """Shorten text the scrubber already cleaned to ``max_chars`` (>= 16), marked.

    Only for scrubbed text (the shrinker's later cuts): anything else goes
    through ``SecretRedactor.scrub_then_cut``.
    """
    if len(text) <= max_chars:
        return text
    return text[: max_chars - len(CUT_MARK)] + CUT_MARK
