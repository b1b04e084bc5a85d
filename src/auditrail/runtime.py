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

from auditrail.config import AuditConfig
from auditrail.logger import AuditLogger, hurry_closing_loggers

_current: AuditLogger | None = None
_lock = threading.Lock()


def configure(
    environ: Mapping[str, str] | None = None,
    *,
    service: str | None = None,
    handle_sigterm: bool = True,
) -> AuditLogger:
    """Build the process-wide logger from ``AUDIT_LOG_*`` and make it current.

    Raises:
        ConfigError: an invalid setting (the message names the variable).
    """
    global _current
    logger = AuditConfig.from_env(environ, service=service).build()
    with _lock:
        previous, _current = _current, logger
    if previous is not None:
        previous.close()  # its own shutdown_timeout_s
    if handle_sigterm:
        install_sigterm_handler()
    return logger


def get_logger() -> AuditLogger:
    """Return the process-wide logger, configuring it from the environment on first use."""
    with _lock:
        current = _current
    return current if current is not None else configure(handle_sigterm=False)


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
