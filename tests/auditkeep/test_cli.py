"""The ``auditkeep`` command as a new user meets it: version, help, and a read-only check-config.

Every test runs the real command in a child process (``python -m auditkeep``)
with only the environment it sets, except the walk over every ``--help``,
which runs ``main`` in this process. Each failed before the issue-9 changes.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import auditkeep
from auditkeep.cli import build_parser, main


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "auditkeep", *args],
        env={**inherited, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every command path of the parser: (), ("query",), ("spool", "status"), ..."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


class TestCommand:
    def test_version(self) -> None:
        """`auditkeep --version` prints the name and version, exit 0."""
        result = run("--version")
        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            f"auditkeep {auditkeep.__version__}\n",
            "",
        )

    def test_python_m_auditkeep_is_the_command(self) -> None:
        """`python -m auditkeep schema` prints the schema, as `auditkeep schema` does."""
        result = run("schema")
        assert result.returncode == 0
        assert '"$schema"' in result.stdout

    @pytest.mark.parametrize("args", [(), ("spool",)], ids=["auditkeep", "auditkeep spool"])
    def test_a_command_alone_prints_its_help(self, args: tuple[str, ...]) -> None:
        """`auditkeep` (or `auditkeep spool`) alone prints help on stdout, exit 0, no error."""
        result = run(*args)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.startswith(f"usage: auditkeep {' '.join(args)}".rstrip() + " ")
        assert "examples:" in result.stdout

    def test_every_help_shows_an_example(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Each command's --help ends with at least one example of that very command."""
        paths = list(commands(build_parser()))
        assert {("query",), ("spool", "redeliver"), ("demo",)} <= set(paths)
        for path in paths:
            with pytest.raises(SystemExit) as exited:
                main([*path, "--help"])
            out = capsys.readouterr().out
            assert exited.value.code == 0
            examples = out.split("examples:\n", 1)
            assert len(examples) == 2, path
            assert f"auditkeep {' '.join(path)}".rstrip() in examples[1], path


class TestCheckConfig:
    def test_a_relative_file_path_creates_nothing(self, tmp_path: Path) -> None:
        """check-config with AUDIT_LOG_FILE_PATH=audit.jsonl leaves the folder as it was."""
        work = tmp_path / "work"
        work.mkdir()
        env = {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": "audit.jsonl",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "state" / "spool"),
            "AUDIT_LOG_DISK_WARN_FREE": "0",
        }
        result = run("check-config", env=env, cwd=work)
        assert (result.returncode, result.stderr) == (0, "")
        assert f"file:         {work / 'audit.jsonl'} (not created yet)" in result.stdout
        assert f"spool:        {tmp_path / 'state' / 'spool'} (not created yet)" in result.stdout
        assert result.stdout.endswith("configuration OK\n")
        assert sorted(tmp_path.rglob("*")) == [work]

    def test_an_unwritable_place_is_still_refused(self, tmp_path: Path) -> None:
        """Creating nothing, check-config still names a file it could not create."""
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere: a permission cannot be refused")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        env = {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(locked / "audit.jsonl"),
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
        result = run("check-config", env=env)
        assert result.returncode == 1
        assert "AUDIT_LOG_FILE_PATH" in result.stderr
        assert "not writable" in result.stderr

    def test_every_destination_is_shown_and_no_credential(self, tmp_path: Path) -> None:
        """The syslog address and transport, the HTTP endpoint and format; never a secret."""
        listening = tmp_path / "log.sock"
        daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        daemon.bind(str(listening))
        token = "hec-token-7f3a9b1c2d"
        password = "basic-pw-4e8d"
        env = {
            "AUDIT_LOG_DESTINATION": "syslog,http,stdout",
            "AUDIT_LOG_SYSLOG_ADDRESS": f"unix://{listening}",
            "AUDIT_LOG_HTTP_ENDPOINT": f"https://intake:{password}@splunk.example:8088",
            "AUDIT_LOG_HTTP_FORMAT": "splunk_hec",
            "AUDIT_LOG_HTTP_AUTHORIZATION": f"Splunk {token}",
            "AUDIT_LOG_HTTP_COMPRESS": "true",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_LOG_DISK_WARN_FREE": "0",
        }
        try:
            result = run("check-config", env=env)
        finally:
            daemon.close()
        assert (result.returncode, result.stderr) == (0, "")
        out = result.stdout
        assert f"syslog:       unix://{listening} (unix socket: the local daemon;" in out
        assert (
            "http:         POST https://[REDACTED]@splunk.example:8088/services/collector/event "
            "(format splunk_hec; gzip; TLS verified with the system's CAs; "
            "headers: Authorization (values not shown))"
        ) in out
        assert "stdout:       JSON lines on standard output" in out
        assert token not in out
        assert password not in out

    @pytest.mark.parametrize("kind", ["missing", "nothing-listens"])
    def test_syslog_without_a_daemon_fails(self, tmp_path: Path, kind: str) -> None:
        """A unix syslog socket that is missing, or that nothing listens on, exits 1."""
        path = tmp_path / "dev-log"
        if kind == "nothing-listens":
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            stale.bind(str(path))
            stale.close()  # the socket file stays; the daemon is gone
        env = {
            "AUDIT_LOG_DESTINATION": "syslog",
            "AUDIT_LOG_SYSLOG_ADDRESS": f"unix://{path}",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
        result = run("check-config", env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("auditkeep: AUDIT_LOG_SYSLOG_ADDRESS: ")
        assert str(path) in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert "configuration OK" not in result.stdout
        assert result.stdout.endswith("configuration NOT OK\n")

    def test_udp_syslog_is_valid_with_the_readme_warning(self, tmp_path: Path) -> None:
        """udp:// is accepted (exit 0), with the README's warning on stderr."""
        env = {
            "AUDIT_LOG_DESTINATION": "syslog",
            "AUDIT_LOG_SYSLOG_ADDRESS": "udp://127.0.0.1:514",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_LOG_DISK_WARN_FREE": "0",
        }
        result = run("check-config", env=env)
        assert result.returncode == 0
        assert result.stderr == (
            "auditkeep: warning: AUDIT_LOG_SYSLOG_ADDRESS=udp://127.0.0.1:514: UDP gives no "
            "delivery guarantee (a datagram lost on the way cannot be known, let alone "
            "retried); use tcp://, tls:// or the local unix socket for an audit trail\n"
        )
        assert "udp://127.0.0.1:514 (UDP datagrams: NO delivery guarantee;" in result.stdout
        assert result.stdout.endswith("configuration OK\n")
