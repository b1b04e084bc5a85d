"""Settings that used to validate and then kill delivery: every number bounded and finite,
service names safe as a path component, unknown AUDIT_LOG_* names refused.

Each refusal is checked twice: ``AuditConfig.from_env`` raises a ``ConfigError``
naming the variable, and the real ``auditkeep check-config`` command exits 1 with
exactly one stderr line naming it and no traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from prometheus_client import CollectorRegistry

from auditkeep._env import KNOWN_VARIABLES, MAX_NUMBER_CHARS
from auditkeep.cli import main
from auditkeep.config import AuditConfig
from auditkeep.exceptions import ConfigError
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.file import FileSink
from auditkeep.sinks.memory import InMemorySink

_RUN_CLI = "import sys; from auditkeep.cli import main; sys.exit(main())"
_ROOT = Path(__file__).resolve().parents[2]
# The library's and the agent's sources (two distributions), for child processes.
SRC_DIRS = (_ROOT / "packages" / "auditkeep" / "src", _ROOT / "src")
PYTHONPATH = os.pathsep.join(str(d) for d in SRC_DIRS)

# (variable, a valid value at the top of its range, the first value above it)
NUMBERS = [
    ("AUDIT_LOG_BUFFER_SIZE", "1000000", "1000001"),
    ("AUDIT_LOG_BATCH_SIZE", "100000", "100001"),
    ("AUDIT_LOG_FLUSH_INTERVAL_S", "60", "60.001"),
    ("AUDIT_LOG_SHUTDOWN_TIMEOUT_S", "3600", "3600.5"),
    ("AUDIT_LOG_MAX_ENTRY_BYTES", "1048576", "1048577"),
    ("AUDIT_LOG_MAX_FIELD_CHARS", "1048576", "1048577"),
    ("AUDIT_LOG_FILE_MAX_BYTES", "1099511627776", "1099511627777"),
    ("AUDIT_LOG_FILE_BACKUPS", "100000", "100001"),
    ("AUDIT_LOG_HTTP_CONNECT_TIMEOUT_S", "300", "301"),
    ("AUDIT_LOG_HTTP_READ_TIMEOUT_S", "300", "300.01"),
    ("AUDIT_LOG_HTTP_MAX_BODY_BYTES", "268435456", "268435457"),
    ("AUDIT_LOG_SYSLOG_TIMEOUT_S", "300", "1e3"),
    ("AUDIT_LOG_DISK_WARN_FREE", "99%", "100%"),
]
BAD_NUMBERS = {
    "inf": "inf",
    "minus-inf": "-inf",
    "nan": "nan",
    "negative": "-1",
    "huge": "1e300",
    "long-digits": "9" * 400,
    "long-padded": "0" * 40 + "1",
}
SERVICE_NAMES = {
    "blank": "",
    "whitespace": "   ",
    "tab": "\t",
    "slash": "a/b",
    "dotdot": "..",
    "dot-first": ".hidden",
    "dash-first": "-x",
    "space-inside": "my service",
    "control-char": "svc\x07",
    "newline": "svc\nconfiguration OK",
    "backslash": "a\\b",
    "too-long": "s" * 65,
    "non-ascii": "sérvice",
}
MISSPELT = {
    "AUDIT_LOG_DESTINATON": "AUDIT_LOG_DESTINATION",
    "AUDIT_LOG_FILEPATH": "AUDIT_LOG_FILE_PATH",
    "AUDIT_LOG_DURABILTY": "AUDIT_LOG_DURABILITY",
    "audit_log_destination": "AUDIT_LOG_DESTINATION",
    "AUDIT_LOG_FILE_BACKUP": "AUDIT_LOG_FILE_BACKUPS",
    "AUDIT_LOG_HTTP_ENDPIONT": "AUDIT_LOG_HTTP_ENDPOINT",
}


def _base(tmp_path: Path) -> dict[str, str]:
    return {"AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"), "HOME": str(tmp_path / "home")}


def _with(tmp_path: Path, variable: str, value: str) -> dict[str, str]:
    """A valid environment plus one setting (and what the setting's destination needs)."""
    env = {**_base(tmp_path), variable: value}
    if variable.startswith("AUDIT_LOG_HTTP_"):
        env.update(
            AUDIT_LOG_DESTINATION="http", AUDIT_LOG_HTTP_ENDPOINT="https://intake.example/logs"
        )
    elif variable.startswith("AUDIT_LOG_SYSLOG_"):
        env.update(AUDIT_LOG_DESTINATION="syslog", AUDIT_LOG_SYSLOG_ADDRESS="udp://127.0.0.1:514")
    elif variable == "AUDIT_LOG_BATCH_SIZE":
        env["AUDIT_LOG_BUFFER_SIZE"] = "1000000"
    return env


def _config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        AuditConfig.from_env(env)
    return caught.value


def _check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real command with only ``env`` (plus PATH, and this checkout's sources)."""
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": PYTHONPATH, **env}
    return subprocess.run(
        [sys.executable, "-c", _RUN_CLI, "check-config"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_refused_in_one_line(proc: subprocess.CompletedProcess[str], variable: str) -> None:
    lines = proc.stderr.splitlines()
    assert (proc.returncode, proc.stdout, len(lines)) == (1, "", 1), proc.stderr
    assert lines[0].startswith(f"auditkeep: invalid configuration: {variable}: "), lines[0]
    assert "Traceback" not in proc.stderr
    assert len(lines[0]) < 400, lines[0]


class TestNumbers:
    @pytest.mark.parametrize(("variable", "top", "above"), NUMBERS, ids=[n[0] for n in NUMBERS])
    @pytest.mark.parametrize("bad", list(BAD_NUMBERS.values()), ids=list(BAD_NUMBERS))
    def test_non_finite_negative_and_absurd_are_refused(
        self, tmp_path: Path, variable: str, top: str, above: str, bad: str
    ) -> None:
        """inf, nan, -1, 1e300 and over-long digit strings: ConfigError naming the variable."""
        error = _config_error(_with(tmp_path, variable, bad))
        message = str(error)
        assert (error.variable, message.splitlines()) == (variable, [message])
        assert "allowed" in message or "expected" in message, message
        assert len(message) < 300, message

    @pytest.mark.parametrize(("variable", "top", "above"), NUMBERS, ids=[n[0] for n in NUMBERS])
    def test_the_top_of_the_range_is_accepted_and_one_step_above_refused(
        self, tmp_path: Path, variable: str, top: str, above: str
    ) -> None:
        """The documented upper bound is inclusive; the next value is refused by name."""
        AuditConfig.from_env(_with(tmp_path, variable, top))
        assert _config_error(_with(tmp_path, variable, above)).variable == variable

    def test_length_is_bounded_before_conversion(self, tmp_path: Path) -> None:
        """A value longer than MAX_NUMBER_CHARS is refused as too long, never converted."""
        error = _config_error(_with(tmp_path, "AUDIT_LOG_BUFFER_SIZE", "1" * 5000))
        assert "value too long (5000 characters)" in str(error)
        padded = " " * 10 + "1" * MAX_NUMBER_CHARS + " " * 10  # surrounding blanks do not count
        with pytest.raises(ConfigError, match="must be at most"):
            AuditConfig.from_env(_with(tmp_path, "AUDIT_LOG_BUFFER_SIZE", padded))

    def test_small_rotation_size_is_refused(self, tmp_path: Path) -> None:
        """AUDIT_LOG_FILE_MAX_BYTES is 0 (off) or at least 64 KiB."""
        error = _config_error(_with(tmp_path, "AUDIT_LOG_FILE_MAX_BYTES", "100"))
        assert "must be 0 (no rotation) or at least 65536" in str(error)
        assert (
            AuditConfig.from_env(_with(tmp_path, "AUDIT_LOG_FILE_MAX_BYTES", "0")).file_max_bytes
            == 0
        )

    def test_disk_warning_accepts_a_percent_or_bytes(self, tmp_path: Path) -> None:
        """AUDIT_LOG_DISK_WARN_FREE: "N%" or a byte count; the default is 10%."""
        read = [
            str(
                AuditConfig.from_env(
                    _with(tmp_path, "AUDIT_LOG_DISK_WARN_FREE", value)
                ).disk_warn_free
            )
            for value in ("", "25%", "2.5%", "0", "1073741824")
        ]
        assert read == ["10%", "25%", "2.5%", "0 bytes", "1073741824 bytes"]

    def test_maximum_flush_interval_keeps_the_worker_alive(self, tmp_path: Path) -> None:
        """The largest accepted flush interval still delivers (the worker did not die)."""
        env = _with(tmp_path, "AUDIT_LOG_FLUSH_INTERVAL_S", "60")
        config = AuditConfig.from_env(env)
        sink = InMemorySink()
        logger = AuditLogger(
            sink,
            service=config.service,
            spool_dir=config.spool_dir,
            flush_interval_s=config.delivery.flush_interval_s,
            metrics=AuditMetrics(CollectorRegistry()),
            redactor=SecretRedactor(),
        )
        try:
            event_id = logger.emit("test.flush.interval")
            assert logger.flush(5)
        finally:
            logger.close(5)
        assert [e["event_id"] for e in sink.entries()] == [event_id]


class TestServiceName:
    @pytest.mark.parametrize("name", list(SERVICE_NAMES.values()), ids=list(SERVICE_NAMES))
    def test_unsafe_names_are_refused(self, tmp_path: Path, name: str) -> None:
        """Blank, path-like, spaced, control and over-long names: ConfigError, one line."""
        error = _config_error({**_base(tmp_path), "AUDIT_LOG_SERVICE_NAME": name})
        message = str(error)
        assert (error.variable, message.splitlines()) == ("AUDIT_LOG_SERVICE_NAME", [message])

    def test_unsafe_program_default_is_refused(self, tmp_path: Path) -> None:
        """An unsafe default from the program is refused too, and no directory is made for it."""
        with pytest.raises(ConfigError, match="default service name"):
            AuditConfig.from_env({"XDG_STATE_HOME": str(tmp_path / "state")}, service="a/../b")
        assert not (tmp_path / "state").exists()

    @pytest.mark.parametrize("name", ["gitlab-copilot-agent", "svc.v2", "A_1", "x", "s" * 64])
    def test_safe_names_are_accepted(self, tmp_path: Path, name: str) -> None:
        """Letters, digits, '.', '_' and '-' (first a letter or digit), up to 64 characters."""
        state = tmp_path / "state"
        config = AuditConfig.from_env(
            {"XDG_STATE_HOME": str(state), "AUDIT_LOG_SERVICE_NAME": f" {name} "}
        )
        assert (config.service, config.spool_dir) == (name, state / "auditkeep" / name / "spool")


class TestUnknownVariables:
    @pytest.mark.parametrize(("name", "closest"), list(MISSPELT.items()), ids=list(MISSPELT))
    def test_misspelt_name_is_an_error_naming_the_closest(
        self, tmp_path: Path, name: str, closest: str
    ) -> None:
        """A misspelt AUDIT_LOG_* name stops start-up and suggests the known one."""
        error = _config_error({**_base(tmp_path), name: "file"})
        assert (error.variable, f"did you mean {closest}?" in str(error)) == (name, True)

    def test_far_off_name_is_an_error_without_a_guess(self, tmp_path: Path) -> None:
        """An AUDIT_LOG_* name like no known one is refused without a suggestion."""
        error = _config_error({**_base(tmp_path), "AUDIT_LOG_ZZZZZZZZZZZZ": "1"})
        assert (error.variable, "did you mean" in str(error)) == ("AUDIT_LOG_ZZZZZZZZZZZZ", False)

    def test_unknown_name_is_refused_even_when_disabled(self, tmp_path: Path) -> None:
        """AUDIT_LOG_ENABLED=false does not hide a typo (it may be in the variable that enables)."""
        env = {**_base(tmp_path), "AUDIT_LOG_ENABLED": "false", "AUDIT_LOG_DESTINATON": "file"}
        assert _config_error(env).variable == "AUDIT_LOG_DESTINATON"

    def test_correlation_variables_and_others_are_accepted(self, tmp_path: Path) -> None:
        """AUDIT_CORRELATION_ID / AUDIT_ACTOR_* and non-AUDIT_LOG_ names are not settings."""
        env = {
            **_base(tmp_path),
            "AUDIT_CORRELATION_ID": "01a21fab-e7d5-7146-b6d0-c18003d0c8d4",
            "AUDIT_ACTOR_TYPE": "job",
            "AUDIT_ACTOR_ID": "42",
            "AUDIT_LOGGER": "x",
            "MY_AUDIT_LOG_DESTINATON": "x",
        }
        assert AuditConfig.from_env(env).destinations == ("stdout",)

    def test_known_list_is_exactly_the_names_the_sources_read(self) -> None:
        """KNOWN_VARIABLES holds every quoted AUDIT_LOG_* name in src/, and nothing else."""
        literal = re.compile(r"""["'](AUDIT_LOG_[A-Z0-9_]*[A-Z0-9])["']""")
        used: set[str] = set()
        for source in (f for d in SRC_DIRS for f in d.rglob("*.py")):
            if source.name == "_env.py" and source.parent.name == "auditkeep":
                continue  # the list itself
            used.update(literal.findall(source.read_text()))
        assert used == set(KNOWN_VARIABLES)


class TestCheckConfigCommand:
    """The real command, in a child process: exit 1, one stderr line, no traceback."""

    CASES: ClassVar = [
        ("AUDIT_LOG_FLUSH_INTERVAL_S", "inf"),
        ("AUDIT_LOG_FLUSH_INTERVAL_S", "nan"),
        ("AUDIT_LOG_SHUTDOWN_TIMEOUT_S", "inf"),
        ("AUDIT_LOG_SHUTDOWN_TIMEOUT_S", "1e300"),
        ("AUDIT_LOG_BUFFER_SIZE", "-1"),
        ("AUDIT_LOG_BUFFER_SIZE", "9" * 5000),
        ("AUDIT_LOG_MAX_ENTRY_BYTES", "1e300"),
        ("AUDIT_LOG_HTTP_READ_TIMEOUT_S", "inf"),
        ("AUDIT_LOG_SYSLOG_TIMEOUT_S", "1e300"),
        ("AUDIT_LOG_DISK_WARN_FREE", "nan%"),
        ("AUDIT_LOG_SERVICE_NAME", ""),
        ("AUDIT_LOG_SERVICE_NAME", "   "),
        ("AUDIT_LOG_SERVICE_NAME", "a/b"),
        ("AUDIT_LOG_SERVICE_NAME", ".."),
        ("AUDIT_LOG_SERVICE_NAME", "my service"),
        ("AUDIT_LOG_SERVICE_NAME", "svc\x1b[31m"),
        ("AUDIT_LOG_SERVICE_NAME", "svc\nconfiguration OK"),
        ("AUDIT_LOG_FILE_RETENTION", "forever"),
        ("AUDIT_LOG_DESTINATON", "file"),
        ("audit_log_destination", "file"),
    ]

    @pytest.mark.parametrize(
        ("variable", "value"), CASES, ids=[f"{v}={x[:12]!r}" for v, x in CASES]
    )
    def test_refused_with_one_line_naming_the_variable(
        self, tmp_path: Path, variable: str, value: str
    ) -> None:
        """check-config exits 1 with a single stderr line that names the variable."""
        _assert_refused_in_one_line(_check_config(_with(tmp_path, variable, value)), variable)

    def test_in_process_cross_product(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every number variable x every bad value through main(): exit 1, one line each."""
        for variable, _, above in NUMBERS:
            for bad in [*BAD_NUMBERS.values(), above]:
                os_env = _with(tmp_path, variable, bad)
                saved = dict(os.environ)
                os.environ.clear()
                os.environ.update(os_env)
                try:
                    code = main(["check-config"])
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                out, err = capsys.readouterr()
                assert (code, out, len(err.splitlines())) == (1, "", 1), (variable, bad, err)
                assert err.startswith(f"auditkeep: invalid configuration: {variable}: "), err

    def test_valid_configuration_still_passes(self, tmp_path: Path) -> None:
        """A correct environment with the new settings exits 0 and summarises them."""
        env = {
            **_base(tmp_path),
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(tmp_path / "audit.jsonl"),
            "AUDIT_LOG_FILE_RETENTION": "delete",
            "AUDIT_LOG_FILE_BACKUPS": "3",
            "AUDIT_LOG_DISK_WARN_FREE": "0",
            "AUDIT_CORRELATION_ID": "01a21fab-e7d5-7146-b6d0-c18003d0c8d4",
        }
        proc = _check_config(env)
        assert (proc.returncode, proc.stderr) == (0, "")
        assert "keep 3, delete older ones (each deletion recorded)" in proc.stdout
        assert "disk warning: below 0 bytes free" in proc.stdout


class TestRetentionSetting:
    @pytest.mark.parametrize(
        ("value", "read"), [("", "keep"), ("  ", "keep"), ("keep", "keep"), (" Delete ", "delete")]
    )
    def test_choices(self, tmp_path: Path, value: str, read: str) -> None:
        """AUDIT_LOG_FILE_RETENTION: keep (also when blank) or delete, any case."""
        env = {**_base(tmp_path), "AUDIT_LOG_FILE_RETENTION": value}
        assert AuditConfig.from_env(env).file_retention == read

    def test_file_sink_refuses_an_unknown_retention(self, tmp_path: Path) -> None:
        """FileSink(retention=...) accepts only "keep" and "delete"."""
        with pytest.raises(ValueError, match="retention must be one of"):
            FileSink(tmp_path / "audit.log", retention="forever")
