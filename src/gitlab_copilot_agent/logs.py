"""The agent's operational log: structlog, scrubbed, on stderr.

Operational logs (start, stop, a workflow that failed) are for operators; the
audit trail is for security and goes through ``auditkeep``. Both are scrubbed
by the same redactor (``auditkeep.redact.default_redactor``, where the
service registers its configured secrets at start):

- every key and value of every event goes through the same structure
  scrubber as the audit trail (``default_redactor.scrub``): strings redacted
  first and cut after, values under credential keys (``token``,
  ``clientSecret``...) replaced whole, anything that is not a plain JSON value
  (an exception object, a URL) scrubbed as the text it renders to;
- exceptions are rendered to text first (``format_exc_info``), scrubbed whole
  (a PEM key spans lines), and only then cut to their last lines, so no
  exception message, URL or error body reaches the output unscrubbed;
- records of other libraries' stdlib loggers (uvicorn, asyncio, httpx) pass
  through the same chain once ``configure_logging`` has installed the handler,
  and so do warnings and uncaught exceptions in any thread.

The agent's loggers scrub even when ``configure_logging`` was never called
(an app built by a test): the scrubbing runs in the logger's own chain, not in
the handler.

Output goes to stderr, keeping stdout for the audit trail when
``AUDIT_LOG_DESTINATION=stdout``: JSON lines by default, a readable console
rendering when stderr is a terminal (``LOG_FORMAT`` overrides either way).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
from typing import IO, Any, Final

import structlog

from auditkeep.redact import REDACTED, default_redactor
from gitlab_copilot_agent.settings import LogSettings

__all__ = ["configure_logging", "get_logger", "scrub_event"]

MAX_EXCEPTION_LINES: Final = 200
"""A rendered traceback keeps at most its last lines (the end names the error)."""
MAX_EXCEPTION_CHARS: Final = 256 * 1024
"""...and at most its last characters, scrubbed before they are cut."""
_MULTILINE: Final = frozenset({"exception", "stack"})
_INTERNAL: Final = frozenset({"_record", "_from_structlog"})


def _clean(text: str) -> str:
    return default_redactor.clean(text)[0]


def _scrub_lines(text: str) -> str:
    # Scrubbed whole before it is cut to its last lines (a credential over
    # several lines, a PEM key, only matches whole), then cleaned line by line
    # so a traceback stays readable on a terminal: control characters escaped.
    tail = default_redactor.scrub_then_cut(text, MAX_EXCEPTION_CHARS, tail=True)
    lines = tail.splitlines()[-MAX_EXCEPTION_LINES:]
    return "\n".join(_clean(line) for line in lines)


def scrub_event(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: every key and value of the event, scrubbed (exceptions too).

    Values go through the audit trail's structure scrubber: strings redacted
    and cut, values under credential keys (``token=...``) replaced whole,
    anything else (an exception object, a URL) scrubbed as its text.
    """
    scrubbed: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key in _INTERNAL:
            scrubbed[key] = value
        elif key in _MULTILINE and isinstance(value, str):
            scrubbed[key] = _scrub_lines(value)
        else:
            name, secret, _ = default_redactor.key(key)
            scrubbed[name] = (
                REDACTED if secret and value is not None else default_redactor.scrub(value)
            )
    return scrubbed


# Runs for the agent's own events (in the logger) and for other libraries'
# stdlib records (in the handler's formatter), so both are scrubbed the same way.
_SHARED: Final[list[Any]] = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
    scrub_event,
]


def get_logger(name: str) -> Any:
    """A structlog logger for ``name`` whose events are scrubbed before they leave it."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


_log = get_logger(__name__)
_HANDLER_NAME: Final = "gitlab-copilot-agent"


def configure_logging(settings: LogSettings | None = None, stream: IO[str] | None = None) -> None:
    """Send every stdlib log record (the agent's, uvicorn's, asyncio's) through the scrubber.

    Installs one handler on the root logger (replacing one installed here
    before), routes ``warnings`` and uncaught exceptions (main thread and
    others) into it, and sets the level.
    """
    settings = settings or LogSettings()
    out = stream if stream is not None else sys.stderr
    use_json = settings.format == "json" or (
        settings.format == "auto" and not (hasattr(out, "isatty") and out.isatty())
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], error: BaseException, tb: TracebackType | None
) -> None:
    _log.critical("uncaught exception", exc_info=(kind, error, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    _log.critical(
        "uncaught exception in a thread",
        thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
