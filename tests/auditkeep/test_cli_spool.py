"""``auditkeep spool status`` and ``auditkeep spool redeliver`` as an operator runs them."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.memory import InMemorySink
from auditkeep.typing import SinkResult


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # Only the test's AUDIT_LOG_* (and state folder) count, never the caller's.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_LOG_")}
    base.pop("XDG_STATE_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "auditkeep.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


class TestSpoolCommands:
    def test_redeliver_sends_dead_letters_to_the_configured_file(self, tmp_path: Path) -> None:
        """Dead letters of the file destination are appended to the file; none remain."""
        spool, trail = tmp_path / "spool", tmp_path / "audit.jsonl"
        dead = spool / "dead-letters" / "file.jsonl"
        dead.parent.mkdir(parents=True)
        lines = [orjson.dumps({"event_id": f"id-{i}"}) for i in range(5)]
        dead.write_bytes(b"".join(line + b"\n" for line in lines))
        env = {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(trail),
            "AUDIT_LOG_SPOOL_DIR": str(spool),
        }
        result = run_cli("spool", "redeliver", env=env)
        assert (result.returncode, result.stdout) == (
            0,
            "file: redelivered 5, still dead-lettered 0\n",
        )
        assert trail.read_bytes().splitlines() == lines
        assert not dead.exists()

    def test_status_reports_pending_entries_of_a_dead_process(self, tmp_path: Path) -> None:
        """Entries spooled by a logger that could not deliver show up as pending, slot free."""
        spool = tmp_path / "spool"
        spool_with_backlog(spool, pending=7)
        result = run_cli(
            "spool", "status", "--format", "json", env={"AUDIT_LOG_SPOOL_DIR": str(spool)}
        )
        assert result.returncode == 0, result.stderr
        report = orjson.loads(result.stdout)
        assert [
            (s["slot"], s["locked"], s["destinations"]["file"]["pending"]) for s in report["slots"]
        ] == [("slot-0", False, 7)]


# -- the command line as a new user meets it (issue 9) ---------------------------------------


class Down(InMemorySink):
    """A file destination that never answers yes: everything stays in the spool."""

    name = "file"

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        return SinkResult.retry("down for the test")


def spool_with_backlog(spool: Path, pending: int = 7, dead: int = 2) -> Path:
    """A spool left by a process that could deliver nothing, plus dead letters for http."""
    logger = AuditLogger(
        Down(),
        service="svc",
        spool_dir=spool,
        metrics=AuditMetrics(CollectorRegistry()),
        fallback=InMemorySink(),
    )
    for _ in range(pending):
        logger.emit("gitlab.api.get_mr_details")
    assert logger.close(0.2) is (pending == 0)
    letters = spool / "dead-letters" / "http.jsonl"
    letters.parent.mkdir(exist_ok=True)
    letters.write_bytes(b"".join(orjson.dumps({"event_id": f"d{i}"}) + b"\n" for i in range(dead)))
    return letters


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


class TestSpoolStatus:
    def test_a_readable_table_that_names_the_folder(self, tmp_path: Path) -> None:
        """The table names the folder it read, a row per slot and destination, the dead letters."""
        spool = tmp_path / "spool"
        letters = spool_with_backlog(spool)
        result = run_cli("spool", "status", env={"AUDIT_LOG_SPOOL_DIR": str(spool)})
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"spool folder: {spool}"
        assert lines[1].split() == [
            "SLOT", "OWNER", "DESTINATION", "PENDING", "OLDEST", "PENDING", "BYTES", "SEGMENTS",
        ]  # fmt: skip
        row = lines[2].split()
        assert row[:4] == ["slot-0", "free", "file", "7"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[4])
        assert int(row[5]) > 0
        assert lines[3:5] == [
            "7 entries pending",
            "slot-0 is free: replayed by the next start, or by a live process within 30 s",
        ]
        assert lines[5:] == [
            "dead letters (refused for good; `auditkeep spool redeliver` re-sends them):",
            f"  http: 2 entries in {letters}",
        ]
        assert "{" not in result.stdout  # no Python dicts

    def test_json_names_the_folder_too(self, tmp_path: Path) -> None:
        """--json: one object with the folder, the pending count per slot, the dead letters."""
        spool = tmp_path / "spool"
        letters = spool_with_backlog(spool)
        result = run_cli("spool", "status", "--json", env={"AUDIT_LOG_SPOOL_DIR": str(spool)})
        assert result.returncode == 0, result.stderr
        report = orjson.loads(result.stdout)
        assert (report["spool_dir"], report["pending"]) == (str(spool), 7)
        assert report["dead_letters"] == {"http": {"entries": 2, "path": str(letters)}}

    def test_service_and_spool_dir_choose_the_folder(self, tmp_path: Path) -> None:
        """--service finds that service's default folder; --spool-dir any folder."""
        state = tmp_path / "state"
        agents = state / "auditkeep" / "gitlab-copilot-agent" / "spool"
        spool_with_backlog(agents, pending=3)
        env = {"XDG_STATE_HOME": str(state)}
        by_service = run_cli(
            "spool", "status", "--json", "--service", "gitlab-copilot-agent", env=env
        )
        by_folder = run_cli("spool", "status", "--json", "--spool-dir", str(agents), env=env)
        for result in (by_service, by_folder):
            assert result.returncode == 0, result.stderr
            assert orjson.loads(result.stdout)["spool_dir"] == str(agents)
            assert orjson.loads(result.stdout)["pending"] == 3
        # Without --service it is the default service's folder, which does not exist here.
        assert run_cli("spool", "status", env=env).returncode == 2

    def test_a_missing_folder_fails_and_nothing_is_created(self, tmp_path: Path) -> None:
        """No such folder: exit 2 with one line naming it; read-only, so nothing appears."""
        missing = tmp_path / "nowhere" / "spool"
        env = {
            "AUDIT_LOG_SPOOL_DIR": str(missing),
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": "audit.jsonl",  # relative: the command must not create it
        }
        result = run_cli("spool", "status", env=env, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.splitlines() == [
            f"auditkeep: no spool folder at {missing} (nothing was spooled there yet, or the"
            " service uses another one: give --service or --spool-dir)"
        ]
        assert list(tmp_path.iterdir()) == []

    def test_reading_a_live_folder_changes_nothing(self, tmp_path: Path) -> None:
        """An existing spool: not a file, lock or folder more, none touched."""
        spool = tmp_path / "spool"
        spool_with_backlog(spool)
        before = tree(spool)
        for args in (("spool", "status"), ("spool", "status", "--json")):
            assert run_cli(*args, env={"AUDIT_LOG_SPOOL_DIR": str(spool)}).returncode == 0
        assert tree(spool) == before

    def test_an_invalid_service_is_one_line(self, tmp_path: Path) -> None:
        """--service with a name no service can have: exit 2, one line naming --service."""
        result = run_cli("spool", "status", "--service", "no such/name", env={})
        assert (result.returncode, result.stdout) == (2, "")
        [line] = result.stderr.splitlines()
        assert line.startswith("auditkeep: --service: ")


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error":"mapper_parsing_exception"}'
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@contextlib.contextmanager
def refusing_intake() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/intake"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class TestSpoolRedeliver:
    def test_redeliver_says_why_the_destination_refused(self, tmp_path: Path) -> None:
        """Still refused: exit 1, and the line gives the count, the file and the reason."""
        spool = tmp_path / "spool"
        letters = spool_with_backlog(spool, pending=0, dead=5)
        with refusing_intake() as url:
            env = {"AUDIT_LOG_DESTINATION": "http", "AUDIT_LOG_HTTP_ENDPOINT": url}
            result = run_cli("spool", "redeliver", "--spool-dir", str(spool), env=env)
        assert result.returncode == 1, result.stderr
        assert result.stdout == (
            f"http: redelivered 0, still dead-lettered 5 in {letters} (refused: HTTP 400"
            ' Bad Request: {"error":"mapper_parsing_exception"})\n'
        )
        assert len(letters.read_bytes().splitlines()) == 5

    def test_redeliver_says_when_the_destination_is_unreachable(self, tmp_path: Path) -> None:
        """Nothing listens: exit 1, 'unavailable, try again later' and the connection error."""
        spool = tmp_path / "spool"
        letters = spool_with_backlog(spool, pending=0, dead=3)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
        env = {
            "AUDIT_LOG_DESTINATION": "http",
            "AUDIT_LOG_HTTP_ENDPOINT": f"http://127.0.0.1:{port}/intake",
        }
        result = run_cli("spool", "redeliver", "--spool-dir", str(spool), env=env)
        assert result.returncode == 1, result.stderr
        assert result.stdout.startswith(
            f"http: redelivered 0, still dead-lettered 3 in {letters} (unavailable, try again"
            f" later: ConnectError talking to http://127.0.0.1:{port}"
        )

    def test_redeliver_finds_the_services_folder_and_says_when_there_is_nothing(
        self, tmp_path: Path
    ) -> None:
        """--service: that service's dead letters; a destination without any says so."""
        state = tmp_path / "state"
        spool = state / "auditkeep" / "gitlab-copilot-agent" / "spool"
        dead = spool / "dead-letters" / "file.jsonl"
        dead.parent.mkdir(parents=True)
        dead.write_bytes(orjson.dumps({"event_id": "x"}) + b"\n")
        trail = tmp_path / "audit.jsonl"
        env = {
            "XDG_STATE_HOME": str(state),
            "AUDIT_LOG_DESTINATION": "file,stdout",
            "AUDIT_LOG_FILE_PATH": str(trail),
        }
        result = run_cli("spool", "redeliver", "--service", "gitlab-copilot-agent", env=env)
        assert (result.returncode, result.stdout) == (
            0,
            "file: redelivered 1, still dead-lettered 0\n"
            f"stdout: no dead letters in {spool / 'dead-letters'}\n",
        )
        assert trail.read_bytes() == orjson.dumps({"event_id": "x"}) + b"\n"
