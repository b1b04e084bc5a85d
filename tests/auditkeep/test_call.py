"""One way to audit a call: ``audited()`` (block and decorator) and ``AuditedTransport`` alike.

The same ending (a return, an error, a cancelled task, another ``BaseException``,
a logger closed meanwhile) must give the same entry through every path, because
every path records through ``auditkeep._call``. Real output, read back and
validated against the published schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest

from auditkeep import AuditLogger, InMemorySink, LoggerClosedError
from auditkeep.integrations.httpx import AuditedTransport, Route, RouteTable
from auditkeep.testing import capture_events, validate_entries

ACTION = "test.call.run"
ROUTES = RouteTable("test", (Route("GET", "/thing", ACTION, "thing"),))
Body = Callable[[], Awaitable[None]]


class Interrupted(BaseException):
    """A BaseException that is neither an Exception nor a cancellation."""


async def via_block(logger: AuditLogger, body: Body) -> None:
    async with logger.audited(ACTION, target={"resource_type": "thing"}):
        await body()


async def via_decorator(logger: AuditLogger, body: Body) -> None:
    @logger.audited(ACTION, target={"resource_type": "thing"})
    async def run() -> None:
        await body()

    await run()


async def via_transport(logger: AuditLogger, body: Body) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await body()
        return httpx.Response(200)

    transport = AuditedTransport(logger, ROUTES, wrapped=httpx.MockTransport(handler))
    async with httpx.AsyncClient(base_url="http://svc.test", transport=transport) as client:
        await client.get("/thing")


PATHS: dict[str, Callable[[AuditLogger, Body], Coroutine[Any, Any, None]]] = {
    "block": via_block,
    "decorator": via_decorator,
    "transport": via_transport,
}


def run(
    path: str, logger: AuditLogger, ending: str, *, close_first: bool = False
) -> BaseException | None:
    """Run one audited call through ``path``, ended by ``ending``; return what the caller got.

    ``close_first``: the logger is closed while the call runs (a shutdown racing it).
    """
    raised: list[BaseException] = []
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        if close_first:
            logger.close(1.0)
        if ending == "error":
            raise ConnectionRefusedError("refused by svc.test")
        if ending == "interrupted":
            raise Interrupted("stop now")
        if ending == "cancelled":
            await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(PATHS[path](logger, body))
        await started.wait()
        if ending == "cancelled":
            await asyncio.sleep(0.01)  # the call is waiting inside the audited part
            task.cancel()
        try:
            await task
        except BaseException as exc:  # noqa: BLE001 - what the caller got is the result
            raised.append(exc)

    asyncio.run(main())
    return raised[0] if raised else None


def entries(logger: AuditLogger, sink: InMemorySink) -> list[dict[str, Any]]:
    assert logger.flush(5.0)
    return validate_entries(sink.lines)


def outcome_of(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (
        entry["action"],
        entry["outcome"],
        entry.get("error"),
        entry.get("error_message", "").split(":")[0],
        entry.get("details", {}).get("cancelled"),
    )


@pytest.mark.parametrize("path", sorted(PATHS))
class TestOneWayToAuditACall:
    @pytest.mark.parametrize(
        ("ending", "caller_gets", "expected"),
        [
            ("success", None, (ACTION, "success", None, "", None)),
            (
                "error",
                ConnectionRefusedError,
                (ACTION, "failure", "network_error", "ConnectionRefusedError", None),
            ),
            (
                "cancelled",
                asyncio.CancelledError,
                (ACTION, "failure", "timeout", "CancelledError", True),
            ),
            ("interrupted", Interrupted, (ACTION, "failure", "timeout", "Interrupted", True)),
        ],
        ids=["success", "error", "cancelled", "interrupted"],
    )
    def test_each_ending_gives_exactly_one_entry(
        self, path: str, ending: str, caller_gets: type[BaseException] | None, expected: tuple[Any]
    ) -> None:
        """One entry per call however it ends; cancellation is a failure with ``cancelled``."""
        with capture_events() as (logger, sink):
            got = run(path, logger, ending)
            assert type(got) is caller_gets if caller_gets else got is None
            assert [outcome_of(e) for e in entries(logger, sink)] == [expected]

    @pytest.mark.parametrize("ending", ["error", "cancelled", "interrupted"])
    def test_a_closed_logger_never_replaces_the_callers_exception(
        self, path: str, ending: str
    ) -> None:
        """The logger closed while the call ran: the caller still gets its own exception."""
        expected = {
            "error": ConnectionRefusedError,
            "cancelled": asyncio.CancelledError,
            "interrupted": Interrupted,
        }[ending]
        with capture_events() as (logger, sink):
            got = run(path, logger, ending, close_first=True)
            assert type(got) is expected
            assert sink.lines == []

    def test_a_closed_logger_after_a_successful_call_is_said(self, path: str) -> None:
        """Nothing of the caller's to protect: the unrecorded call raises LoggerClosedError."""
        with capture_events() as (logger, _):
            got = run(path, logger, "success", close_first=True)
            assert type(got) is LoggerClosedError


def test_sync_block_interrupted_by_keyboard_interrupt() -> None:
    """Ctrl-C inside a plain ``with audited()`` block: one failure entry, re-raised as it was."""
    interrupt = KeyboardInterrupt()
    with capture_events() as (logger, sink):
        with pytest.raises(KeyboardInterrupt) as raised, logger.audited(ACTION):
            raise interrupt
        (entry,) = entries(logger, sink)
    assert raised.value is interrupt
    assert outcome_of(entry) == (ACTION, "failure", "timeout", "KeyboardInterrupt", True)


def test_a_call_is_recorded_once_even_if_finished_twice() -> None:
    """The helper's guard: a second ``finish`` (an error path after success) adds nothing."""
    from auditkeep._call import PendingCall

    with capture_events() as (logger, sink):
        pending = PendingCall(logger, ACTION, {"resource_type": "thing"}, None, None)
        pending.finish(None)
        pending.finish(ConnectionRefusedError("late"))
        assert [outcome_of(e) for e in entries(logger, sink)] == [
            (ACTION, "success", None, "", None)
        ]
