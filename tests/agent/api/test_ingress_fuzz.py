"""20,000+ hostile requests against two real agents on real sockets, with exact accounting.

Issue 10's "done when": huge numeric headers, signature-stripped deliveries
with both secrets configured, replays on both authentication paths,
multi-line X-Forwarded-For, disconnects mid-body, slow and short bodies
(bounded: a handful, in parallel), oversize bodies and headers, malformed JSON
and wrong types. Every request carries a unique marker (its
``X-Gitlab-Event-UUID``, which becomes the entry's actor id) unless its kind
is about missing or broken ids; those are counted in total. Asserted:

* no response >= 500;
* exactly one audit entry per request, found by marker in the real file trail,
  with the answered status and reason; the marker-less ones match in number;
* every entry under 1 KiB;
* every accepted delivery dispatched exactly once, nothing else dispatched.

Two agents, both with both secrets: ``strict`` (the default: unsigned
deliveries refused) and ``open`` (WEBHOOK_ALLOW_UNSIGNED=true, so the token
path and its replay protection are exercised).
"""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ingresskit import (
    SECRET,
    ChildAgent,
    as_bytes,
    connect,
    read_answer,
    signed_headers,
    strip_signature,
    token_headers,
)

TOTAL = 20_400
ENTRY_BOUND = 1024
SLOW, SHORT = 6, 10
FLOODER = "203.0.113.66"
GITLAB_SOURCES = [f"192.0.2.{i}" for i in range(1, 11)]


@dataclass
class Planned:
    server: str
    kind: str
    headers: list[tuple[str, str | bytes]]
    body: bytes
    allowed: frozenset[int]
    marker: str | None
    transport: str = "http"
    path: str = "/webhook"
    reason: str | None = None
    source: str | None = None
    n: int | None = None
    status: int | None = None
    error: str | None = None
    answered: dict[str, Any] = field(default_factory=dict)


class Plan:
    """Builds the requests; ``n`` numbers every body that could be dispatched."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0
        self.captured_signed: list[tuple[str, dict[str, str], bytes]] = []
        self.captured_token: list[tuple[dict[str, str], bytes]] = []
        self.sources = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(5000)]

    def body(self, kind: str = "merge_request") -> tuple[int, bytes]:
        self.n += 1
        if kind == "merge_request":
            payload: dict[str, Any] = {
                "object_kind": "merge_request",
                "project": {"id": 42},
                "object_attributes": {"iid": 7, "action": "open"},
                "n": self.n,
            }
        else:
            payload = {"object_kind": "push", "project_id": 42, "n": self.n}
        return self.n, orjson.dumps(payload)

    def xff(self, headers: dict[str, str], source: str | None = None) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = list(headers.items())
        items.append(("x-forwarded-for", source or self.rng.choice(self.sources)))
        return items

    # -- genuine deliveries (phase 1 and some in phase 2) --

    def genuine(self, server: str) -> Planned:
        rng = self.rng
        event = rng.choice(["merge_request"] * 4 + ["push"])
        hook = "Merge Request Hook" if event == "merge_request" else "Push Hook"
        n, body = self.body(event)
        source = rng.choice(GITLAB_SOURCES)
        if server == "strict" or rng.random() < 0.5:
            h = signed_headers(body, event=hook)
            self.captured_signed.append((server, h, body))
        else:
            h = token_headers(event=hook)
            self.captured_token.append((h, body))
        return Planned(
            server, "genuine", self.xff(h, source), body, frozenset({202}),
            h["x-gitlab-event-uuid"], n=n if event == "merge_request" else None,
        )  # fmt: skip

    # -- everything hostile --

    def hostile(self) -> Planned:
        rng = self.rng
        kind = rng.choices(KINDS, weights=[w for _, w in KIND_WEIGHTS])[0]
        planned: Planned = getattr(self, f"k_{kind}")()
        planned.kind = kind
        if planned.transport == "http" and rng.random() < 0.1:
            planned.path = "/webhook/"
        return planned

    def _marked(self, h: dict[str, str]) -> tuple[dict[str, str], str]:
        marker = str(uuid.uuid4())
        return {**h, "x-gitlab-event-uuid": marker}, marker

    def k_huge_timestamp(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(signed_headers(body))
        h["webhook-timestamp"] = "9" * self.rng.randint(13, 2000)
        server = self.rng.choice(["strict", "open"])
        return Planned(server, "", self.xff(h), body, frozenset({400}), m,
                       reason="malformed_timestamp")  # fmt: skip

    def k_weird_timestamp(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(signed_headers(body))
        h["webhook-timestamp"] = self.rng.choice(
            ["-1", "+1767225600", "1_767_225_600", "1e9", "0x7f", "٣٣", "", "0", "1" * 12]
        )
        allowed = {400, 401}
        return Planned("strict", "", self.xff(h), body, frozenset(allowed), m)

    def k_stripped(self) -> Planned:
        server, h, body = self.rng.choice(self.captured_signed)
        stripped, m = self._marked(strip_signature(h))
        if server == "strict":
            return Planned("strict", "", self.xff(stripped), body, frozenset({401}), m,
                           reason="missing_signature")  # fmt: skip
        return Planned("open", "", self.xff(stripped), body, frozenset({409}), m,
                       reason="replayed")  # fmt: skip

    def k_replay_signed(self) -> Planned:
        server, h, body = self.rng.choice(self.captured_signed)
        if self.rng.random() < 0.2:  # exact replay: its marker is the original's
            return Planned(server, "", self.xff(h), body, frozenset({409}),
                           h["x-gitlab-event-uuid"], reason="replayed")  # fmt: skip
        again, m = self._marked(h)
        return Planned(server, "", self.xff(again), body, frozenset({409}), m, reason="replayed")

    def k_replay_token(self) -> Planned:
        h, body = self.rng.choice(self.captured_token)
        variant = self.rng.randrange(3)
        if variant == 0:  # exact
            return Planned("open", "", self.xff(h), body, frozenset({409}),
                           h["x-gitlab-event-uuid"], reason="replayed")  # fmt: skip
        again, m = self._marked(h)
        if variant == 2:
            again["idempotency-key"] = str(uuid.uuid4())  # every id fresh, same body
        return Planned("open", "", self.xff(again), body, frozenset({409}), m, reason="replayed")

    def k_bad_token(self) -> Planned:
        _, body = self.body()
        token = self.rng.choice(["", "x", SECRET[:-1], SECRET + "x", "é" * 30])
        h, m = self._marked(token_headers(None))
        if token:
            h["x-gitlab-token"] = token
        return Planned("open", "", self.xff(h), body, frozenset({401}), m)

    def k_multiline_xff(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(token_headers("wrong-token-value"))
        real = self.rng.choice(self.sources)
        items: list[tuple[str, Any]] = list(h.items())
        items += [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", f"{real}, 127.0.0.1")]
        server = self.rng.choice(["strict", "open"])
        return Planned(server, "", items, body, frozenset({401}), m, source=real)

    def k_oversize(self) -> Planned:
        h, m = self._marked(token_headers())
        body = b"{" * self.rng.randint(4097, 20_000)
        return Planned("open", "", self.xff(h), body, frozenset({413}), m, reason="body_too_large")

    def k_malformed_json(self) -> Planned:
        body = self.rng.choice([b'{"object_kind": ', b"[" * 500, b"\xff\xfe", b"nan", b"{}}"])
        body += str(self.rng.random()).encode()  # unique, so never a replay
        if self.rng.random() < 0.5:
            h, m = self._marked(token_headers())
            server = "open"
        else:
            h, m = self._marked(signed_headers(body))
            server = "strict"
        return Planned(server, "", self.xff(h), body, frozenset({400}), m,
                       reason="malformed_payload")  # fmt: skip

    def k_wrong_types(self) -> Planned:
        self.n += 1
        value: Any = self.rng.choice([5, None, [], {}, "x" * 300, True, 1.5, -(2**63)])
        payload: dict[str, Any] = self.rng.choice(
            [
                {"object_kind": value, "n": self.n},
                {"object_kind": "merge_request", "project": value, "n": self.n},
                {"object_kind": "merge_request", "project": {"id": value}, "n": self.n},
                {"object_kind": "merge_request", "object_attributes": value, "n": self.n},
            ]
        )
        body = orjson.dumps(payload)
        h, m = self._marked(token_headers())
        queued = isinstance(payload["object_kind"], str)
        return Planned("open", "", self.xff(h), body, frozenset({202} if queued else {400}), m,
                       n=self.n if queued else None)  # fmt: skip

    def k_huge_ids(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(token_headers())
        header = self.rng.choice(["webhook-id", "idempotency-key"])
        h[header] = self.rng.choice(["9" * self.rng.randint(129, 3000), "a b", "x" * 129])
        return Planned("open", "", self.xff(h), body, frozenset({400}), m,
                       reason="malformed_header")  # fmt: skip

    def k_duplicate(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(token_headers())
        items = self.xff(h)
        name = self.rng.choice(["x-gitlab-token", "content-type", "webhook-signature"])
        items += [(name, "v1,AAAA"), (name, "v1,BBBB")]
        return Planned("open", "", items, body, frozenset({400}), m, reason="malformed_header")

    def k_garbage_headers(self) -> Planned:
        rng = self.rng
        _, body = self.body()
        h, m = self._marked(token_headers(rng.choice([SECRET, "nope"])))
        for name in rng.sample(
            ["x-gitlab-event", "content-type", "webhook-signature", "webhook-timestamp",
             "content-type", "x-gitlab-token"], k=2
        ):  # fmt: skip
            h[name] = "".join(chr(rng.randint(0x21, 0xFF)) for _ in range(rng.randint(1, 600)))
        items: list[tuple[str, str | bytes]] = [(k, v.encode("latin-1")) for k, v in h.items()]
        items.append(("x-forwarded-for", self.rng.choice(self.sources)))
        return Planned("open", "", items, body, frozenset(range(400, 429)), m)

    def k_missing_id(self) -> Planned:
        _, body = self.body()
        ids = ("x-gitlab-event-uuid", "idempotency-key")
        h = {k: v for k, v in token_headers().items() if k not in ids}
        return Planned("open", "", self.xff(h), body, frozenset({400}), None,
                       reason="missing_delivery_id")  # fmt: skip

    def k_broken_uuid(self) -> Planned:
        _, body = self.body()
        h = {**token_headers("wrong"), "x-gitlab-event-uuid": "not-a-uuid",
             "idempotency-key": "also-not"}  # fmt: skip
        return Planned("open", "", self.xff(h), body, frozenset({401}), None)

    def k_bad_payload_headers(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(token_headers())
        choice = self.rng.randrange(3)
        if choice == 0:
            h["content-type"] = "text/plain"
            return Planned("open", "", self.xff(h), body, frozenset({415}), m)
        if choice == 1:
            h["x-gitlab-event"] = "Bogus Hook"
        else:
            del h["x-gitlab-event"]
        return Planned("open", "", self.xff(h), body, frozenset({400}), m)

    def k_stale(self) -> Planned:
        _, body = self.body()
        at = int(time.time()) + self.rng.choice([-1, 1]) * self.rng.randint(301, 10**9)
        h, m = self._marked(signed_headers(body, at=at))
        return Planned("strict", "", self.xff(h), body, frozenset({401}), m,
                       reason="stale_timestamp")  # fmt: skip

    def k_mutated(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(signed_headers(body))
        data = bytearray(body)
        data[self.rng.randrange(len(data))] ^= self.rng.randint(1, 255)
        return Planned("strict", "", self.xff(h), bytes(data), frozenset({401, 400}), m)

    def k_flood(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(token_headers("flood-token"))
        return Planned("open", "", self.xff(h, FLOODER), body, frozenset({401, 429}), m)

    def k_disconnect(self) -> Planned:
        _, body = self.body()
        h, m = self._marked(token_headers())
        server = self.rng.choice(["strict", "open"])
        return Planned(server, "", self.xff(h), body[: self.rng.randint(0, len(body) - 1)],
                       frozenset({499}), m, transport="fin",
                       reason="client_disconnected")  # fmt: skip


KIND_WEIGHTS = [
    ("huge_timestamp", 8), ("weird_timestamp", 4), ("stripped", 8), ("replay_signed", 8),
    ("replay_token", 8), ("bad_token", 6), ("multiline_xff", 6), ("oversize", 4),
    ("malformed_json", 6), ("wrong_types", 5), ("huge_ids", 4), ("duplicate", 3),
    ("garbage_headers", 5), ("missing_id", 2), ("broken_uuid", 2), ("bad_payload_headers", 4),
    ("stale", 3), ("mutated", 4), ("flood", 3), ("disconnect", 3),
]  # fmt: skip
KINDS = [k for k, _ in KIND_WEIGHTS]


def send_http(planned: Planned, client: httpx.Client) -> None:
    response = client.post(planned.path, content=planned.body, headers=as_bytes(planned.headers))
    planned.status = response.status_code
    planned.answered = response.json()
    planned.error = planned.answered.get("error")


def send_fin(planned: Planned, url: str) -> None:
    """Headers and part of the body, then close: a disconnect mid-body (FIN, never answered)."""
    declared = len(planned.body) + 50
    with connect(url) as sock:
        sock.sendall(_raw_head(planned, declared) + planned.body)
    planned.status = None


def send_slowly(planned: Planned, url: str, *, short: bool) -> None:
    """1 byte every 2 s (or 10 bytes under a longer Content-Length, then silence)."""
    with connect(url, timeout_s=15) as sock:
        sock.sendall(_raw_head(planned, 100))
        if short:
            sock.sendall(b"0123456789")
        else:
            sock.settimeout(2.0)
            for _ in range(8):  # bounded: the deadline answers long before
                try:
                    sock.sendall(b" ")
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except (TimeoutError, BlockingIOError):
                    continue
                except OSError:
                    break
            sock.settimeout(15)
        planned.status, answer = read_answer(sock)
    planned.error = orjson.loads(answer.split(b"\r\n\r\n", 1)[1]).get("error")


def _raw_head(planned: Planned, declared: int) -> bytes:
    lines = [f"POST {planned.path} HTTP/1.1".encode(), b"host: 127.0.0.1"]
    for k, v in planned.headers:
        lines.append(k.encode() + b": " + (v.encode() if isinstance(v, str) else v))
    lines.append(f"content-length: {declared}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.slow
def test_twenty_thousand_hostile_requests_never_5xx_and_leave_one_entry_each(
    tmp_path: Path,
) -> None:
    """0 responses >= 500; one entry per request (by marker); entries < 1 KiB; no double work."""
    rng = random.Random(20261210)
    common = {
        "trusted_proxies": "127.0.0.1/32",
        "webhook_body_timeout_s": 2.0,
        "webhook_rate_limit_burst": 40,
        "webhook_rate_limit_per_s": 1.0,
    }
    plan = Plan(rng)
    phase1 = [plan.genuine(rng.choice(["strict", "open"])) for _ in range(1000)]
    phase2: list[Planned] = []
    while len(phase1) + len(phase2) < TOTAL - SLOW - SHORT:
        phase2.append(plan.genuine("open") if rng.random() < 0.03 else plan.hostile())
    slow = []
    for i in range(SLOW + SHORT):
        _, body = plan.body()
        h, m = plan._marked(token_headers())
        kind = "short" if i >= SLOW else "slow"
        server = rng.choice(["strict", "open"])
        planned = Planned(server, kind, plan.xff(h), body, frozenset({408}), m, transport="raw")
        planned.reason = "body_timeout"
        slow.append(planned)
    everything = phase1 + phase2 + slow
    assert len(everything) >= 20_000

    local = threading.local()
    opened: list[httpx.Client] = []
    # Each agent in its own process: the client here, the servers on the other core.
    agents = {
        "strict": ChildAgent(tmp_path / "strict", **common),
        "open": ChildAgent(tmp_path / "open", webhook_allow_unsigned=True, **common),
    }
    started = time.monotonic()
    try:
        urls = {name: agent.url for name, agent in agents.items()}

        def run(planned: Planned) -> None:
            url = urls[planned.server]
            if planned.transport == "fin":
                send_fin(planned, url)
                return
            clients: dict[str, httpx.Client] = getattr(local, "clients", None) or {}
            if not clients:
                local.clients = clients
            if url not in clients:
                clients[url] = httpx.Client(base_url=url, timeout=30)
                opened.append(clients[url])
            send_http(planned, clients[url])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, phase1))
        trickles = [
            threading.Thread(
                target=send_slowly, args=(p, urls[p.server]), kwargs={"short": p.kind == "short"}
            )
            for p in slow
        ]
        for t in trickles:
            t.start()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, phase2))
        for t in trickles:
            t.join(30)
    finally:
        for client in opened:
            client.close()
        for agent in agents.values():
            agent.stop()
    elapsed = time.monotonic() - started

    # -- responses --
    statuses = Counter(p.status for p in everything)
    assert not [s for s in statuses if s is not None and s >= 500], statuses
    wrong = [(p.kind, p.status, p.error) for p in everything if p.transport != "fin"
             and p.status not in p.allowed]  # fmt: skip
    assert not wrong, Counter(wrong).most_common(10)
    assert 0 < sum(p.status == 429 for p in everything) < sum(p.kind == "flood" for p in everything)

    # -- exactly one entry per request, found by marker --
    lines = {name: agent.lines() for name, agent in agents.items()}
    entries = {name: [orjson.loads(x) for x in found] for name, found in lines.items()}
    assert sum(map(len, entries.values())) == len(everything)
    for name in agents:
        assert all(len(x) < ENTRY_BOUND for x in lines[name]), max(map(len, lines[name]))
        expected = Counter(p.marker or "unknown" for p in everything if p.server == name)
        found = Counter(e["actor"]["id"] for e in entries[name])
        assert found == expected, (found - expected, expected - found)
        by_marker = {e["actor"]["id"]: e for e in entries[name]}
        for p in everything:
            if p.server != name or p.marker is None or expected[p.marker] != 1:
                continue
            entry = by_marker[p.marker]
            reason = entry["details"].get("rejection_reason")
            if p.transport == "fin":
                assert (reason, entry["http_status"]) == ("client_disconnected", 499)
                continue
            assert entry["http_status"] == p.status, (p.kind, entry)
            assert reason == p.error, (p.kind, entry)
            if p.reason is not None:
                assert reason == p.reason, (p.kind, entry)
            if p.source is not None:
                assert entry["details"]["source_ip"] == p.source

    # -- every accepted delivery processed exactly once, nothing else --
    queued = sorted(p.n for p in everything if p.status == 202 and p.n is not None)
    dispatched = [n for agent in agents.values() for n in agent.dispatched()]
    assert sorted(dispatched) == queued
    assert len(set(dispatched)) == len(dispatched)
    kinds = Counter(p.kind for p in everything)
    print(f"\n{len(everything)} requests in {elapsed:.1f} s; kinds {dict(kinds)}; {dict(statuses)}")
