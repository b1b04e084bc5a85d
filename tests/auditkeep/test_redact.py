"""Redaction and log-injection defence: no secret and no line break ever reaches a trail."""

from __future__ import annotations

import random
import string
import tempfile
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import CollectorRegistry

from auditkeep import Actor, ErrorClass, load_schema
from auditkeep.delivery.spool import scan_segment
from auditkeep.logger import DEFAULT_MAX_ENTRY_BYTES, AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import DEFAULT_MAX_FIELD_CHARS, MIN_SECRET_CHARS, REDACTED, SecretRedactor
from auditkeep.sinks.file import FileSink

VALIDATOR = Draft202012Validator(load_schema(), format_checker=FormatChecker())
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
GITLAB_PREFIXES = [
    "glpat",
    "gldt",
    "glrt",
    "glptt",
    "glft",
    "glimt",
    "glagent",
    "gloas",
    "glsoat",
    "glcbt",
    "glffct",
    "glwt",
    "glrtr",
    "gltst",
    "glsa",
]
GITHUB_PREFIXES = ["ghp", "gho", "ghu", "ghs", "ghr"]
LINE_BREAKING = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _clean(text: str) -> str:
    return SecretRedactor().clean(text)[0]


def _assert_single_safe_line(text: str) -> None:
    assert len(text.splitlines()) <= 1, text
    assert [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")] == []


class TestCredentialShapes:
    @pytest.mark.parametrize("prefix", GITLAB_PREFIXES)
    def test_gitlab_tokens(self, prefix: str) -> None:
        """Every GitLab token prefix keeps the prefix and loses the body."""
        text = f"cloning with {prefix}-Ab3_x.Y-z9876543210 failed"
        assert _clean(text) == f"cloning with {prefix}-{REDACTED} failed"

    def test_gitlab_runner_registration_token(self) -> None:
        """A legacy runner registration token (GR1348941...) is redacted."""
        text = "runner register GR1348941aB3_-cD4eF5gH6 ok"
        assert _clean(text) == f"runner register GR1348941{REDACTED} ok"

    def test_gitlab_token_glued_to_an_ansi_colour_code(self) -> None:
        """A token right after an ANSI colour code (which ends in a letter) is still redacted."""
        text = "remote: \x1b[31mglpat-Ab3xY9876543210\x1b[0m"
        assert _clean(text) == f"remote: \\x1b[31mglpat-{REDACTED}\\x1b[0m"

    @pytest.mark.parametrize("prefix", GITHUB_PREFIXES)
    def test_github_classic_tokens(self, prefix: str) -> None:
        """GitHub ghp_/gho_/ghu_/ghs_/ghr_ tokens are redacted."""
        text = f"push as {prefix}_16C7e42F292c6912E7710c838347Ae178B4a denied"
        assert _clean(text) == f"push as {prefix}_{REDACTED} denied"

    def test_github_fine_grained_token(self) -> None:
        """A github_pat_ token, underscores included, is redacted."""
        text = "GH=github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123 end"
        assert _clean(text) == f"GH=github_pat_{REDACTED} end"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "Authorization: Bearer abc.DEF-ghi_jkl~mno+pqr/stu==",
                f"Authorization: Bearer {REDACTED}",
            ),
            ("Authorization: Basic dXNlcjpwYXNzd29yZA==", f"Authorization: Basic {REDACTED}"),
            ("authorization: bearer lowercase0123456789", f"authorization: bearer {REDACTED}"),
            ("Authorization: Token abcdef0123456789", f"Authorization: Token {REDACTED}"),
            (
                "curl -H 'Authorization: Digest q1w2e3r4t5'",
                f"curl -H 'Authorization: Digest {REDACTED}'",
            ),
        ],
        ids=["bearer", "basic", "lowercase-bearer", "token", "digest"],
    )
    def test_authorization_schemes(self, text: str, expected: str) -> None:
        """Bearer/Basic/Token/Digest credentials are redacted, the scheme name kept."""
        assert _clean(text) == expected

    def test_authorization_scheme_inside_a_credential_header(self) -> None:
        """Proxy-Authorization: Basic <credentials> loses the scheme word and the credentials."""
        text = "Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA== sent"
        assert _clean(text) == f"Proxy-Authorization: {REDACTED} {REDACTED} sent"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("PRIVATE-TOKEN: abcdef123456", f"PRIVATE-TOKEN: {REDACTED}"),
            ("X-Gitlab-Token=hook-secret-1, next", f"X-Gitlab-Token={REDACTED}, next"),
            ("x-api-key: k-123456789", f"x-api-key: {REDACTED}"),
            (
                "Cookie: _gitlab_session=abc123; known_sign_in=xyz789\nnext",
                f"Cookie: {REDACTED}\\x0anext",
            ),
            ("Set-Cookie: sid=deadbeef; Path=/; HttpOnly", f"Set-Cookie: {REDACTED}"),
        ],
        ids=["private-token", "x-gitlab-token", "x-api-key", "cookie", "set-cookie"],
    )
    def test_credential_headers(self, text: str, expected: str) -> None:
        """Credential-carrying header lines keep the header name and lose the whole value."""
        assert _clean(text) == expected

    def test_webhook_signing_key(self) -> None:
        """A Standard Webhooks signing key (whsec_...) is redacted."""
        text = "key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw= loaded"
        assert _clean(text) == f"key whsec_{REDACTED} loaded"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("llm key sk-proj-abcdefghijklmnop1234 set", f"llm key sk-{REDACTED} set"),
            ("jira ATATT3xFfGF0abcdefghijklmnop= set", f"jira ATATT{REDACTED} set"),
        ],
        ids=["sk", "atlassian"],
    )
    def test_api_keys(self, text: str, expected: str) -> None:
        """LLM (sk-) and Atlassian (ATATT) API keys are redacted."""
        assert _clean(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "fatal: unable to access 'https://oauth2:glpat-abcdefgh12345@gitlab.example.com/g/p.git/'",
                f"fatal: unable to access 'https://{REDACTED}@gitlab.example.com/g/p.git/'",
            ),
            (
                "git clone https://x-access-token:s3cr%40t@github.com/o/r",
                f"git clone https://{REDACTED}@github.com/o/r",
            ),
            ("fetch ssh://deploytoken@host/repo", f"fetch ssh://{REDACTED}@host/repo"),
        ],
        ids=["user-and-token", "percent-encoded-password", "token-as-user"],
    )
    def test_url_userinfo(self, text: str, expected: str) -> None:
        """Credentials in a URL's userinfo are redacted, scheme and host kept."""
        assert _clean(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "GET /api/v4/projects?private_token=abc123def&per_page=20",
                f"GET /api/v4/projects?private_token={REDACTED}&per_page=20",
            ),
            (
                "POST /oauth?grant=x&access_token=ya29.a0Af-H_x&scope=api",
                f"POST /oauth?grant=x&access_token={REDACTED}&scope=api",
            ),
            ("GET /feed.atom?token=feedtoken123 200", f"GET /feed.atom?token={REDACTED} 200"),
            ("body a=1&client_secret=cs_9876&b=2", f"body a=1&client_secret={REDACTED}&b=2"),
        ],
        ids=["private_token", "access_token", "token", "client_secret"],
    )
    def test_query_parameters(self, text: str, expected: str) -> None:
        """Credential query and form parameters lose their values, other parameters stay."""
        assert _clean(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("login password=hunter2 user=bob", f"login password={REDACTED} user=bob"),
            ("passwd: swordfish, retry", f"passwd: {REDACTED}, retry"),
            (
                '{"password": "hunter2", "user": "bob"}',
                f'{{"password": "{REDACTED}", "user": "bob"}}',
            ),
            ("{'api_key': 'k-123'}", f"{{'api_key': '{REDACTED}'}}"),
            ("secret = topsecret;", f"secret = {REDACTED};"),
        ],
        ids=["password", "passwd", "json", "python-repr", "secret"],
    )
    def test_password_pairs(self, text: str, expected: str) -> None:
        """key=value and "key": "value" credential pairs lose their values."""
        assert _clean(text) == expected

    def test_jwt(self) -> None:
        """A JSON Web Token is redacted whole."""
        assert _clean(f"session {JWT} expired") == f"session {REDACTED} expired"

    @pytest.mark.parametrize(
        "text",
        [
            "GET /api/v4/projects/123/merge_requests/45/changes returned 404 Not Found",
            "commit 0123456789abcdef0123456789abcdef01234567 pushed to feature/glpat-docs",
            "event 0192f3a4-5b6c-7d8e-9f01-23456789abcd in task-1234567890abcdefghij",
            "glpat-short and ghp_tooShort and eyJ.not.jwt",
        ],
        ids=["api-path", "sha-and-branch", "ids", "too-short"],
    )
    def test_ordinary_text_is_kept(self, text: str) -> None:
        """Paths, SHAs, ids and too-short look-alikes are not redacted."""
        assert _clean(text) == text


class TestRegisteredSecrets:
    def test_registered_secret_is_redacted_anywhere(self) -> None:
        """A registered secret is redacted wherever it appears, whatever its case or neighbours."""
        redactor = SecretRedactor()
        redactor.register("Sup3r;Secret,v4lue")
        text = "a Sup3r;Secret,v4lue b xSUP3R;SECRET,V4LUEx"
        assert redactor.clean(text) == (f"a {REDACTED} b x{REDACTED}x", False)

    def test_url_encoded_forms_are_redacted(self) -> None:
        """The percent-encoded and form-encoded forms of a registered secret are redacted too."""
        redactor = SecretRedactor()
        redactor.register("p@ss w/rd+1")
        encoded = urllib.parse.quote("p@ss w/rd+1", safe="")
        plus = urllib.parse.quote_plus("p@ss w/rd+1")
        assert (encoded, plus) == ("p%40ss%20w%2Frd%2B1", "p%40ss+w%2Frd%2B1")
        text = f"u=https://bob:{encoded}@host q=?x={plus}&y=1"
        assert redactor.clean(text) == (f"u=https://{REDACTED}@host q=?x={REDACTED}&y=1", False)

    def test_secret_after_a_credential_keyword_is_redacted_whole(self) -> None:
        """A registered secret is redacted whole even where a pattern would stop inside it."""
        redactor = SecretRedactor()
        redactor.register("abc,defghijk", "xyz!uvwrst12")
        text = "password: abc,defghijk then Bearer xyz!uvwrst12 done"
        assert redactor.clean(text) == (f"password: {REDACTED} then Bearer {REDACTED} done", False)

    def test_secret_inside_a_token_body_leaves_no_token_part(self) -> None:
        """A registered secret inside a longer token does not leave the token's head in clear."""
        redactor = SecretRedactor()
        redactor.register("secretXYZ")
        assert redactor.clean("glpat-AAAAsecretXYZ tail") == (f"glpat-{REDACTED} tail", False)

    def test_short_secret_is_refused(self) -> None:
        """A secret shorter than MIN_SECRET_CHARS is refused and nothing is registered."""
        redactor = SecretRedactor()
        short = "x" * (MIN_SECRET_CHARS - 1)
        with pytest.raises(ValueError, match=f"shorter than {MIN_SECRET_CHARS}"):
            redactor.register("long-enough-secret", short)
        assert redactor.clean(f"{short} long-enough-secret") == (
            f"{short} long-enough-secret",
            False,
        )

    def test_empty_values_are_ignored(self) -> None:
        """None and "" (an unset token) are ignored rather than refused."""
        redactor = SecretRedactor()
        redactor.register(None, "", "real-secret-1")
        assert redactor.clean("real-secret-1 none") == (f"{REDACTED} none", False)

    def test_registering_invalidates_memoised_results(self) -> None:
        """A string cleaned before a secret was registered is cleaned again afterwards."""
        redactor = SecretRedactor()
        assert redactor.clean("value late-secret-9") == ("value late-secret-9", False)
        redactor.register("late-secret-9")
        assert redactor.clean("value late-secret-9") == (f"value {REDACTED}", False)


class TestTruncation:
    def test_long_string_is_cut_with_a_marker_and_flagged(self) -> None:
        """A string over max_field_chars is cut, marked and reported as truncated."""
        redactor = SecretRedactor(max_field_chars=64)
        assert redactor.clean("a" * 64) == ("a" * 64, False)
        assert redactor.clean("a" * 65) == ("a" * 32 + "…[truncated]", True)

    def test_huge_string_is_cut_the_same_way(self) -> None:
        """A string far over the limit (1 MB) is cut the same way."""
        redactor = SecretRedactor(max_field_chars=64)
        assert redactor.clean("b" * 1_000_000) == ("b" * 32 + "…[truncated]", True)

    def test_secret_across_the_cut_is_redacted_before_cutting(self) -> None:
        """A secret straddling the cut is redacted first, so no part of it survives."""
        redactor = SecretRedactor(max_field_chars=64)
        redactor.register("straddling-secret-value")
        text = "x" * 25 + "straddling-secret-value" + "y" * 100
        assert redactor.clean(text) == ("x" * 25 + REDACTED[:7] + "…[truncated]", True)

    def test_limit_below_64_is_refused(self) -> None:
        """max_field_chars below 64 is refused."""
        with pytest.raises(ValueError, match="at least 64"):
            SecretRedactor(max_field_chars=63)


class TestControlCharacters:
    @pytest.mark.parametrize(
        ("char", "escaped"),
        [
            ("\n", "\\x0a"),
            ("\r", "\\x0d"),
            ("\x1b", "\\x1b"),
            ("\x00", "\\x00"),
            ("\x85", "\\x85"),
            ("\u2028", "\\u2028"),
            ("\u2029", "\\u2029"),
            ("\x0b", "\\x0b"),
            ("\x0c", "\\x0c"),
            ("\x1c", "\\x1c"),
            ("\x7f", "\\x7f"),
            ("\t", "\\x09"),
        ],
        ids=repr,
    )
    def test_control_character_is_escaped(self, char: str, escaped: str) -> None:
        """Each control or line-separator character becomes a visible escape."""
        result = _clean(f"a{char}b")
        assert result == f"a{escaped}b"
        _assert_single_safe_line(result)

    def test_forged_entry_stays_on_one_line(self) -> None:
        """A string forging a second JSON entry stays one line, its newline made visible."""
        forged = 'ok"}\n{"action":"forged","outcome":"success"}\r\n'
        result = _clean(forged)
        assert result == 'ok"}\\x0a{"action":"forged","outcome":"success"}\\x0d\\x0a'
        _assert_single_safe_line(result)

    def test_every_line_breaking_character_is_neutralised(self) -> None:
        """No character str.splitlines() breaks on survives cleaning."""
        result = _clean("x".join(LINE_BREAKING))
        assert result.splitlines() == [result]
        _assert_single_safe_line(result)

    def test_non_ascii_text_is_kept(self) -> None:
        """Printable non-ASCII text (accents, CJK, emoji) is kept as it is."""
        assert _clean("Grüße 中文 🚀 €") == "Grüße 中文 🚀 €"


# -- the property test --------------------------------------------------------

SEED = 20261128
CASES = 1000
WORD = string.ascii_letters + string.digits
NOISE = WORD + " .,:;/-_()[]{}<>=+*!?#%&|~'`^éß中€🚀" + "\n\r\t\x00\x1b\x7f\x85\u2028\u2029\x0b\x1c"
# What may sit right before a credential: never a word character, so keyword
# shapes (Bearer, password=, ...) keep their word boundary.
SEPARATORS = [" ", "\n", "\r\n", "\t", "\x00", "\x1b[0m ", "\u2028", "\x85", ": ", "(", "'", "<"]
SECRET_ALPHABET = WORD + "!#$%&()*+,-./:;<=>?@[]^_{|}~'"
LEAK_WINDOW = 8  # this many consecutive characters of a secret count as a leak
# What every entry of these tests holds whatever was emitted (keys, fixed values,
# markers). A registered secret drawn from it would be "found" without leaking.
SKELETON = (
    "schema_version event_id timestamp event_type audit action actor type id target "
    "resource_type repository project_id outcome failure error git_error error_message "
    "correlation_id uncorrelated service svc details stderr headers request argv git push "
    "attempt webhook_event poll_cycle test.redaction.case truncated url branch note "
    "[redacted] …[truncated]"
)


def _text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


@dataclass
class Credential:
    """A generated credential: how it appears in text, and the part that must never leak."""

    text: str
    secret: str


def _gitlab(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "_.-", 12, 40)
    return Credential(f"{rng.choice(GITLAB_PREFIXES)}-{body}", body)


def _runner(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "_-", 12, 40)
    return Credential(f"GR1348941{body}", body)


def _github(rng: random.Random) -> Credential:
    if rng.random() < 0.5:
        body = _text(rng, WORD, 16, 40)
        return Credential(f"{rng.choice(GITHUB_PREFIXES)}_{body}", body)
    body = _text(rng, WORD + "_", 16, 60)
    return Credential(f"github_pat_{body}", body)


def _whsec(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "+/=_-", 12, 40)
    return Credential(f"whsec_{body}", body)


def _authorization(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "-._~+/", 12, 40) + rng.choice(["", "=", "=="])
    scheme = rng.choice(["Bearer", "Basic", "Token", "Digest", "bearer"])
    header = rng.choice(["", "Authorization: ", "Proxy-Authorization: ", "-H 'Authorization: "])
    return Credential(f"{header}{scheme} {body}", body)


def _header(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "-_.", 12, 40)
    name = rng.choice(["PRIVATE-TOKEN", "X-Gitlab-Token", "x-api-key", "X-Auth-Token"])
    return Credential(f"{name}{rng.choice([': ', ':', '='])}{body}", body)


def _cookie(rng: random.Random) -> Credential:
    body = f"_gitlab_session={_text(rng, WORD, 12, 32)}; sid={_text(rng, WORD, 12, 32)}"
    return Credential(f"{rng.choice(['Cookie', 'Set-Cookie'])}: {body}", body)


def _userinfo(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "-._~!$&'()*+,;=%", 12, 40)
    user = rng.choice(["oauth2", "x-access-token", "gitlab-ci-token", "bob"])
    return Credential(f"https://{user}:{body}@gitlab.example.com/group/project.git", body)


def _query(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "-._~%+", 12, 40)
    key = rng.choice(["private_token", "access_token", "token", "client_secret", "api_key"])
    return Credential(f"https://gitlab.example.com/api/v4/projects?{key}={body}&page=2", body)


def _password(rng: random.Random) -> Credential:
    body = _text(rng, WORD + "-._~!@#$%^*()+=[]|:<>?/", 12, 40)
    key = rng.choice(["password", "passwd", "secret", "client_secret", "api_key", "access_token"])
    form = rng.choice(["{k}={v}", "{k}: {v}", '"{k}": "{v}"', "'{k}':'{v}'"])
    return Credential(form.format(k=key, v=body), body)


def _jwt(rng: random.Random) -> Credential:
    token = "eyJ" + ".".join(_text(rng, WORD + "_-", 12, 40) for _ in range(3))
    return Credential(token, token)


FAMILIES: list[Callable[[random.Random], Credential]] = [
    _gitlab,
    _runner,
    _github,
    _whsec,
    _authorization,
    _header,
    _cookie,
    _userinfo,
    _query,
    _password,
    _jwt,
]


def _registered(rng: random.Random, secrets: list[str]) -> Credential:
    secret = rng.choice(secrets)
    shape = rng.randrange(5)
    if shape == 0:  # glued to its neighbours: a literal needs no boundary
        return Credential(f"{_text(rng, WORD, 1, 5)}{secret}{_text(rng, WORD, 1, 5)}", secret)
    if shape == 1:
        return Credential(f"password={secret}", secret)
    if shape == 2:
        encoded = urllib.parse.quote(secret, safe="")
        return Credential(f"https://user:{encoded}@host.example/x", encoded)
    if shape == 3:
        encoded = urllib.parse.quote_plus(secret)
        return Credential(f"/search?q={encoded}&n=1", encoded)
    return Credential(f"Bearer {secret}", secret)


@dataclass
class Case:
    """One generated emit and every secret it carries."""

    error_message: str
    target: dict[str, Any]
    details: dict[str, Any]
    actor: Actor
    secrets: list[str]


def _embed(rng: random.Random, credentials: list[Credential]) -> str:
    parts = [_text(rng, NOISE, 0, 30)]
    for credential in credentials:
        parts += [rng.choice(SEPARATORS), credential.text, rng.choice(SEPARATORS)]
        parts.append(_text(rng, NOISE, 0, 30))
    return "".join(parts)


def _case(rng: random.Random, secrets: list[str]) -> Case:
    def credential() -> Credential:
        if rng.random() < 0.3:
            return _registered(rng, secrets)
        return rng.choice(FAMILIES)(rng)

    made: list[Credential] = []

    def some(low: int, high: int) -> list[Credential]:
        picked = [credential() for _ in range(rng.randint(low, high))]
        made.extend(picked)
        return picked

    url = credential()
    made.append(url)
    case = Case(
        error_message=_embed(rng, some(1, 3)),
        target={
            "resource_type": "repository",
            "url": url.text,
            "branch": _embed(rng, some(0, 1)),
            "project_id": rng.randint(1, 10_000),
        },
        details={
            "stderr": _embed(rng, some(0, 2)),
            "headers": [_embed(rng, some(1, 1)) for _ in range(rng.randint(0, 2))],
            "request": {"argv": ["git", "push", _embed(rng, some(0, 1))], "attempt": 1},
        },
        actor=Actor(rng.choice(["webhook_event", "poll_cycle"]), _embed(rng, some(0, 1))),
        secrets=[],
    )
    case.secrets = [c.secret for c in made]
    return case


def _emit(logger: AuditLogger, case: Case) -> str:
    return logger.emit(
        "test.redaction.case",
        outcome="failure",
        error=ErrorClass.GIT_ERROR,
        target=case.target,
        actor=case.actor,
        error_message=case.error_message,
        details=case.details,
    )


def _make_logger(
    sink: FileSink, spool_dir: Path, redactor: SecretRedactor, **options: Any
) -> AuditLogger:
    return AuditLogger(
        sink,
        service="svc",
        spool_dir=spool_dir,
        metrics=AuditMetrics(CollectorRegistry()),
        redactor=redactor,
        **options,
    )


def _files_under(directory: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def _leaks(blobs: list[bytes], secrets: set[str]) -> list[str]:
    return sorted(s for s in secrets if any(s.encode() in blob for blob in blobs))


def _windows(secret: str) -> set[str]:
    return {secret[i : i + LEAK_WINDOW] for i in range(max(1, len(secret) - LEAK_WINDOW + 1))}


def _partial_leaks(line: bytes, secrets: list[str]) -> list[str]:
    """Secrets of which LEAK_WINDOW consecutive characters appear in ``line``."""
    return sorted(s for s in secrets if any(w.encode() in line for w in _windows(s)))


def _check_trail(
    data: bytes, emitted: dict[str, list[str]], every_secret: set[str]
) -> list[dict[str, Any]]:
    """One valid entry per emit, no secret nor a piece of one, a redaction in every message.

    ``emitted`` maps each event id to the secrets its emit carried.
    """
    assert _leaks([data], every_secret) == []
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == len(emitted)  # no control character split an entry
    entries = [orjson.loads(line) for line in lines]
    assert sorted(e["event_id"] for e in entries) == sorted(emitted)
    assert [e for e in entries if not VALIDATOR.is_valid(e)] == []
    assert [REDACTED in e["error_message"] for e in entries] == [True] * len(entries)
    pieces = {
        e["event_id"]: _partial_leaks(line, emitted[e["event_id"]])
        for e, line in zip(entries, lines, strict=True)
    }
    assert {event_id: found for event_id, found in pieces.items() if found} == {}
    return entries


class TestNoSecretReachesATrail:
    def test_1000_random_entries_through_a_file_sink(self, tmp_path: Path) -> None:
        """1,000 random emits full of credentials leave none in the file or the spool."""
        rng = random.Random(SEED)
        secrets = [_text(rng, SECRET_ALPHABET, 12, 40) for _ in range(25)]
        redactor = SecretRedactor()
        redactor.register(*secrets)
        cases = [_case(rng, secrets) for _ in range(CASES)]
        path = tmp_path / "audit.jsonl"
        logger = _make_logger(
            FileSink(path, max_bytes=0),
            tmp_path / "spool",
            redactor,
            max_buffer_events=64,
            max_batch_events=32,
        )
        try:
            emitted = {_emit(logger, case): case.secrets for case in cases}
        finally:
            assert logger.close(10)

        every_secret = set(secrets) | {s for case in cases for s in case.secrets}
        every_secret |= {urllib.parse.quote(s, safe="") for s in secrets}
        every_secret |= {urllib.parse.quote_plus(s) for s in secrets}
        _check_trail(path.read_bytes(), emitted, every_secret)
        assert _leaks([blob for _, blob in _files_under(tmp_path / "spool")], every_secret) == []

    def test_entries_spooled_while_the_destination_is_down_hold_no_secret(
        self, tmp_path: Path
    ) -> None:
        """What the spool and the fallback keep while the sink is down holds no secret."""
        rng = random.Random(SEED + 1)
        secrets = [_text(rng, SECRET_ALPHABET, 12, 40) for _ in range(10)]
        redactor = SecretRedactor()
        redactor.register(*secrets)
        cases = [_case(rng, secrets) for _ in range(200)]
        destination = tmp_path / "destination"
        destination.mkdir()
        sink = FileSink(destination / "audit.jsonl", max_bytes=0)
        for path in destination.iterdir():
            path.unlink()
        destination.rmdir()  # every write now fails: the sink is down
        fallback = tmp_path / "fallback.jsonl"
        logger = _make_logger(
            sink,
            tmp_path / "spool",
            redactor,
            durability="spool",
            fallback=FileSink(fallback, max_bytes=0),
        )
        try:
            emitted = {_emit(logger, case): case.secrets for case in cases}
        finally:
            assert not logger.close(0.5)  # undelivered: the rest stays in the spool

        every_secret = set(secrets) | {s for case in cases for s in case.secrets}
        spooled = [blob for path, blob in _files_under(tmp_path / "spool")]
        assert _leaks(spooled, every_secret) == []
        records = [
            record.payload
            for path, blob in _files_under(tmp_path / "spool")
            if path.suffix == ".seg"
            for _, record in scan_segment(blob)
            if record is not None
        ]
        _check_trail(b"".join(r + b"\n" for r in records), emitted, every_secret)
        _check_trail(fallback.read_bytes(), emitted, every_secret)

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        secrets=st.lists(
            st.text(
                st.sampled_from(SECRET_ALPHABET), min_size=MIN_SECRET_CHARS, max_size=40
            ).filter(lambda s: s.lower() not in SKELETON),
            min_size=1,
            max_size=3,
        ),
        noise=st.lists(st.text(max_size=40), min_size=4, max_size=4),
        seed=st.integers(0, 2**32),
    )
    def test_hypothesis_generated_entries(
        self, secrets: list[str], noise: list[str], seed: int
    ) -> None:
        """Arbitrary Unicode around generated credentials never leaks one or splits a line."""
        rng = random.Random(seed)
        redactor = SecretRedactor()
        redactor.register(*secrets)
        tokens = [rng.choice(FAMILIES)(rng) for _ in range(3)]
        glued = [f"{a}{sep}{b.text}" for a, b, sep in zip(noise, tokens, SEPARATORS, strict=False)]
        case = Case(
            error_message=f"{glued[0]} {secrets[0]} {noise[3]}",
            target={"resource_type": "repository", "url": glued[1], "note": noise[3]},
            details={"stderr": [glued[2], *secrets], noise[3]: noise[0]},
            actor=Actor("webhook_event", f"{noise[1]}{secrets[-1]}"),
            secrets=[t.secret for t in tokens],
        )
        every_secret = set(secrets) | set(case.secrets)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "audit.jsonl"
            logger = _make_logger(FileSink(path, max_bytes=0), Path(tmp) / "spool", redactor)
            try:
                # Pieces are checked for the random tokens only: Hypothesis may well
                # put a piece of a registered secret (but not the whole) in the noise.
                emitted = {_emit(logger, case): case.secrets}
            finally:
                assert logger.close(10)
            _check_trail(path.read_bytes(), emitted, every_secret)
            assert _leaks([b for _, b in _files_under(Path(tmp) / "spool")], every_secret) == []


HUGE = "x" * 1_000_000
CUT = "x" * (DEFAULT_MAX_FIELD_CHARS - 32) + "…[truncated]"


class TestOversizedFields:
    @pytest.mark.parametrize(
        ("arguments", "expected"),
        [
            pytest.param(
                {"outcome": "failure", "error_message": HUGE},
                {"error_message": CUT},
                id="error_message",
            ),
            pytest.param(
                {"target": {"resource_type": "blob", "content": HUGE}},
                {"target": {"resource_type": "blob", "content": CUT}},
                id="target",
            ),
            pytest.param({"details": {"body": HUGE}}, {"details": {"body": CUT}}, id="details"),
            pytest.param(
                # Four cut strings are just over the limit; far bigger details
                # are walked only that far (TestEntryLimit in test_emit_hostile.py).
                {"details": {"bodies": [HUGE] * 4}},
                {"details": {"_dropped_bytes": len(orjson.dumps({"bodies": [CUT] * 4}))}},
                id="details-over-the-entry-limit",
            ),
        ],
    )
    def test_1mb_field_is_cut_and_flagged_under_the_entry_limit(
        self, tmp_path: Path, arguments: dict[str, Any], expected: dict[str, Any]
    ) -> None:
        """A 1 MB string is cut, the entry flagged truncated, and it stays under max_entry_bytes."""
        path = tmp_path / "audit.jsonl"
        logger = _make_logger(FileSink(path, max_bytes=0), tmp_path / "spool", SecretRedactor())
        try:
            logger.emit("test.oversized", **arguments)
        finally:
            assert logger.close(10)
        [line] = path.read_bytes().splitlines()
        entry = orjson.loads(line)
        assert {key: entry[key] for key in expected} == expected
        assert (entry["truncated"], len(line) <= DEFAULT_MAX_ENTRY_BYTES) == (True, True)
        assert VALIDATOR.is_valid(entry)

    def test_oversized_actor_id_keeps_the_entry_under_the_limit(self, tmp_path: Path) -> None:
        """An actor id of 1 MB of control characters still yields an entry under max_entry_bytes."""
        path = tmp_path / "audit.jsonl"
        logger = _make_logger(FileSink(path, max_bytes=0), tmp_path / "spool", SecretRedactor())
        try:
            logger.emit("test.oversized", actor=Actor("webhook_event", "\x01" * 1_000_000))
        finally:
            assert logger.close(10)
        [line] = path.read_bytes().splitlines()
        assert (orjson.loads(line)["truncated"], len(line) <= DEFAULT_MAX_ENTRY_BYTES) == (
            True,
            True,
        )


class TestStructuredValues:
    def test_values_under_credential_keys_are_redacted(self, tmp_path: Path) -> None:
        """details/target values whose key names a credential are redacted even when bare."""
        path = tmp_path / "audit.jsonl"
        logger = _make_logger(FileSink(path, max_bytes=0), tmp_path / "spool", SecretRedactor())
        try:
            logger.emit(
                "test.structured",
                target={"resource_type": "hook", "token": "hook-secret-value"},
                details={"password": "hunter2hunter2", "headers": {"PRIVATE-TOKEN": "abc123xyz"}},
            )
        finally:
            assert logger.close(10)
        entry = orjson.loads(path.read_bytes())
        assert (entry["target"]["token"], entry["details"]) == (
            REDACTED,
            {"password": REDACTED, "headers": {"PRIVATE-TOKEN": REDACTED}},
        )


def test_isolated_secrets_forgets_what_the_block_registered() -> None:
    """``auditkeep.testing.isolated_secrets``: a secret registered inside is scrubbed there and
    not after; one registered before stays."""
    from auditkeep.redact import default_redactor, register_secret
    from auditkeep.testing import isolated_secrets

    before, inside = "kept-secret-value-0b7e", "block-secret-value-91c4"
    register_secret(before)
    with isolated_secrets():
        register_secret(inside)
        assert default_redactor.redact(f"{before} {inside}").count("[REDACTED]") == 2
    assert default_redactor.redact(inside) == inside
    assert default_redactor.redact(before) != before
