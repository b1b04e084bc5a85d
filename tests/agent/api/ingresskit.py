"""The real agent app, served with the production uvicorn options on loopback, auditing to a file.

Shared by the ingress tests: ``IngressAgent`` builds the app from settings
(``Settings.from_env``, with a plugin that counts what was dispatched) and
``served`` runs it with ``uvicorn_options(settings)`` — the header deadline,
header size, connection and keep-alive limits of ``serve`` — on sockets the
test binds itself (so a metrics port can be known before the app is built).
"""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.events import Event
from gitlab_copilot_agent.ingress.server_options import listen, uvicorn_options
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.plugins import Parts
from gitlab_copilot_agent.settings import Settings
from gitlab_copilot_agent.webhook_auth import expected_signature, signing_key

SECRET = "ingress-hook-secret-0123456789"
SIGNING = "whsec_" + base64.b64encode(b"ingress-test-signing-key-32bytes").decode()
KEY = signing_key(SIGNING)


def listening_socket() -> socket.socket:
    """A loopback socket bound to a free port, ready to hand to uvicorn."""
    return listen("127.0.0.1", 0)


class Recorder:
    """Stands in for the workflows: a plugin that counts what the ingress dispatched."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, parts: Parts) -> None:
        for kind in ("Merge Request Hook", "Note Hook"):
            parts.events.on(kind, self.record)

    async def record(self, event: Event) -> None:
        with self._lock:
            self.calls.append((event.kind, event.payload))


def environment(**overrides: Any) -> dict[str, str]:
    """The agent's variables, both secrets set; ``name=value`` sets ``NAME``, ``None`` unsets."""
    values = {
        "GITLAB_URL": "http://127.0.0.1:9",
        "GITLAB_TOKEN": "glpat-unused-token-000000",
        "GITLAB_WEBHOOK_SECRET": SECRET,
        "GITLAB_WEBHOOK_SIGNING_TOKEN": SIGNING,
        "WEBHOOK_MAX_BODY_BYTES": "4096",
    }
    for name, value in overrides.items():
        if value is None:
            values.pop(name.upper(), None)
        elif isinstance(value, bool):
            values[name.upper()] = "true" if value else "false"
        else:
            values[name.upper()] = str(value)
    return values


class IngressAgent:
    """The app with both secrets configured, auditing to ``tmp_path/audit.jsonl``."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.trail = tmp_path / "audit.jsonl"
        self.audit = AuditLogger(
            FileSink(self.trail, max_bytes=0),
            service="gitlab-copilot-agent",
            spool_dir=tmp_path / "spool",
            metrics=AuditMetrics(CollectorRegistry()),
            max_buffer_events=100_000,
        )
        self.settings = Settings.from_env(environment(**overrides))
        self.recorder = Recorder()
        self.app = create_app(
            self.settings,
            audit=self.audit,
            registry=CollectorRegistry(),
            plugins=[self.recorder],
        )

    def lines(self) -> list[bytes]:
        assert self.audit.flush(30)
        return read_trail(self.trail)

    def entries(self) -> list[dict[str, Any]]:
        return validate_entries(self.lines())


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


@contextlib.contextmanager
def served(agent: IngressAgent, *sockets: socket.socket) -> Iterator[str]:
    """Serve the agent's app on ``sockets`` (a fresh one by default); yield the first's URL."""
    socks = list(sockets) or [listening_socket()]
    config = uvicorn.Config(
        agent.app,
        host="127.0.0.1",
        port=socks[0].getsockname()[1],
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
        **uvicorn_options(agent.settings),
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": socks}, daemon=True)
    thread.start()
    assert server.ready.wait(10), "uvicorn did not start in 10 s"
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{socks[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        for sock in socks:
            sock.close()


def signed_headers(
    body: bytes,
    *,
    webhook_id: str | None = None,
    at: int | None = None,
    event: str = "Merge Request Hook",
) -> dict[str, str]:
    webhook_id = webhook_id or str(uuid.uuid4())
    timestamp = str(int(time.time()) if at is None else at)
    return {
        "content-type": "application/json",
        "x-gitlab-event": event,
        "x-gitlab-event-uuid": str(uuid.uuid4()),
        "idempotency-key": webhook_id,
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + expected_signature(KEY, webhook_id, timestamp, body),
    }


def token_headers(
    token: str | None = SECRET, *, event: str = "Merge Request Hook", event_uuid: str | None = None
) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "x-gitlab-event": event,
        "x-gitlab-event-uuid": event_uuid or str(uuid.uuid4()),
        "idempotency-key": str(uuid.uuid4()),
    }
    if token is not None:
        headers["x-gitlab-token"] = token
    return headers


def strip_signature(headers: dict[str, str]) -> dict[str, str]:
    """A captured signed delivery with its signature headers removed and the token added."""
    kept = {k: v for k, v in headers.items() if not k.startswith("webhook-")}
    return {**kept, "x-gitlab-token": SECRET}


def mr_event(n: int) -> bytes:
    return orjson.dumps(
        {
            "object_kind": "merge_request",
            "project": {"id": 42, "path_with_namespace": "group/app"},
            "object_attributes": {"iid": 7, "action": "open"},
            "n": n,
        }
    )


def as_bytes(
    headers: dict[str, str | bytes] | list[tuple[str, str | bytes]],
) -> list[tuple[bytes, bytes]]:
    """Headers as (bytes, bytes) pairs: how to send values httpx would refuse to encode."""
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k.encode(), v.encode() if isinstance(v, str) else v) for k, v in items]


def connect(url: str, timeout_s: float = 15.0) -> socket.socket:
    """A raw TCP connection to the served agent."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def request_head(
    headers: dict[str, str], content_length: int | None, path: str = "/webhook"
) -> bytes:
    """A POST's request line and headers, as bytes."""
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if content_length is not None:
        lines.append(f"content-length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answer(sock: socket.socket) -> tuple[int | None, bytes]:
    """Everything the server sends until it closes; (status, bytes), status None if no answer."""
    answer = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, answer


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response on a kept-alive connection: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), body


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the abrupt way a client goes away."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class ChildAgent:
    """An ``IngressAgent`` served by a child process, so load tests use a second core.

    The child prints its URL, serves until its stdin closes, then stops the
    server (the lifespan drains the dispatched work), writes what the
    recorder saw to ``dispatched.json`` and closes its audit logger. Read the
    trail and ``dispatched`` only after ``stop()``.
    """

    def __init__(self, directory: Path, **overrides: Any) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.trail = directory / "audit.jsonl"
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(directory), orjson.dumps(overrides).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        assert self.url.startswith("http://"), "the child agent did not start"

    def stop(self) -> None:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.close()
        code = self._proc.wait(60)
        self._proc.stdout.close()
        assert code == 0, f"the child agent exited with {code}"

    def lines(self) -> list[bytes]:
        return read_trail(self.trail)

    def dispatched(self) -> list[Any]:
        found: list[Any] = orjson.loads((self.directory / "dispatched.json").read_bytes())
        return found


def _child_main(directory: str, overrides: str) -> None:
    agent = IngressAgent(Path(directory), **orjson.loads(overrides))
    with served(agent) as url:
        print(url, flush=True)
        sys.stdin.read()
    dispatched = [payload.get("n") for _event, payload in agent.recorder.calls]
    (Path(directory) / "dispatched.json").write_bytes(orjson.dumps(dispatched))
    agent.audit.close()


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
