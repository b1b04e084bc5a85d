"""``AuditLogger``: build an entry in the caller's thread, hand it to delivery.

The emit path does only what must happen before an entry leaves the caller:
read the correlation scope, scrub every string (so secrets never reach memory
queues, the spool or a sink), encode once with orjson, count, and append the
bytes to the pipeline's buffer. Queueing ``bytes`` rather than dicts keeps the
garbage collector from walking a large backlog.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

import orjson

from auditrail._event import SCHEMA_VERSION, SYSTEM_ACTOR, Actor, ErrorClass, Outcome
from auditrail._ids import new_event_id_and_timestamp
from auditrail._names import service_name_problem
from auditrail._pipeline import DeliveryPipeline, Durability
from auditrail.context import _actor, _correlation_id
from auditrail.errors import classify_exception, classify_http_status, status_of
from auditrail.exceptions import LoggerClosedError
from auditrail.metrics import AuditMetrics
from auditrail.redact import REDACTED, SecretRedactor, default_redactor
from auditrail.sinks.stdout import StderrSink, StdoutSink
from auditrail.spool import Spool, SpoolClaim, claim_spool_dir
from auditrail.typing import Sink

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_ENTRY_BYTES: Final = 16 * 1024
_MAX_DEPTH: Final = 6
_TargetArg = Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None

EXIT_TIMEOUT_S: Final = 5.0
# StrEnum members hash like their values, so one dict maps both spellings.
_OUTCOMES: Final[dict[str, Outcome]] = {o.value: o for o in Outcome}
_SCALARS: Final = (int, float, bool, type(None))
_NO_TARGET: Final = {"resource_type": "none"}
_CACHE_LIMIT: Final = 4096
# A value under a key named like a credential is redacted even when it has no
# recognisable shape ({"password": "hunter2"}). Whole-key match, so that
# "completion_tokens" or "auth_method" stay readable while "gitlab_token",
# "PRIVATE-TOKEN" or "x-api-key" do not.
_CREDENTIAL_KEY: Final = re.compile(
    r"(?:[a-z0-9]+[-_])*(?:token|secret|password|passwd|api[-_]?key|authorization"
    r"|cookie|set-cookie|credentials?|signature|session[-_]?id)",
    re.IGNORECASE,
)


class AuditLogger:
    """Emits audit entries to one sink through a lossless delivery pipeline.

    Build one per process with ``auditrail.config.AuditConfig.from_env().build()``,
    or explicitly (tests, libraries)::

        logger = AuditLogger(FileSink("audit.jsonl"), service="svc", spool_dir="spool")
        logger.emit("gitlab.api.get_mr_details",
                    target={"resource_type": "merge_request", "project_id": 1, "mr_iid": 2})
        logger.close()

    Args:
        sink: the destination.
        service: the ``service`` field of every entry.
        spool_dir: base directory of the durable spool; each process claims
            its own ``slot-N`` under it, and replays what a dead one left.
        durability: see ``Durability``.
        max_buffer_events: entries held in memory before spilling to the spool.
        max_batch_events: the largest batch handed to the sink.
        flush_interval_s: how long a quiet worker waits before delivering.
        fallback: where entries also go while the sink fails (stdout, or
            stderr when the sink is stdout itself).
        redactor: scrubs strings (default: the process-wide redactor).
        metrics: Prometheus metrics (default: on the global registry).
        max_entry_bytes: the largest encoded entry; bulkier fields are cut.
        enabled: False makes ``emit`` a no-op costing one attribute check.
        exit_timeout_s: how long the ``atexit`` close (also reached from
            SIGTERM, see ``auditrail.runtime``) may deliver before spooling.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        sink: Sink | Sequence[Sink],
        *,
        service: str,
        spool_dir: str | Path,
        durability: Durability | str = Durability.MEMORY,
        max_buffer_events: int = 1000,
        max_batch_events: int = 512,
        flush_interval_s: float = 0.2,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 30.0,
        fallback: Sink | None = None,
        redactor: SecretRedactor | None = None,
        metrics: AuditMetrics | None = None,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        enabled: bool = True,
        exit_timeout_s: float = EXIT_TIMEOUT_S,
    ) -> None:
        problem = service_name_problem(service)
        if problem is not None:
            raise ValueError(f"service {problem}")
        if max_entry_bytes < 1024:
            raise ValueError("max_entry_bytes must be at least 1024")
        self.service = service
        self.enabled = enabled
        self.exit_timeout_s = exit_timeout_s
        sinks: list[Sink] = list(sink) if isinstance(sink, Sequence) else [sink]
        names = [s.name for s in sinks]
        if not sinks or len(set(names)) != len(names):
            raise ValueError(f"need at least one sink, with distinct names; got {names}")
        self.sinks = tuple(sinks)
        self._closed = False
        self._redactor = redactor if redactor is not None else default_redactor
        self._clean = self._redactor.clean
        self._metrics = metrics if metrics is not None else AuditMetrics.for_registry()
        self._max_entry_bytes = max_entry_bytes
        self._actors: dict[Actor, tuple[dict[str, str], bool]] = {}
        self._keys: dict[Any, tuple[str, bool]] = {}
        self._generation = self._redactor.generation
        self._count = self._metrics.count_entry
        self._claim: SpoolClaim | None = None
        self._pipelines: tuple[DeliveryPipeline, ...] = ()
        self._submit: Callable[[bytes], None] = _discard
        if not enabled:
            return
        base = Path(spool_dir)
        self._claim = claim_spool_dir(base)
        if fallback is None:
            to_stdout = any(isinstance(s, StdoutSink) for s in sinks)
            fallback = StderrSink() if to_stdout else StdoutSink()
        # One pipeline per destination, each with its own buffer and spool, so
        # a slow or dead destination never holds back or duplicates into another.
        self._pipelines = tuple(
            DeliveryPipeline(
                s,
                Spool(self._claim.directory / s.name, [s.name]),
                fallback=fallback,
                metrics=self._metrics,
                durability=Durability(durability),
                max_buffer_events=max_buffer_events,
                max_batch_events=max_batch_events,
                flush_interval_s=flush_interval_s,
                retry_initial_s=retry_initial_s,
                retry_max_s=retry_max_s,
                orphan_base=base,
            )
            for s in sinks
        )
        if len(self._pipelines) == 1:
            self._submit = self._pipelines[0].submit
        else:
            submits = [p.submit for p in self._pipelines]

            def fan_out(line: bytes) -> None:
                for submit in submits:
                    submit(line)

            self._submit = fan_out
        _live_loggers.add(self)

    def __repr__(self) -> str:
        return f"AuditLogger(service={self.service!r}, pipelines={list(self._pipelines)!r})"

    @property
    def pipeline(self) -> DeliveryPipeline | None:
        """The first destination's delivery pipeline (None when disabled)."""
        return self._pipelines[0] if self._pipelines else None

    @property
    def pipelines(self) -> tuple[DeliveryPipeline, ...]:
        """One delivery pipeline per destination (empty when disabled)."""
        return self._pipelines

    # -- emitting -----------------------------------------------------------

    def emit(
        self,
        action: str,
        *,
        outcome: Outcome | str = Outcome.SUCCESS,
        target: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
        error: ErrorClass | str | None = None,
        error_message: str | None = None,
        duration_ms: float | None = None,
        http_status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> str:
        """Record one action; return its ``event_id`` ("" when disabled).

        Never blocks on I/O to a sink. A failure without an ``error`` class
        gets one from ``http_status``, or ``internal_error``.

        Raises:
            LoggerClosedError: the logger is closed (the call is counted).
        """
        if not self.enabled:
            return ""
        if self._closed:
            self._metrics.emit_after_close.inc()
            raise LoggerClosedError(f"audit logger closed; refused {action!r}")
        clean = self._clean
        if self._redactor.generation != self._generation:
            self._forget_cleaned()
        event_id, timestamp = new_event_id_and_timestamp()
        correlation_id = _correlation_id.get()
        if actor is None:
            actor = _actor.get() or SYSTEM_ACTOR
        outcome = _OUTCOMES[outcome]
        action, truncated = clean(action)
        # An actor repeats for a whole scope: clean it once.
        cached_actor = self._actors.get(actor)
        if cached_actor is None:
            cached_actor = self._clean_actor(actor)
        actor_dict, cut = cached_actor
        truncated |= cut
        entry: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": event_id,
            "timestamp": timestamp,
            "event_type": "audit",
            "action": action,
            "actor": actor_dict,
            "target": _NO_TARGET,
            "outcome": outcome,
            "correlation_id": correlation_id or event_id,
            "service": self.service,
        }
        if target:
            cleaned_target, cut = self._clean_target(target)
            entry["target"] = cleaned_target
            truncated |= cut
        if correlation_id is None:
            entry["uncorrelated"] = True
        if outcome is Outcome.FAILURE:
            if error is None:
                error = (
                    classify_http_status(http_status) if http_status else None
                ) or ErrorClass.INTERNAL_ERROR
            entry["error"] = ErrorClass(error)
            if error_message:
                entry["error_message"], cut = clean(error_message)
                truncated |= cut
        if duration_ms is not None:
            entry["duration_ms"] = round(duration_ms, 3) if duration_ms > 0 else 0.0
        if http_status is not None:
            entry["http_status"] = int(http_status)
        if details:
            entry["details"], cut = self._clean_value(details, 0)
            truncated |= cut
        if truncated:
            entry["truncated"] = True
        # orjson returns a bytes object with ~4 KiB of spare capacity; a
        # right-sized copy keeps a queued entry at ~0.5 KiB and avoids the
        # page faults that made emit ~15x slower under backlog (measured).
        line = memoryview(orjson.dumps(entry)).tobytes()
        if len(line) > self._max_entry_bytes:
            line = self._shrink(entry)
        self._count(action, outcome)
        self._submit(line)
        return event_id

    def _forget_cleaned(self) -> None:
        # A secret was registered (or the length limit changed) since these
        # were cleaned: clean them again.
        self._generation = self._redactor.generation
        self._actors = {}
        self._keys = {}

    def _clean_actor(self, actor: Actor) -> tuple[dict[str, str], bool]:
        actor_type, cut_type = self._clean(actor.type)
        actor_id, cut_id = self._clean(actor.id)
        result = ({"type": actor_type, "id": actor_id}, cut_type or cut_id)
        if len(self._actors) >= _CACHE_LIMIT:
            self._actors.clear()
        self._actors[actor] = result
        return result

    def _key(self, key: Any) -> tuple[str, bool]:
        """A cleaned mapping key, and whether it names a credential (memoised)."""
        found = self._keys.get(key)
        if found is None:
            cleaned = self._clean(key if type(key) is str else str(key))[0]
            found = (cleaned, _CREDENTIAL_KEY.fullmatch(cleaned) is not None)
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            self._keys[key] = found
        return found

    def _clean_target(self, target: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        clean = self._clean
        out: dict[str, Any] = {"resource_type": "none"}
        truncated = False
        for key, value in target.items():
            k, secret = self._key(key)
            if secret and value is not None:
                out[k] = REDACTED
            elif type(value) is str:
                out[k], cut = clean(value)
                truncated |= cut
            elif isinstance(value, _SCALARS):
                out[k] = value
            else:
                out[k], cut = clean(str(value))
                truncated |= cut
        return out, truncated

    def _clean_value(self, value: Any, depth: int) -> tuple[Any, bool]:
        if isinstance(value, _SCALARS):
            return value, False
        if isinstance(value, str):
            return self._clean(value)
        if depth >= _MAX_DEPTH:
            return "[nested too deep]", True
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            truncated = False
            for key, item in value.items():
                k, secret = self._key(key)
                if secret and item is not None:
                    out[k] = REDACTED
                    continue
                out[k], cut = self._clean_value(item, depth + 1)
                truncated |= cut
            return out, truncated
        if isinstance(value, list | tuple | set | frozenset):
            items = []
            truncated = False
            for item in value:
                cleaned, cut = self._clean_value(item, depth + 1)
                items.append(cleaned)
                truncated |= cut
            return items, truncated
        return self._clean(str(value))

    def _shrink(self, entry: dict[str, Any]) -> bytes:
        # Over the size limit: drop details first, then cut every string
        # short. The entry still says what happened, and that it was cut.
        entry["truncated"] = True
        details = entry.pop("details", None)
        if details is not None:
            entry["details"] = {"_dropped_bytes": len(orjson.dumps(details))}
        line = memoryview(orjson.dumps(entry)).tobytes()
        if len(line) <= self._max_entry_bytes:
            return line
        short = SecretRedactor(max_field_chars=256)
        for key in ("error_message", "action"):
            if key in entry:
                entry[key] = short.clean(entry[key])[0]
        entry["actor"] = {k: short.clean(v)[0] for k, v in entry["actor"].items()}
        entry["target"] = {
            k: (short.clean(v)[0] if isinstance(v, str) else v) for k, v in entry["target"].items()
        }
        return memoryview(orjson.dumps(entry)).tobytes()

    def audited(
        self,
        action: str,
        *,
        target: _TargetArg = None,
        details: Mapping[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> Audited:
        """Time a block or function and record its outcome.

        As a context manager it yields an ``AuditCall`` that the block can
        annotate (``http_status``, more ``target`` or ``details``, or
        ``fail()``). As a decorator (sync or async) ``target`` may be a
        callable receiving the function's arguments. The caller's exception
        is recorded (class and redacted message) and re-raised untouched.
        """
        return Audited(self, action, target, details, actor)

    # -- lifecycle ----------------------------------------------------------

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything emitted so far reached the sink; False at the deadline."""
        deadline = time.monotonic() + timeout_s
        results = [p.flush(max(0.0, deadline - time.monotonic())) for p in self._pipelines]
        return all(results)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop accepting entries, deliver until the deadline, keep the rest in the spool.

        Idempotent. Returns True when everything reached the sink (False means
        the remainder is safe in the spool and will be replayed on next start).
        """
        self._closed = True
        _live_loggers.discard(self)
        deadline = time.monotonic() + timeout_s
        for pipeline in self._pipelines:
            pipeline.begin_close(deadline)
        # The hand-over to the spool runs on its own thread: Python runs signal
        # handlers only on the main thread, so a second SIGTERM (or any handler
        # that raises) can interrupt this wait but never the hand-over itself.
        # An interruption cuts the deadline short; the exception is re-raised
        # once every entry is delivered or spooled.
        results: list[bool] = []
        done = threading.Event()

        def hand_over() -> None:
            try:
                results.extend(p.finish_close() for p in self._pipelines)
            finally:
                done.set()

        interrupted: BaseException | None = None
        _closing.add(self)
        try:
            threading.Thread(target=hand_over, name="auditrail-close").start()
            # Not Thread.join: on 3.11 an exception raised inside join() marks
            # the still-running thread as finished (bpo-45274's fix), and the
            # interpreter would exit under it.
            while not done.is_set():
                try:
                    done.wait(0.05)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    interrupted = interrupted or exc
                    self.hurry()
        finally:
            _closing.discard(self)
        if self._claim is not None:
            self._claim.release()
        if interrupted is not None:
            raise interrupted
        return len(results) == len(self._pipelines) and all(results)

    def hurry(self) -> None:
        """During ``close``: stop delivering now and hand what is left to the spool.

        What a second SIGTERM during shutdown does (see ``auditrail.runtime``).
        """
        for pipeline in self._pipelines:
            pipeline.hurry()

    async def aflush(self, timeout_s: float = 5.0) -> bool:
        """``flush`` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.flush, timeout_s)

    async def aclose(self, timeout_s: float = 5.0) -> bool:
        """``close`` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.close, timeout_s)

    def __enter__(self) -> AuditLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Strong references: a logger only referenced by a frame that SIGTERM's
# SystemExit unwinds would otherwise vanish before atexit could close it (and
# its buffer with it). close() removes the reference.
_live_loggers: set[AuditLogger] = set()
# Loggers inside close() right now, for the SIGTERM handler.
_closing: set[AuditLogger] = set()


_exiting = False


def hurry_closing_loggers() -> bool:
    """Cut the shutdown of every logger that is closing now.

    Returns False when no shutdown is under way (neither a ``close`` nor the
    interpreter's exit), so the caller may treat the signal as a first one.
    """
    closing = list(_closing)
    for logger in closing:
        logger.hurry()
    return bool(closing) or _exiting


def _discard(line: bytes) -> None:
    return None


@atexit.register
def _close_at_exit() -> None:
    # Like logging.shutdown: whatever is still buffered at interpreter exit
    # is delivered or spooled, never abandoned in memory.
    global _exiting
    _exiting = True
    for logger in list(_live_loggers):
        # One logger's interrupted close must not leave the next one unclosed.
        with contextlib.suppress(BaseException):
            logger.close(logger.exit_timeout_s)


class AuditCall:
    """What an ``audited`` block may add to its entry before it is emitted.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("details", "error", "error_message", "http_status", "outcome", "target")

    def __init__(self, target: dict[str, Any], details: dict[str, Any]) -> None:
        self.target = target
        self.details = details
        self.http_status: int | None = None
        self.outcome: Outcome | None = None
        self.error: ErrorClass | None = None
        self.error_message: str | None = None

    def fail(self, error: ErrorClass | str, message: str | None = None) -> None:
        """Record a failure that raised no exception (e.g. a refused request)."""
        self.outcome = Outcome.FAILURE
        self.error = ErrorClass(error)
        self.error_message = message


class Audited:
    """Context manager and decorator returned by ``AuditLogger.audited``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        logger: AuditLogger,
        action: str,
        target: _TargetArg,
        details: Mapping[str, Any] | None,
        actor: Actor | None,
    ) -> None:
        self._logger = logger
        self._action = action
        self._target = target
        self._details = details
        self._actor = actor
        self._pending: tuple[AuditCall, int] | None = None

    def _start(self, target: Mapping[str, Any] | None) -> tuple[AuditCall, int]:
        return AuditCall(dict(target or {}), dict(self._details or {})), time.perf_counter_ns()

    def _finish(self, pending: tuple[AuditCall, int], exc: BaseException | None) -> None:
        call, started = pending
        duration_ms = (time.perf_counter_ns() - started) / 1e6
        outcome, error, message, status = (
            call.outcome,
            call.error,
            call.error_message,
            call.http_status,
        )
        if exc is not None:
            outcome = Outcome.FAILURE
            error = error or classify_exception(exc)
            message = message or f"{type(exc).__name__}: {exc}"
            status = status if status is not None else status_of(exc)
        elif outcome is None and status is not None and status >= 400:
            outcome = Outcome.FAILURE
            error = error or classify_http_status(status)
        try:
            self._logger.emit(
                self._action,
                outcome=outcome or Outcome.SUCCESS,
                target=call.target or None,
                actor=self._actor,
                error=error,
                error_message=message,
                duration_ms=duration_ms,
                http_status=status,
                details=call.details or None,
            )
        except LoggerClosedError:
            if exc is None:
                raise
            # Never replace the caller's own exception with ours.

    def __enter__(self) -> AuditCall:
        if self._pending is not None:
            raise RuntimeError("an audited() block is not re-entrant; call audited() again")
        target = None if callable(self._target) else self._target
        self._pending = self._start(target)
        return self._pending[0]

    def _exit(self, exc: BaseException | None) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        self._finish(pending, exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> AuditCall:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    def _target_for(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        if callable(self._target):
            return self._target(*args, **kwargs)
        return self._target

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        audited = self
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                pending = audited._start(audited._target_for(args, kwargs))
                try:
                    result = await async_fn(*args, **kwargs)
                except BaseException as exc:
                    audited._finish(pending, exc)
                    raise
                audited._finish(pending, None)
                return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            pending = audited._start(audited._target_for(args, kwargs))
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                audited._finish(pending, exc)
                raise
            audited._finish(pending, None)
            return result

        return wrapper
