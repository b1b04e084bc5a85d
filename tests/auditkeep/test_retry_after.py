"""``auditkeep.parse_retry_after``: the one Retry-After parser, and the http sink using it.

The agent's GitLab client uses the same function (tests/agent/clients/test_gitlab.py,
``test_unusable_retry_after_falls_back_to_backoff``). Before it there were two
parsers that disagreed on exactly the rows marked "was" below.
"""

from __future__ import annotations

import email.utils
import math

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditkeep import MAX_RETRY_AFTER_S, HttpSink, SinkResult, SinkStatus, parse_retry_after

NOW = 1_700_000_000.0
DAY = MAX_RETRY_AFTER_S


def http_date(offset_s: float) -> str:
    return email.utils.formatdate(NOW + offset_s, usegmt=True)


# (header value, seconds); the comment says what the two old parsers answered
# (http sink | agent) where they got it wrong.
CASES: list[tuple[str | None, float | None]] = [
    (None, None),
    ("", None),
    ("   ", None),
    ("0", 0.0),
    ("7", 7.0),
    (" 12 ", 12.0),
    ("1.5", 1.5),
    ("86400", DAY),
    ("86401", DAY),  # was 86401.0 | 86401.0: unbounded
    ("99999999999999999999999", DAY),  # was 1e23 | 1e23
    ("1" + "0" * 40, DAY),  # was 1e40 | 1e40
    ("-3", None),  # was None | 0.0 (retry at once)
    ("-0", None),  # was -0.0 | 0.0
    ("+5", None),  # was 5.0 | 5.0: no sign in delay-seconds
    ("inf", None),  # was None | inf (never retry)
    ("nan", None),  # was None | 0.0
    ("1e3", None),  # was 1000.0 | 1000.0: no exponent
    ("1e400", None),  # was None | inf
    ("1_000", None),  # was 1000.0 | 1000.0
    ("\u0663", None),  # Arabic-Indic 3: was 3.0 | UnicodeEncodeError
    ("0x10", None),
    ("soon", None),
    ("7 seconds", None),
    ("9" * 65, None),  # longer than any Retry-After: not read at all
    (http_date(42), 42.0),
    (http_date(-42), 0.0),
    (http_date(2 * 86_400), DAY),  # was 172800.0 | 172800.0
    # NOW is Tue, 14 Nov 2023 22:13:20 GMT
    ("Tue, 14 Nov 2023 22:13:38 GMT", 18.0),
    ("Tue, 14 Nov 2023 22:14:20", 60.0),  # no zone = GMT (RFC 9110): was None | local time
    ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),  # RFC 850 form
    ("Tue Nov 14 22:14:20 2023", 60.0),  # asctime form
    ("Tue, 32 Nov 2023 22:13:20 GMT", None),  # impossible date
    ("Tue, 14 Foo 2023 22:13:20 GMT", None),
    ("Tue, 14 Nov 2023 99:13:20 GMT", None),
]


@pytest.mark.parametrize(("value", "expected"), CASES, ids=[repr(c[0])[:30] for c in CASES])
def test_edge_cases(value: str | None, expected: float | None) -> None:
    """delay-seconds, HTTP-dates, and what is refused or clamped."""
    assert parse_retry_after(value, now=NOW) == expected


def test_future_date_in_another_zone_is_the_same_instant() -> None:
    """A date with a numeric offset names one instant; it is read as that instant."""
    assert parse_retry_after("Tue, 14 Nov 2023 23:14:20 +0100", now=NOW) == 60.0


@given(st.text(max_size=80))
def test_any_text_is_none_or_a_bounded_wait(value: str) -> None:
    """Whatever a server sends: never an exception, never negative, inf, nan or above a day."""
    result = parse_retry_after(value, now=NOW)
    assert result is None or (math.isfinite(result) and 0.0 <= result <= DAY)


@given(st.integers(min_value=0, max_value=10**30))
def test_every_delay_in_whole_seconds_is_read(seconds: int) -> None:
    """Non-negative whole seconds are read exactly, up to the one-day clamp."""
    assert parse_retry_after(str(seconds)) == min(float(seconds), DAY)


def sink_hint(sink: HttpSink, result: SinkResult) -> float | None:
    """The pause the sink asks the pipeline for after a RETRY."""
    assert result.status is SinkStatus.RETRY
    return result.retry_after_s


@pytest.mark.parametrize(("value", "expected"), CASES, ids=[repr(c[0])[:30] for c in CASES])
def test_the_http_sink_asks_for_what_the_parser_reads(
    value: str | None, expected: float | None
) -> None:
    """A 429 from the intake: the sink's retry hint is ``parse_retry_after`` of its header."""
    headers = {"Retry-After": value} if value is not None else {}
    sink = HttpSink(
        "http://intake.example/in",
        transport=httpx.MockTransport(lambda request: httpx.Response(429, headers=headers)),
    )
    try:
        hint = sink_hint(sink, sink.write_batch([b'{"event_id":"x"}']))
    finally:
        sink.close(1)
    # The sink reads dates against the clock, not NOW: compare with the parser on the clock.
    parsed = parse_retry_after(value)
    assert (hint is None) == (parsed is None)
    assert hint is None or parsed is None or abs(hint - parsed) < 5
