"""The process-wide logger, and what makes it survive SIGTERM.

A library must not take over signals unasked, so ``configure`` installs a
SIGTERM handler only when asked (the default for services) and only when the
current handler is the default one. The handler raises ``SystemExit``, which
unwinds the main thread normally; ``atexit`` (registered by ``logger.py``)
then closes every live logger,
delivering what it can before the deadline and spooling the rest. Servers that
handle SIGTERM themselves (uvicorn) close the logger in their shutdown hook.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from types import FrameType

from auditkeep.config import AuditConfig
from auditkeep.exceptions import AlreadyConfiguredError
from auditkeep.logger import AuditLogger, hurry_closing_loggers

_current: AuditLogger | None = None
# Held while the process logger is built, so no two threads build one (a
# second build would close the logger the first thread already handed out).
_lock = threading.Lock()


def configure(
    environ: Mapping[str, str] | None = None,
    *,
    service: str | None = None,
    handle_sigterm: bool = True,
) -> AuditLogger:
    """Build the process-wide logger from ``AUDIT_LOG_*`` and make it current.

    The one documented way to build the logger of a process (``get_logger()``
    then returns it). Thread-safe: of two threads calling it at once, one
    builds the logger and the other gets ``AlreadyConfiguredError``; a logger
    once handed out is never closed behind its holder's back. After the
    current logger was closed, ``configure()`` builds a new one.

    Args:
        environ: the variables to read (default ``os.environ``).
        service: the service name when ``AUDIT_LOG_SERVICE_NAME`` is unset.
        handle_sigterm: turn SIGTERM into ``SystemExit`` so ``atexit`` closes
            the logger (see ``install_sigterm_handler``); pass False where a
            server (uvicorn) owns SIGTERM and closes the logger itself.

    Raises:
        ConfigError: an invalid setting (the message names the variable).
        AlreadyConfiguredError: the process logger is built and still open.
        MissingDependencyError: a destination needs an extra that is not installed.
    """
    global _current
    with _lock:
        if _current is not None and not _current.closed:
            raise AlreadyConfiguredError(
                f"the process audit logger (service {_current.service!r}) is already "
                "configured and open: use auditkeep.get_logger(), or close it first"
            )
        _current = AuditConfig.from_env(environ, service=service).build()
        logger = _current
    if handle_sigterm:
        install_sigterm_handler()
    return logger


def get_logger() -> AuditLogger:
    """Return the process-wide logger, configuring it from the environment on first use.

    Thread-safe: however many threads ask first, one logger is built and all
    of them get it. Once closed, it stays the current logger (its ``emit``
    raises ``LoggerClosedError``) until ``configure()`` builds the next one.

    Raises:
        ConfigError, MissingDependencyError: as ``configure``, on first use.
    """
    global _current
    current = _current
    if current is not None:
        return current
    with _lock:
        if _current is None:
            _current = AuditConfig.from_env().build()
        return _current


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Supervisors (Kubernetes, systemd, docker stop) repeat SIGTERM. Once a
    # logger is closing, another SIGTERM only cuts its delivery short: what
    # is left goes to the spool at once and the process exits. Raising again
    # would unwind the shutdown itself.
    if hurry_closing_loggers():
        return
    raise SystemExit(128 + signum)


def install_sigterm_handler() -> bool:
    """Turn SIGTERM into ``SystemExit`` so that ``atexit`` closes the loggers.

    Returns True if installed; False when not on the main thread or when the
    application already handles SIGTERM itself.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, _on_sigterm):
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True
