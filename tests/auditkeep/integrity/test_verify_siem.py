"""A SIEM's copy verifies: the real HTTP destination delivers, the intake keeps what came.

A loopback intake (stdlib ``http.server``) speaks Splunk HEC and Grafana Loki; the
logger, with a signing key, delivers to it through the real ``HttpSink`` and, at the
same time, to the real file destination. The "export" is what a SIEM gives back: each
HEC envelope's ``event`` object (re-encoded), each Loki value's line (verbatim). Alone,
and together with the host's file, it verifies; a changed entry in the export does not.
"""

from __future__ import annotations

import gzip
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep.integrity.keys import generate, load_signing_key
from auditkeep.integrity.options import IntegrityOptions
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.sinks.http import HttpSink

sys.path.insert(0, str(Path(__file__).parent))
from verifykit import cli, write_lines


class _Intake(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.bodies.append(body)  # type: ignore[attr-defined]
        reply = b'{"text":"Success","code":0}' if "services" in self.path else b""
        self.send_response(200 if reply else 204)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def intake() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Intake)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def export(kind: str, bodies: list[bytes]) -> list[bytes]:
    """What the SIEM gives back, one entry per line."""
    lines: list[bytes] = []
    for body in bodies:
        if kind == "splunk_hec":
            for envelope in body.split(b"\n"):
                if envelope:
                    lines.append(orjson.dumps(orjson.loads(envelope)["event"]))
        else:
            for stream in orjson.loads(body)["streams"]:
                lines.extend(value[1].encode() for value in stream["values"])
    return lines


@pytest.mark.parametrize("kind", ["splunk_hec", "loki"])
def test_a_siem_copy_verifies_alone_and_with_the_host_file(
    tmp_path: Path, intake: ThreadingHTTPServer, kind: str
) -> None:
    generate(tmp_path / "k.pem")
    host, port = str(intake.server_address[0]), int(intake.server_address[1])
    path = "/services/collector/event" if kind == "splunk_hec" else "/loki/api/v1/push"
    live = tmp_path / "audit.jsonl"
    logger = AuditLogger(
        [
            FileSink(str(live), max_bytes=0),
            HttpSink(f"http://{host}:{port}{path}", format=kind),
        ],
        service="verify-siem",
        spool_dir=tmp_path / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
        integrity=IntegrityOptions(
            checkpoint_every=40, signing_key=load_signing_key(tmp_path / "k.pem")
        ),
    )
    for i in range(200):
        logger.emit("svc.work.done", details={"i": i, "note": "é — ünïcode survives"})
    assert logger.close(20)
    copy = export(kind, intake.bodies)  # type: ignore[attr-defined]
    assert len(copy) == len(live.read_bytes().splitlines())
    siem = write_lines(tmp_path / "siem-export.jsonl", copy)
    public = str(tmp_path / "k.pem.pub")
    alone = cli("--json", "--public-key", public, str(siem))
    assert alone.returncode == 0, alone.stdout
    together = cli("--json", "--public-key", public, str(siem), str(live))
    report = orjson.loads(together.stdout)
    assert together.returncode == 0, together.stdout
    assert report["chains"][0]["duplicates"] == len(copy)
    # The host's file edited after delivery: the copy shows which entry.
    lines = live.read_bytes().splitlines()
    lines[50] = lines[50].replace(b'"i":', b'"I":', 1)
    write_lines(live, lines)
    checked = cli("--json", "--public-key", public, str(siem), str(live))
    problems = [p for c in orjson.loads(checked.stdout)["chains"] for p in c["problems"]]
    assert checked.returncode == 1
    assert [(p["kind"], p["file"], p["line"]) for p in problems] == [("inserted", str(live), 51)]
