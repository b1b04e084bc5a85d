"""The delivery pipeline: bounded buffer, background worker, spool, fallback.

Engine code, written once for every sink (OpenTelemetry's BatchProcessor split
and the Kubernetes buffered audit backend are the models). The guarantees:

* ``submit`` never waits on a sink. A full buffer spills the entry to the spool
  from the caller's thread (one local ``write(2)``), never to the floor.
* A batch the sink refuses goes to the spool; the worker retries the sink from
  the spool with capped exponential backoff and full jitter until it recovers
  (``backoff.py``). A batch the destination will never accept
  (``SinkResult.failure``) is dead-lettered instead (``dead_letters.py``).
* While the destination is failing, every entry waiting for it is copied to
  the fallback once (``fallback.py`` has the rule and its ledger).
* When the spool refuses writes, entries are held in memory up to a bound
  (``hold.py``); only what is beyond it, or still held at close, is given up:
  written to the fallback and counted in ``audit_log_dropped_entries_total``,
  which therefore counts exactly the entries that exist nowhere but the fallback.
* Order: the worker alternates between the spool's backlog and the buffer,
  so entries may reach a sink out of order after an outage or an overflow.
  Every entry carries its timestamp and a time-ordered ``event_id``; readers
  order by those (the query tools do).
* ``close`` stops intake, delivers what it can before the deadline and leaves
  the rest in the spool, which the next start replays.

This module is the worker loop and the moves between buffer, hold, spool, sink
and fallback; each of those keeps its own state in its own module.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

from auditkeep.delivery._report import Reporter
from auditkeep.delivery.backoff import Backoff
from auditkeep.delivery.dead_letters import DeadLetters, dead_letter_path
from auditkeep.delivery.fallback import Fallback
from auditkeep.delivery.hold import MemoryHold, SpoolRefusal
from auditkeep.delivery.housekeeping import Housekeeping
from auditkeep.delivery.options import DeliveryOptions, DeliverySettings, Durability, resolve
from auditkeep.delivery.slots import spool_base
from auditkeep.delivery.spool import Spool
from auditkeep.exceptions import SpoolSyncError, SpoolWriteError
from auditkeep.metrics import AuditMetrics
from auditkeep.typing import Sink, SinkResult, SinkStatus

_SUCCESS, _RETRY, _FAILURE = SinkStatus.SUCCESS, SinkStatus.RETRY, SinkStatus.FAILURE


class _State(enum.Enum):
    RUNNING = 1
    CLOSING = 2
    CLOSED = 3


class DeliveryPipeline:
    """Moves encoded entries from callers to one sink without ever losing one.

    Settings come from ``options`` (``DeliveryOptions``), or the same names as
    keywords (``max_buffer_events=200``) over it. ``dead_letter_file`` defaults
    to the spool base's ``dead-letters/<destination>.jsonl``; with
    ``orphan_base`` the worker also adopts what dead processes left there.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        *,
        fallback: Sink,
        metrics: AuditMetrics,
        options: DeliveryOptions | None = None,
        orphan_base: Path | None = None,
        dead_letter_file: Path | None = None,
        **settings: Unpack[DeliverySettings],
    ) -> None:
        opts = resolve(options, settings)
        self.options = opts
        self.sink = sink
        self.destination = dest = sink.name
        self.spool = spool
        self.metrics = metrics
        self.durability = opts.durability
        self.max_buffer_events = opts.max_buffer_events
        self.max_batch_events = opts.batch_events
        self.flush_interval_s = opts.flush_interval_s
        self._reporter = Reporter()
        self._fallback = Fallback(
            fallback,
            dest,
            metrics=metrics,
            reporter=self._reporter,
            cursor=spool.acknowledged(dest),
        )
        self._dead = DeadLetters(
            dead_letter_file or dead_letter_path(spool_base(spool.directory), dest),
            dest,
            metrics=metrics,
            reporter=self._reporter,
        )
        self._backoff = Backoff(opts.retry_initial_s, opts.retry_max_s, jitter=True)
        self._held = MemoryHold(opts.held_bound)
        self._refusal = SpoolRefusal(
            dest,
            initial_s=opts.retry_initial_s,
            held_bound=opts.held_bound,
            metrics=metrics,
            reporter=self._reporter,
        )
        self._chores = Housekeeping(
            spool, metrics, fsync_interval_s=opts.fsync_interval_s, orphan_base=orphan_base
        )

        self._buffer: deque[bytes] = deque()
        self._wake_at = max(1, opts.batch_events // 2)
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._close_lock = threading.Lock()
        self._state = _State.RUNNING
        self._deadline = float("inf")
        self._inflight: Sequence[bytes] | None = None
        self._failing = False  # from a failed attempt until the next successful one
        self._flush_asked = False  # flush() wants one attempt now, whatever the backoff
        self._spool_flush_asked = False  # and one try of the spool for the held entries
        self._progress = 0  # bumped whenever a pass moves an entry; a pass that doesn't is idle
        self._pass_started = 0.0
        self._pass_idle = False
        self._delivered_sink = metrics.delivered.labels(dest)
        self._sink_errors = metrics.sink_errors.labels(dest)
        self._retried = metrics.retried.labels(dest)
        self.in_flight = 0
        """Entries handed to the sink and not yet answered (a gauge)."""
        self._spooled_children: dict[str, Any] = {}
        metrics.gauges.track(self)
        self._worker = threading.Thread(target=self._run, name=f"auditkeep-{dest}", daemon=True)
        self._worker.start()

    def __repr__(self) -> str:
        return f"DeliveryPipeline(buffered<spool<{self.sink!r}>>, durability={self.durability})"

    # -- caller side ----------------------------------------------------------

    def submit(self, line: bytes) -> None:
        """Hand one encoded entry to the pipeline; never blocks on a sink."""
        if self.durability is not Durability.MEMORY:
            self._spool_from_caller(line, "write_ahead", sync=self.durability is Durability.FSYNC)
        else:
            buf = self._buffer
            if len(buf) < self.max_buffer_events:
                buf.append(line)
                if self._state is not _State.RUNNING:
                    self._rescue_late()
            else:
                self._spool_from_caller(line, "overflow", sync=False)
        if len(self._buffer) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    def _spool_from_caller(self, line: bytes, reason: str, *, sync: bool) -> None:
        try:
            self.spool.append((line,), sync=sync)
        except SpoolSyncError as exc:
            # In the spool, but the fsync failed: it is delivered, it may not survive power loss.
            self._reporter.report(
                "fsync", f"spool fsync failed ({exc}); entries may not survive power loss"
            )
        except Exception as exc:  # noqa: BLE001 - disk trouble must not reach the caller
            self._refusal.refused(exc)
            self._hold((line,))
            self._wake.set()
            return
        self._spooled(reason).inc()
        if self._refusal.reason is not None:
            self._refusal.accepted()

    def _spooled(self, reason: str) -> Any:
        child = self._spooled_children.get(reason)
        if child is None:
            child = self._spooled_children[reason] = self.metrics.spooled.labels(reason)
        return child

    def _rescue_late(self) -> None:
        # An emit that passed the open check just before close() began: its
        # entry may have missed the final sweep, so sweep again ourselves.
        with self._close_lock:
            self._sweep_to_spool("shutdown", final=self._state is _State.CLOSED)

    # -- the worker loop ------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._next_wait())
            self._wake.clear()
            stopping = self._state is not _State.RUNNING
            self._pass_started, before = time.monotonic(), self._moved()
            try:
                self._copy_waiting(stopping)
                self._retry_held(stopping)
                self._deliver_spool(stopping)
                self._drain_buffer(stopping)
                self._chores.run()
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._reporter.report("worker", f"delivery worker error: {exc!r}")
            self._pass_idle = self._moved() == before
            with self._idle:
                self._idle.notify_all()
            if stopping and not self._buffer and not self._keep_trying_before_deadline():
                return

    def _moved(self) -> int:
        return self._progress + self._fallback.copies

    def _out_of_time(self, stopping: bool) -> bool:
        return stopping and time.monotonic() >= self._deadline

    def _due_at(self) -> float | None:
        """When the next attempt is worth making (sink or spool), None if nothing waits."""
        due: float | None = None
        if self._held or self.spool.pending(self.destination):
            asked = self._flush_asked and not self._backoff.hinted
            due = 0.0 if asked else self._backoff.retry_at
        if self._held:
            spool_due = 0.0 if self._spool_flush_asked else self._refusal.backoff.retry_at
            due = spool_due if due is None else min(due, spool_due)
        return due

    def _stuck(self, due: float) -> bool:
        # The last pass could already act and moved nothing (say the spool says
        # records are pending but none can be read): running again at once
        # would be a busy loop, so wait as if nothing were due.
        return self._pass_idle and due <= self._pass_started

    def _keep_trying_before_deadline(self) -> bool:
        # At shutdown, wait out a backoff if the retry still fits before the
        # deadline; otherwise leave the backlog in the spool for the next start.
        now = time.monotonic()
        if now >= self._deadline or not (self._held or self.spool.pending(self.destination)):
            return False
        due = self._due_at()
        if due is None or due >= self._deadline:
            return False
        pause = due - now
        if self._stuck(due):
            pause = max(pause, self.flush_interval_s)
        if pause > 0:
            self._wake.wait(min(pause, self._deadline - now))
        return True

    def _next_wait(self) -> float:
        if self._state is not _State.RUNNING:
            return 0
        wait = self.flush_interval_s
        due = self._due_at()
        if due is not None:
            delay = due - time.monotonic()
            if delay > 0:
                wait = min(wait, delay)
            elif not self._stuck(due):
                wait = 0.0
        return wait

    # -- one attempt at the sink ---------------------------------------------

    def _sink_available(self) -> bool:
        asked = self._flush_asked and not self._backoff.hinted
        return asked or self._backoff.due(time.monotonic())

    def _attempt(self, lines: Sequence[bytes]) -> SinkResult:
        """One ``write_batch``, its answer counted and the backoff updated."""
        if self._failing:
            self._retried.inc(len(lines))  # an attempt after a failure
        self._flush_asked = False
        self.in_flight = len(lines)
        try:
            result = self.sink.write_batch(lines)
        except Exception as exc:  # noqa: BLE001 - a sink bug is a retryable delivery failure
            result = SinkResult.retry(f"{type(exc).__name__} raised by {self.destination}")
            self._reporter.report("sink_raised", f"{result.reason}; retrying")
        finally:
            self.in_flight = 0
        if not isinstance(result, SinkResult):
            kind = type(result).__name__
            result = SinkResult.retry(f"{self.destination} answered {kind}, not a SinkResult")
            self._reporter.report("sink_answer", f"{result.reason}; retrying")
        if result.status is _SUCCESS:
            self._delivered_sink.inc(len(lines))
            self._progress += 1
            self._failing = False
            self._backoff.succeeded()
        else:
            self._sink_errors.inc()
            if result.status is _RETRY:
                self._failing = True
                self._backoff.failed(result.retry_after_s)
        return result

    # -- the moves --------------------------------------------------------------

    def _drain_buffer(self, stopping: bool) -> None:
        buf = self._buffer
        while buf:
            n = min(len(buf), self.max_batch_events)
            batch = [buf.popleft() for _ in range(n)]
            self._inflight = batch
            if self._out_of_time(stopping):
                self._spill(batch, "shutdown")
            elif not self._sink_available():
                self._spill(batch, "sink_failure")  # never hammer a sink that backs off
            else:
                result = self._attempt(batch)
                if result.status is _FAILURE:
                    self._dead_letter(batch, batch, result.reason)
                elif result.status is _RETRY and self._state is not _State.CLOSED:
                    # (Once CLOSED, finish_close has already spooled this batch it saw in flight.)
                    self._spill(batch, "sink_failure")
            self._inflight = None
            self._copy_waiting(stopping)

    def _spill(self, batch: Sequence[bytes], reason: str) -> None:
        try:
            self.spool.append(batch)
        except Exception as exc:  # noqa: BLE001 - hold, then fall back, rather than lose
            kept = exc.committed if isinstance(exc, SpoolWriteError) else 0
            if kept:
                self._spooled(reason).inc(kept)
            self._refusal.refused(exc)
            self._hold(batch[kept:])
            return
        self._spooled(reason).inc(len(batch))
        self._progress += 1
        if self._refusal.reason is not None:
            self._refusal.accepted()

    def _hold(self, lines: Sequence[bytes]) -> None:
        rest = self._held.keep(lines, closed=self._state is _State.CLOSED)
        if rest:
            self._give_up(rest, "spool_unavailable")

    def _retry_held(self, stopping: bool) -> None:
        held = self._held
        if not held or self._out_of_time(stopping):
            return
        if self._refusal.backoff.due(time.monotonic()) or self._spool_flush_asked:
            self._spool_flush_asked = False
            while held:
                lines, copied = held.take(self.max_batch_events)
                try:
                    last = self.spool.append(lines)
                except Exception as exc:  # noqa: BLE001 - still refused: keep holding
                    kept = 0
                    if isinstance(exc, SpoolWriteError) and exc.committed:
                        kept = exc.committed
                        self._moved_to_spool(lines[:kept], min(copied, kept), exc.last_id)
                    self._refusal.refused(exc)
                    held.give_back(lines[kept:], max(0, copied - kept))
                    break
                self._moved_to_spool(lines, copied, last)
                self._refusal.accepted()
        while held and self._sink_available():
            # The spool still refuses, the destination may not: give them to it.
            if self._out_of_time(stopping):
                return
            lines, copied = held.take(self.max_batch_events)
            self._inflight = lines
            result = self._attempt(lines)
            self._inflight = None
            if result.status is _FAILURE:
                self._dead_letter(lines, lines[copied:], result.reason)
            elif result.status is _RETRY and self._state is not _State.CLOSED:
                self._fallback.copy(lines[copied:])  # a failed attempt: now it is failing
                held.give_back(lines, len(lines))
                self._copy_waiting(stopping)
                return
            held.placed()

    def _moved_to_spool(self, lines: Sequence[bytes], copied: int, last: int) -> None:
        self._held.placed()
        self._spooled("spool_retry").inc(len(lines))
        self._progress += 1
        if copied:
            first = last - len(lines) + 1
            self._fallback.mark(first, first + copied - 1)

    def _deliver_spool(self, stopping: bool) -> None:
        spool, dest = self.spool, self.destination
        while spool.pending(dest) and self._sink_available():
            if self._out_of_time(stopping):
                return
            records = spool.read(dest, self.max_batch_events)
            if not records:
                return
            lines = [r.payload for r in records]
            result = self._attempt(lines)
            if result.status is _RETRY:
                self._copy_waiting(stopping)
                return
            if result.status is _FAILURE:
                uncopied = [r.payload for r in records if not self._fallback.is_copied(r.id)]
                self._dead_letter(lines, uncopied, result.reason)
            spool.ack(dest, records)
            self._progress += 1
            if len(self._buffer) >= self.max_buffer_events // 2:
                return  # let the caller-side buffer drain before it overflows

    def _copy_waiting(self, stopping: bool) -> None:
        """While the destination is failing, copy every waiting entry to the fallback once."""
        if not self._failing:
            return
        buf = self._buffer
        while buf and not self._out_of_time(stopping):
            # Set the buffer aside too (as a pass would while the destination backs off),
            # so that no entry waiting now can reach the destination uncopied.
            batch = [buf.popleft() for _ in range(min(len(buf), self.max_batch_events))]
            self._inflight = batch
            self._spill(batch, "sink_failure")
            self._inflight = None
        self._fallback.copy(self._held.uncopied())
        stop = functools.partial(self._out_of_time, stopping)
        self._fallback.copy_spool(self.spool, self.destination, self.max_batch_events, stop)

    def _dead_letter(
        self, lines: Sequence[bytes], uncopied: Sequence[bytes], reason: str | None
    ) -> None:
        """Keep a batch the destination refused for good (``uncopied``: not yet in the fallback)."""
        try:
            self._dead.keep(lines, reason)
        except OSError as exc:
            self._give_up(
                lines, "dead_letter_unavailable", f"dead-letter write failed: {exc}", uncopied
            )
            return
        self._fallback.copy(uncopied)

    def _give_up(
        self,
        lines: Sequence[bytes],
        reason: str,
        why: str | None = None,
        uncopied: Sequence[bytes] | None = None,
    ) -> None:
        # Nothing else can keep these: write them to the fallback (unless they
        # are there already) and count them, so that the dropped counter is
        # exactly what exists nowhere but the fallback.
        self._fallback.copy(lines if uncopied is None else uncopied)
        self.metrics.dropped.labels(reason).inc(len(lines))
        self._reporter.report(
            f"dropped:{reason}",
            f"{why or self._drop_reason(reason)}; {len(lines)} entries are only in the fallback"
            " (audit_log_dropped_entries_total)",
            len(lines),
        )

    def _drop_reason(self, reason: str) -> str:
        if reason == "spool_unavailable":
            return (
                f"the spool for {self.destination} refuses writes"
                f" ({self._refusal.reason or 'closed'}) and {self._held.bound} entries are"
                " already held in memory"
            )
        return f"entries for {self.destination} arrived after its spool closed"

    # -- control ------------------------------------------------------------

    def _delivered_everything(self) -> bool:
        return (
            not self._buffer
            and not self._held
            and self._inflight is None
            and not self.spool.pending(self.destination)
        )

    def flush(self, timeout_s: float) -> bool:
        """Wait until every accepted entry reached the sink; False at the deadline.

        Asks for one attempt now, even if the destination (or the spool) is
        backing off after a failure, unless the destination asked for the pause.
        """
        deadline = time.monotonic() + timeout_s
        self._flush_asked = self._spool_flush_asked = True
        self._wake.set()
        with self._idle:
            while not self._delivered_everything():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._worker.is_alive():
                    return False
                # No wake here: the worker passes at once when there is work it
                # can do, and re-waking it after each idle pass would spin.
                self._idle.wait(min(remaining, self.flush_interval_s))
        self._flush_asked = self._spool_flush_asked = False
        return self.sink.flush(max(0.0, deadline - time.monotonic()))

    def close(self, timeout_s: float) -> bool:
        """Stop intake, deliver until the deadline, spool the rest; idempotent.

        Returns True when everything reached the sink.
        """
        self.begin_close(time.monotonic() + timeout_s)
        return self.finish_close()

    def begin_close(self, deadline: float) -> None:
        """Stop intake and start the final delivery (lets several pipelines share one deadline)."""
        with self._close_lock:
            if self._state is not _State.RUNNING:
                return
            self._deadline = deadline
            self._state = _State.CLOSING
        self._wake.set()

    def hurry(self) -> None:
        """Cut a running close short: stop delivering now and hand the rest to the spool.

        A second SIGTERM during shutdown ends here (``auditkeep.runtime``);
        calling it while running has no effect.
        """
        with self._close_lock:
            if self._state is not _State.CLOSING:
                return
            self._deadline = min(self._deadline, time.monotonic())
        self._wake.set()

    def finish_close(self) -> bool:
        """Wait for the final delivery until the deadline, spool the rest, close the sink.

        ``AuditLogger.close`` runs this off the main thread, where no Python
        signal handler can interrupt the hand-over to the spool.
        """
        # Join in slices: ``hurry()`` may move the deadline closer meanwhile.
        while self._worker.is_alive():
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            self._worker.join(min(remaining, 0.05))
        with self._close_lock:
            if self._state is _State.CLOSED:
                return self._delivered_everything()
            if self._worker.is_alive():
                # The sink hangs: keep the batch it holds too (it may also
                # arrive later, hence at-least-once) and everything queued.
                inflight = self._inflight
                if inflight:
                    self._spill(list(inflight), "shutdown")
            self._sweep_to_spool("shutdown")
            delivered = self._delivered_everything()
            with contextlib.suppress(OSError):
                self.spool.close()
            self._state = _State.CLOSED
        remaining = max(0.0, self._deadline - time.monotonic())
        with contextlib.suppress(Exception):
            self.sink.close(remaining)
        self.metrics.gauges.untrack(self)
        return delivered

    def _sweep_to_spool(self, reason: str, *, final: bool = True) -> None:
        buf = self._buffer
        lines: list[bytes] = []
        while buf:
            try:
                lines.append(buf.popleft())
            except IndexError:
                break
        if lines:
            if self._state is _State.CLOSED:
                self._give_up(lines, "spool_closed")
            else:
                self._spill(lines, reason)
        if final and self._held:
            # The last chance for entries the spool refused: spool them now or
            # give them up to the fallback (counted) before memory goes away.
            held, copied = self._held.take(len(self._held))
            kept = 0
            if self._state is not _State.CLOSED:
                try:
                    self.spool.append(held)
                    kept = len(held)
                except Exception as exc:  # noqa: BLE001
                    kept = exc.committed if isinstance(exc, SpoolWriteError) else 0
                if kept:
                    self._spooled(reason).inc(kept)
            self._held.placed()
            rest = held[kept:]
            if rest:
                self._give_up(rest, "spool_unavailable", uncopied=rest[max(0, copied - kept) :])

    def gauge_snapshot(self) -> tuple[int, int, int, float | None]:
        stats = self.spool.stats()
        oldest_ms = stats.oldest_pending_ms.get(self.destination)
        return (
            len(self._buffer) + len(self._held),
            stats.bytes,
            stats.pending_records.get(self.destination, 0),
            oldest_ms / 1000 if oldest_ms is not None else None,
        )
