"""The agent's log goes through the library's one scrubber (issue 9).

Both cases leaked before: a PEM key in an exception was scrubbed line by line (its
body lines have no shape of their own), and a value logged under a credential name
(``token=...``) had no shape either.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator

import orjson
import pytest

from gitlab_copilot_agent.logs import configure_logging, get_logger
from gitlab_copilot_agent.settings import LogSettings

PEM_BODY = "MIIEowIBAAKCAQEAq7BFUpkGp3XQv0ZxZ8r4rl5nFOjUaB1GQyzGvHAq7BFUpkGp3XQv0"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The JSON log of this test (the handler and hooks are put back afterwards)."""
    stream = io.StringIO()
    root = logging.getLogger()
    before = (root.level, list(root.handlers), sys.excepthook, threading.excepthook)
    configure_logging(LogSettings(format="json", level="debug"), stream=stream)
    try:
        yield stream
    finally:
        root.setLevel(before[0])
        root.handlers[:] = before[1]
        sys.excepthook, threading.excepthook = before[2], before[3]
        logging.captureWarnings(False)


def test_a_private_key_in_a_traceback_is_scrubbed_whole(output: io.StringIO) -> None:
    """A PEM block over several lines of an exception message loses its body lines."""
    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + "\n".join(PEM_BODY[i : i + 24] for i in range(0, len(PEM_BODY), 24))
        + "\n-----END RSA PRIVATE KEY-----"
    )
    try:
        raise ValueError(f"could not load key:\n{pem}")
    except ValueError:
        get_logger("test.logs").exception("key load failed")
    text = output.getvalue()
    assert [
        PEM_BODY[i : i + 8] for i in range(len(PEM_BODY) - 8) if PEM_BODY[i : i + 8] in text
    ] == []
    (line,) = [orjson.loads(raw) for raw in text.splitlines()]
    assert (
        "-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----"
        in line["exception"]
    )


def test_values_under_credential_names_are_replaced(output: io.StringIO) -> None:
    """``token=``, ``clientSecret=``, nested ``password``: replaced whole; counts stay."""
    get_logger("test.logs").info(
        "called",
        token="opaque-value-1",
        clientSecret="opaque value 2",
        request={"headers": {"password": "opaque3"}, "attempt": 2},
        completion_tokens=17,
    )
    (line,) = [orjson.loads(raw) for raw in output.getvalue().splitlines()]
    assert (line["token"], line["clientSecret"], line["request"], line["completion_tokens"]) == (
        "[REDACTED]",
        "[REDACTED]",
        {"headers": {"password": "[REDACTED]"}, "attempt": 2},
        17,
    )
