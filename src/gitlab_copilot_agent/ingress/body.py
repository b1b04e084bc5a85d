"""The request body, read under a size limit and one total deadline.

The deadline covers the whole body, not each chunk, so a sender trickling a
byte every few seconds, or declaring a ``Content-Length`` longer than what it
sends, is cut off after ``timeout_s`` like any other; a client that goes away
mid-body is reported as such. Either way the caller audits the request, and
nothing is raised past it.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from gitlab_copilot_agent.webhook_auth import Rejection


async def read_body(
    request: Request, *, limit: int, declared: int | None, timeout_s: float
) -> bytes | Rejection:
    """The raw body, or why it could not be had (never buffers more than ``limit`` + one chunk).

    Args:
        request: the request whose body to read.
        limit: the largest body accepted, in bytes.
        declared: its ``Content-Length``, already parsed (None when absent).
        timeout_s: the deadline for the whole body.
    """
    if declared is not None and declared > limit:
        return Rejection.BODY_TOO_LARGE
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return Rejection.BODY_TOO_LARGE
    except TimeoutError:
        return Rejection.BODY_TIMEOUT
    except ClientDisconnect:
        return Rejection.CLIENT_DISCONNECTED
    return bytes(body)
