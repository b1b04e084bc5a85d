"""AUDIT_LOG_* settings: every mistake stops start-up with one clear line naming the variable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from auditkeep.config import AuditConfig
from auditkeep.delivery import DeliveryOptions, Durability
from auditkeep.exceptions import ConfigError
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor

EnvBuilder = Callable[[Path], dict[str, str]]


def _regular_file(tmp_path: Path) -> Path:
    path = tmp_path / "regular-file"
    path.write_text("not a directory\n")
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "a-directory"
    path.mkdir(exist_ok=True)
    return path


def _base(tmp_path: Path) -> dict[str, str]:
    """A valid environment; never lets a test touch the real home directory."""
    return {"AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"), "HOME": str(tmp_path / "home")}


INVALID = [
    pytest.param(
        "AUDIT_LOG_DESTINATION",
        "'kafka'",
        lambda t: {"AUDIT_LOG_DESTINATION": "kafka"},
        id="unknown-destination",
    ),
    pytest.param(
        "AUDIT_LOG_DESTINATION",
        "once",
        lambda t: {"AUDIT_LOG_DESTINATION": "stdout,stdout"},
        id="repeated-destination",
    ),
    pytest.param(
        "AUDIT_LOG_FILE_PATH",
        "required",
        lambda t: {"AUDIT_LOG_DESTINATION": "file"},
        id="file-without-path",
    ),
    pytest.param(
        "AUDIT_LOG_FILE_PATH",
        "is not a directory",
        lambda t: {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(_regular_file(t) / "audit.jsonl"),
        },
        id="file-under-a-regular-file",
    ),
    pytest.param(
        "AUDIT_LOG_FILE_PATH",
        "is a directory",
        lambda t: {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(_directory(t)),
        },
        id="file-path-is-a-directory",
    ),
    pytest.param(
        "AUDIT_LOG_FILE_PATH",
        "does not exist",
        lambda t: {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(t / "missing" / "audit.jsonl"),
        },
        id="file-in-a-missing-directory",
    ),
    pytest.param(
        "AUDIT_LOG_SPOOL_DIR",
        "cannot create directory",
        lambda t: {"AUDIT_LOG_SPOOL_DIR": str(_regular_file(t) / "spool")},
        id="spool-under-a-regular-file",
    ),
    pytest.param(
        "AUDIT_LOG_SPOOL_DIR",
        "cannot create directory",
        lambda t: {"AUDIT_LOG_SPOOL_DIR": str(_regular_file(t))},
        id="spool-is-a-regular-file",
    ),
    pytest.param(
        "AUDIT_LOG_BUFFER_SIZE",
        "at least 1, got 0",
        lambda t: {"AUDIT_LOG_BUFFER_SIZE": "0"},
        id="buffer-zero",
    ),
    pytest.param(
        "AUDIT_LOG_BUFFER_SIZE",
        "at least 1, got -5",
        lambda t: {"AUDIT_LOG_BUFFER_SIZE": "-5"},
        id="buffer-negative",
    ),
    pytest.param(
        "AUDIT_LOG_BUFFER_SIZE",
        "expected an integer, got 'abc'",
        lambda t: {"AUDIT_LOG_BUFFER_SIZE": "abc"},
        id="buffer-not-a-number",
    ),
    pytest.param(
        "AUDIT_LOG_BATCH_SIZE",
        "larger than",
        lambda t: {
            "AUDIT_LOG_BUFFER_SIZE": "10",
            "AUDIT_LOG_BATCH_SIZE": "20",
        },
        id="batch-larger-than-buffer",
    ),
    pytest.param(
        "AUDIT_LOG_DURABILITY",
        "'sometimes'",
        lambda t: {"AUDIT_LOG_DURABILITY": "sometimes"},
        id="unknown-durability",
    ),
    pytest.param(
        "AUDIT_LOG_ENABLED",
        "expected true or false",
        lambda t: {"AUDIT_LOG_ENABLED": "maybe"},
        id="enabled-not-a-boolean",
    ),
]


def _env(tmp_path: Path, build: EnvBuilder) -> dict[str, str]:
    return {**_base(tmp_path), **build(tmp_path)}


def _config_error(env: dict[str, str], *, read_only: bool = False) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        AuditConfig.from_env(env, read_only=read_only)
    return caught.value


def _auditkeep_command() -> list[str]:
    beside = Path(sys.executable).with_name("auditkeep")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("auditkeep")
    return [found] if found else [sys.executable, "-m", "auditkeep.cli"]


def _check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Only the given variables (plus PATH, and PYTHONPATH so that a checkout's
    # sources are the ones run): nothing else leaks in from the test's environment.
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return subprocess.run(
        [*_auditkeep_command(), "check-config"],
        env={"PATH": "/usr/bin:/bin", **inherited, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestInvalidConfiguration:
    @pytest.mark.parametrize("read_only", [False, True], ids=["creating", "read-only"])
    @pytest.mark.parametrize(("variable", "reason", "build"), INVALID)
    def test_error_names_the_variable(
        self, tmp_path: Path, variable: str, reason: str, build: EnvBuilder, read_only: bool
    ) -> None:
        """Each invalid setting raises ConfigError naming it, whether paths are created or not."""
        error = _config_error(_env(tmp_path, build), read_only=read_only)
        message = str(error)
        assert (error.variable, message.startswith(f"{variable}: "), reason in message) == (
            variable,
            True,
            True,
        ), message

    @pytest.mark.parametrize(
        "build",
        [
            lambda t: {"AUDIT_LOG_DESTINATION": "kafka\nINFO all good"},
            lambda t: {"AUDIT_LOG_BUFFER_SIZE": "12\r\n34"},
            lambda t: {
                "AUDIT_LOG_DESTINATION": "file",
                "AUDIT_LOG_FILE_PATH": str(t / "a\nb" / "audit.jsonl"),
            },
            lambda t: {"AUDIT_LOG_SPOOL_DIR": str(_regular_file(t) / "x\u2028y")},
        ],
        ids=["destination", "buffer", "file-path", "spool-dir"],
    )
    def test_error_message_is_a_single_line(self, tmp_path: Path, build: EnvBuilder) -> None:
        """The message stays one line even when the offending value holds line breaks."""
        message = str(_config_error(_env(tmp_path, build)))
        assert message.splitlines() == [message]

    def test_first_invalid_variable_is_reported(self, tmp_path: Path) -> None:
        """With several mistakes, the error names the first one checked (the destination)."""
        env = {
            **_base(tmp_path),
            "AUDIT_LOG_DESTINATION": "kafka",
            "AUDIT_LOG_BUFFER_SIZE": "0",
        }
        assert _config_error(env).variable == "AUDIT_LOG_DESTINATION"


class TestValidConfiguration:
    def test_defaults(self, tmp_path: Path) -> None:
        """Unset: stdout, memory durability, a 1000-entry buffer, the spool under XDG state."""
        config = AuditConfig.from_env({"XDG_STATE_HOME": str(tmp_path / "state")})
        spool = tmp_path / "state" / "auditkeep" / "auditkeep" / "spool"
        assert (
            config.destinations,
            config.delivery.durability,
            config.delivery.max_buffer_events,
        ) == (
            ("stdout",),
            Durability.MEMORY,
            1000,
        )
        assert config == AuditConfig(spool_dir=spool)
        assert spool.is_dir()  # probed at start

    def test_service_name_sets_the_default_spool(self, tmp_path: Path) -> None:
        """The service name (argument or AUDIT_LOG_SERVICE_NAME) names the default spool."""
        state = tmp_path / "state"
        by_argument = AuditConfig.from_env({"XDG_STATE_HOME": str(state)}, service="agent")
        by_variable = AuditConfig.from_env(
            {"XDG_STATE_HOME": str(state), "AUDIT_LOG_SERVICE_NAME": "bot"}, service="agent"
        )
        assert [(c.service, c.spool_dir) for c in (by_argument, by_variable)] == [
            ("agent", state / "auditkeep" / "agent" / "spool"),
            ("bot", state / "auditkeep" / "bot" / "spool"),
        ]

    def test_every_setting_is_read(self, tmp_path: Path) -> None:
        """Each AUDIT_LOG_* variable lands in its field, trimmed and case-insensitive."""
        env = {
            "AUDIT_LOG_ENABLED": " Yes ",
            "AUDIT_LOG_SERVICE_NAME": "agent",
            "AUDIT_LOG_DESTINATION": " FILE ",
            "AUDIT_LOG_FILE_PATH": str(tmp_path / "audit.jsonl"),
            "AUDIT_LOG_FILE_MAX_BYTES": "0",
            "AUDIT_LOG_FILE_BACKUPS": "3",
            "AUDIT_LOG_FILE_COMPRESS": "on",
            "AUDIT_LOG_BUFFER_SIZE": "50",
            "AUDIT_LOG_BATCH_SIZE": "50",
            "AUDIT_LOG_FLUSH_INTERVAL_S": "0.5",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_LOG_DURABILITY": "FSYNC",
            "AUDIT_LOG_MAX_ENTRY_BYTES": "4096",
            "AUDIT_LOG_MAX_FIELD_CHARS": "512",
        }
        assert AuditConfig.from_env(env) == AuditConfig(
            enabled=True,
            destinations=("file",),
            file_path=tmp_path / "audit.jsonl",
            file_max_bytes=0,
            file_backups=3,
            file_compress=True,
            delivery=DeliveryOptions(
                max_buffer_events=50,
                max_batch_events=50,
                flush_interval_s=0.5,
                durability=Durability.FSYNC,
            ),
            spool_dir=tmp_path / "spool",
            service="agent",
            max_entry_bytes=4096,
            max_field_chars=512,
        )

    def test_small_buffer_lowers_the_default_batch(self, tmp_path: Path) -> None:
        """A buffer smaller than the default batch makes the batch default to the buffer size."""
        config = AuditConfig.from_env({**_base(tmp_path), "AUDIT_LOG_BUFFER_SIZE": "100"})
        assert (config.delivery.max_buffer_events, config.delivery.batch_events) == (100, 100)

    def test_file_config_builds_a_logger_that_writes_the_file(self, tmp_path: Path) -> None:
        """destination=file builds a logger whose entries end up in AUDIT_LOG_FILE_PATH."""
        path = tmp_path / "audit.jsonl"
        env = {**_base(tmp_path), "AUDIT_LOG_DESTINATION": "file", "AUDIT_LOG_FILE_PATH": str(path)}
        env["AUDIT_LOG_SERVICE_NAME"] = "agent"
        logger = AuditConfig.from_env(env).build(
            metrics=AuditMetrics(CollectorRegistry()), redactor=SecretRedactor()
        )
        try:
            event_id = logger.emit("gitlab.api.get_mr_details", http_status=200)
        finally:
            assert logger.close(10)
        [line] = path.read_bytes().splitlines()
        entry = orjson.loads(line)
        del entry["timestamp"]
        assert entry == {
            "schema_version": 1,
            "event_id": event_id,
            "event_type": "audit",
            "action": "gitlab.api.get_mr_details",
            "actor": {"type": "system", "id": "unscoped"},
            "target": {"resource_type": "none"},
            "outcome": "success",
            "correlation_id": event_id,
            "uncorrelated": True,
            "service": "agent",
            "http_status": 200,
        }

    def test_disabled_logger_writes_nothing_anywhere(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """AUDIT_LOG_ENABLED=false: emit returns "" and no file, spool or output appears."""
        path = tmp_path / "audit.jsonl"
        spool = tmp_path / "spool"
        env = {
            "AUDIT_LOG_ENABLED": "false",
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(path),
            "AUDIT_LOG_SPOOL_DIR": str(spool),
            "HOME": str(tmp_path / "home"),
        }
        config = AuditConfig.from_env(env)
        logger = config.build(metrics=AuditMetrics(CollectorRegistry()), redactor=SecretRedactor())
        try:
            assert logger.emit("gitlab.api.get_mr_details") == ""
            assert logger.flush(1)
        finally:
            assert logger.close(1)
        assert sorted(p.name for p in tmp_path.iterdir()) == []
        assert capfd.readouterr() == ("", "")
        assert config.summary() == (
            "audit logging is disabled (AUDIT_LOG_ENABLED=false): no entries are written"
        )

    def test_disabled_config_skips_path_checks(self, tmp_path: Path) -> None:
        """A disabled configuration does not probe (or create) the file or spool paths."""
        env = {
            "AUDIT_LOG_ENABLED": "0",
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(_regular_file(tmp_path) / "audit.jsonl"),
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
        assert AuditConfig.from_env(env).enabled is False
        assert sorted(p.name for p in tmp_path.iterdir()) == ["regular-file"]


class TestCheckConfigCommand:
    def test_valid_environment_exits_0_with_a_summary(self, tmp_path: Path) -> None:
        """`auditkeep check-config` prints the summary and "configuration OK", exit 0."""
        env = {
            **_base(tmp_path),
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(tmp_path / "audit.jsonl"),
            "AUDIT_LOG_SERVICE_NAME": "agent",
            # A nearly full disk under the test would add a (correct) warning on stderr.
            "AUDIT_LOG_DISK_WARN_FREE": "0",
        }
        expected = AuditConfig.from_env(env).summary()
        proc = _check_config(env)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            0,
            f"{expected}\nconfiguration OK\n",
            "",
        )

    @pytest.mark.parametrize(("variable", "reason", "build"), INVALID)
    def test_invalid_environment_fails_with_one_line(
        self, tmp_path: Path, variable: str, reason: str, build: EnvBuilder
    ) -> None:
        """An invalid setting exits non-zero with exactly one stderr line naming the variable."""
        env = _env(tmp_path, build)
        message = str(_config_error(env, read_only=True))
        assert reason in message
        proc = _check_config(env)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            1,
            "",
            f"auditkeep: invalid configuration: {message}\n",
        )
        assert f": {variable}: " in proc.stderr

    def test_line_breaks_in_a_value_cannot_add_stderr_lines(self, tmp_path: Path) -> None:
        """A value holding a forged second line still gives a single stderr line."""
        env = {**_base(tmp_path), "AUDIT_LOG_DESTINATION": "kafka\nconfiguration OK"}
        proc = _check_config(env)
        assert (proc.returncode, proc.stdout, len(proc.stderr.splitlines())) == (1, "", 1)


class TestShutdownTimeout:
    def test_shutdown_timeout_reaches_the_logger(self, tmp_path: Path) -> None:
        """AUDIT_LOG_SHUTDOWN_TIMEOUT_S becomes the logger's exit deadline; 0 is refused."""
        env = {
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "AUDIT_LOG_SHUTDOWN_TIMEOUT_S": "2.5",
        }
        logger = AuditConfig.from_env(env).build(metrics=AuditMetrics(CollectorRegistry()))
        try:
            assert logger.shutdown_timeout_s == 2.5
        finally:
            logger.close()
        with pytest.raises(ConfigError) as info:
            AuditConfig.from_env({**env, "AUDIT_LOG_SHUTDOWN_TIMEOUT_S": "0"})
        assert info.value.variable == "AUDIT_LOG_SHUTDOWN_TIMEOUT_S"
