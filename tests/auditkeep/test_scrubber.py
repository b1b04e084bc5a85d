"""The one scrubber (issue 9): every credential family and encoding, each cut, and a property.

Each case in the ``Test*Gap`` classes and ``TestScrubBeforeEveryCut`` failed before the
scrubber was one module (checked against the previous tree): camelCase and ``_key``
credential names, AWS/Slack/PEM shapes, percent-encoded credentials, JSON inside text, a
glued Basic credential, and the places that cut text before scrubbing it.
``TestNoRegression`` keeps what the old rules did right. ``TestNoRegisteredSecretSurvives``
registers a random secret and hides it in every encoding the scrubber knows, nested in
dicts/lists/tuples (as a key or a value), then cuts at any length, from either end: no 8
consecutive characters of the secret (or of its encoded form) survive.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import CollectorRegistry

from auditkeep import Actor, load_schema
from auditkeep.config import AuditConfig
from auditkeep.exceptions import ConfigError
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import (
    MIN_SECRET_CHARS,
    REDACTED,
    RULES,
    SecretRedactor,
    register_secret,
)
from auditkeep.sinks.http import HttpSink
from auditkeep.sinks.memory import InMemorySink
from auditkeep.typing import SinkStatus

VALIDATOR = Draft202012Validator(load_schema(), format_checker=FormatChecker())
DOCS = Path(__file__).parents[2] / "docs" / "redaction.md"
LEAK_WINDOW = 8  # this many consecutive characters of a secret count as a leak
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM_BODY = "MIIEowIBAAKCAQEAq7BFUpkGp3+XQ\nv0ZxZ8r4rl5nFOjUaB1GQyzGvHA\n"


def _clean(text: str) -> str:
    return SecretRedactor().clean(text)[0]


def _windows(text: str) -> set[str]:
    return {text[i : i + LEAK_WINDOW] for i in range(max(1, len(text) - LEAK_WINDOW + 1))}


def _leaks(secret: str, output: str) -> list[str]:
    return sorted(w for w in _windows(secret) if w in output)


def _random_secret() -> str:
    """A secret with no credential shape: only its registration can scrub it."""
    return "Qz" + secrets.token_hex(16)


def _emit(logger: AuditLogger, sink: InMemorySink, **arguments: Any) -> dict[str, Any]:
    logger.emit("test.scrubber", **arguments)
    assert logger.flush(5)
    entry = sink.entries()[-1]
    assert VALIDATOR.is_valid(entry)
    return entry


# -- credential keys ----------------------------------------------------------------

GAP_KEYS = [
    "accessToken",
    "clientSecret",
    "SecretAccessKey",
    "refreshToken",
    "secret_key",
    "private_key",
    "aws_secret_access_key",
    "signing_key",
    "privateKey",
    "key",
    "ssh_key",
    "passphrase",
    "pwd",
    "auth",
    "basic_auth",
    "jwt",
    "id_jwt",
    "userPassword",
    "password2",
    "db.password",
]
# Redacted before too (kept so that the new rule cannot lose them).
STILL_REDACTED_KEYS = ["apiKey", "APIKey", "sessionId", "x-api-key", "PRIVATE-TOKEN", "password"]
KEPT_KEYS = [
    "resource_type",
    "completion_tokens",
    "prompt_tokens",
    "token_type",
    "token_id",
    "auth_method",
    "author",
    "issue_key",
    "project_key",
    "primary_key",
    "public_key",
    "idempotency_key",
    "monkey",
    "keyboard",
    "session",
]


class TestCredentialKeyGap:
    @pytest.mark.parametrize("key", GAP_KEYS)
    def test_value_under_a_credential_key_is_replaced_whole(
        self, logger: AuditLogger, sink: InMemorySink, key: str
    ) -> None:
        """camelCase/PascalCase, ``_key`` names, passphrase, pwd, auth, jwt: replaced whole."""
        entry = _emit(
            logger,
            sink,
            target={"resource_type": "hook", key: "opaque value 1"},
            details={"nested": [{key: {"any": "shape"}}], key: 12345},
        )
        assert entry["target"][key] == REDACTED
        assert entry["details"] == {"nested": [{key: REDACTED}], key: REDACTED}


# -- token families -----------------------------------------------------------------


class TestTokenFamilyGap:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("key AKIAIOSFODNN7EXAMPLE in use", f"key AKIA{REDACTED} in use"),
            ("temporary ASIAY34FZKBOKMUTVV7A expired", f"temporary ASIA{REDACTED} expired"),
            ("\x1b[31mAKIAIOSFODNN7EXAMPLE\x1b[0m", f"\\x1b[31mAKIA{REDACTED}\\x1b[0m"),
        ],
        ids=["akia", "asia", "after-ansi-colour"],
    )
    def test_aws_access_key_ids(self, text: str, expected: str) -> None:
        """AWS access key ids (AKIA/ASIA + 16) keep their prefix and lose the rest."""
        assert _clean(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                f"aws_secret_access_key = {AWS_SECRET}",
                f"aws_secret_access_key = {REDACTED}",
            ),
            (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', f'{{"SecretAccessKey": "{REDACTED}"}}'),
            (
                f"AKIAIOSFODNN7EXAMPLE,{AWS_SECRET}",
                f"AKIA{REDACTED},{REDACTED}",
            ),
            (
                f"aws configure: secret {AWS_SECRET} saved",
                f"aws configure: secret {REDACTED} saved",
            ),
        ],
        ids=["ini", "sts-json", "credentials-csv", "near-aws"],
    )
    def test_aws_secret_access_keys(self, text: str, expected: str) -> None:
        """40 characters of base64 near an AWS key name, key id or the word aws."""
        assert _clean(text) == expected

    @pytest.mark.parametrize("prefix", ["xoxa", "xoxb", "xoxp", "xoxo", "xoxs", "xoxr", "xapp"])
    def test_slack_tokens(self, prefix: str) -> None:
        """Slack bot/user/app tokens keep their prefix and lose the rest."""
        text = f"slack {prefix}-1234567890-0987654321-AbCdEfGhIj ok"
        assert _clean(text) == f"slack {prefix}-{REDACTED} ok"

    @pytest.mark.parametrize(
        "kind", ["RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", "", "PGP "], ids=repr
    )
    def test_pem_private_key_blocks_over_lines(self, kind: str) -> None:
        """A PEM private key of any type loses its body (several lines), not its frame."""
        block = " BLOCK" if kind == "PGP " else ""
        begin = f"-----BEGIN {kind}PRIVATE KEY{block}-----"
        end = f"-----END {kind}PRIVATE KEY{block}-----"
        text = f"loaded {begin}\n{PEM_BODY}{end}\nnext line"
        assert SecretRedactor().redact(text) == f"loaded {begin}{REDACTED}{end}\nnext line"

    def test_pem_block_cut_off_before_its_end_loses_the_rest(self) -> None:
        """A block whose END line was cut off (a shortened log) is redacted to the end."""
        text = f"key -----BEGIN PRIVATE KEY-----\n{PEM_BODY}"
        assert _clean(text) == f"key -----BEGIN PRIVATE KEY-----{REDACTED}"

    def test_pem_block_inside_json_text(self) -> None:
        """Escaped newlines (a key inside a JSON string) are one block too."""
        body = PEM_BODY.replace("\n", "\\n")
        text = f'{{"pem": "-----BEGIN EC PRIVATE KEY-----\\n{body}-----END EC PRIVATE KEY-----"}}'
        assert _leaks("MIIEowIBAAKCAQEAq7BFUpkGp3", _clean(text)) == []


# -- percent-encoded credentials ----------------------------------------------------


class TestPercentEncodedGap:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "h=Authorization%3A%20Bearer%20abcdef0123456789",
                f"h=Authorization%3A%20Bearer%20{REDACTED}",
            ),
            (
                "h=Authorization%3A+Bearer+abcdef0123456789",
                f"h=Authorization%3A+Bearer+{REDACTED}",
            ),
            (
                "next=https%3A%2F%2Fbob%3Ahunter2hunter2%40gitlab.example.com%2Fg",
                f"next=https%3A%2F%2F{REDACTED}%40gitlab.example.com%2Fg",
            ),
            (
                "back=%2Fapi%3Fprivate_token%3Dabc123def456%26page%3D2",
                f"back=%2Fapi%3Fprivate_token%3D{REDACTED}%26page%3D2",
            ),
            (
                "u=https%253A%252F%252Fbob%253Ahunter2hunter2%2540host",
                f"u=https%253A%252F%252F{REDACTED}%2540host",
            ),
            (
                "q=%7B%22accessToken%22%3A%20%22abc%20def%22%7D",
                f"q=%7B%22accessToken%22%3A%20%22{REDACTED}%22%7D",
            ),
        ],
        ids=["bearer", "bearer-plus", "userinfo", "query", "twice-encoded", "json"],
    )
    def test_encoded_shapes(self, text: str, expected: str) -> None:
        """Percent-encoded text is decoded, scrubbed, and the encoded characters replaced."""
        assert _clean(text) == expected

    @pytest.mark.parametrize(
        "encode",
        [
            lambda s: urllib.parse.quote(s, safe="/:"),
            lambda s: urllib.parse.quote(urllib.parse.quote(s, safe=""), safe=""),
        ],
        ids=["partly-encoded", "twice-encoded"],
    )
    def test_registered_secret_in_other_percent_encodings(self, encode: Any) -> None:
        """A registered secret encoded otherwise than quote()/quote_plus() is found by decoding."""
        redactor = SecretRedactor()
        secret = "p@ss w/rd:+1 x"
        redactor.register(secret)
        text = f"redirect={encode(secret)}&next=1"
        assert redactor.clean(text) == (f"redirect={REDACTED}&next=1", False)


class TestRegisteredSecretFormsGap:
    @pytest.mark.parametrize(
        "spell",
        [
            lambda s: json.dumps({"note": s}),
            lambda s: json.dumps(json.dumps({"note": s})),
            lambda s: repr([s + '"']),
        ],
        ids=["json-ascii", "json-in-json", "repr"],
    )
    def test_a_registered_secret_escaped_as_json_or_repr(self, spell: Any) -> None:
        """A registered secret written into JSON (even twice) or a repr is still found."""
        redactor = SecretRedactor()
        secret = "pässwörd '1' /x"
        redactor.register(secret)
        scrubbed = redactor.redact(f"body {spell(secret)} end")
        assert REDACTED in scrubbed
        assert "ssw" not in scrubbed


# -- JSON and headers inside text ---------------------------------------------------


class TestJsonInTextGap:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                'body {"token": "opaque-value-123", "user": "bob"}',
                f'body {{"token": "{REDACTED}", "user": "bob"}}',
            ),
            (
                'body {"private-token": 12345678, "user": "bob"}',
                f'body {{"private-token": {REDACTED}, "user": "bob"}}',
            ),
            ("authorization: opaque0123456789", f"authorization: {REDACTED}"),
            (
                'err {\\"accessToken\\": \\"abc def\\", \\"n\\": 1}',
                f'err {{\\"accessToken\\": \\"{REDACTED}\\", \\"n\\": 1}}',
            ),
            (
                '{"password": "correct horse battery staple"}',
                f'{{"password": "{REDACTED}"}}',
            ),
            ("{'clientSecret': 'cs 1 2'}", f"{{'clientSecret': '{REDACTED}'}}"),
            (
                "secret_key=abc123 signing_key: xyz789",
                f"secret_key={REDACTED} signing_key: {REDACTED}",
            ),
        ],
        ids=["token", "private-token", "authorization", "escaped-json", "spaces", "repr", "pairs"],
    )
    def test_credential_pairs(self, text: str, expected: str) -> None:
        """A pair whose name is a credential key loses its value, quoted values up to the quote."""
        assert _clean(text) == expected


class TestGluedBasicGap:
    @pytest.mark.parametrize(
        "text",
        ["echo xBasic dXNlcjpwYXNz done", "HTTP/1.1 200xBearer abcdef0123456789 done"],
    )
    def test_a_credential_glued_to_the_preceding_word(self, text: str) -> None:
        """An echoed header glued to other text still loses its credential."""
        expected = re.sub(r"(Basic|Bearer) \S+", lambda m: f"{m[1]} {REDACTED}", text)
        assert _clean(text) == expected


class TestNoRegression:
    """What the old rules did right stays so: names and text that are no credential stay
    readable, and names redacted before still are (these passed before too)."""

    @pytest.mark.parametrize("key", STILL_REDACTED_KEYS)
    def test_names_redacted_before_still_are(
        self, logger: AuditLogger, sink: InMemorySink, key: str
    ) -> None:
        """The old rule's names (api-key forms, session ids, header names) are still replaced."""
        assert _emit(logger, sink, details={key: "opaque 1"})["details"] == {key: REDACTED}

    @pytest.mark.parametrize("key", KEPT_KEYS)
    def test_names_that_only_mention_a_credential_stay_readable(
        self, logger: AuditLogger, sink: InMemorySink, key: str
    ) -> None:
        """Only the last word decides, and identifiers named ``*_key`` are no secrets."""
        entry = _emit(logger, sink, details={key: "visible value"})
        assert entry["details"] == {key: "visible value"}

    def test_none_under_a_credential_key_stays_none(
        self, logger: AuditLogger, sink: InMemorySink
    ) -> None:
        """An unset credential is recorded as unset (nothing to hide)."""
        assert _emit(logger, sink, details={"accessToken": None})["details"] == {
            "accessToken": None
        }

    def test_a_git_sha_next_to_aws_stays(self) -> None:
        """A 40-hex commit SHA near "aws" is no secret key (no upper case, "/" or "+")."""
        text = "aws-cli at 0123456789abcdef0123456789abcdef01234567"
        assert _clean(text) == text

    def test_certificates_and_public_keys_stay(self) -> None:
        """Public material is not redacted."""
        text = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"
        assert SecretRedactor().redact(text) == text

    @pytest.mark.parametrize(
        "text",
        [
            '{"Authorization": "Bearer x"}',
            "sort_key=name issue_key: AUD-12 completion_tokens=3 tokens: 5",
        ],
    )
    def test_what_the_pair_rule_leaves(self, text: str) -> None:
        """The scheme rule keeps "Bearer" readable; identifiers and counts are kept."""
        assert _clean(text) == text.replace("Bearer x", f"Bearer {REDACTED}")


# -- the rule records and their documentation ----------------------------------------


class TestRuleRecords:
    @pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
    def test_each_example_scrubs_as_documented(self, rule: Any) -> None:
        """Each rule's own example scrubs to its ``redacted`` text."""
        assert SecretRedactor().redact(rule.example) == rule.redacted

    @pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
    def test_each_rule_is_one_well_formed_record(self, rule: Any) -> None:
        """One kept-prefix group, lower-case triggers of which its example holds one."""
        assert rule.compiled.groups == 1 + rule.named_key
        assert all(t == t.lower() for t in rule.triggers)
        assert any(t in rule.example.lower() for t in rule.triggers)

    def test_the_docs_table_lists_every_rule_as_it_is(self) -> None:
        """docs/redaction.md shows each rule with its example and result, and no other."""
        rows = re.findall(r"^\| `([a-z0-9-]+)` \| `(.*)` \| `(.*)` \|$", DOCS.read_text(), re.M)
        shown = [(r.name, _shown(r.example), _shown(r.redacted)) for r in RULES]
        assert rows == shown

    def test_the_docs_encoding_examples(self) -> None:
        """Each example of the encodings table in docs/redaction.md loses the secret."""
        section = DOCS.read_text().split("## Registered secrets and encodings")[1].split("##")[0]
        table = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
        examples = [
            cell for line in table for cell in re.findall(r"`([^`]+)`", line.split(" | ")[1])
        ]
        redactor = SecretRedactor()
        redactor.register("p@ss w/rd")
        assert len(examples) >= 9
        assert [e for e in examples if REDACTED not in redactor.redact(e)] == []
        assert [e for e in examples if "ss w" in redactor.redact(e)] == []


def _shown(text: str) -> str:
    return text.replace("\n", "\\n")


# -- scrub before every cut ---------------------------------------------------------


class _Refusing(BaseHTTPRequestHandler):
    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(400)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[Any]:
    """Make a real logger with a given redactor, delivering to memory; closed after."""
    made: list[AuditLogger] = []

    def make(redactor: SecretRedactor) -> tuple[AuditLogger, InMemorySink]:
        sink = InMemorySink()
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=tmp_path / f"spool-{len(made)}",
            metrics=AuditMetrics(CollectorRegistry()),
            redactor=redactor,
        )
        made.append(logger)
        return logger, sink

    yield make
    for logger in made:
        assert logger.close(5)


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, type[_Refusing]]]:
    """A real HTTP server on loopback answering 400 with ``handler.body``."""
    handler = type("Handler", (_Refusing,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/in", handler
    finally:
        server.shutdown()
        server.server_close()


class TestScrubBeforeEveryCut:
    def test_clean_never_lets_redactions_pull_a_split_secret_under_the_cut(self) -> None:
        """Long secrets redacted first shrink the text; a secret split by the window stays out."""
        redactor = SecretRedactor(max_field_chars=64)
        first, second = "A" * 197 + "Zq1", "Bw" + "b" * 58
        redactor.register(first, second)
        cleaned, cut = redactor.clean(first + second + "tail")
        assert (_leaks(second, cleaned), cut) == ([], False)
        cleaned, cut = redactor.clean(first + second + "t" * 10_000)
        assert (_leaks(second, cleaned), cut) == ([], True)

    def test_bytes_are_decoded_past_the_window(self, audit: Any) -> None:
        """Bytes cut before decoding could split a secret that the text's cut then kept."""
        redactor = SecretRedactor(max_field_chars=64)
        secret = "Kp" + "k" * 248
        redactor.register(secret)
        logger, sink = audit(redactor)
        entry = _emit(logger, sink, details={"body": ("🚀" * 10 + secret).encode()})
        assert _leaks(secret, entry["details"]["body"]) == []

    def test_a_broken_object_is_scrubbed_before_reprlib_cuts_it(self, audit: Any) -> None:
        """An object whose str() fails is shown by a bounded repr, which cut strings unscrubbed."""

        class NoRepr:
            def __repr__(self) -> str:
                raise RuntimeError("no")

        redactor = SecretRedactor()
        secret = _random_secret() * 2
        redactor.register(secret)
        logger, sink = audit(redactor)
        value = ["a" * 200 + secret + "b" * 100, NoRepr()]
        entry = _emit(logger, sink, target={"resource_type": "x", "value": value})
        assert entry["target"]["value"].startswith("['aaa")
        assert _leaks(secret, entry["target"]["value"]) == []

    def test_the_http_sink_scrubs_a_refusal_before_cutting_it(
        self, refusing_server: tuple[str, type[_Refusing]]
    ) -> None:
        """A refusal body that echoes secrets: redacting ones before the cut shrank the text."""
        url, handler = refusing_server
        echoed, split = _random_secret(), "".join(_random_secret() for _ in range(4))
        register_secret(echoed, split)
        handler.body = (echoed * 9 + "x" * 10 + split).encode()
        sink = HttpSink(url)
        try:
            result = sink.write_batch([b'{"event_id": "x"}'])
        finally:
            sink.close(1)
        assert result.status is SinkStatus.FAILURE
        assert str(result.reason).startswith(f"HTTP 400 Bad Request: {REDACTED}")
        assert _leaks(split, str(result.reason)) == []

    def test_a_setting_error_never_shows_part_of_a_secret(self) -> None:
        """A credential given to the wrong variable is scrubbed before the message cuts it."""
        secret = _random_secret()
        register_secret(secret)
        with pytest.raises(ConfigError) as raised:
            AuditConfig.from_env({"AUDIT_LOG_ENABLED": "x" * 20 + secret})
        assert _leaks(secret, str(raised.value)) == []
        assert REDACTED in str(raised.value)

    def test_a_refused_service_name_never_shows_part_of_a_secret(self, tmp_path: Path) -> None:
        """The service-name error quotes the name scrubbed, then cut."""
        secret = _random_secret()
        register_secret(secret)
        with pytest.raises(ValueError, match="not a safe service name") as raised:
            AuditLogger(InMemorySink(), service="a" * 70 + secret, spool_dir=tmp_path)
        assert _leaks(secret, str(raised.value)) == []

    def test_the_agent_uses_the_library_cut(self) -> None:
        """One scrub-then-cut: the agent's helper is the library's function."""
        from auditkeep import redact
        from gitlab_copilot_agent import scrub

        assert scrub.scrub_then_cut is redact.scrub_then_cut


# -- the property test ---------------------------------------------------------------

SECRET_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~'"
)
# Padding that shares no character with a secret, so no window of one can appear by chance.
NOISE = st.text(st.sampled_from(" \n\téß中€🚀\u2028"), max_size=300)
# What an entry holds whatever was emitted: a secret made of it is found without leaking.
SKELETON = (
    "schema_version event_id timestamp event_type audit action actor type id target "
    "resource_type outcome failure error internal_error error_message correlation_id "
    "uncorrelated service svc details value other truncated coerced webhook_event "
    "test.scrubber [REDACTED] …[truncated] _dropped_bytes _dropped_keys [nested too deep] "
    "https://user:@gitlab.example.com/x Authorization: Basic accessToken note"
).lower()


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _basic(secret: str) -> str:
    return base64.b64encode(f"u:{secret}".encode()).decode()


# Each: how the secret is carried, and the form(s) of it that must not leak (the
# percent-encoded or base64 spelling as well as the secret itself).
ENCODINGS: dict[str, tuple[Any, Any]] = {
    "raw": (lambda s: s, lambda s: [s]),
    "percent": (_quote, lambda s: [_quote(s)]),
    "percent-partly": (lambda s: urllib.parse.quote(s, safe="/:@&="), lambda s: []),
    "percent-twice": (lambda s: _quote(_quote(s)), lambda s: [_quote(_quote(s))]),
    "form": (urllib.parse.quote_plus, lambda s: [urllib.parse.quote_plus(s)]),
    "userinfo": (lambda s: f"https://user:{_quote(s)}@gitlab.example.com/x", lambda s: [_quote(s)]),
    "userinfo-percent": (
        lambda s: _quote(f"https://user:{_quote(s)}@gitlab.example.com/x"),
        lambda s: [_quote(_quote(s))],
    ),
    "json-in-text": (
        lambda s: json.dumps({"note": "x", "accessToken": s}),
        lambda s: [json.dumps(s)[1:-1]],
    ),
    "json-in-text-twice": (
        lambda s: json.dumps(json.dumps({"note": s})),
        lambda s: [json.dumps(json.dumps(s)[1:-1])[1:-1]],
    ),
    "basic": (lambda s: f"Authorization: Basic {_basic(s)}", lambda s: [_basic(s)[4:]]),
    "basic-glued": (lambda s: f"xBasic {_basic(s)}", lambda s: [_basic(s)[4:]]),
    "basic-percent": (
        lambda s: _quote(f"Authorization: Basic {_basic(s)}"),
        lambda s: [_quote(_basic(s))[8:]],
    ),
    "repr": (lambda s: repr(["x", s]), lambda s: [repr(s)[1:-1]]),
}
SHAPES = st.lists(st.sampled_from(["dict-value", "dict-key", "list", "tuple"]), max_size=5)


def _nest(carrier: str, shape: list[str], pad: str) -> Any:
    value: Any = carrier
    for step in reversed(shape):
        if step == "dict-key" and _hashable(value):
            value = {value: 1, "other": pad}
        elif step == "list":
            value = [pad, value]
        elif step == "tuple":
            value = (value, pad)
        else:
            value = {"value": value, "other": pad}
    return value


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _strings(value: Any) -> Iterator[str]:
    """Every key and string in plain JSON data."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _secret_ok(secret: str) -> bool:
    return not any(w.lower() in SKELETON for w in _windows(secret))


Logged = tuple[AuditLogger, InMemorySink, SecretRedactor]


@pytest.fixture(scope="module")
def property_loggers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Logged]]:
    """Loggers for the whole property run: the smallest entry limit, a middle one, the default."""
    loggers: dict[int, Logged] = {}
    for limit in (1024, 4096, 16 * 1024):
        sink, redactor = InMemorySink(), SecretRedactor()
        logger = AuditLogger(
            sink,
            service="svc",
            spool_dir=tmp_path_factory.mktemp(f"property-{limit}") / "spool",
            metrics=AuditMetrics(CollectorRegistry()),
            redactor=redactor,
            max_entry_bytes=limit,
        )
        loggers[limit] = (logger, sink, redactor)
    yield loggers
    for logger, _, _ in loggers.values():
        assert logger.close(10)


class TestNoRegisteredSecretSurvives:
    @pytest.mark.parametrize("limit", [1, 2, 9, 10, 11, 30, 500])
    @pytest.mark.parametrize("tail", [False, True], ids=["head", "tail"])
    def test_scrub_then_cut_at_every_offset(self, limit: int, tail: bool) -> None:
        """Wherever a secret sits around the cut (or the window's edge), no piece survives."""
        redactor = SecretRedactor()
        secret = _random_secret()
        redactor.register(secret, secret[::-1])
        mark = "" if limit == 1 else "…"
        for edge in (limit, redactor.window(limit)):
            for offset in range(max(0, edge - len(secret) - 2), edge + 2):
                text = "m" * offset + secret + "m" * 5000
                seen = secret
                if tail:
                    text, seen = text[::-1], secret[::-1]
                result = redactor.scrub_then_cut(text, limit, mark=mark, tail=tail)
                assert len(result) <= limit
                assert _leaks(seen, result) == [], offset

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        secret=st.text(
            st.sampled_from(SECRET_ALPHABET), min_size=MIN_SECRET_CHARS, max_size=40
        ).filter(_secret_ok),
        encoding=st.sampled_from(sorted(ENCODINGS)),
        shape=SHAPES,
        before=NOISE,
        after=NOISE,
        field_chars=st.integers(64, 700),
        limit=st.integers(1, 900),
        tail=st.booleans(),
        entry_limit=st.sampled_from([1024, 4096, 16 * 1024]),
    )
    def test_any_cut_nesting_or_encoding(
        self,
        property_loggers: dict[int, Logged],
        secret: str,
        encoding: str,
        shape: list[str],
        before: str,
        after: str,
        field_chars: int,
        limit: int,
        tail: bool,
        entry_limit: int,
    ) -> None:
        """A registered secret, encoded, nested and cut anywhere, never leaves 8 characters."""
        encode, leak_forms = ENCODINGS[encoding]
        text = before + encode(secret) + after
        forms = [secret, *leak_forms(secret)]
        # Windows that the carrier shows without the secret are no evidence of a leak.
        skeleton = text
        for form in sorted(forms, key=len, reverse=True):
            skeleton = skeleton.replace(form, "")
        watched = {w for form in forms for w in _windows(form) if w not in skeleton}

        def leaked(output: str) -> list[str]:
            return sorted(w for w in watched if w in output)

        # The string cut at any length, from either end.
        redactor = SecretRedactor(field_chars)
        redactor.register(secret)
        mark = "" if limit == 1 else "…"
        assert leaked(redactor.scrub_then_cut(text, limit, mark=mark, tail=tail)) == []
        assert leaked(redactor.clean(text)[0]) == []
        # Nested in a structure, as a key or a value, with a byte budget that cuts the walk.
        structure = _nest(text, shape, before[:20])
        scrubbed = redactor.scrub(structure, max_bytes=limit * 8)
        assert [s for s in _strings(scrubbed) if leaked(s)] == []
        # Through emit: each field, the entry cut to its limit by the shrinker.
        logger, sink, shared = property_loggers[entry_limit]
        shared.register(secret)
        shared.set_max_field_chars(field_chars)
        entry = _emit(
            logger,
            sink,
            outcome="failure",
            error_message=text,
            target={"resource_type": "x", "value": text, "shape": structure},
            actor=Actor("webhook_event", text),
            details={"value": structure},
        )
        assert [s for s in _strings(entry) if leaked(s)] == []
