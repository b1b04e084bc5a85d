"""Settings from ``AUDIT_LOG_*`` environment variables, validated at start.

Every problem is reported as a ``ConfigError`` naming the variable and the
fix, so a bad deployment fails at start with one clear line (and
``auditkeep check-config`` can catch it before rollout).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from auditkeep._disk import FreeSpaceThreshold, threshold_from_env
from auditkeep._env import check_unknown_variables, env_bool, env_int, env_seconds, shown
from auditkeep._names import service_name_problem
from auditkeep.delivery.options import DEFAULTS, DeliveryOptions, parse_durability
from auditkeep.exceptions import ConfigError, InvalidOptionError
from auditkeep.integrity.options import IntegrityOptions, integrity_from_env
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import SecretRedactor
from auditkeep.sinks.file import RETENTIONS
from auditkeep.typing import Sink

if TYPE_CHECKING:
    from auditkeep.sinks.http import HttpSink
    from auditkeep.sinks.syslog import SyslogSink

DESTINATIONS: Final = ("stdout", "file", "syslog", "http")


def _shown_path(path: Path) -> str:
    """The absolute path, and whether it exists yet (nothing is created before start)."""
    shown_path = str(path.absolute())
    return shown_path if path.exists() else f"{shown_path} (not created yet)"


# The allowed ranges (README's configuration table says the same). Upper bounds
# are far above any real need; they exist so that a typo (an extra zero, `inf`)
# fails at start instead of overflowing a timer or eating memory later.
MAX_FILE_BYTES: Final = 1 << 40  # 1 TiB
MIN_FILE_BYTES: Final = 64 * 1024  # a rotation per few entries would only churn files
MAX_BACKUPS: Final = 100_000
MAX_BUFFER: Final = 1_000_000
MAX_BATCH: Final = 100_000
MAX_FLUSH_INTERVAL_S: Final = 60.0
MAX_SHUTDOWN_TIMEOUT_S: Final = 3600.0
MAX_ENTRY_BYTES: Final = 1 << 20
MAX_FIELD_CHARS: Final = 1 << 20

# The variable behind each DeliveryOptions field it sets, to name it in an error.
_DELIVERY_VARIABLES: Final = {
    "durability": "AUDIT_LOG_DURABILITY",
    "max_buffer_events": "AUDIT_LOG_BUFFER_SIZE",
    "max_batch_events": "AUDIT_LOG_BATCH_SIZE",
    "flush_interval_s": "AUDIT_LOG_FLUSH_INTERVAL_S",
    "shutdown_timeout_s": "AUDIT_LOG_SHUTDOWN_TIMEOUT_S",
}


def _default_spool_dir(env: Mapping[str, str], service: str) -> Path:
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    if not os.path.isabs(state):
        state = os.path.join(tempfile.gettempdir(), "auditkeep-state")
    return Path(state) / "auditkeep" / service / "spool"


def _check_writable_dir(variable: str, directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            variable,
            f"cannot create directory {str(directory)!r} ({exc.strerror}); "
            "point it at a writable directory",
        ) from None
    if not directory.is_dir():
        raise ConfigError(variable, f"{str(directory)!r} is not a directory")
    probe = directory / f".auditkeep-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            variable,
            f"directory {str(directory)!r} is not writable ({exc.strerror}); "
            "fix its permissions or choose another directory",
        ) from None


def _check_file_shape(variable: str, path: Path) -> None:
    try:
        is_dir, parent_is_dir, parent_exists = (
            path.is_dir(),
            path.parent.is_dir(),
            path.parent.exists(),
        )
    except OSError as exc:  # e.g. a name too long for the filesystem
        raise ConfigError(
            variable, f"cannot use {shown(str(path))} ({exc.strerror}); give another path"
        ) from None
    if is_dir:
        raise ConfigError(variable, f"{str(path)!r} is a directory; give a file path")
    if not parent_is_dir:
        problem = "is not a directory" if parent_exists else "does not exist"
        raise ConfigError(
            variable, f"directory {str(path.parent)!r} {problem}; create it or change the path"
        )


def _check_writable_file(variable: str, path: Path) -> None:
    _check_file_shape(variable, path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except OSError as exc:
        raise ConfigError(
            variable,
            f"cannot open {str(path)!r} for appending ({exc.strerror}); "
            "fix its permissions or choose another path",
        ) from None


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: where a folder created at start would live."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _look_writable_file(variable: str, path: Path) -> None:
    """``_check_writable_file`` without creating the file: permissions are read, not tried."""
    _check_file_shape(variable, path)
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ConfigError(
                variable,
                f"{str(path)!r} is not writable; fix its permissions or choose another path",
            )
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(
            variable,
            f"cannot create {str(path)!r}: directory {str(path.parent)!r} is not writable; "
            "fix its permissions or choose another path",
        )


def _look_writable_dir(variable: str, directory: Path) -> None:
    """``_check_writable_dir`` without creating anything: the nearest existing ancestor decides."""
    existing = nearest_existing(directory)
    if not existing.is_dir():
        raise ConfigError(
            variable,
            f"cannot create directory {str(directory)!r}: {str(existing)!r} is not a "
            "directory; point it at a writable directory",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == directory else f"cannot create {str(directory)!r}: "
        raise ConfigError(
            variable,
            f"{where}directory {str(existing)!r} is not writable; "
            "fix its permissions or choose another directory",
        )


def spool_dir_from_env(environ: Mapping[str, str], *, service: str | None = None) -> Path:
    """The spool base ``from_env`` would use, without probing or creating anything.

    For read-only tools (``auditkeep spool status``).

    Raises:
        ConfigError: ``AUDIT_LOG_SERVICE_NAME`` (or ``service``) is no valid service name.
    """
    raw_spool = (environ.get("AUDIT_LOG_SPOOL_DIR") or "").strip()
    if raw_spool:
        return Path(raw_spool)
    return _default_spool_dir(environ, _service_name(environ, service))


def _delivery_from_env(env: Mapping[str, str]) -> DeliveryOptions:
    """Translate the delivery variables; ``DeliveryOptions`` does the checking."""
    buffer_size = env_int(
        env, "AUDIT_LOG_BUFFER_SIZE", DEFAULTS.max_buffer_events, minimum=1, maximum=MAX_BUFFER
    )
    batch_size = None  # unset: DeliveryOptions' rule (512, or the buffer if smaller)
    if (env.get("AUDIT_LOG_BATCH_SIZE") or "").strip():
        batch_size = env_int(env, "AUDIT_LOG_BATCH_SIZE", 0, minimum=1, maximum=MAX_BATCH)
    try:
        return DeliveryOptions(
            durability=parse_durability(env.get("AUDIT_LOG_DURABILITY") or DEFAULTS.durability),
            max_buffer_events=buffer_size,
            max_batch_events=batch_size,
            flush_interval_s=env_seconds(
                env,
                "AUDIT_LOG_FLUSH_INTERVAL_S",
                DEFAULTS.flush_interval_s,
                maximum=MAX_FLUSH_INTERVAL_S,
            ),
            shutdown_timeout_s=env_seconds(
                env,
                "AUDIT_LOG_SHUTDOWN_TIMEOUT_S",
                DEFAULTS.shutdown_timeout_s,
                maximum=MAX_SHUTDOWN_TIMEOUT_S,
            ),
        )
    except InvalidOptionError as exc:
        message = exc.message
        for option, variable in _DELIVERY_VARIABLES.items():
            message = message.replace(option, variable)
        raise ConfigError(_DELIVERY_VARIABLES[exc.option], message) from None


def _service_name(env: Mapping[str, str], default: str | None) -> str:
    raw = env.get("AUDIT_LOG_SERVICE_NAME")
    if raw is not None:
        name = raw.strip()
        problem = service_name_problem(name)
        if problem is not None:
            raise ConfigError("AUDIT_LOG_SERVICE_NAME", problem)
        return name
    name = default if default is not None else "auditkeep"
    problem = service_name_problem(name)
    if problem is not None:
        raise ConfigError(
            "AUDIT_LOG_SERVICE_NAME",
            f"unset, and the program's default service name {problem}; set it",
        )
    return name


def _file_max_bytes(env: Mapping[str, str]) -> int:
    name = "AUDIT_LOG_FILE_MAX_BYTES"
    value = env_int(env, name, 100 * 1024 * 1024, minimum=0, maximum=MAX_FILE_BYTES)
    if 0 < value < MIN_FILE_BYTES:
        raise ConfigError(
            name,
            f"must be 0 (no rotation) or at least {MIN_FILE_BYTES}, got {value} "
            f"(allowed: 0, or {MIN_FILE_BYTES} to {MAX_FILE_BYTES})",
        )
    return value


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Validated audit settings.

    .. versionadded:: 0.1.0
    """

    enabled: bool = True
    destinations: tuple[str, ...] = ("stdout",)
    file_path: Path | None = None
    file_max_bytes: int = 100 * 1024 * 1024
    file_backups: int = 10
    file_compress: bool = False
    delivery: DeliveryOptions = DEFAULTS
    """Durability, buffer, batches, flush interval, shutdown deadline (``AUDIT_LOG_DURABILITY``,
    ``_BUFFER_SIZE``, ``_BATCH_SIZE``, ``_FLUSH_INTERVAL_S``, ``_SHUTDOWN_TIMEOUT_S``)."""
    spool_dir: Path = field(default_factory=lambda: _default_spool_dir(os.environ, "auditkeep"))
    service: str = "auditkeep"
    max_entry_bytes: int = 16 * 1024
    max_field_chars: int = 4096
    file_retention: str = "keep"
    disk_warn_free: FreeSpaceThreshold = field(default_factory=FreeSpaceThreshold)
    integrity: IntegrityOptions | None = None
    """Chained entries and checkpoints (``AUDIT_LOG_INTEGRITY``, docs/integrity.md); None: off."""
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The environment read, for destinations that take more settings (syslog, http)."""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        service: str | None = None,
        read_only: bool = False,
    ) -> AuditConfig:
        """Read and validate ``AUDIT_LOG_*`` (probing that paths are writable).

        Args:
            environ: the environment (default ``os.environ``).
            service: the default service name when ``AUDIT_LOG_SERVICE_NAME`` is unset.
            read_only: probe the paths by their permissions only, creating nothing
                (``auditkeep check-config``); by default the file and the spool
                directory are created, which also proves they can be.

        Raises:
            ConfigError: naming the first invalid variable and how to fix it.
        """
        env = os.environ if environ is None else environ
        check_unknown_variables(env)
        enabled = env_bool(env, "AUDIT_LOG_ENABLED", True)
        name = _service_name(env, service)
        raw_destinations = env.get("AUDIT_LOG_DESTINATION") or "stdout"
        destinations = tuple(d.strip().lower() for d in raw_destinations.split(",") if d.strip())
        for destination in destinations:
            if destination not in DESTINATIONS:
                raise ConfigError(
                    "AUDIT_LOG_DESTINATION",
                    f"unknown destination {destination!r}; use one or more (comma-separated) "
                    f"of: {', '.join(DESTINATIONS)}",
                )
        if not destinations or len(set(destinations)) != len(destinations):
            raise ConfigError(
                "AUDIT_LOG_DESTINATION",
                f"give each destination once, e.g. 'file,http'; got {raw_destinations!r}",
            )
        raw_path = (env.get("AUDIT_LOG_FILE_PATH") or "").strip()
        file_path = Path(raw_path) if raw_path else None
        if "file" in destinations and file_path is None:
            raise ConfigError(
                "AUDIT_LOG_FILE_PATH",
                "required when AUDIT_LOG_DESTINATION=file; set it to the audit log file",
            )
        delivery = _delivery_from_env(env)
        spool_dir = spool_dir_from_env(env, service=name)
        raw_retention = (env.get("AUDIT_LOG_FILE_RETENTION") or "").strip().lower() or "keep"
        if raw_retention not in RETENTIONS:
            raise ConfigError(
                "AUDIT_LOG_FILE_RETENTION",
                f"unknown choice {shown(raw_retention)}; use keep (never delete a rotated "
                "file) or delete (delete beyond AUDIT_LOG_FILE_BACKUPS, recording each deletion)",
            )
        config = cls(
            enabled=enabled,
            destinations=destinations,
            file_path=file_path,
            file_max_bytes=_file_max_bytes(env),
            file_backups=env_int(env, "AUDIT_LOG_FILE_BACKUPS", 10, minimum=1, maximum=MAX_BACKUPS),
            file_compress=env_bool(env, "AUDIT_LOG_FILE_COMPRESS", False),
            delivery=delivery,
            spool_dir=spool_dir,
            service=name,
            max_entry_bytes=env_int(
                env, "AUDIT_LOG_MAX_ENTRY_BYTES", 16 * 1024, minimum=1024, maximum=MAX_ENTRY_BYTES
            ),
            max_field_chars=env_int(
                env, "AUDIT_LOG_MAX_FIELD_CHARS", 4096, minimum=64, maximum=MAX_FIELD_CHARS
            ),
            file_retention=raw_retention,
            disk_warn_free=threshold_from_env(env),
            integrity=integrity_from_env(env),
            # Only our own variables: the config must not carry the process's other secrets.
            environ={k: v for k, v in env.items() if k.startswith("AUDIT_LOG_")},
        )
        if enabled:
            config.check_paths(read_only=read_only)
            # Build the network sinks once now so their settings fail at start too.
            for sink in config._network_sinks():
                sink.close(0)
        return config

    def check_paths(self, *, read_only: bool = False) -> None:
        """Probe that the file destination and the spool directory are writable.

        Args:
            read_only: judge by permissions and create nothing (see ``from_env``).

        Raises:
            ConfigError: naming ``AUDIT_LOG_FILE_PATH`` or ``AUDIT_LOG_SPOOL_DIR``.
        """
        check_file = _look_writable_file if read_only else _check_writable_file
        check_dir = _look_writable_dir if read_only else _check_writable_dir
        if "file" in self.destinations and self.file_path is not None:
            check_file("AUDIT_LOG_FILE_PATH", self.file_path)
        check_dir("AUDIT_LOG_SPOOL_DIR", self.spool_dir)

    def summary(self) -> str:
        """A one-screen description for ``auditkeep check-config``."""
        if not self.enabled:
            return "audit logging is disabled (AUDIT_LOG_ENABLED=false): no entries are written"
        lines = [
            f"service:      {self.service}",
            f"destination:  {', '.join(self.destinations)}",
        ]
        if "file" in self.destinations:
            if not self.file_max_bytes:
                rotation = "no size rotation (external logrotate: send SIGHUP)"
            elif self.file_retention == "keep":
                rotation = f"rotate at {self.file_max_bytes} bytes, keep every rotated file"
            else:
                rotation = (
                    f"rotate at {self.file_max_bytes} bytes, keep {self.file_backups}, "
                    "delete older ones (each deletion recorded)"
                )
            if self.file_max_bytes and self.file_compress:
                rotation += " (gzip)"
            assert self.file_path is not None
            where = _shown_path(self.file_path)
            if not self.file_path.is_absolute():
                where += " (AUDIT_LOG_FILE_PATH is relative: the service's working directory)"
            lines.append(f"file:         {where} ({rotation})")
        network = {sink.name: sink for sink in self._network_sinks()}
        for name in self.destinations:
            sink = network.get(name)
            if sink is not None:
                lines.append(f"{name + ':':<13} {sink.describe()}")
            elif name == "stdout":
                lines.append("stdout:       JSON lines on standard output")
        for sink in network.values():
            sink.close(0)
        lines += [
            f"durability:   {self.delivery.durability.value}",
            f"buffer:       {self.delivery.max_buffer_events} entries,"
            f" batches of {self.delivery.batch_events}",
            f"spool:        {_shown_path(self.spool_dir)}",
            f"disk warning: below {self.disk_warn_free} free",
            f"integrity:    {self.integrity.describe() if self.integrity else 'off'}",
        ]
        return "\n".join(lines)

    def preflight(self) -> list[tuple[bool, str]]:
        """Deployment problems valid settings can still have: ``(fatal, message)`` pairs.

        What ``auditkeep check-config`` reports after the summary: a syslog
        unix socket that does not exist or that nothing listens on (fatal), a
        ``udp://`` syslog address (a warning). See ``SyslogSink.preflight``.

        .. versionadded:: 0.1.0
        """
        from auditkeep.sinks.syslog import SyslogSink

        findings: list[tuple[bool, str]] = []
        if self.integrity is not None and self.integrity.signing_key is None:
            findings.append(
                (
                    False,
                    "AUDIT_LOG_INTEGRITY is on without AUDIT_LOG_SIGNING_KEY_FILE or "
                    "AUDIT_LOG_SIGNER_SOCKET: "
                    "checkpoints are unsigned (see docs/integrity.md)",
                )
            )
        for sink in self._network_sinks():
            if isinstance(sink, SyslogSink):
                findings.extend(sink.preflight())
            sink.close(0)
        return findings

    def watched_directories(self) -> list[tuple[str, Path]]:
        """(label, directory) of each place whose free space is watched: file, spool."""
        watched: list[tuple[str, Path]] = []
        if "file" in self.destinations and self.file_path is not None:
            watched.append(("file", self.file_path.absolute().parent))
        watched.append(("spool", self.spool_dir))
        return watched

    def _network_sinks(self) -> list[SyslogSink | HttpSink]:
        env = self.environ
        sinks: list[SyslogSink | HttpSink] = []
        if "syslog" in self.destinations:
            from auditkeep.sinks.syslog import syslog_sink_from_env

            sinks.append(syslog_sink_from_env(env, self.service))
        if "http" in self.destinations:
            from auditkeep.sinks.http import http_sink_from_env

            sinks.append(http_sink_from_env(env))
        return sinks

    def build_sinks(self) -> list[Sink]:
        """Create the configured destinations, in the order given."""
        from auditkeep.sinks.file import FileSink
        from auditkeep.sinks.stdout import StdoutSink

        network = {s.name: s for s in self._network_sinks()}
        sinks: list[Sink] = []
        for destination in self.destinations:
            if destination == "file":
                assert self.file_path is not None
                sinks.append(
                    FileSink(
                        self.file_path,
                        max_bytes=self.file_max_bytes,
                        backups=self.file_backups,
                        compress=self.file_compress,
                        retention=self.file_retention,
                    )
                )
            elif destination == "stdout":
                sinks.append(StdoutSink())
            else:
                sinks.append(network[destination])
        return sinks

    def build(
        self, *, metrics: AuditMetrics | None = None, redactor: SecretRedactor | None = None
    ) -> AuditLogger:
        """Create the logger these settings describe."""
        if redactor is None:
            from auditkeep.redact import default_redactor

            redactor = default_redactor
            redactor.set_max_field_chars(self.max_field_chars)
        if not self.enabled:
            from auditkeep.sinks.stdout import StdoutSink

            return AuditLogger(
                StdoutSink(),
                service=self.service,
                spool_dir=self.spool_dir,
                delivery=self.delivery,
                enabled=False,
                metrics=metrics,
                redactor=redactor,
            )
        from auditkeep._retention import rotated_out_recorder
        from auditkeep.sinks.file import FileSink

        if metrics is None:
            metrics = AuditMetrics.for_registry()
        sinks = self.build_sinks()
        logger = AuditLogger(
            sinks,
            service=self.service,
            spool_dir=self.spool_dir,
            delivery=self.delivery,
            metrics=metrics,
            redactor=redactor,
            max_entry_bytes=self.max_entry_bytes,
            integrity=self.integrity,
        )
        record = rotated_out_recorder(logger, metrics)
        for sink in sinks:
            if isinstance(sink, FileSink):
                sink.on_rotated_out = record
        for label, directory in self.watched_directories():
            metrics.disk.watch(label, directory, self.disk_warn_free)
        return logger
