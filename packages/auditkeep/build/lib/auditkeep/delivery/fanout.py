"""Every destination of one logger: one pipeline and one spool each, in one claimed slot.

A slow or dead destination never holds back, or duplicates into, another: each
has its own buffer, spool and position. They share the slot (``slots.py``),
the fallback, and the shutdown deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from auditkeep.delivery.dead_letters import dead_letter_path
from auditkeep.delivery.fallback import default_fallback
from auditkeep.delivery.options import DeliveryOptions
from auditkeep.delivery.pipeline import DeliveryPipeline
from auditkeep.delivery.slots import claim_spool_dir
from auditkeep.delivery.spool import Spool
from auditkeep.metrics import AuditMetrics
from auditkeep.typing import Sink


class FanOut:
    """The pipelines of one logger, submitted to, flushed and closed together.

    Raises:
        SpoolLockedError: every slot under ``spool_dir`` is held by a live process.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        spool_dir: str | Path,
        options: DeliveryOptions,
        metrics: AuditMetrics,
        fallback: Sink | None = None,
    ) -> None:
        base = Path(spool_dir)
        self._claim = claim_spool_dir(base)
        shared = fallback if fallback is not None else default_fallback(sinks)
        built: list[DeliveryPipeline] = []
        try:
            for sink in sinks:
                spool = Spool(
                    self._claim.spool_dir(sink.name),
                    [sink.name],
                    max_segment_bytes=options.spool_segment_bytes,
                    max_bytes=options.spool_max_bytes,
                )
                built.append(
                    DeliveryPipeline(
                        sink,
                        spool,
                        fallback=shared,
                        metrics=metrics,
                        options=options,
                        orphan_base=base,
                        dead_letter_file=dead_letter_path(base, sink.name),
                    )
                )
        except BaseException:
            # A spool that cannot be opened: stop what started and free the slot.
            for pipeline in built:
                pipeline.close(0)
            self._claim.release()
            raise
        self.pipelines = tuple(built)
        self.submit: Callable[[bytes], None]
        """Hand one encoded entry to every destination (the emit path's one call)."""
        if len(self.pipelines) == 1:
            self.submit = self.pipelines[0].submit
        else:
            submits = [p.submit for p in self.pipelines]

            def fan_out(line: bytes) -> None:
                for submit in submits:
                    submit(line)

            self.submit = fan_out

    def __repr__(self) -> str:
        return repr(list(self.pipelines))

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        results = [p.flush(max(0.0, deadline - time.monotonic())) for p in self.pipelines]
        return all(results)

    def hurry(self) -> None:
        """During ``close``: stop delivering now and hand what is left to the spool."""
        for pipeline in self.pipelines:
            pipeline.hurry()

    def close(self, timeout_s: float) -> bool:
        """Deliver until the deadline, spool the rest, release the slot; idempotent.

        The hand-over to the spool runs on its own thread: Python runs signal
        handlers only on the main thread, so a second SIGTERM (or any handler
        that raises) can interrupt this wait but never the hand-over itself.
        An interruption cuts the deadline short; the exception is re-raised
        once every entry is delivered or spooled.
        """
        deadline = time.monotonic() + timeout_s
        for pipeline in self.pipelines:
            pipeline.begin_close(deadline)
        results: list[bool] = []
        done = threading.Event()

        def hand_over() -> None:
            try:
                results.extend(p.finish_close() for p in self.pipelines)
            finally:
                done.set()

        interrupted: BaseException | None = None
        threading.Thread(target=hand_over, name="auditkeep-close").start()
        # Not Thread.join: on 3.11 an exception raised inside join() marks
        # the still-running thread as finished (bpo-45274's fix), and the
        # interpreter would exit under it.
        while not done.is_set():
            try:
                done.wait(0.05)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                interrupted = interrupted or exc
                self.hurry()
        self._claim.release()
        if interrupted is not None:
            raise interrupted
        return len(results) == len(self.pipelines) and all(results)
