"""The classifier: map exceptions and HTTP statuses to ``ErrorClass``.

(Not to be confused with ``auditkeep.exceptions``, the exceptions auditkeep raises.)

The library depends on no HTTP client, so foreign exceptions are recognised by
their class names along the MRO (``httpx.ConnectTimeout`` →
``TimeoutException`` → ``timeout``) and by a ``status_code`` found on the
exception or its ``response``. An exception may also declare its own class with
an ``audit_error_class`` attribute; that always wins.

A call that ended by a ``BaseException`` that is no ``Exception``
(``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``) was
abandoned by its caller before an answer came: ``timeout``, the class whose
meaning is "no answer in the time the caller allowed, outcome unknown". Inside
a task, ``asyncio.timeout()`` and ``wait_for`` deadlines arrive as exactly that
``CancelledError``. The schema's vocabulary stays as published; audited calls
add ``details.cancelled: true`` to tell these apart (``auditkeep._call``).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from typing import Final

from auditkeep._event import ErrorClass

_NAME_CLASSES: Final[dict[str, ErrorClass]] = {
    # httpx / httpcore
    "TimeoutException": ErrorClass.TIMEOUT,
    "ConnectError": ErrorClass.NETWORK_ERROR,
    "ReadError": ErrorClass.NETWORK_ERROR,
    "WriteError": ErrorClass.NETWORK_ERROR,
    "RemoteProtocolError": ErrorClass.NETWORK_ERROR,
    "NetworkError": ErrorClass.NETWORK_ERROR,
    "ProxyError": ErrorClass.NETWORK_ERROR,
    # requests / urllib3
    "ConnectTimeout": ErrorClass.TIMEOUT,
    "ReadTimeout": ErrorClass.TIMEOUT,
    "ConnectionError": ErrorClass.NETWORK_ERROR,
    "NewConnectionError": ErrorClass.NETWORK_ERROR,
    "ProtocolError": ErrorClass.NETWORK_ERROR,
    # validation libraries (pydantic, jsonschema, msgspec)
    "ValidationError": ErrorClass.VALIDATION_ERROR,
    # git wrappers
    "GitError": ErrorClass.GIT_ERROR,
    "GitCommandError": ErrorClass.GIT_ERROR,
}


def classify_http_status(status: int) -> ErrorClass | None:
    """Return the error class of an HTTP status, or None for a success (< 400).

    .. versionadded:: 0.1.0
    """
    if status < 400:
        return None
    if status in (401, 403):
        return ErrorClass.AUTH_FAILURE
    if status == 404:
        return ErrorClass.NOT_FOUND
    if status == 429:
        return ErrorClass.RATE_LIMIT
    if status in (408, 504):
        return ErrorClass.TIMEOUT
    if status >= 500:
        return ErrorClass.SERVER_ERROR
    if status == 422:
        return ErrorClass.VALIDATION_ERROR
    return ErrorClass.CLIENT_ERROR


def status_of(exc: BaseException) -> int | None:
    """Find an HTTP status carried by an exception (``status_code`` or ``response.status_code``).

    .. versionadded:: 0.1.0
    """
    for holder in (exc, getattr(exc, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int) and 100 <= status <= 599:
            return status
    return None


def classify_exception(exc: BaseException) -> ErrorClass:
    """Return the error class of an exception; ``internal_error`` when unknown.

    .. versionadded:: 0.1.0
    """
    declared = getattr(exc, "audit_error_class", None)
    if declared is not None:
        return ErrorClass(declared)
    if not isinstance(exc, Exception):
        return ErrorClass.TIMEOUT  # cancelled or interrupted: see the module docstring
    status = status_of(exc)
    if status is not None:
        return classify_http_status(status) or ErrorClass.INTERNAL_ERROR
    for cls in type(exc).__mro__:
        found = _NAME_CLASSES.get(cls.__name__)
        if found is not None:
            return found
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | socket.timeout):
        return ErrorClass.TIMEOUT
    if isinstance(exc, ConnectionError | socket.gaierror | socket.herror):
        return ErrorClass.NETWORK_ERROR
    if isinstance(exc, subprocess.CalledProcessError):
        cmd = exc.cmd if isinstance(exc.cmd, list | tuple) else str(exc.cmd).split()
        if cmd and str(cmd[0]).rsplit("/", 1)[-1] == "git":
            return ErrorClass.GIT_ERROR
    if isinstance(exc, ValueError | TypeError | KeyError | UnicodeError):
        return ErrorClass.VALIDATION_ERROR
    return ErrorClass.INTERNAL_ERROR
