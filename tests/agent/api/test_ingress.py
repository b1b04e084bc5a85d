"""The ingress hardening of issue 10, item by item, against the real app on a real socket.

Each test names the defence it proves; the bounds it checks are the ones
docs/ingress.md and the README promise.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitlab_copilot_agent.api.webhooks import WebhookConfig
from gitlab_copilot_agent.ingress.fields import MAX_AUDIT_TEXT_CHARS, parse_headers
from gitlab_copilot_agent.ingress.forwarded import MAX_HOPS, client_ip, rate_limit_key
from gitlab_copilot_agent.ingress.ratelimit import BYTES_PER_SOURCE, SourceRateLimiter
from gitlab_copilot_agent.ingress.replay import BYTES_PER_KEY, ReplayGuard
from gitlab_copilot_agent.settings import Settings, SettingsError
from gitlab_copilot_agent.webhook_auth import Rejection, verify_signature

sys.path.insert(0, str(Path(__file__).parent))
from ingresskit import (
    SECRET,
    SIGNING,
    IngressAgent,
    as_bytes,
    connect,
    environment,
    listening_socket,
    mr_event,
    read_answer,
    read_response,
    request_head,
    reset,
    served,
    signed_headers,
    strip_signature,
    token_headers,
)

ENTRY_BOUND = 1024
"""Every webhook.auth.* entry is under 1 KiB (README, docs/ingress.md)."""

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8")]


def only_entry(agent: IngressAgent) -> dict[str, Any]:
    [entry] = agent.entries()
    return entry


def reason_of(entry: dict[str, Any]) -> str | None:
    reason: str | None = entry["details"].get("rejection_reason")
    return reason


# -- 1. every header parsed defensively ------------------------------------------------


class TestDefensiveParsing:
    @pytest.mark.parametrize(
        "timestamp",
        ["9" * 300, "1" * 13, "-1767225600", "+1767225600", "1_767_225_600", "17672 25600",
         "١٧٦٧٢٢٥٦٠٠", "0x10", "1e9", "17672256.0"],
    )  # fmt: skip
    def test_a_timestamp_that_is_not_bounded_digits_is_malformed(
        self, tmp_path: Path, timestamp: str
    ) -> None:
        """Hundreds of digits, signs, underscores, non-ASCII digits: 400 malformed_timestamp."""
        agent = IngressAgent(tmp_path)
        body = mr_event(1)
        with served(agent) as url, httpx.Client(base_url=url) as client:
            response = client.post(
                "/webhook",
                content=body,
                headers=as_bytes({**signed_headers(body), "webhook-timestamp": timestamp}),
            )
        assert (response.status_code, response.json()["error"]) == (400, "malformed_timestamp")
        entry = only_entry(agent)
        assert (reason_of(entry), entry["http_status"]) == ("malformed_timestamp", 400)
        assert agent.recorder.calls == []

    @pytest.mark.parametrize(
        ("headers", "what"),
        [
            ([("webhook-id", "x" * 129)], "malformed webhook-id"),
            ([("idempotency-key", "has space")], "malformed idempotency-key"),
            ([("x-gitlab-event-uuid", "9" * 500)], "malformed x-gitlab-event-uuid"),
            ([("x-gitlab-token", SECRET), ("x-gitlab-token", "other-token")],
             "duplicate x-gitlab-token"),
            ([("webhook-signature", "v1,a"), ("webhook-signature", "v1,b")],
             "duplicate webhook-signature"),
        ],
    )  # fmt: skip
    def test_bad_or_duplicated_headers_are_malformed(
        self, tmp_path: Path, headers: list[tuple[str, str]], what: str
    ) -> None:
        """Over-long ids, ids with spaces, a single-valued header twice: 400 malformed_header."""
        agent = IngressAgent(tmp_path, webhook_allow_unsigned=True)
        base = [(k, v) for k, v in token_headers().items() if k not in dict(headers)]
        with served(agent) as url, httpx.Client(base_url=url) as client:
            response = client.post("/webhook", content=mr_event(1), headers=base + headers)
        assert (response.status_code, response.json()["error"]) == (400, "malformed_header")
        entry = only_entry(agent)
        assert (reason_of(entry), entry["details"]["malformed"]) == ("malformed_header", what)

    def test_an_overlong_signature_header_is_malformed(self, tmp_path: Path) -> None:
        """A webhook-signature over 1,024 characters is refused before any HMAC work."""
        agent = IngressAgent(tmp_path)
        body = mr_event(1)
        headers = {**signed_headers(body), "webhook-signature": " ".join(["v1,AAAA"] * 200)}
        with served(agent) as url, httpx.Client(base_url=url) as client:
            response = client.post("/webhook", content=body, headers=headers)
        assert (response.status_code, response.json()["error"]) == (400, "malformed_header")
        assert reason_of(only_entry(agent)) == "malformed_header"

    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [b"x-gitlab-token", b"x-gitlab-event", b"x-gitlab-event-uuid",
                     b"idempotency-key", b"webhook-id", b"webhook-timestamp",
                     b"webhook-signature", b"content-type", b"content-length",
                     b"x-forwarded-for", b"other"]
                ),
                st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                          st.integers().map(lambda i: str(i).encode())),
            ),
            max_size=12,
        ),
        st.binary(max_size=64),
    )  # fmt: skip
    def test_no_header_combination_raises(
        self, raw: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Property: parsing and verifying arbitrary header bytes gives a verdict, never raises."""
        headers = parse_headers(raw)
        result = verify_signature(
            headers.signature_headers(), body, b"k" * 32, tolerance_s=300, now=1767225600
        )
        assert result is None or isinstance(result, Rejection)
        assert client_ip("10.0.0.1", headers.forwarded_for, TRUSTED)


# -- 2. downgrade refused; the token path has its own replay protection ----------------


class TestDowngradeAndTokenReplays:
    def test_signature_stripped_replays_are_refused_when_a_signing_token_is_set(
        self, tmp_path: Path
    ) -> None:
        """Both secrets set: a signed delivery replayed 5x with its signature stripped: 5x 401."""
        agent = IngressAgent(tmp_path)
        body = mr_event(1)
        signed = signed_headers(body)
        with served(agent) as url, httpx.Client(base_url=url) as client:
            first = client.post("/webhook", content=body, headers=signed)
            replays = [
                client.post("/webhook", content=body, headers=strip_signature(signed))
                for _ in range(5)
            ]
        assert first.status_code == 202
        assert [(r.status_code, r.json()["error"]) for r in replays] == [
            (401, "missing_signature")
        ] * 5
        entries = agent.entries()
        assert [reason_of(e) for e in entries] == [None] + ["missing_signature"] * 5
        assert len(agent.recorder.calls) == 1

    def test_allowed_token_deliveries_still_cannot_replay_a_signed_one(
        self, tmp_path: Path
    ) -> None:
        """WEBHOOK_ALLOW_UNSIGNED=true: token deliveries pass; a stripped signed one is a replay."""
        agent = IngressAgent(tmp_path, webhook_allow_unsigned=True)
        body = mr_event(1)
        signed = signed_headers(body)
        with served(agent) as url, httpx.Client(base_url=url) as client:
            first = client.post("/webhook", content=body, headers=signed)
            replays = [
                client.post("/webhook", content=body, headers=strip_signature(signed))
                for _ in range(5)
            ]
            fresh = client.post("/webhook", content=mr_event(2), headers=token_headers())
        assert (first.status_code, fresh.status_code) == (202, 202)
        assert {(r.status_code, r.json()["error"]) for r in replays} == {(409, "replayed")}
        assert sorted(c[1]["n"] for c in agent.recorder.calls) == [1, 2]
        auth = [e["details"]["auth_method"] for e in agent.entries()]
        assert auth == ["signature"] + ["token"] * 6

    def test_token_path_replays_are_refused_by_any_id_or_the_exact_body(
        self, tmp_path: Path
    ) -> None:
        """Token-only agent: same delivery again, with one id stripped, or fresh ids -> 409."""
        agent = IngressAgent(tmp_path, gitlab_webhook_signing_token=None)
        body = mr_event(1)
        original = token_headers()
        variants = [
            original,
            {k: v for k, v in original.items() if k != "idempotency-key"},
            {k: v for k, v in original.items() if k != "x-gitlab-event-uuid"},
            {**original, "x-gitlab-event-uuid": str(uuid.uuid4())},
            {**token_headers()},  # both ids fresh, same body
        ]
        with served(agent) as url, httpx.Client(base_url=url) as client:
            first = client.post("/webhook", content=body, headers=original)
            replays = [client.post("/webhook", content=body, headers=h) for h in variants]
            no_id = client.post(
                "/webhook",
                content=mr_event(3),
                headers={
                    k: v
                    for k, v in original.items()
                    if k not in ("idempotency-key", "x-gitlab-event-uuid")
                },
            )
        assert first.status_code == 202
        assert [r.status_code for r in replays] == [409] * 5
        assert (no_id.status_code, no_id.json()["error"]) == (400, "missing_delivery_id")
        assert len(agent.recorder.calls) == 1
        assert len(agent.entries()) == 7

    def test_the_replay_window_is_the_setting_and_at_least_twice_the_tolerance(self) -> None:
        """Ids are kept WEBHOOK_REPLAY_WINDOW_S (default 24 h), never under 2x the tolerance."""
        base = environment(gitlab_webhook_signing_token=None)
        default = WebhookConfig.from_settings(Settings.from_env(base).webhook)
        assert default.replay_guard.window_s == 86_400
        short = Settings.from_env({**base, "WEBHOOK_REPLAY_WINDOW_S": "10"})
        assert WebhookConfig.from_settings(short.webhook).replay_guard.window_s == 600
        guard = ReplayGuard(window_s=600)
        assert [
            guard.first_sighting("a", now=0),
            guard.first_sighting("a", "b", now=599),
            guard.first_sighting("b", now=599),
            guard.first_sighting("a", now=601),
        ] == [True, False, True, True]

    def test_allowing_unsigned_deliveries_needs_the_secret(self) -> None:
        """WEBHOOK_ALLOW_UNSIGNED=true without GITLAB_WEBHOOK_SECRET is refused at start."""
        with pytest.raises(SettingsError) as raised:
            Settings.from_env(environment(gitlab_webhook_secret=None, webhook_allow_unsigned=True))
        assert raised.value.problems == {
            "WEBHOOK_ALLOW_UNSIGNED": "true needs GITLAB_WEBHOOK_SECRET (the token to accept)"
        }


# -- 3. short unauthenticated entries; a rate limit per source -------------------------


class TestBoundedWrites:
    def test_unauthenticated_entries_are_short_and_scrubbed_before_the_cut(
        self, tmp_path: Path
    ) -> None:
        """10 KB header values with a secret across the cut: every field <= 128 B, entry < 1 KiB."""
        agent = IngressAgent(tmp_path)
        # The secret straddles the 128-character cut: cutting first would leave a fragment.
        hostile = "A" * 110 + SECRET + '\x1b[31m\u2028é"\\' * 800
        with served(agent) as url, httpx.Client(base_url=url) as client:
            client.post(
                "/webhook",
                content=b"{}",
                headers=as_bytes(
                    {"x-gitlab-event": hostile, "x-gitlab-token": "wrong", "webhook-id": "y" * 5000}
                ),
            )
            client.post(
                "/webhook",
                content=b"{}",
                headers=as_bytes([("x-gitlab-event", hostile), ("x-gitlab-token", SECRET)]),
            )
        lines = agent.lines()
        assert len(lines) == 2
        for line in lines:
            assert len(line) < ENTRY_BOUND, len(line)
            for i in range(len(SECRET) - 7):
                assert SECRET[i : i + 8].encode() not in line
            details = orjson.loads(line)["details"]
            assert all(len(str(v)) <= MAX_AUDIT_TEXT_CHARS for v in details.values())

    def test_a_source_that_exhausts_its_bucket_gets_audited_429s(self, tmp_path: Path) -> None:
        """Burst 5: the 6th refusal from one source is a 429 with Retry-After, audited, tiny."""
        agent = IngressAgent(
            tmp_path,
            webhook_rate_limit_burst=5,
            webhook_rate_limit_per_s=0.01,
            trusted_proxies="127.0.0.1/32",
        )
        bad = {**token_headers("wrong-token-value"), "x-forwarded-for": "203.0.113.9"}
        with served(agent) as url, httpx.Client(base_url=url) as client:
            flood = [client.post("/webhook", content=b"{}", headers=bad) for _ in range(20)]
            other = client.post(
                "/webhook",
                content=mr_event(1),
                headers={**signed_headers(mr_event(1)), "x-forwarded-for": "198.51.100.7"},
            )
        assert [r.status_code for r in flood] == [401] * 5 + [429] * 15
        assert int(flood[-1].headers["retry-after"]) >= 1
        assert other.status_code == 202
        lines = agent.lines()
        assert len(lines) == 21
        limited = [orjson.loads(x) for x in lines if b"rate_limited" in x]
        assert len(limited) == 15
        assert all(len(x) < 600 for x in lines if b"rate_limited" in x)
        assert {e["details"]["source_ip"] for e in limited} == {"203.0.113.9"}
        assert {(e["http_status"], e["error"]) for e in limited} == {(429, "rate_limit")}

    def test_accepted_deliveries_do_not_drain_the_bucket(self, tmp_path: Path) -> None:
        """Burst 2: 20 good deliveries from one source all pass; refusals are what it counts."""
        agent = IngressAgent(tmp_path, webhook_rate_limit_burst=2, webhook_rate_limit_per_s=0.01)
        with served(agent) as url, httpx.Client(base_url=url) as client:
            codes = [
                client.post(
                    "/webhook", content=mr_event(i), headers=signed_headers(mr_event(i))
                ).status_code
                for i in range(20)
            ]
        assert codes == [202] * 20
        assert len(agent.recorder.calls) == 20

    def test_limiter_state_is_bounded(self) -> None:
        """At most max_sources buckets, under BYTES_PER_SOURCE each; full buckets hold nothing."""
        clock = [0.0]
        limiter = SourceRateLimiter(burst=3, per_s=1.0, max_sources=2000, clock=lambda: clock[0])
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(6000):
            limiter.acquire(rate_limit_key(str(ipaddress.IPv6Address(2**127 + (i << 64)))))
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert len(limiter) == 2000
        assert used < 2000 * BYTES_PER_SOURCE, used / 2000
        clock[0] = 10.0  # every bucket refilled
        limiter.acquire("192.0.2.1")
        limiter.release("192.0.2.1")
        assert "192.0.2.1" not in limiter._buckets

    def test_ipv6_sources_share_a_bucket_per_64(self) -> None:
        """Addresses in one /64 are one source; another /64 is another."""
        assert rate_limit_key("2001:db8:1:2::1") == rate_limit_key("2001:db8:1:2:ffff::9")
        assert rate_limit_key("2001:db8:1:3::1") != rate_limit_key("2001:db8:1:2::1")
        assert rate_limit_key("192.0.2.7") == "192.0.2.7"

    def test_replay_guard_bytes_are_bounded(self) -> None:
        """max_keys ids of 128 characters cost under BYTES_PER_KEY each (a 64-bit digest each)."""
        guard = ReplayGuard(window_s=3600, max_keys=50_000)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(60_000):
            guard.first_sighting(f"{i:0128d}", now=1.0)
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert len(guard) == 50_000
        assert used < 50_000 * BYTES_PER_KEY, used / 50_000


# -- 4. X-Forwarded-For from every line --------------------------------------------------


class TestForwardedFor:
    def test_a_forged_first_line_does_not_become_the_source(self, tmp_path: Path) -> None:
        """Client line 6.6.6.6, then the proxy's own line: the audited source is the proxy's hop."""
        agent = IngressAgent(tmp_path, trusted_proxies="127.0.0.1/32")
        with served(agent) as url, httpx.Client(base_url=url) as client:
            client.post(
                "/webhook",
                content=b"{}",
                headers=[
                    ("x-gitlab-token", "wrong"),
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.7"),
                ],
            )
        assert only_entry(agent)["details"]["source_ip"] == "198.51.100.7"

    def test_the_rightmost_untrusted_hop_across_lines(self) -> None:
        """Lines joined in order, walked right to left past trusted proxies."""
        assert client_ip("127.0.0.1", ["6.6.6.6, 198.51.100.7", "10.0.0.9"], TRUSTED) == (
            "198.51.100.7"
        )
        assert client_ip("127.0.0.1", ["6.6.6.6", "198.51.100.7, 10.1.1.1"], TRUSTED) == (
            "198.51.100.7"
        )
        assert client_ip("203.0.113.5", ["1.2.3.4"], TRUSTED) == "203.0.113.5"
        assert client_ip("10.0.0.2", ["garbage", "10.0.0.3"], TRUSTED) == "10.0.0.3"
        assert client_ip("::ffff:10.0.0.2", ["198.51.100.7"], TRUSTED) == "198.51.100.7"
        assert client_ip("10.0.0.2", ["fe80::1%" + "a" * 500], TRUSTED) == "10.0.0.2"
        assert client_ip("10.0.0.2", [", ".join(["10.0.0.1"] * (MAX_HOPS + 5))], TRUSTED) == (
            "10.0.0.1"
        )
        assert client_ip(None, ["198.51.100.7"], TRUSTED) == "unknown"

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(max_size=80), max_size=5))
    def test_any_header_lines_give_an_address_or_unknown(self, lines: list[str]) -> None:
        """Property: whatever the lines, the result is a canonical address the peer vouched for."""
        result = client_ip("10.0.0.2", lines, TRUSTED)
        assert str(ipaddress.ip_address(result)) == result
        assert len(result) <= 45


# -- 5. bodies that stop, trickle or fall short; headers and connections ----------------


class TestSlowAndBrokenClients:
    def test_a_disconnect_mid_body_is_audited_without_a_traceback(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Headers, 10 of 1,000 body bytes, then a reset: one client_disconnected entry."""
        agent = IngressAgent(tmp_path)
        caplog.set_level(logging.WARNING)
        with served(agent) as url:
            for close in (reset, socket.socket.close):
                sock = connect(url)
                sock.sendall(request_head(token_headers(), 1000) + b'{"object_k')
                time.sleep(0.5)  # let the server read the headers: a reset discards unread data
                close(sock)
            deadline = time.monotonic() + 5
            while len(agent.lines()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        entries = agent.entries()
        assert [(reason_of(e), e["http_status"]) for e in entries] == [
            ("client_disconnected", 499)
        ] * 2
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]

    def test_slow_and_short_bodies_are_cut_off_at_the_body_deadline(self, tmp_path: Path) -> None:
        """1 byte every 2 s, and 10 bytes under Content-Length 100: 408 body_timeout at ~1 s."""
        agent = IngressAgent(tmp_path, webhook_body_timeout_s=1.0)
        results: dict[str, tuple[int | None, float]] = {}

        def slow(url: str) -> None:
            start = time.monotonic()
            with connect(url) as sock:
                sock.sendall(request_head(token_headers(), 100))
                try:
                    for _ in range(100):
                        sock.sendall(b" ")
                        time.sleep(2)
                except OSError:
                    pass  # the server answered and closed
                results["slow"] = (read_answer(sock)[0], time.monotonic() - start)

        def short(url: str) -> None:
            start = time.monotonic()
            with connect(url) as sock:
                sock.sendall(request_head(token_headers(), 100) + b"0123456789")
                results["short"] = (read_answer(sock)[0], time.monotonic() - start)

        with served(agent) as url:
            threads = [threading.Thread(target=f, args=(url,)) for f in (slow, short)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
        assert results["short"][0] == 408
        assert results["short"][1] < 3
        # The slow sender learns at its next write (2 s) that the answer is in.
        assert results["slow"][0] == 408
        assert results["slow"][1] < 5
        assert [reason_of(e) for e in agent.entries()] == ["body_timeout"] * 2

    def test_slow_and_idle_header_senders_are_disconnected(self, tmp_path: Path) -> None:
        """Headers trickling, or nothing at all: closed at WEBHOOK_HEADER_TIMEOUT_S, no entry."""
        agent = IngressAgent(tmp_path, webhook_header_timeout_s=1.0)
        with served(agent) as url:
            start = time.monotonic()
            idle, trickle = connect(url), connect(url)
            trickle.sendall(b"POST /webhook HTTP/1.1\r\nhost: x\r\n")
            statuses = [read_answer(idle)[0], read_answer(trickle)[0]]
            elapsed = time.monotonic() - start
            idle.close()
            trickle.close()
        assert statuses == [None, None]
        assert 0.9 < elapsed < 4
        assert agent.lines() == []

    def test_oversize_headers_are_refused_by_uvicorn_or_audited_by_the_route(
        self, tmp_path: Path
    ) -> None:
        """Over WEBHOOK_MAX_HEADER_BYTES: 400 from h11 while incomplete, else an audited 431."""
        agent = IngressAgent(tmp_path, webhook_max_header_bytes=4096)
        head = request_head({**token_headers(), "x-big": "b" * 8000}, 2)
        with served(agent) as url:
            with connect(url) as sock:  # trickled: h11 sees an incomplete block over the bound
                sock.sendall(head[:5000])
                time.sleep(0.2)
                sock.sendall(head[5000:] + b"{}")
                trickled, _ = read_answer(sock)
            with connect(url) as sock:  # all at once: h11 parses it, the route refuses it
                sock.sendall(head + b"{}")
                at_once, answer = read_response(sock)
        assert (trickled, at_once) == (400, 431)
        assert b"headers_too_large" in answer
        entry = only_entry(agent)
        assert (reason_of(entry), entry["http_status"]) == ("headers_too_large", 431)

    def test_connections_over_the_limit_are_refused_and_idle_ones_closed(
        self, tmp_path: Path
    ) -> None:
        """WEBHOOK_MAX_CONNECTIONS=3: a request on a 4th connection gets 503; keep-alive 1 s."""
        agent = IngressAgent(tmp_path, webhook_max_connections=3, webhook_keepalive_timeout_s=1)
        with served(agent) as url:
            held = [connect(url) for _ in range(3)]
            time.sleep(0.5)  # accepted by the server
            with connect(url) as extra:
                extra.sendall(request_head(token_headers(), 2) + b"{}")
                over_status, _ = read_answer(extra)
            for sock in held:
                sock.close()
            deadline = time.monotonic() + 10
            while True:  # until the server has seen the three go
                with connect(url) as sock:
                    sock.sendall(request_head(token_headers("wrong"), 2) + b"{}")
                    start = time.monotonic()
                    status, _ = read_answer(sock)  # answered, then closed after 1 s idle
                    idle_closed_after = time.monotonic() - start
                if status != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert over_status == 503
        assert status == 401
        assert 0.8 < idle_closed_after < 3
        assert [reason_of(e) for e in agent.entries()] == ["missing_signature"]

    def test_a_refused_body_is_discarded_then_the_connection_reused_or_closed(
        self, tmp_path: Path
    ) -> None:
        """413 before the body: sent in full, the connection serves the next request; trickled
        after the answer, it is closed at the body deadline (no connection held for ever)."""
        agent = IngressAgent(tmp_path, webhook_body_timeout_s=1.0)
        big = b"{" * 8000
        with served(agent) as url:
            with connect(url) as sock:
                sock.sendall(request_head(token_headers(), len(big)) + big)
                first, _ = read_response(sock)
                sock.sendall(request_head(token_headers("wrong"), 2) + b"{}")
                second, _ = read_response(sock)
            with connect(url) as sock:
                sock.sendall(request_head(token_headers(), len(big)) + big[:100])
                answer, _ = read_response(sock)
                start = time.monotonic()
                with contextlib.suppress(OSError):
                    for _ in range(20):  # one byte every 0.2 s, past the 1 s deadline
                        sock.sendall(b"{")
                        time.sleep(0.2)
                closed, _ = read_answer(sock)
                held = time.monotonic() - start
        assert (first, second, answer) == (413, 401, 413)
        assert closed is None
        assert held < 3
        assert [reason_of(e) for e in agent.entries()] == [
            "body_too_large", "missing_signature", "body_too_large"
        ]  # fmt: skip

    def test_a_bug_inside_the_route_still_leaves_its_one_entry(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unexpected exception answers 500 with one webhook.error entry, no exception text."""
        agent = IngressAgent(tmp_path)

        def broken(self: ReplayGuard, *keys: object, now: object = None) -> bool:
            raise RuntimeError(f"boom {SECRET}")

        body = mr_event(1)
        with served(agent) as url, httpx.Client(base_url=url) as client:
            # The guard lives in the lifespan's services (one per start): patch its class.
            monkeypatch.setattr(ReplayGuard, "first_sighting", broken)
            response = client.post("/webhook", content=body, headers=signed_headers(body))
        assert (response.status_code, response.json()["error"]) == (500, "internal_error")
        entry = only_entry(agent)
        assert (entry["action"], entry["error"], entry["http_status"]) == (
            "webhook.error", "internal_error", 500
        )  # fmt: skip
        assert "boom" not in agent.trail.read_text()

    def test_the_trailing_slash_path_is_the_same_audited_route(self, tmp_path: Path) -> None:
        """POST /webhook/ is authenticated and audited like /webhook; nothing answers 307."""
        agent = IngressAgent(tmp_path)
        body = mr_event(1)
        with served(agent) as url, httpx.Client(base_url=url) as client:
            bad = client.post("/webhook/", content=b"{}", headers=token_headers("wrong"))
            good = client.post("/webhook/", content=body, headers=signed_headers(body))
            health = client.get("/healthz/")
        assert (bad.status_code, good.status_code, health.status_code) == (401, 202, 404)
        assert [reason_of(e) for e in agent.entries()] == ["missing_signature", None]


# -- 6. docs off, metrics behind a token or on their own port ---------------------------


class TestOperationalEndpoints:
    def test_api_docs_are_off_by_default(self, tmp_path: Path) -> None:
        """/docs, /redoc, /openapi.json: 404 unless API_DOCS_ENABLED=true."""
        paths = ["/docs", "/redoc", "/openapi.json"]
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        agent = IngressAgent(tmp_path / "a")
        with served(agent) as url, httpx.Client(base_url=url) as client:
            assert [client.get(p).status_code for p in paths] == [404] * 3
            assert client.get("/healthz").status_code == 200
        enabled = IngressAgent(tmp_path / "b", api_docs_enabled=True)
        with served(enabled) as url, httpx.Client(base_url=url) as client:
            assert [client.get(p).status_code for p in paths] == [200] * 3

    def test_metrics_token_guards_metrics_and_healthz(self, tmp_path: Path) -> None:
        """METRICS_TOKEN: both need the bearer token; the webhook does not."""
        token = "metrics-token-0123456789abcdef"
        agent = IngressAgent(tmp_path, metrics_token=token)
        with served(agent) as url, httpx.Client(base_url=url) as client:
            for path in ("/metrics", "/healthz"):
                assert client.get(path).status_code == 401
                wrong = client.get(path, headers={"authorization": "Bearer nope"})
                assert wrong.status_code == 401
                right = client.get(path, headers={"authorization": f"Bearer {token}"})
                assert right.status_code == 200
            hook = client.post("/webhook", content=b"{}", headers=token_headers("wrong"))
        assert hook.status_code == 401
        assert token not in agent.trail.read_text()

    def test_metrics_port_serves_only_metrics_and_healthz(self, tmp_path: Path) -> None:
        """METRICS_PORT: /metrics, /healthz only there; the webhook only on the main port."""
        main, metrics = listening_socket(), listening_socket()
        agent = IngressAgent(tmp_path, metrics_port=metrics.getsockname()[1])
        with served(agent, main, metrics) as url, httpx.Client() as client:
            metrics_url = f"http://127.0.0.1:{metrics.getsockname()[1]}"
            assert client.get(f"{url}/metrics").status_code == 404
            assert client.get(f"{url}/healthz").status_code == 404
            assert client.get(f"{metrics_url}/metrics").status_code == 200
            assert client.get(f"{metrics_url}/healthz").status_code == 200
            assert client.post(f"{metrics_url}/webhook", content=b"{}").status_code == 404
            hook = client.post(f"{url}/webhook", content=b"{}", headers=token_headers("wrong"))
        assert hook.status_code == 401
        assert len(agent.lines()) == 1

    def test_serve_listens_on_the_metrics_port_with_its_token(self, tmp_path: Path) -> None:
        """`gitlab-copilot-agent serve` with METRICS_PORT and METRICS_TOKEN, stopped by SIGTERM."""
        ports = []
        for _ in range(2):
            with socket.create_server(("127.0.0.1", 0)) as probe:
                ports.append(probe.getsockname()[1])
        token = "serve-metrics-token-0123456789"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GITLAB_", "AUDIT_"))},
            "GITLAB_URL": "http://127.0.0.1:9",
            "GITLAB_TOKEN": "glpat-unused-token-000000",
            "GITLAB_WEBHOOK_SIGNING_TOKEN": SIGNING,
            "METRICS_PORT": str(ports[1]),
            "METRICS_TOKEN": token,
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(tmp_path / "audit.jsonl"),
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "gitlab_copilot_agent.cli", "serve", "--port", str(ports[0])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            auth = {"authorization": f"Bearer {token}"}
            with httpx.Client() as client:
                while True:
                    try:
                        health = client.get(f"http://127.0.0.1:{ports[1]}/healthz", headers=auth)
                        break
                    except httpx.TransportError:
                        assert proc.poll() is None
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
                on_main = client.get(f"http://127.0.0.1:{ports[0]}/healthz", headers=auth)
                hook = client.post(f"http://127.0.0.1:{ports[0]}/webhook", content=b"{}")
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        assert (health.status_code, on_main.status_code, hook.status_code) == (200, 404, 401)
        # uvicorn re-raises the SIGTERM it handled once shutdown is done (as `uvicorn.run`).
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert b"Traceback" not in err
        assert token.encode() not in err


def test_key_is_what_the_kit_signs_with() -> None:
    """The kit's signing token is a valid whsec_ key (a guard on the fixtures themselves)."""
    assert len(base64.b64decode(SIGNING.removeprefix("whsec_"))) == 32
