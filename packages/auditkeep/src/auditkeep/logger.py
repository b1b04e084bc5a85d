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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, Unpack, cast

import orjson

from auditkeep import _coerce
from auditkeep._call import AuditCall, PendingCall, exception_text
from auditkeep._classify import classify_http_status
from auditkeep._coerce import CHANGED, COERCED, TRUNCATED
from auditkeep._event import (
    ACTION_MAX_CHARS,
    ACTION_PATTERN,
    SCHEMA_VERSION,
    SYSTEM_ACTOR,
    Actor,
    ActorType,
    E,
    ErrorClass,
    Outcome,
)
from auditkeep._event import ERROR_CLASSES as _ERRORS
from auditkeep._event import OUTCOMES as _OUTCOMES
from auditkeep._event import lookup as _lookup
from auditkeep._ids import new_event_id_and_timestamp
from auditkeep._names import service_name_problem
from auditkeep.context import _actor, _correlation_id
from auditkeep.delivery.fanout import FanOut
from auditkeep.delivery.options import DeliveryOptions, DeliverySettings, resolve
from auditkeep.delivery.pipeline import DeliveryPipeline
from auditkeep.exceptions import InvalidEntryError, LoggerClosedError
from auditkeep.metrics import AuditMetrics
from auditkeep.redact import NARROW_FLAT, SecretRedactor, default_redactor
from auditkeep.typing import Sink

if TYPE_CHECKING:
    from auditkeep.integrity.chain import Chainer
    from auditkeep.integrity.options import IntegrityOptions

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_ENTRY_BYTES: Final = 16 * 1024
_TargetArg = Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None

_ACTION: Final = re.compile(ACTION_PATTERN.removeprefix("^").removesuffix("$"))
_NO_TARGET: Final = {"resource_type": "none"}
# The caches hold cleaned values that repeat (actors, action names; the
# scrubber keeps strings and mapping keys). Only values up to _CACHEABLE_CHARS
# are kept, so each cache is bounded in bytes as well as in count.
_FLAGS: Final = TRUNCATED | COERCED
_CACHE_LIMIT: Final = 4096
_CACHEABLE_CHARS: Final = 256
# The shrinker's steps: (longest string kept, most target keys kept).
_SHRINK_STEPS: Final = ((256, 64), (64, 8))
# The core entry's free strings (actor type and id, resource type) are cut to
# this many characters, at most 4 bytes each: with an action of 128 and a
# service of 64 ASCII characters (auditkeep._names) the core entry stays under
# the smallest allowed limit, 1,024 bytes (test_minimal_entry_fits_the_smallest_limit).
_CORE_CHARS: Final = 16

ContextFields = Callable[[], Mapping[str, str] | None]
# The one hook on the emit path: fields every entry takes from the caller's
# context besides the correlation scope (auditkeep.integrations.opentelemetry
# puts trace_id and span_id here). None, the default, costs one global read
# per emit and imports nothing (test_tracing_off_imports_no_opentelemetry).
_context_fields: ContextFields | None = None
_reserved_fields: frozenset[str] = frozenset()


def set_context_fields(provider: ContextFields | None) -> ContextFields | None:
    """Install (or, with None, remove) the emit path's context hook; return the previous one.

    ``provider`` runs once per entry in the emitting thread and returns string
    fields to add (never one the schema names, but ``trace_id`` and
    ``span_id``; never replacing one the entry has), or None. They are not
    scrubbed: a provider hands identifiers, not free text (keys of at most 32
    characters, values of at most 64; longer ones are left out). An exception in it
    costs the entry those fields, never the entry.
    """
    global _context_fields, _reserved_fields
    if provider is not None and not _reserved_fields:
        # Every field the schema names is the logger's to write, whatever it is called
        # by then; only trace_id and span_id are there for a hook.
        from auditkeep._event import load_schema  # once, and only when a hook is set

        _reserved_fields = frozenset(load_schema()["properties"]) - {"trace_id", "span_id"}
    previous, _context_fields = _context_fields, provider
    return previous


class AuditLogger:
    """Emits audit entries to one sink through a lossless delivery pipeline.

    Build the process's logger with ``auditkeep.configure()`` (from
    ``AUDIT_LOG_*``; ``auditkeep.get_logger()`` returns it), or explicitly
    (tests, libraries)::

        logger = AuditLogger(FileSink("audit.jsonl"), service="svc", spool_dir="spool",
                             delivery=DeliveryOptions(durability=Durability.SPOOL))
        logger.emit("gitlab.api.get_mr_details",
                    target={"resource_type": "merge_request", "project_id": 1, "mr_iid": 2})
        logger.close()

    Args:
        sink: the destination.
        service: the ``service`` field of every entry.
        spool_dir: base directory of the durable spool; each process claims
            its own ``slot-N`` under it, and replays what a dead one left.
        delivery: how entries travel (``DeliveryOptions``: durability, buffer,
            batches, retries, the shutdown deadline...). Its fields may also
            be given as keywords (``max_buffer_events=200``), over ``delivery``.
        fallback: where entries also go while the sink fails (stdout, or
            stderr when the sink is stdout itself).
        redactor: the scrubber of every string, key and structure (default:
            the process-wide one, ``auditkeep.redact.default_redactor``).
        metrics: Prometheus metrics (default: on the global registry).
        max_entry_bytes: the largest encoded entry (at least 1,024); bulkier
            entries are cut down, never written whole.
        enabled: False makes ``emit`` a no-op costing one attribute check.
        integrity: chain every entry and write checkpoints (``IntegrityOptions``,
            docs/integrity.md); the chain field counts against ``max_entry_bytes``.

    Raises:
        InvalidOptionError: a delivery setting out of range (also a ``ValueError``).
        SpoolLockedError: every spool slot is held by a live process.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        sink: Sink | Sequence[Sink],
        *,
        service: str,
        spool_dir: str | Path,
        delivery: DeliveryOptions | None = None,
        fallback: Sink | None = None,
        redactor: SecretRedactor | None = None,
        metrics: AuditMetrics | None = None,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        enabled: bool = True,
        integrity: IntegrityOptions | None = None,
        **settings: Unpack[DeliverySettings],
    ) -> None:
        problem = service_name_problem(service)
        if problem is not None:
            raise ValueError(f"service {problem}")
        if max_entry_bytes < 1024:
            raise ValueError("max_entry_bytes must be at least 1024")
        self.service = service
        self.enabled = enabled
        self.delivery = resolve(delivery, settings)
        """The delivery settings in force."""
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
        # Caches of cleaned values, bounded in count and bytes (_CACHEABLE_CHARS).
        self._actors: dict[int, tuple[Actor, dict[str, str], int]] = {}
        self._actions: set[str] = set()
        self._generation = self._redactor.generation
        self._count = self._metrics.count_entry
        self._fanout: FanOut | None = None
        self._submit: Callable[[bytes], None] = _discard
        self._chain: Chainer | None = None
        if not enabled:
            return
        self._fanout = FanOut(
            sinks,
            spool_dir=spool_dir,
            options=self.delivery,
            metrics=self._metrics,
            fallback=fallback,
        )
        self._submit = self._fanout.submit
        self._spliced = False
        if integrity is not None:
            self._start_chain(integrity)
        _live_loggers.add(self)

    def _start_chain(self, integrity: IntegrityOptions) -> None:
        """Route every entry through a ``Chainer`` (encoded bytes in, chained bytes out)."""
        from auditkeep.integrity._format import CHAIN_FIELD_MAX_BYTES
        from auditkeep.integrity.chain import Chainer

        self._max_entry_bytes -= CHAIN_FIELD_MAX_BYTES
        self._chain = Chainer(
            integrity, service=self.service, submit=self._submit, count=self._count
        )
        for secret in self._chain.secret_texts():
            self._redactor.register(secret)
        self._submit = self._chain.submit
        self._spliced = True
        self._chain.start()

    def __repr__(self) -> str:
        return f"AuditLogger(service={self.service!r}, pipelines={list(self.pipelines)!r})"

    @property
    def closed(self) -> bool:
        """True once ``close()`` began: ``emit`` then raises ``LoggerClosedError``."""
        return self._closed

    @property
    def pipeline(self) -> DeliveryPipeline | None:
        """The first destination's delivery pipeline (None when disabled)."""
        return self.pipelines[0] if self.pipelines else None

    @property
    def pipelines(self) -> tuple[DeliveryPipeline, ...]:
        """One delivery pipeline per destination (empty when disabled)."""
        return self._fanout.pipelines if self._fanout is not None else ()

    @property
    def shutdown_timeout_s(self) -> float:
        """How long ``close()`` delivers by default (at exit and SIGTERM too) before spooling."""
        return self.delivery.shutdown_timeout_s

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

        Never blocks on I/O to a sink, and never raises because of a value:
        whatever ``target``, ``details``, ``actor``, ``error_message``,
        ``duration_ms`` and ``http_status`` hold, one schema-valid entry of at
        most ``max_entry_bytes`` is written. Strings are scrubbed, then cut
        (flagged ``truncated``). What JSON cannot hold or the schema forbids is
        replaced and the entry flagged ``coerced``: a lone surrogate is escaped
        (``\\udcff``), an integer beyond 64 bits or NaN/infinity is written as
        text, an object whose ``str()`` fails is named by its class, a
        ``target`` or ``details`` that is no mapping is kept as ``{"_value":
        ...}``, an ``http_status`` that is no integer in 100-599 and a
        ``duration_ms`` that is NaN, infinite or no number are dropped (they
        are measured at run time, so the entry is kept without them), a
        negative ``duration_ms`` is clamped to 0. An entry still over the limit
        loses ``details``, then key count and string length, down to its core
        fields. A failure without an ``error`` class gets one from
        ``http_status``, or ``internal_error``.

        Raises:
            InvalidEntryError: a programming error in the call, nothing is
                recorded: ``action`` does not match the schema (dotted lower
                case ``[a-z0-9_]``, at most 128 characters, no credential in
                it), or ``outcome`` / ``error`` is not one of its values.
            LoggerClosedError: the logger is closed (the call is counted).
        """
        if not self.enabled:
            return ""
        if self._closed:
            self._metrics.emit_after_close.inc()
            raise LoggerClosedError(f"audit logger closed; refused {self._describe(action)}")
        if self._redactor.generation != self._generation:
            self._forget_cleaned()
        if type(action) is not str or action not in self._actions:
            action = self._check_action(action)
        try:
            outcome = _OUTCOMES[outcome]
        except Exception:  # noqa: BLE001 - KeyError, or TypeError when unhashable
            outcome = self._vocabulary(_OUTCOMES, outcome, "outcome")
        if error is not None:
            try:
                error = _ERRORS[error]
            except Exception:  # noqa: BLE001 - KeyError, or TypeError when unhashable
                error = self._vocabulary(_ERRORS, error, "error")
        event_id, timestamp = new_event_id_and_timestamp()
        correlation_id = _correlation_id.get()
        if actor is None:
            actor = _actor.get() or SYSTEM_ACTOR
        try:
            # An actor repeats for a whole scope: clean it once. Keyed by
            # identity, so a caller's __hash__/__eq__ never runs here.
            hit = self._actors.get(id(actor))
            if hit is not None and hit[0] is actor:
                actor_dict, flags = hit[1], hit[2]
            else:
                actor_dict, flags = self._clean_actor(actor)
            entry = self._core(event_id, timestamp, action, actor_dict, outcome, correlation_id)
            if target is not None:
                if type(target) is dict:
                    if target:
                        entry["target"], f = self._clean_target(target)
                        flags |= f
                else:
                    entry["target"], f = self._odd_target(target)
                    flags |= f
            if correlation_id is None:
                entry["uncorrelated"] = True
            status = http_status
            if status is not None and not (type(status) is int and 100 <= status <= 599):
                status, f = _coerce.http_status(status)
                flags |= f
            if outcome is Outcome.FAILURE:
                if error is None:
                    error = (
                        classify_http_status(status) if status else None
                    ) or ErrorClass.INTERNAL_ERROR
                entry["error"] = error
                if error_message is not None:
                    if type(error_message) is str:
                        if error_message:
                            entry["error_message"], cut = self._clean(error_message)
                            flags |= cut
                    else:
                        entry["error_message"], f = self._redactor.text(error_message)
                        flags |= f
            if duration_ms is not None:
                if type(duration_ms) is float and 0.0 < duration_ms < 1e308:
                    entry["duration_ms"] = round(duration_ms, 3)
                else:
                    duration, f = _coerce.duration_ms(duration_ms)
                    flags |= f
                    if duration is not None:
                        entry["duration_ms"] = duration
            if status is not None:
                entry["http_status"] = status
            if details is not None:
                if type(details) is dict:
                    if details:
                        room = [self._max_entry_bytes]
                        entry["details"], f = self._redactor.mapping(
                            details.items(), len(details), 0, room
                        )
                        flags |= f
                else:
                    cleaned_details, f = self._odd_details(details)
                    flags |= f
                    if cleaned_details:
                        entry["details"] = cleaned_details
            if flags:
                if flags & TRUNCATED:
                    entry["truncated"] = True
                if flags & COERCED:
                    entry["coerced"] = True
            try:
                raw = orjson.dumps(entry)
            except orjson.JSONEncodeError:
                raw = self._repaired(entry)
            # orjson returns a bytes object with ~4 KiB of spare capacity; a
            # right-sized copy keeps a queued entry at ~0.5 KiB and avoids the
            # page faults that made emit ~15x slower under backlog (measured).
            # (A chained entry skips the copy: the chainer's splice makes a right-sized one.)
            line = (
                (raw if self._spliced else memoryview(raw).tobytes())
                if len(raw) <= self._max_entry_bytes
                else self._shrink(entry)
            )
        except Exception:  # noqa: BLE001 - emit never fails over a value
            # Something defeated the cleaning above (a mapping changed while it
            # was read, say): record the core of the entry rather than nothing.
            line = self._last_resort(
                event_id, timestamp, action, outcome, error, correlation_id, actor
            )
        self._count(action, outcome)
        self._submit(line)
        return event_id

    def _repaired(self, entry: dict[str, Any]) -> bytes:
        """Only a lone surrogate or an integer beyond 64 bits gets orjson to refuse an
        entry (the cleaning made everything else plain JSON data): fix those in place."""
        fixed, flags = self._redactor.repair(entry)
        entry.clear()
        entry.update(fixed)
        entry["coerced"] = True
        if flags & TRUNCATED:
            entry["truncated"] = True
        return orjson.dumps(entry)

    def _encode(self, entry: dict[str, Any]) -> bytes:
        """``emit``'s encoding (kept inline there for speed), for the last-resort entry."""
        try:
            raw = orjson.dumps(entry)
        except orjson.JSONEncodeError:
            raw = self._repaired(entry)
        if len(raw) > self._max_entry_bytes:
            return self._shrink(entry)
        return memoryview(raw).tobytes()

    def _core(
        self,
        event_id: str,
        timestamp: str,
        action: str,
        actor: dict[str, str],
        outcome: Outcome,
        correlation_id: str | None,
    ) -> dict[str, Any]:
        """The fields every entry has, in the published order (the hot path and the last resort)."""
        entry: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": event_id,
            "timestamp": timestamp,
            "event_type": "audit",
            "action": action,
            "actor": actor,
            "target": _NO_TARGET,
            "outcome": outcome,
            "correlation_id": correlation_id or event_id,
            "service": self.service,
        }
        hook = _context_fields
        if hook is not None:
            _add_context(entry, hook)
        return entry

    def _last_resort(
        self,
        event_id: str,
        timestamp: str,
        action: str,
        outcome: Outcome,
        error: ErrorClass | None,
        correlation_id: str | None,
        actor: object,
    ) -> bytes:
        actor_dict, _ = self._clean_actor(actor)
        entry = self._core(event_id, timestamp, action, actor_dict, outcome, correlation_id)
        if outcome is Outcome.FAILURE:
            entry["error"] = error or ErrorClass.INTERNAL_ERROR
        if correlation_id is None:
            entry["uncorrelated"] = True
        entry["truncated"] = entry["coerced"] = True
        return self._encode(entry)

    def _forget_cleaned(self) -> None:
        # A secret was registered (or the length limit changed) since these
        # were cleaned: clean them again.
        self._generation = self._redactor.generation
        self._actors = {}
        self._actions = set()

    def _check_action(self, action: object) -> str:
        """A valid action name, cached; else ``InvalidEntryError``."""
        try:
            text = str.__str__(action) if isinstance(action, str) else None
        except Exception:  # noqa: BLE001 - even isinstance() runs the caller's __class__
            text = None
        if text is None:
            raise InvalidEntryError(f"action must be a str; got {self._describe(action)}")
        if len(text) > ACTION_MAX_CHARS or _ACTION.fullmatch(text) is None:
            raise InvalidEntryError(
                f"invalid action {self._describe(text)}: it must be dotted lower-case words "
                f"([a-z0-9_]+, e.g. gitlab.api.post_mr_note), at most {ACTION_MAX_CHARS} characters"
            )
        if self._clean(text)[0] != text:
            raise InvalidEntryError(
                "invalid action: it holds a credential, or is longer than AUDIT_LOG_MAX_FIELD_CHARS"
            )
        if len(self._actions) >= _CACHE_LIMIT:
            self._actions.clear()
        self._actions.add(text)
        return text

    def _vocabulary(self, table: Mapping[str, E], value: object, name: str) -> E:
        """``value`` looked up as plain text (a str subclass may hash oddly), else the error."""
        found = _lookup(table, value)
        if found is None:
            raise InvalidEntryError(
                f"{name} must be one of {sorted(table)}; got {self._describe(value)}"
            )
        return found

    def _describe(self, value: object) -> str:
        """A short, scrubbed rendering of a rejected argument, for an exception message."""
        try:
            text = str.__str__(value) if isinstance(value, str) else None
        except Exception:  # noqa: BLE001 - even isinstance() runs the caller's __class__
            text = None
        if text is None:
            return self._clean(f"<{_coerce.type_name(value)}>")[0]
        return repr(self._clean(self._redactor.scrub_then_cut(text, 80))[0])

    def _clean_actor(self, actor: object) -> tuple[dict[str, str], int]:
        try:
            text = self._redactor.text
            if not isinstance(actor, Actor):
                id_text, flags = text(actor)
                return {"type": "unknown", "id": id_text}, flags | COERCED
            actor_type, actor_id = actor.type, actor.id
            clean = self._clean
            type_text, flags = clean(actor_type) if type(actor_type) is str else text(actor_type)
            id_text, f = clean(actor_id) if type(actor_id) is str else text(actor_id)
            flags |= f
            if not type_text:
                type_text = "unknown"
                flags |= COERCED
            result = {"type": type_text, "id": id_text}
            # Small actors only, so the cache is bounded in bytes; it holds the
            # actor itself, so the id it is keyed by cannot be reused meanwhile.
            if (
                type(actor) is Actor
                and (type(actor_type) is str or type(actor_type) is ActorType)
                and type(actor_id) is str
                and len(actor_type) <= _CACHEABLE_CHARS
                and len(actor_id) <= _CACHEABLE_CHARS
            ):
                if len(self._actors) >= _CACHE_LIMIT:
                    self._actors.clear()
                self._actors[id(actor)] = (actor, result, flags)
            return result, flags
        except Exception:  # noqa: BLE001 - an Actor subclass may raise anything
            return {"type": "unknown", "id": ""}, COERCED

    def _clean_target(self, target: dict[Any, Any]) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {"resource_type": "none"}
        if len(target) <= NARROW_FLAT:
            flags = self._redactor.fill_flat(target.items(), out)
            seen = len(target)
        else:
            flags, seen = self._redactor.flat_wide(target, out, self._max_entry_bytes)
        # Keys that clean to the same text (a cut, or 1 and "1") keep one value.
        if flags & CHANGED and len(out) < seen + ("resource_type" not in target):
            flags |= COERCED
        resource_type = out["resource_type"]
        if type(resource_type) is not str or not resource_type:
            out["resource_type"] = (
                "none" if resource_type is None or resource_type == "" else str(resource_type)
            )
            flags |= COERCED
        return out, flags & _FLAGS

    def _odd_target(self, target: object) -> tuple[dict[str, Any], int]:
        try:
            if isinstance(target, Mapping):
                pairs = dict(islice(target.items(), self._max_entry_bytes // 5 + 1))
                return self._clean_target(pairs) if pairs else (_NO_TARGET, 0)
            text, flags = self._redactor.text(target)
        except Exception:  # noqa: BLE001 - a broken mapping is recorded as its text
            text, flags = self._redactor.text(target)
        return {"resource_type": "none", "_value": text}, flags | COERCED

    def _odd_details(self, details: object) -> tuple[dict[str, Any], int]:
        room = [self._max_entry_bytes]
        try:
            if isinstance(details, Mapping):
                pairs = list(islice(details.items(), room[0] // 5 + 1))
                return self._redactor.mapping(pairs, len(pairs), 0, room)
        except Exception:  # noqa: BLE001 - a broken mapping is recorded as its text
            room = [self._max_entry_bytes]
        value, flags = self._redactor.value(details, 1, room)
        return {"_value": value}, flags | COERCED

    def _shrink(self, entry: dict[str, Any]) -> bytes:
        """Cut an entry down to ``max_entry_bytes``, re-checking the encoded size at each step.

        Details go first (their size is kept), then every string and key is
        cut shorter and the target keeps fewer keys, and last only the core
        fields remain; that core always fits (_CORE_CHARS). Strings here are
        already scrubbed, so cutting them can reveal nothing.
        """
        limit = self._max_entry_bytes
        entry["truncated"] = True
        details = entry.pop("details", None)
        if details is not None:
            entry["details"] = {"_dropped_bytes": len(orjson.dumps(details))}
            line = orjson.dumps(entry)
            if len(line) <= limit:
                return memoryview(line).tobytes()
        actor, target = entry["actor"], entry["target"]
        message = entry.get("error_message")
        for chars, keys in _SHRINK_STEPS:
            entry["actor"] = {k: _coerce.cut(v, chars) for k, v in actor.items()}
            entry["target"] = _cap_target(target, keys, chars)
            if message is not None:
                entry["error_message"] = _coerce.cut(message, chars)
            line = orjson.dumps(entry)
            if len(line) <= limit:
                return memoryview(line).tobytes()
        for chars in (64, _CORE_CHARS):
            line = orjson.dumps(_core(entry, chars))
            if len(line) <= limit:
                break
        return memoryview(line).tobytes()

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
        is recorded (class and redacted message) and re-raised untouched:
        when the block raised, nothing on the audit side (a bad value, a
        failing ``target`` callable, a closed logger) replaces its exception.
        A block ended by cancellation (``asyncio.CancelledError``, or any
        ``BaseException`` that is no ``Exception``) still gets its one entry:
        ``failure``, error ``timeout``, ``details.cancelled: true``. The rules
        live in ``auditkeep._call``, which ``AuditedTransport`` shares.

        Raises:
            InvalidEntryError: ``action`` is not a valid action name (checked
                here, before the block runs).
        """
        if self.enabled and (type(action) is not str or action not in self._actions):
            action = self._check_action(action)
        return Audited(self, action, target, details, actor)

    # -- lifecycle ----------------------------------------------------------

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything emitted so far reached the sink; False at the deadline."""
        return self._fanout.flush(timeout_s) if self._fanout is not None else True

    def close(self, timeout_s: float | None = None) -> bool:
        """Stop accepting entries, deliver until the deadline, keep the rest in the spool.

        The deadline defaults to ``shutdown_timeout_s``. A second SIGTERM (or
        any exception) during the wait cuts it short; the exception is
        re-raised once every entry is delivered or spooled. Idempotent.
        Returns True when everything reached the sink (False means the
        remainder is safe in the spool and will be replayed on next start).
        """
        self._closed = True
        _live_loggers.discard(self)
        if self._fanout is None:
            return True
        if self._chain is not None:
            self._chain.close()
        _closing.add(self)
        try:
            return self._fanout.close(self.shutdown_timeout_s if timeout_s is None else timeout_s)
        finally:
            _closing.discard(self)

    def hurry(self) -> None:
        """During ``close``: stop delivering now and hand what is left to the spool.

        What a second SIGTERM during shutdown does (see ``auditkeep.runtime``).
        """
        if self._fanout is not None:
            self._fanout.hurry()

    async def aflush(self, timeout_s: float = 5.0) -> bool:
        """``flush`` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.flush, timeout_s)

    async def aclose(self, timeout_s: float | None = None) -> bool:
        """``close`` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.close, timeout_s)

    def __enter__(self) -> AuditLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cap_target(target: dict[str, Any], keys: int, chars: int) -> dict[str, Any]:
    """The first ``keys`` target keys, keys and strings cut, and how many were left out."""
    out: dict[str, Any] = {"resource_type": _coerce.cut(target["resource_type"], chars)}
    dropped = target.get("_dropped_keys", 0)
    dropped = dropped if type(dropped) is int else 0
    for key, value in target.items():
        if key in ("resource_type", "_dropped_keys"):
            continue
        if len(out) > keys:
            dropped += 1
            continue
        out[_coerce.cut(key, min(chars, 64))] = (
            _coerce.cut(value, chars) if type(value) is str else value
        )
    if dropped:
        out["_dropped_keys"] = dropped
    return out


def _add_context(entry: dict[str, Any], hook: ContextFields) -> None:
    try:
        fields = hook()
        if fields:
            for key, value in fields.items():
                if (
                    type(key) is str
                    and type(value) is str
                    and len(key) <= 32
                    and len(value) <= 64  # identifiers; a shrunk core keeps trace_id, span_id
                    and key not in entry
                    and key not in _reserved_fields
                ):
                    entry[key] = value
    except Exception:  # noqa: BLE001 - a failing hook costs its fields, never the entry
        return


_CORE_FIELDS: Final = (
    "schema_version",
    "event_id",
    "timestamp",
    "event_type",
    "action",
    "outcome",
    "error",
    "correlation_id",
    "service",
    "trace_id",
    "span_id",
    "uncorrelated",
    "coerced",
)


def _core(entry: dict[str, Any], chars: int) -> dict[str, Any]:
    """The entry reduced to what the schema requires, its free strings cut to ``chars``."""
    core: dict[str, Any] = {key: entry[key] for key in _CORE_FIELDS if key in entry}
    core["actor"] = {key: _coerce.cut(value, chars) for key, value in entry["actor"].items()}
    core["target"] = {"resource_type": _coerce.cut(entry["target"]["resource_type"], chars)}
    core["truncated"] = True
    return core


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
            logger.close()


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
        self._pending: PendingCall | None = None

    def _start(self, target: object) -> PendingCall:
        return PendingCall(self._logger, self._action, target, self._details, self._actor)

    def __enter__(self) -> AuditCall:
        if self._pending is not None:
            raise RuntimeError("an audited() block is not re-entrant; call audited() again")
        target = None if callable(self._target) else self._target
        self._pending = self._start(target)
        return self._pending.call

    def _exit(self, exc: BaseException | None) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        pending.finish(exc)

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

    def _target_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        if callable(self._target):
            try:
                return self._target(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the caller's own call comes first
                # The call itself still runs (and raises its own error, if the
                # arguments are wrong); the entry says the target was lost.
                return f"<target callable raised {exception_text(exc, self._logger._redactor)}>"
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
                    pending.finish(exc)
                    raise
                pending.finish(None)
                return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            pending = audited._start(audited._target_for(args, kwargs))
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                pending.finish(exc)
                raise
            pending.finish(None)
            return result

        return wrapper
