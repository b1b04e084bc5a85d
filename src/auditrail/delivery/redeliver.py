"""Send dead letters again once the destination has been fixed (``auditrail spool redeliver``).

A destination that refuses a batch for good (an HTTP 400, 401, 403 or 413, say) gets
it dead-lettered by the pipeline: the entries are appended to
``<spool base>/dead-letters/<destination>.jsonl``, one per line. Once the cause is fixed,
``redeliver_dead_letters`` sends that file through a sink of the same name.

Safety with a live writer: the pipeline of a running process may dead-letter more
entries at any moment, appending to the same file. So the file is first renamed to
``<destination>.jsonl.inflight`` (an atomic step; the pipeline's next append creates a
fresh file), and only the renamed file is read. Entries the destination still refuses,
and what is left unsent when it becomes unavailable, are appended back to the live file
(and fsynced) before the ``.inflight`` file is removed, so a crash at any point loses
nothing; at worst an entry is sent, or kept, twice (at-least-once). A ``.inflight``
file left by an interrupted run is taken up first. Two redeliveries of one destination
exclude each other with a lock file.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from auditrail.typing import Sink, SinkResult

__all__ = ["dead_letter_path", "redeliver_dead_letters"]


def dead_letter_path(spool_base: str | os.PathLike[str], destination: str) -> Path:
    """Where the pipeline keeps the entries ``destination`` refused for good.

    .. versionadded:: 0.1.0
    """
    return Path(spool_base) / "dead-letters" / f"{destination}.jsonl"


def redeliver_dead_letters(
    spool_base: str | os.PathLike[str], sink: Sink, *, max_batch_events: int = 512
) -> int:
    """Send the dead letters of ``sink.name`` through ``sink``; return how many were delivered.

    Each batch gets one attempt. Delivered entries leave the file; refused ones
    (``FAILURE``) stay in it; at the first ``RETRY`` the rest of the file stays as it is.
    The file is removed when everything was delivered. The caller owns ``sink`` (it is
    not closed here).

    Raises:
        ValueError: ``max_batch_events`` is not positive.
        OSError: the dead-letter directory cannot be read or written.

    .. versionadded:: 0.1.0
    """
    if max_batch_events <= 0:
        raise ValueError("max_batch_events must be positive")
    live = dead_letter_path(spool_base, sink.name)
    if not live.parent.is_dir():
        return 0
    inflight = live.with_name(live.name + ".inflight")
    delivered = 0
    with _locked(live.with_name(live.name + ".lock")):
        # A leftover from an interrupted run first, then the live file (once: what we put
        # back into it during this run is not taken up again).
        for take_live in (False, True):
            if take_live:
                try:
                    os.rename(live, inflight)
                except FileNotFoundError:
                    break
            elif not inflight.exists():
                continue
            sent, unavailable = _redeliver_file(inflight, live, sink, max_batch_events)
            delivered += sent
            if unavailable:
                break
    return delivered


def _redeliver_file(
    inflight: Path, live: Path, sink: Sink, max_batch_events: int
) -> tuple[int, bool]:
    lines = [line for line in inflight.read_bytes().split(b"\n") if line.strip()]
    delivered = 0
    keep: list[bytes] = []
    unavailable = False
    for start in range(0, len(lines), max_batch_events):
        batch = lines[start : start + max_batch_events]
        if unavailable:
            keep += batch
            continue
        try:
            result = sink.write_batch(batch)
        except Exception:  # noqa: BLE001 - treated like the pipeline does: try later
            result = SinkResult.RETRY
        if result is SinkResult.SUCCESS:
            delivered += len(batch)
        elif result is SinkResult.FAILURE:
            keep += batch
        else:
            unavailable = True
            keep += batch
    if keep:
        _append_durably(live, keep)
    inflight.unlink()
    return delivered, unavailable


def _append_durably(path: Path, lines: Sequence[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        data = memoryview(b"".join(line + b"\n" for line in lines))
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
