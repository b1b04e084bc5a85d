"""POST /webhook over a real socket: authentication, rejections, replay, one entry per request."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from agent_standins.servers import run_in_thread
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.events import Event
from gitlab_copilot_agent.ingress.forwarded import client_ip
from gitlab_copilot_agent.ingress.replay import ReplayGuard
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.plugins import Parts
from gitlab_copilot_agent.settings import Settings
from gitlab_copilot_agent.webhook_auth import (
    Rejection,
    expected_signature,
    signing_key,
    verify_signature,
)

SECRET = "hook-secret-0123456789"
SIGNING = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
KEY = signing_key(SIGNING)
MR_EVENT = {
    "object_kind": "merge_request",
    "project": {"id": 42, "path_with_namespace": "group/app"},
    "object_attributes": {"iid": 7, "action": "open"},
}


class Recorder:
    """Stands in for the workflows: a plugin that records what the ingress dispatched."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, parts: Parts) -> None:
        for kind in ("Merge Request Hook", "Note Hook"):
            parts.events.on(kind, self.record)

    async def record(self, event: Event) -> None:
        self.calls.append((event.kind, event.payload))


class Agent:
    """The real app on a real socket, auditing to a real file."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.trail = tmp_path / "audit.jsonl"
        self.audit = AuditLogger(
            FileSink(self.trail, max_bytes=0),
            service="gitlab-copilot-agent",
            spool_dir=tmp_path / "spool",
            metrics=AuditMetrics(CollectorRegistry()),
        )
        settings = Settings.from_env(
            {
                "GITLAB_URL": "http://127.0.0.1:9",
                "GITLAB_TOKEN": "glpat-unused-token-000000",
                "GITLAB_WEBHOOK_SECRET": SECRET,
                "GITLAB_WEBHOOK_SIGNING_TOKEN": SIGNING,
                "WEBHOOK_MAX_BODY_BYTES": "4096",
                # These tests cover both paths on one agent; the default refusal of
                # unsigned deliveries is tested in test_ingress.py.
                "WEBHOOK_ALLOW_UNSIGNED": "true",
                **{name.upper(): str(value) for name, value in overrides.items()},
            }
        )
        self.recorder = Recorder()
        self.app = create_app(settings, audit=self.audit, plugins=[self.recorder])

    def entries(self) -> list[dict[str, Any]]:
        assert self.audit.flush(10)
        return validate_entries(read_trail(self.trail))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Agent, httpx.Client]]:
    agent = Agent(tmp_path)
    with run_in_thread(agent.app) as server, httpx.Client(base_url=server.url) as client:
        yield agent, client
    agent.audit.close()


def signed_headers(
    body: bytes, *, webhook_id: str | None = None, at: int | None = None
) -> dict[str, str]:
    webhook_id = webhook_id or str(uuid.uuid4())
    timestamp = str(int(time.time()) if at is None else at)
    return {
        "content-type": "application/json",
        "x-gitlab-event": "Merge Request Hook",
        "x-gitlab-event-uuid": str(uuid.uuid4()),
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + expected_signature(KEY, webhook_id, timestamp, body),
    }


def token_headers(token: str | None = SECRET, event: str = "Merge Request Hook") -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "x-gitlab-event": event,
        "x-gitlab-event-uuid": str(uuid.uuid4()),
    }
    if token is not None:
        headers["x-gitlab-token"] = token
    return headers


class TestSignatureScheme:
    def test_reference_vector(self) -> None:
        """The Standard Webhooks test vector from the reference verifies."""
        headers = {
            "webhook-id": "9cebe914-4827-408f-b014-cfa23a47a35f",
            "webhook-timestamp": "1767225600",
            "webhook-signature": "v1,Gy0WWjs1hcxiLSfXZM3kln5qX0rxLaXeWhtPuCTFSF0=",
        }
        body = b'{"object_kind":"note"}'
        assert verify_signature(headers, body, KEY, tolerance_s=300, now=1767225600) is None
        assert (
            verify_signature(headers, body + b" ", KEY, tolerance_s=300, now=1767225600)
            == Rejection.INVALID_SIGNATURE
        )

    def test_any_of_several_signatures_is_accepted_during_rotation(self) -> None:
        """A header with an old and a new signature verifies with either key."""
        body, ts, wid = b"{}", "1767225600", "id-1"
        old_key = base64.b64decode(base64.b64encode(b"o" * 32))
        header = (
            f"v1,{expected_signature(old_key, wid, ts, body)} "
            f"v1,{expected_signature(KEY, wid, ts, body)}"
        )
        headers = {"webhook-id": wid, "webhook-timestamp": ts, "webhook-signature": header}
        assert verify_signature(headers, body, KEY, tolerance_s=300, now=1767225600) is None
        assert verify_signature(headers, body, old_key, tolerance_s=300, now=1767225600) is None

    @pytest.mark.parametrize("skew", [-301, 301])
    def test_timestamps_outside_the_tolerance_are_stale(self, skew: int) -> None:
        """Too old and too new both fail, before any signature work."""
        body, wid, ts = b"{}", "id-2", "1767225600"
        headers = {
            "webhook-id": wid,
            "webhook-timestamp": ts,
            "webhook-signature": "v1," + expected_signature(KEY, wid, ts, body),
        }
        now = 1767225600 + skew
        assert verify_signature(headers, body, KEY, tolerance_s=300, now=now) == (
            Rejection.STALE_TIMESTAMP
        )


class TestHelpers:
    def test_replay_guard_refuses_a_second_sighting_within_the_window(self) -> None:
        """An id is refused again inside the window and accepted after it."""
        guard = ReplayGuard(window_s=10)
        assert [
            guard.first_sighting("a", now=0),
            guard.first_sighting("a", now=5),
            guard.first_sighting("a", now=16),
        ] == [True, False, True]

    def test_forwarded_for_is_believed_only_from_trusted_proxies(self) -> None:
        """X-Forwarded-For counts only behind a trusted proxy, read right to left."""
        import ipaddress

        trusted = [ipaddress.ip_network("10.0.0.0/8")]
        assert client_ip("203.0.113.5", "1.2.3.4", trusted) == "203.0.113.5"
        assert client_ip("10.0.0.2", "198.51.100.7", trusted) == "198.51.100.7"
        assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.9", trusted) == ("198.51.100.7")
        assert client_ip("10.0.0.2", "not-an-ip", trusted) == "10.0.0.2"


class TestIngress:
    def test_token_authenticated_delivery_is_queued_and_audited(
        self, agent: tuple[Agent, httpx.Client]
    ) -> None:
        """A valid X-Gitlab-Token delivery answers 202, is dispatched, and audited as validated."""
        app, client = agent
        response = client.post("/webhook", content=orjson.dumps(MR_EVENT), headers=token_headers())
        assert response.status_code == 202
        assert response.json()["status"] == "queued"
        [entry] = app.entries()
        assert (entry["action"], entry["outcome"], entry["target"], entry["actor"]["type"]) == (
            "webhook.auth.validated",
            "success",
            {"resource_type": "webhook", "project_id": 42},
            "webhook_event",
        )
        assert entry["details"]["event_type"] == "Merge Request Hook"
        assert entry["details"]["source_ip"] == "127.0.0.1"
        assert entry["correlation_id"] == response.json()["correlation_id"]
        deadline = time.monotonic() + 5  # dispatched in the background, after the answer
        while not app.recorder.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.recorder.calls == [("Merge Request Hook", MR_EVENT)]

    def test_signed_delivery_is_accepted_and_its_replay_refused(
        self, agent: tuple[Agent, httpx.Client]
    ) -> None:
        """A signed delivery passes once; the same webhook-id again is a replay (409)."""
        app, client = agent
        body = orjson.dumps(MR_EVENT)
        headers = signed_headers(body)
        first = client.post("/webhook", content=body, headers=headers)
        again = client.post("/webhook", content=body, headers=headers)
        assert (first.status_code, again.status_code) == (202, 409)
        entries = app.entries()
        assert [(e["action"], e["details"].get("rejection_reason")) for e in entries] == [
            ("webhook.auth.validated", None),
            ("webhook.auth.rejected", "replayed"),
        ]
        assert entries[0]["details"]["auth_method"] == "signature"
        assert len(app.recorder.calls) == 1

    @pytest.mark.parametrize(
        ("reason", "status", "make"),
        [
            ("missing_token", 401, lambda b: token_headers(token=None)),
            ("invalid_token", 401, lambda b: token_headers(token="wrong-secret-value")),
            (
                "invalid_signature",
                401,
                lambda b: {**signed_headers(b), "webhook-signature": "v1,AAAA"},
            ),
            ("stale_timestamp", 401, lambda b: signed_headers(b, at=int(time.time()) - 3600)),
            ("unknown_event_type", 400, lambda b: token_headers(event="Bogus Hook")),
            (
                "missing_event_header",
                400,
                lambda b: {"x-gitlab-token": SECRET, "x-gitlab-event-uuid": str(uuid.uuid4())},
            ),
            (
                "unsupported_media_type",
                415,
                lambda b: {**token_headers(), "content-type": "text/plain"},
            ),
        ],
    )
    def test_each_rejection_is_answered_and_audited_with_its_reason(
        self, agent: tuple[Agent, httpx.Client], reason: str, status: int, make: Any
    ) -> None:
        """Each bad delivery gets its 4xx and an entry with reason, source IP and project id."""
        app, client = agent
        body = orjson.dumps(MR_EVENT)
        response = client.post("/webhook", content=body, headers=make(body))
        assert (response.status_code, response.json()["error"]) == (status, reason)
        [entry] = app.entries()
        assert entry["action"] == "webhook.auth.rejected"
        assert entry["outcome"] == "failure"
        assert entry["details"]["rejection_reason"] == reason
        assert entry["details"]["source_ip"] == "127.0.0.1"
        assert entry["target"]["project_id"] == 42
        assert entry["http_status"] == status
        assert app.recorder.calls == []

    def test_malformed_and_oversized_bodies(self, agent: tuple[Agent, httpx.Client]) -> None:
        """Broken JSON is a 400, a body over the limit a 413; both audited, neither processed."""
        app, client = agent
        broken = client.post("/webhook", content=b'{"object_kind": ', headers=token_headers())
        huge = client.post("/webhook", content=b"x" * 10_000, headers=token_headers())
        assert (broken.status_code, huge.status_code) == (400, 413)
        reasons = [e["details"]["rejection_reason"] for e in app.entries()]
        assert reasons == ["malformed_payload", "body_too_large"]
        assert app.recorder.calls == []

    def test_known_but_unhandled_events_are_accepted_and_ignored(
        self, agent: tuple[Agent, httpx.Client]
    ) -> None:
        """A Push Hook is authenticated, audited as ignored, and not dispatched."""
        app, client = agent
        body = orjson.dumps({"object_kind": "push", "project_id": 42})
        response = client.post(
            "/webhook", content=body, headers=token_headers("" + SECRET, "Push Hook")
        )
        assert (response.status_code, response.json()["status"]) == (202, "ignored")
        [entry] = app.entries()
        assert entry["details"]["decision"] == "ignored"
        assert app.recorder.calls == []

    def test_trusted_proxy_forwarded_address_is_audited(self, tmp_path: Path) -> None:
        """Behind a configured proxy (loopback here) the address comes from X-Forwarded-For."""
        app = Agent(tmp_path, trusted_proxies="127.0.0.1/32")
        with run_in_thread(app.app) as server, httpx.Client(base_url=server.url) as client:
            client.post(
                "/webhook",
                content=b"{}",
                headers={
                    **token_headers(token="nope-nope-nope"),
                    "x-forwarded-for": "198.51.100.7",
                },
            )
        [entry] = app.entries()
        app.audit.close()
        assert entry["details"]["source_ip"] == "198.51.100.7"

    def test_forwarded_for_from_an_untrusted_peer_is_ignored(
        self, agent: tuple[Agent, httpx.Client]
    ) -> None:
        """Without a trusted proxy, a client cannot choose the audited address."""
        app, client = agent
        client.post(
            "/webhook",
            content=b"{}",
            headers={**token_headers(token="nope-nope-nope"), "x-forwarded-for": "198.51.100.7"},
        )
        [entry] = app.entries()
        assert entry["details"]["source_ip"] == "127.0.0.1"
