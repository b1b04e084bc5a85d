"""Settings from ``AUDIT_LOG_*`` environment variables, validated at start.

Every problem is reported as a ``ConfigError`` naming the variable and the
fix, so a bad deployment fails at start with one clear line (and
``auditrail check-config`` can catch it before rollout).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from auditrail._env import env_bool, env_int, env_seconds
from auditrail._pipeline import Durability
from auditrail.exceptions import ConfigError
from auditrail.logger import AuditLogger
from auditrail.metrics import AuditMetrics
from auditrail.redact import SecretRedactor
from auditrail.typing import Sink

DESTINATIONS: Final = ("stdout", "file", "syslog", "http")


def _default_spool_dir(env: Mapping[str, str], service: str) -> Path:
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    if not os.path.isabs(state):
        state = os.path.join(tempfile.gettempdir(), "auditrail-state")
    return Path(state) / "auditrail" / service / "spool"


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
    probe = directory / f".auditrail-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            variable,
            f"directory {str(directory)!r} is not writable ({exc.strerror}); "
            "fix its permissions or choose another directory",
        ) from None


def _check_writable_file(variable: str, path: Path) -> None:
    if path.is_dir():
        raise ConfigError(variable, f"{str(path)!r} is a directory; give a file path")
    if not path.parent.is_dir():
        problem = "is not a directory" if path.parent.exists() else "does not exist"
        raise ConfigError(
            variable, f"directory {str(path.parent)!r} {problem}; create it or change the path"
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except OSError as exc:
        raise ConfigError(
            variable,
            f"cannot open {str(path)!r} for appending ({exc.strerror}); "
            "fix its permissions or choose another path",
        ) from None


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
    buffer_size: int = 1000
    batch_size: int = 512
    flush_interval_s: float = 0.2
    spool_dir: Path = field(default_factory=lambda: _default_spool_dir(os.environ, "auditrail"))
    durability: Durability = Durability.MEMORY
    service: str = "auditrail"
    max_entry_bytes: int = 16 * 1024
    max_field_chars: int = 4096
    shutdown_timeout_s: float = 5.0
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The environment read, for destinations that take more settings (syslog, http)."""

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, service: str | None = None
    ) -> AuditConfig:
        """Read and validate ``AUDIT_LOG_*`` (probing that paths are writable).

        Args:
            environ: the environment (default ``os.environ``).
            service: the default service name when ``AUDIT_LOG_SERVICE_NAME`` is unset.

        Raises:
            ConfigError: naming the first invalid variable and how to fix it.
        """
        env = os.environ if environ is None else environ
        enabled = env_bool(env, "AUDIT_LOG_ENABLED", True)
        name = (env.get("AUDIT_LOG_SERVICE_NAME") or service or "auditrail").strip()
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
        buffer_size = env_int(env, "AUDIT_LOG_BUFFER_SIZE", 1000, minimum=1)
        batch_size = env_int(env, "AUDIT_LOG_BATCH_SIZE", min(512, buffer_size), minimum=1)
        if batch_size > buffer_size:
            raise ConfigError(
                "AUDIT_LOG_BATCH_SIZE",
                f"{batch_size} is larger than AUDIT_LOG_BUFFER_SIZE={buffer_size}; lower it",
            )
        raw_durability = (env.get("AUDIT_LOG_DURABILITY") or "memory").strip().lower()
        try:
            durability = Durability(raw_durability)
        except ValueError:
            raise ConfigError(
                "AUDIT_LOG_DURABILITY",
                f"unknown level {raw_durability!r}; use one of: "
                + ", ".join(d.value for d in Durability),
            ) from None
        raw_spool = (env.get("AUDIT_LOG_SPOOL_DIR") or "").strip()
        spool_dir = Path(raw_spool) if raw_spool else _default_spool_dir(env, name)
        config = cls(
            enabled=enabled,
            destinations=destinations,
            file_path=file_path,
            file_max_bytes=env_int(env, "AUDIT_LOG_FILE_MAX_BYTES", 100 * 1024 * 1024, minimum=0),
            file_backups=env_int(env, "AUDIT_LOG_FILE_BACKUPS", 10, minimum=1),
            file_compress=env_bool(env, "AUDIT_LOG_FILE_COMPRESS", False),
            buffer_size=buffer_size,
            batch_size=batch_size,
            flush_interval_s=env_seconds(env, "AUDIT_LOG_FLUSH_INTERVAL_S", 0.2),
            spool_dir=spool_dir,
            durability=durability,
            service=name,
            max_entry_bytes=env_int(env, "AUDIT_LOG_MAX_ENTRY_BYTES", 16 * 1024, minimum=1024),
            max_field_chars=env_int(env, "AUDIT_LOG_MAX_FIELD_CHARS", 4096, minimum=64),
            shutdown_timeout_s=env_seconds(env, "AUDIT_LOG_SHUTDOWN_TIMEOUT_S", 5.0),
            # Only our own variables: the config must not carry the process's other secrets.
            environ={k: v for k, v in env.items() if k.startswith("AUDIT_LOG_")},
        )
        if enabled:
            config.check_paths()
            # Build the network sinks once now so their settings fail at start too.
            for sink in config._network_sinks():
                sink.close(0)
        return config

    def check_paths(self) -> None:
        """Probe that the file destination and the spool directory are writable.

        Raises:
            ConfigError: naming ``AUDIT_LOG_FILE_PATH`` or ``AUDIT_LOG_SPOOL_DIR``.
        """
        if "file" in self.destinations and self.file_path is not None:
            _check_writable_file("AUDIT_LOG_FILE_PATH", self.file_path)
        _check_writable_dir("AUDIT_LOG_SPOOL_DIR", self.spool_dir)

    def summary(self) -> str:
        """A one-screen description for ``auditrail check-config``."""
        if not self.enabled:
            return "audit logging is disabled (AUDIT_LOG_ENABLED=false): no entries are written"
        lines = [
            f"service:      {self.service}",
            f"destination:  {', '.join(self.destinations)}",
        ]
        if "file" in self.destinations:
            rotation = (
                f"rotate at {self.file_max_bytes} bytes, keep {self.file_backups}"
                + (" (gzip)" if self.file_compress else "")
                if self.file_max_bytes
                else "no size rotation (external logrotate: send SIGHUP)"
            )
            lines.append(f"file:         {self.file_path} ({rotation})")
        lines += [
            f"durability:   {self.durability.value}",
            f"buffer:       {self.buffer_size} entries, batches of {self.batch_size}",
            f"spool:        {self.spool_dir}",
        ]
        return "\n".join(lines)

    def _network_sinks(self) -> list[Sink]:
        env = self.environ
        sinks: list[Sink] = []
        if "syslog" in self.destinations:
            from auditrail.sinks.syslog import syslog_sink_from_env

            sinks.append(syslog_sink_from_env(env, self.service))
        if "http" in self.destinations:
            from auditrail.sinks.http import http_sink_from_env

            sinks.append(http_sink_from_env(env))
        return sinks

    def build_sinks(self) -> list[Sink]:
        """Create the configured destinations, in the order given."""
        from auditrail.sinks.file import FileSink
        from auditrail.sinks.stdout import StdoutSink

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
            from auditrail.redact import default_redactor

            redactor = default_redactor
            redactor.set_max_field_chars(self.max_field_chars)
        if not self.enabled:
            from auditrail.sinks.stdout import StdoutSink

            return AuditLogger(
                StdoutSink(),
                service=self.service,
                spool_dir=self.spool_dir,
                enabled=False,
                metrics=metrics,
                redactor=redactor,
            )
        return AuditLogger(
            self.build_sinks(),
            service=self.service,
            spool_dir=self.spool_dir,
            durability=self.durability,
            max_buffer_events=self.buffer_size,
            max_batch_events=self.batch_size,
            flush_interval_s=self.flush_interval_s,
            metrics=metrics,
            redactor=redactor,
            max_entry_bytes=self.max_entry_bytes,
            exit_timeout_s=self.shutdown_timeout_s,
        )
