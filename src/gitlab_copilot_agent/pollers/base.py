"""The poll cycle runner: one correlation scope per iteration, counts, backoff, clean shutdown.

Each iteration opens its own correlation scope (actor ``poll_cycle``, id
``<poller>``) and records, around whatever the cycle does:

- ``poll.cycle.started`` (target ``resource_type=poller, poller``; ``cycle``
  number, ``interval_s``);
- ``poll.cycle.finished``: ``seen, started, skipped, failed`` and
  ``duration_ms``; a failure (the listing call failed: its own entry says how)
  carries that call's error class; a cycle cancelled at shutdown is a failure
  with ``details.cancelled=true`` and the counts so far.

Everything the cycle causes — API calls, the coding task and its process (the
executor hands the scope down with ``auditkeep.subprocess_env``) — carries the
cycle's id, so ``auditkeep trace <id>`` is the whole iteration.

After a failed cycle the next waits ``interval * 2**failures`` (at most
``POLL_MAX_BACKOFF_S``), recorded as ``poll.backoff`` (``delay_s``,
``consecutive_failures``, ``error``); a successful cycle resets it.

Shutdown (``run_forever`` cancelled by the service's lifespan): a cycle in
progress gets ``SHUTDOWN_GRACE_S`` to finish, then it is cancelled — either
way its ``poll.cycle.finished`` is on the trail before the audit logger closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from auditkeep import Actor, ErrorClass, Outcome, classify_exception
from auditkeep.context import correlation_scope
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.logs import get_logger

__all__ = [
    "BACKOFF",
    "CYCLE_FINISHED",
    "CYCLE_STARTED",
    "SHUTDOWN_GRACE_S",
    "CycleCounts",
    "CycleRunner",
]

CYCLE_STARTED: Final = "poll.cycle.started"
CYCLE_FINISHED: Final = "poll.cycle.finished"
BACKOFF: Final = "poll.backoff"
ACTOR_TYPE: Final = "poll_cycle"
SHUTDOWN_GRACE_S: Final = 10.0

_log = get_logger(__name__)


@dataclass
class CycleCounts:
    """What one cycle did with the items it listed (a cycle updates it as it goes)."""

    seen: int = 0
    started: int = 0
    skipped: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


Cycle = Callable[[CycleCounts], Awaitable[None]]


@dataclass(frozen=True)
class CycleResult:
    correlation_id: str
    counts: CycleCounts
    error: str | None = None


class CycleRunner:
    """Runs ``cycle`` every ``interval_s`` in a fresh ``poll_cycle`` scope.

    Args:
        name: the poller (``jira``, ``gitlab``): the actor id and ``target.poller``.
        cycle: one iteration; it counts into the ``CycleCounts`` it is given.
        audit: the audit logger.
        interval_s: the pause between cycles.
        max_backoff_s: the longest pause after failures.
        shutdown_grace_s: how long a cycle in progress may finish at shutdown.
        sleep: the pause (tests).
    """

    def __init__(
        self,
        name: str,
        cycle: Cycle,
        *,
        audit: AuditLogger,
        interval_s: float,
        max_backoff_s: float = 300.0,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sleep = sleep
        self.name = name
        self._cycle = cycle
        self._audit = audit
        self.interval_s = interval_s
        self.max_backoff_s = max(max_backoff_s, interval_s)
        self._grace = shutdown_grace_s
        self.cycles = 0
        self.failures = 0
        self._current: asyncio.Task[CycleResult] | None = None

    @property
    def target(self) -> dict[str, Any]:
        return {"resource_type": "poller", "poller": self.name}

    async def run_once(self) -> CycleResult:
        """One iteration in its own correlation scope; never raises but for cancellation."""
        self.cycles += 1
        counts = CycleCounts()
        with correlation_scope(Actor(ACTOR_TYPE, self.name)) as cid:
            started = time.monotonic()
            self._audit.emit(
                CYCLE_STARTED,
                target=self.target,
                details={"cycle": self.cycles, "interval_s": self.interval_s},
            )
            try:
                await self._cycle(counts)
            except asyncio.CancelledError:
                self._finished(counts, started, error=ErrorClass.INTERNAL_ERROR, cancelled=True)
                raise
            except Exception as exc:  # noqa: BLE001 - a failed cycle is recorded, the loop goes on
                error = str(classify_exception(exc))
                self._finished(counts, started, error=error, message=_message(exc))
                return CycleResult(cid, counts, error)
            self._finished(counts, started)
            return CycleResult(cid, counts)

    async def run_forever(self) -> None:
        """Cycle until cancelled; see the module docstring for backoff and shutdown."""
        try:
            while True:
                self._current = asyncio.get_running_loop().create_task(self.run_once())
                result = await asyncio.shield(self._current)
                self._current = None
                await self._sleep(self._pause(result))
        except asyncio.CancelledError:
            current = self._current
            if current is not None and not current.done():
                done, _ = await asyncio.wait({current}, timeout=self._grace)
                if not done:
                    current.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await current
            raise

    def _pause(self, result: CycleResult) -> float:
        if result.error is None:
            self.failures = 0
            return self.interval_s
        self.failures += 1
        delay = float(min(self.max_backoff_s, self.interval_s * 2.0 ** min(self.failures, 30)))
        with correlation_scope(Actor(ACTOR_TYPE, self.name), result.correlation_id):
            self._audit.emit(
                BACKOFF,
                outcome=Outcome.FAILURE,
                target=self.target,
                error=result.error,
                error_message=f"the {self.name} poller waits {delay:g} s after a failed cycle",
                details={"delay_s": delay, "consecutive_failures": self.failures},
            )
        _log.warning(
            "poll cycle failed; backing off",
            poller=self.name,
            delay_s=delay,
            error_class=result.error,
        )
        return delay

    def _finished(
        self,
        counts: CycleCounts,
        started: float,
        *,
        error: str | None = None,
        message: str | None = None,
        cancelled: bool = False,
    ) -> None:
        details: dict[str, Any] = {"cycle": self.cycles, **counts.as_dict()}
        if cancelled:
            details["cancelled"] = True
            message = "cancelled at shutdown"
        self._audit.emit(
            CYCLE_FINISHED,
            outcome=Outcome.FAILURE if error else Outcome.SUCCESS,
            target=self.target,
            error=error,
            error_message=message,
            duration_ms=(time.monotonic() - started) * 1000,
            details=details,
        )


def _message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
