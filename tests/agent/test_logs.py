"""Operational logs: every string scrubbed by the audit redactor, exceptions too, cut after."""

from __future__ import annotations

import io
import logging
import secrets
import sys
import threading
import warnings
from collections.abc import Iterator

import h11
import orjson
import pytest

from auditkeep.redact import SecretRedactor, register_secret
from gitlab_copilot_agent.logs import configure_logging, get_logger
from gitlab_copilot_agent.scrub import scrub_then_cut, secret_forms
from gitlab_copilot_agent.settings import LogSettings


def fragments(secret: str) -> list[str]:
    return [secret[i : i + 8] for i in range(len(secret) - 7)]


def leaked(secret: str, text: str) -> list[str]:
    return [f for f in fragments(secret) if f in text]


@pytest.fixture
def secret() -> str:
    """A fresh secret with no credential shape: only its registration can scrub it."""
    value = "Qz" + secrets.token_hex(12)
    register_secret(*secret_forms(value))
    return value


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


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


class TestScrubbing:
    def test_message_fields_nested_values_and_objects(
        self, secret: str, output: io.StringIO
    ) -> None:
        """The event, keys, nested values and objects rendered with str() are all scrubbed."""
        log = get_logger("test.logs")
        log.info(
            f"calling with {secret}",
            url=f"https://user:{secret}@gitlab.example.com/api",
            nested={"list": [secret, {"deep": f"x{secret}x"}], secret: 1},
            error=RuntimeError(f"boom {secret}"),
            number=7,
        )
        text = output.getvalue()
        assert leaked(secret, text) == []
        (line,) = lines(output)
        assert line["event"] == "calling with [REDACTED]"
        assert line["url"] == "https://[REDACTED]@gitlab.example.com/api"
        assert line["nested"] == {"list": ["[REDACTED]", {"deep": "x[REDACTED]x"}], "[REDACTED]": 1}
        assert (line["error"], line["number"], line["level"]) == ("boom [REDACTED]", 7, "info")

    def test_exceptions_are_rendered_then_scrubbed(self, secret: str, output: io.StringIO) -> None:
        """A traceback whose message (and a chained cause) holds the secret leaves none of it."""
        log = get_logger("test.logs")
        try:
            try:
                raise ValueError(f"token {secret!r} refused")
            except ValueError as cause:
                raise RuntimeError(f"cannot reach http://u:{secret}@h/") from cause
        except RuntimeError:
            log.exception("handling failed")
        (line,) = lines(output)
        exception = str(line["exception"])
        assert "Traceback (most recent call last)" in exception
        assert "RuntimeError: cannot reach http://[REDACTED]@h/" in exception
        assert leaked(secret, output.getvalue()) == []

    def test_long_values_are_cut_only_after_scrubbing(
        self, secret: str, output: io.StringIO
    ) -> None:
        """A secret straddling the cut of a long value (every offset) leaves no fragment."""
        log = get_logger("test.logs")
        limit = 4096
        for offset in range(limit - 40 - len(secret), limit + 2):
            log.warning("long", body="e" * offset + secret + "e" * 200)
        assert leaked(secret, output.getvalue()) == []
        assert all(len(str(line["body"])) <= limit for line in lines(output))

    def test_other_libraries_records_warnings_and_thread_crashes(
        self, secret: str, output: io.StringIO
    ) -> None:
        """uvicorn's and asyncio's stdlib records, warnings and a thread's crash: scrubbed."""
        try:
            raise OSError(f"peer sent {secret}")
        except OSError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application %s", secret)
        logging.getLogger("asyncio").error("Task exception was never retrieved: %s", secret)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(f"deprecated {secret}", UserWarning, stacklevel=1)

        def crash() -> None:
            raise RuntimeError(f"thread saw {secret}")

        thread = threading.Thread(target=crash, name="crasher")
        thread.start()
        thread.join()
        records = lines(output)
        assert leaked(secret, output.getvalue()) == []
        assert [r["logger"] for r in records] == [
            "uvicorn.error",
            "asyncio",
            "py.warnings",
            "gitlab_copilot_agent.logs",
        ]
        assert "OSError: peer sent [REDACTED]" in str(records[0]["exception"])
        assert records[3]["thread"] == "crasher"
        assert "RuntimeError: thread saw [REDACTED]" in str(records[3]["exception"])

    def test_scrubbed_without_configure_logging(
        self, secret: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An app built by a test never configures logging; the records are scrubbed already."""
        root = logging.getLogger()
        assert not any(h.get_name() == "gitlab-copilot-agent" for h in root.handlers)
        get_logger("test.logs").error("failed", error=f"x {secret}")
        (record,) = [r for r in caplog.records if r.name == "test.logs"]
        assert "'error': 'x [REDACTED]'" in record.getMessage()
        assert leaked(secret, caplog.text) == []

    def test_console_rendering_on_request(self, secret: str) -> None:
        """LOG_FORMAT=console is readable text (not JSON), scrubbed the same way."""
        stream = io.StringIO()
        root = logging.getLogger()
        before = (root.level, list(root.handlers), sys.excepthook, threading.excepthook)
        try:
            configure_logging(LogSettings(format="console"), stream=stream)
            get_logger("test.logs").warning("agent ready", token=secret)
        finally:
            root.setLevel(before[0])
            root.handlers[:] = before[1]
            sys.excepthook, threading.excepthook = before[2], before[3]
            logging.captureWarnings(False)
        text = stream.getvalue()
        assert "agent ready" in text
        assert "token=[REDACTED]" in text
        assert not text.startswith("{")


class TestSecretForms:
    def test_the_escaped_forms_httpx_and_h11_show_are_scrubbed(self) -> None:
        """A token with a trailing newline appears as ``b'...\\n'`` in h11's error: covered."""
        token = "glpat-" + secrets.token_hex(11) + "\n"
        redactor = SecretRedactor()
        redactor.register(*secret_forms(token))
        with pytest.raises(h11.LocalProtocolError) as raised:
            h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Private-Token", token)])
        text = repr(raised.value) + str(raised.value)
        assert token.strip() in text.replace("\\n", "")  # the error really shows it
        scrubbed = redactor.redact(text)
        assert leaked(token.strip(), scrubbed) == []

    def test_scrub_then_cut_at_every_offset_around_the_cut(self) -> None:
        """``scrub_then_cut`` never leaves a fragment, wherever the secret sits (window too)."""
        token = "Zk" + secrets.token_hex(13)
        limit = 500
        for base in (limit, limit + 4096):
            for offset in range(base - len(token) - 2, base + 2):
                text = "m" * offset + token + "m" * 5000
                result = scrub_then_cut(text, limit, token)
                assert len(result) <= limit
                assert leaked(token, result) == [], offset


PEM_BODY = "MIIEowIBAAKCAQEAq7BFUpkGp3XQv0ZxZ8r4rl5nFOjUaB1GQyzGvHAq7BFUpkGp3XQv0"


class TestTheLibrarysScrubber:
    """The log goes through the library's one scrubber (issue 9). Both leaked before: a
    PEM key in an exception was scrubbed line by line (its body lines have no shape of
    their own), and a value logged under a credential name had no shape either."""

    def test_a_private_key_in_a_traceback_is_scrubbed_whole(self, output: io.StringIO) -> None:
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

    def test_values_under_credential_names_are_replaced(self, output: io.StringIO) -> None:
        """``token=``, ``clientSecret=``, nested ``password``: replaced whole; counts stay."""
        get_logger("test.logs").info(
            "called",
            token="opaque-value-1",
            clientSecret="opaque value 2",
            request={"headers": {"password": "opaque3"}, "attempt": 2},
            completion_tokens=17,
        )
        (line,) = [orjson.loads(raw) for raw in output.getvalue().splitlines()]
        assert (
            line["token"],
            line["clientSecret"],
            line["request"],
            line["completion_tokens"],
        ) == (
            "[REDACTED]",
            "[REDACTED]",
            {"headers": {"password": "[REDACTED]"}, "attempt": 2},
            17,
        )
