"""The delivery pipeline: bounded buffer, background worker, spool, fallback.

Engine code, written once for every sink (OpenTelemetry's BatchProcessor split
and the Kubernetes buffered audit backend are the models). The guarantees:

* ``submit`` never waits on a sink. A full buffer spills the entry to the spool
  from the caller's thread (one local ``write(2)``), never to the floor.
* A batch the sink refuses goes to the spool; the worker retries the sink from
  the spool with capped exponential backoff and full jitter until it recovers.
  ``SinkResult.FAILURE`` (a batch the destination will never accept) is
  dead-lettered instead of retried.
* The fallback (stdout) is the operator's view of what a failing destination
  is missing. From a failed attempt until the next successful one the
  destination is *failing*, and at the start of every worker pass, and after
  every failed attempt, each entry waiting for it (in the buffer, which is then
  set aside into the spool, in the spool however it got there, or held in
  memory) is copied to the fallback, once per process. A dead-lettered entry
  is copied once too. Entries that are merely delayed (a slow or hung
  destination that has not failed) are not copied.
* When the spool refuses writes (a full disk, its byte limit), entries are held
  in memory, up to ``max_held_events``, and the worker retries the spool with
  backoff (never a busy loop) or gives them straight to the destination if it
  takes them. Only entries beyond that bound, or left over when the pipeline
  closes, are given up: written to the fallback and counted in
  ``audit_log_dropped_entries_total``, which therefore counts exactly the
  entries that exist nowhere but the fallback.
* Order: the worker alternates between the spool's backlog and the buffer,
  so entries may reach a sink out of order after an outage or an overflow.
  Every entry carries its timestamp and a time-ordered ``event_id``; readers
  order by those (the query tools do).
* ``close`` stops intake, delivers what it can before the deadline and leaves
  the rest in the spool, which the next start replays.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import itertools
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditrail.metrics import AuditMetrics
from auditrail.delivery.spool import Spool, SpoolSyncError, SpoolWriteError, adopt_orphans
from auditrail.typing import Sink, SinkResult

_MAX_RETRY_AFTER_S = 300.0
_SPOOL_RETRY_MAX_S = 1.0  # a refused local write is cheap to try again; recover promptly
_REPORT_EVERY_S = 10.0  # the same trouble is printed to stderr at most this often


class Durability(enum.StrEnum):
    """How far an entry has gone when ``emit`` returns.

    ``MEMORY``: in the in-memory buffer (spilled to the spool on overflow, sink
    failure and shutdown). Survives SIGTERM; SIGKILL or a crash loses what is
    still buffered (at most the buffer size plus one batch).

    ``SPOOL``: written to the spool (``write(2)``, no fsync). Survives SIGKILL
    and crashes; a power loss can lose what the kernel had not yet flushed.

    ``FSYNC``: written to the spool and fsynced (group commit). Survives power loss.

    While the spool refuses writes (a full disk) every level holds the entries
    it could not spool in memory (``max_held_events``), as ``MEMORY`` does.

    .. versionadded:: 0.1.0
    """

    MEMORY = "memory"
    SPOOL = "spool"
    FSYNC = "fsync"


class _State(enum.Enum):
    RUNNING = 1
    CLOSING = 2
    CLOSED = 3


class DeliveryPipeline:
    """Moves encoded entries from callers to one sink without ever losing one.

    ``max_held_events`` bounds the entries kept in memory while the spool
    refuses writes (default: ``max_buffer_events``); beyond it entries go to
    the fallback and are counted as dropped.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        *,
        fallback: Sink,
        metrics: AuditMetrics,
        durability: Durability = Durability.MEMORY,
        max_buffer_events: int = 1000,
        max_batch_events: int = 512,
        flush_interval_s: float = 0.2,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 30.0,
        fsync_interval_s: float = 1.0,
        orphan_base: Path | None = None,
        dead_letter_dir: Path | None = None,
        max_held_events: int | None = None,
    ) -> None:
        if max_buffer_events <= 0:
            raise ValueError("max_buffer_events must be positive")
        if not 0 < max_batch_events <= max(max_buffer_events, 1):
            raise ValueError("max_batch_events must be positive and at most max_buffer_events")
        if flush_interval_s <= 0 or retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("intervals must be positive and retry_max_s >= retry_initial_s")
        if max_held_events is not None and max_held_events < 0:
            raise ValueError("max_held_events must not be negative")
        self.sink = sink
        self.destination = sink.name
        self.spool = spool
        self.fallback = fallback
        self.metrics = metrics
        self.durability = durability
        self.max_buffer_events = max_buffer_events
        self.max_batch_events = max_batch_events
        self.max_held_events = max_buffer_events if max_held_events is None else max_held_events
        self.flush_interval_s = flush_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.fsync_interval_s = fsync_interval_s
        self.orphan_base = orphan_base
        self.dead_letter_dir = dead_letter_dir or spool.directory.parent.parent / "dead-letters"

        self._buffer: deque[bytes] = deque()
        self._wake_at = max(1, max_batch_events // 2)
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._close_lock = threading.Lock()
        self._state = _State.RUNNING
        self._deadline = float("inf")
        self._inflight: Sequence[bytes] | None = None
        self._retry_at = 0.0
        self._backoff = retry_initial_s
        self._failing = False  # from a failed attempt until the next successful one
        self._hinted = False  # the current pause is the destination's own (Retry-After)
        self._flush_asked = False  # flush() wants one attempt now, whatever the backoff
        self._spool_flush_asked = False  # and one try of the spool for the held entries
        # Entries neither the spool nor the sink has taken yet (the spool
        # refused them). Callers append on the right, only the worker pops on
        # the left, so "the oldest _held_copied are in the fallback" stays true.
        self._held: deque[bytes] = deque()
        self._held_copied = 0
        self._held_out = 0  # taken from _held by the worker, not yet placed: still counts
        self._spool_refusing: str | None = None  # why, while the spool refuses writes
        self._spool_refused_since = 0.0
        self._spool_retry_at = 0.0
        self._spool_backoff = retry_initial_s
        # Spool ids up to _copy_cursor are in the fallback or delivered; the
        # ranges above it that are in the fallback too. Sorted, disjoint.
        self._copy_cursor = spool.acknowledged(self.destination)
        self._copied: list[tuple[int, int]] = []
        self._progress = 0  # bumped whenever a pass moves an entry; a pass that doesn't is idle
        self._pass_started = 0.0
        self._pass_idle = False
        self._reported: dict[str, tuple[float, int]] = {}
        self._last_sync = time.monotonic()
        self._last_adopt = 0.0
        self._delivered_sink = self.metrics.delivered.labels(self.destination)
        self._sink_errors = self.metrics.sink_errors.labels(self.destination)
        self._retried = self.metrics.retried.labels(self.destination)
        self.in_flight = 0
        """Entries handed to the sink and not yet answered (a gauge)."""
        self._spooled_children: dict[str, Any] = {}
        self._spool_corrupt_seen = spool.corrupt_records
        metrics.gauges.track(self)
        self._worker = threading.Thread(
            target=self._run, name=f"auditrail-{self.destination}", daemon=True
        )
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
            self._report("fsync", f"spool fsync failed ({exc}); entries may not survive power loss")
        except Exception as exc:  # noqa: BLE001 - disk trouble must not reach the caller
            self._spool_refused(exc)
            self._hold((line,))
            self._wake.set()
            return
        self._spooled_child(reason).inc()
        if self._spool_refusing is not None:
            self._spool_accepts()

    def _spooled_child(self, reason: str) -> Any:
        child = self._spooled_children.get(reason)
        if child is None:
            child = self._spooled_children[reason] = self.metrics.spooled.labels(reason)
        return child

    def _rescue_late(self) -> None:
        # An emit that passed the open check just before close() began: its
        # entry may have missed the final sweep, so sweep again ourselves.
        with self._close_lock:
            self._sweep_to_spool("shutdown", final=self._state is _State.CLOSED)

    # -- worker side ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._next_wait())
            self._wake.clear()
            stopping = self._state is not _State.RUNNING
            self._pass_started, progress = time.monotonic(), self._progress
            try:
                self._copy_waiting(stopping)
                self._retry_held(stopping)
                self._deliver_spool(stopping)
                self._drain_buffer(stopping)
                self._housekeeping()
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._report("worker", f"delivery worker error: {exc!r}")
            self._pass_idle = self._progress == progress
            with self._idle:
                self._idle.notify_all()
            if stopping and not self._buffer and not self._keep_trying_before_deadline():
                return

    def _due_at(self) -> float | None:
        """When the next attempt is worth making (sink or spool), None if nothing waits."""
        due: float | None = None
        asked = self._flush_asked
        if self._held or self.spool.pending(self.destination):
            due = 0.0 if asked and not self._hinted else self._retry_at
        if self._held:
            spool_due = 0.0 if self._spool_flush_asked else self._spool_retry_at
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

    def _sink_available(self) -> bool:
        return time.monotonic() >= self._retry_at or (self._flush_asked and not self._hinted)

    def _write(self, lines: Sequence[bytes]) -> SinkResult:
        if self._failing:
            self._retried.inc(len(lines))  # an attempt after a failure
        self._flush_asked = False
        self.in_flight = len(lines)
        try:
            result = self.sink.write_batch(lines)
        except Exception:  # noqa: BLE001 - a sink bug is a retryable delivery failure
            result = SinkResult.RETRY
        finally:
            self.in_flight = 0
        if result is SinkResult.SUCCESS:
            self._delivered_sink.inc(len(lines))
            self._progress += 1
            self._failing, self._hinted = False, False
            self._retry_at, self._backoff = 0.0, self.retry_initial_s
        else:
            self._sink_errors.inc()
            if result is SinkResult.RETRY:
                self._failing = True
                delay = max(random.uniform(0, self._backoff), self.retry_initial_s / 2)
                # A destination may ask for a pause (HTTP Retry-After); honour it,
                # bounded so a bad header cannot stall delivery for hours.
                hint = getattr(self.sink, "retry_after_s", None)
                self._hinted = isinstance(hint, int | float) and hint > 0
                if isinstance(hint, int | float) and hint > 0:
                    delay = max(delay, min(float(hint), _MAX_RETRY_AFTER_S))
                self._retry_at = time.monotonic() + delay
                self._backoff = min(self.retry_max_s, self._backoff * 2)
        return result

    def _drain_buffer(self, stopping: bool) -> None:
        buf = self._buffer
        while buf:
            n = min(len(buf), self.max_batch_events)
            batch = [buf.popleft() for _ in range(n)]
            self._inflight = batch
            if stopping and time.monotonic() >= self._deadline:
                self._spill(batch, "shutdown")
            elif not self._sink_available():
                self._spill(batch, "sink_failure")  # never hammer a sink that backs off
            else:
                result = self._write(batch)
                if result is SinkResult.FAILURE:
                    self._dead_letter(batch, batch)
                elif result is SinkResult.RETRY and self._state is not _State.CLOSED:
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
                self._spooled_child(reason).inc(kept)
            self._spool_refused(exc)
            self._hold(batch[kept:])
            return
        self._spooled_child(reason).inc(len(batch))
        self._progress += 1
        if self._spool_refusing is not None:
            self._spool_accepts()

    def _hold(self, lines: Sequence[bytes]) -> None:
        """Keep entries the spool refused in memory, up to the bound; give up the rest."""
        room = self.max_held_events - len(self._held) - self._held_out
        if self._state is _State.CLOSED:
            room = 0
        keep = max(0, min(room, len(lines)))
        if keep:
            self._held.extend(lines[:keep])
        if keep < len(lines):
            self._last_resort(lines[keep:], "spool_unavailable")

    def _take_held(self, n: int) -> tuple[list[bytes], int]:
        """Pop up to ``n`` of the oldest held entries; also how many of them are in the fallback."""
        held = self._held
        lines: list[bytes] = []
        with contextlib.suppress(IndexError):
            for _ in range(min(n, len(held))):
                lines.append(held.popleft())
        copied = min(len(lines), self._held_copied)
        self._held_copied -= copied
        self._held_out = len(lines)
        return lines, copied

    def _return_held(self, lines: Sequence[bytes], copied: int) -> None:
        # Back to the front, oldest first. Either all of them are copied or no
        # held entry is, so the copied ones still form the oldest run.
        self._held.extendleft(reversed(lines))
        self._held_copied += copied
        self._held_out = 0

    def _retry_held(self, stopping: bool) -> None:
        held = self._held
        if not held or (stopping and time.monotonic() >= self._deadline):
            return
        if time.monotonic() >= self._spool_retry_at or self._spool_flush_asked:
            self._spool_flush_asked = False
            while held:
                lines, copied = self._take_held(self.max_batch_events)
                try:
                    last = self.spool.append(lines)
                except Exception as exc:  # noqa: BLE001 - still refused: keep holding
                    kept = 0
                    if isinstance(exc, SpoolWriteError) and exc.committed:
                        kept = exc.committed
                        self._moved_to_spool(lines[:kept], min(copied, kept), exc.last_id)
                    self._spool_refused(exc)
                    self._return_held(lines[kept:], max(0, copied - kept))
                    break
                self._moved_to_spool(lines, copied, last)
                self._spool_accepts()
        while held and self._sink_available():
            # The spool still refuses, the destination may not: give them to it.
            if stopping and time.monotonic() >= self._deadline:
                return
            lines, copied = self._take_held(self.max_batch_events)
            self._inflight = lines
            result = self._write(lines)
            self._inflight = None
            if result is SinkResult.FAILURE:
                self._dead_letter(lines, lines[copied:])
            elif result is SinkResult.RETRY and self._state is not _State.CLOSED:
                self._copy_to_fallback(lines[copied:])  # a failed attempt: now it is failing
                self._return_held(lines, len(lines))
                self._copy_waiting(stopping)
                return
            self._held_out = 0

    def _moved_to_spool(self, lines: Sequence[bytes], copied: int, last: int) -> None:
        self._held_out = 0
        self._spooled_child("spool_retry").inc(len(lines))
        self._progress += 1
        if copied:
            first = last - len(lines) + 1
            self._mark_copied(first, first + copied - 1)

    def _spool_refused(self, exc: BaseException) -> None:
        """Count a refused spool write, say so once, and schedule the next try."""
        reason = exc.reason if isinstance(exc, SpoolWriteError) else type(exc).__name__
        self.metrics.spool_write_errors.labels(self.destination, reason).inc()
        now = time.monotonic()
        if self._spool_refusing is None:
            self._spool_refusing, self._spool_refused_since = reason, now
            self._spool_backoff = self.retry_initial_s
            print(
                f"auditrail: the spool for {self.destination} refuses writes ({exc}); holding up"
                f" to {self.max_held_events} entries in memory and retrying",
                file=sys.stderr,
            )
        self._spool_retry_at = now + self._spool_backoff
        self._spool_backoff = min(_SPOOL_RETRY_MAX_S, self._spool_backoff * 2)

    def _spool_accepts(self) -> None:
        if self._spool_refusing is not None:
            since = time.monotonic() - self._spool_refused_since
            print(
                f"auditrail: the spool for {self.destination} takes writes again"
                f" (refused for {since:.1f} s)",
                file=sys.stderr,
            )
        self._spool_refusing = None
        self._spool_retry_at, self._spool_backoff = 0.0, self.retry_initial_s

    def _deliver_spool(self, stopping: bool) -> None:
        spool, dest = self.spool, self.destination
        while spool.pending(dest) and self._sink_available():
            if stopping and time.monotonic() >= self._deadline:
                return
            records = spool.read(dest, self.max_batch_events)
            if not records:
                return
            lines = [r.payload for r in records]
            result = self._write(lines)
            if result is SinkResult.RETRY:
                self._copy_waiting(stopping)
                return
            if result is SinkResult.FAILURE:
                self._dead_letter(lines, [r.payload for r in records if not self._is_copied(r.id)])
            spool.ack(dest, records)
            self._progress += 1
            if len(self._buffer) >= self.max_buffer_events // 2:
                return  # let the caller-side buffer drain before it overflows

    def _copy_waiting(self, stopping: bool) -> None:
        """While the destination is failing, copy every waiting entry to the fallback once."""
        if not self._failing:
            return
        buf = self._buffer
        while buf and not (stopping and time.monotonic() >= self._deadline):
            # Set the buffer aside too (as a pass would while the destination backs off),
            # so that no entry waiting now can reach the destination uncopied.
            batch = [buf.popleft() for _ in range(min(len(buf), self.max_batch_events))]
            self._inflight = batch
            self._spill(batch, "sink_failure")
            self._inflight = None
        if self._held_copied < len(self._held):
            held = self._held.copy()  # callers may append meanwhile; a copy is one C call
            self._copy_to_fallback(list(itertools.islice(held, self._held_copied, None)))
            self._held_copied = len(held)
        spool, dest = self.spool, self.destination
        cursor = max(self._copy_cursor, spool.acknowledged(dest))
        while not (stopping and time.monotonic() >= self._deadline):
            records = spool.read_after(dest, cursor, self.max_batch_events)
            if not records:
                break
            fresh = [r.payload for r in records if not self._in_copied_ranges(r.id)]
            if fresh:
                self._copy_to_fallback(fresh)
            cursor = records[-1].id
        self._copy_cursor = cursor
        if self._copied and self._copied[0][0] <= cursor:
            self._copied = [(max(lo, cursor + 1), hi) for lo, hi in self._copied if hi > cursor]

    def _mark_copied(self, first: int, last: int) -> None:
        ranges = self._copied
        index = bisect.bisect_left(ranges, (first, last))
        ranges.insert(index, (first, last))
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self._copied = merged

    def _in_copied_ranges(self, record_id: int) -> bool:
        index = bisect.bisect_right(self._copied, (record_id, float("inf"))) - 1
        return index >= 0 and self._copied[index][0] <= record_id <= self._copied[index][1]

    def _is_copied(self, record_id: int) -> bool:
        return record_id <= self._copy_cursor or self._in_copied_ranges(record_id)

    def _copy_to_fallback(self, lines: Sequence[bytes]) -> None:
        if not lines:
            return
        self._progress += 1
        try:
            result = self.fallback.write_batch(lines)
        except Exception:  # noqa: BLE001
            result = SinkResult.RETRY
        if result is SinkResult.SUCCESS:
            self.metrics.fallback_writes.labels(self.destination).inc(len(lines))
        else:
            self._report("fallback", f"the fallback {self.fallback!r} refused {len(lines)} entries")

    def _dead_letter(self, lines: Sequence[bytes], uncopied: Sequence[bytes]) -> None:
        """Keep a batch the destination refused for good (``uncopied``: not yet in the fallback)."""
        self.metrics.dead_letters.labels(self.destination).inc(len(lines))
        reason = getattr(self.sink, "last_error", None)
        print(
            f"auditrail: {self.destination} permanently refused {len(lines)} entries"
            + (f" ({reason})" if reason else "")
            + f"; kept in {self.dead_letter_dir} for `auditrail spool redeliver`",
            file=sys.stderr,
        )
        try:
            self.dead_letter_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.dead_letter_dir / f"{self.destination}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                data = memoryview(b"".join(line + b"\n" for line in lines))
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._last_resort(
                lines, "dead_letter_unavailable", f"dead-letter write failed: {exc}", uncopied
            )
            return
        self._copy_to_fallback(uncopied)

    def _last_resort(
        self,
        lines: Sequence[bytes],
        reason: str,
        why: str | None = None,
        uncopied: Sequence[bytes] | None = None,
    ) -> None:
        # Nothing else can keep these: write them to the fallback (unless they
        # are there already) and count them, so that the dropped counter is
        # exactly what exists nowhere but the fallback.
        self._copy_to_fallback(lines if uncopied is None else uncopied)
        self.metrics.dropped.labels(reason).inc(len(lines))
        self._report(
            f"dropped:{reason}",
            f"{why or self._drop_reason(reason)}; {len(lines)} entries are only in the fallback"
            " (audit_log_dropped_entries_total)",
            len(lines),
        )

    def _drop_reason(self, reason: str) -> str:
        if reason == "spool_unavailable":
            return (
                f"the spool for {self.destination} refuses writes"
                f" ({self._spool_refusing or 'closed'}) and {self.max_held_events} entries are"
                " already held in memory"
            )
        return f"entries for {self.destination} arrived after its spool closed"

    def _report(self, key: str, message: str, count: int = 1) -> None:
        """One stderr line per kind of trouble at most every _REPORT_EVERY_S, with a tally."""
        now = time.monotonic()
        last, untold = self._reported.get(key, (-_REPORT_EVERY_S, 0))
        if now - last < _REPORT_EVERY_S:
            self._reported[key] = (last, untold + count)
            return
        self._reported[key] = (now, 0)
        more = f" (and {untold} more since the last report)" if untold else ""
        print(f"auditrail: {message}{more}", file=sys.stderr)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            # Also writes an ack the disk refused earlier (see Spool.ack).
            self._last_sync = now
            with contextlib.suppress(OSError):
                self.spool.sync()
        if self.orphan_base is not None and now - self._last_adopt >= 30.0:
            self._last_adopt = now
            with contextlib.suppress(Exception):
                adopt_orphans(self.orphan_base, self.spool)
        corrupt = self.spool.corrupt_records
        if corrupt > self._spool_corrupt_seen:
            self.metrics.spool_corrupt.inc(corrupt - self._spool_corrupt_seen)
            self._spool_corrupt_seen = corrupt

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

        A second SIGTERM during shutdown ends here (``auditrail.runtime``);
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
                self._last_resort(lines, "spool_closed")
            else:
                self._spill(lines, reason)
        if final and self._held:
            # The last chance for entries the spool refused: spool them now or
            # give them up to the fallback (counted) before memory goes away.
            held, copied = self._take_held(len(self._held))
            kept = 0
            if self._state is not _State.CLOSED:
                try:
                    self.spool.append(held)
                    kept = len(held)
                except Exception as exc:  # noqa: BLE001
                    kept = exc.committed if isinstance(exc, SpoolWriteError) else 0
                if kept:
                    self._spooled_child(reason).inc(kept)
            self._held_out = 0
            rest = held[kept:]
            if rest:
                self._last_resort(rest, "spool_unavailable", uncopied=rest[max(0, copied - kept) :])

    def gauge_snapshot(self) -> tuple[int, int, int, float | None]:
        stats = self.spool.stats()
        oldest_ms = stats.oldest_pending_ms.get(self.destination)
        return (
            len(self._buffer) + len(self._held),
            stats.bytes,
            stats.pending_records.get(self.destination, 0),
            oldest_ms / 1000 if oldest_ms is not None else None,
        )
