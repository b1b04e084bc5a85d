"""Free disk space where the audit file and the spool live, and a warning before it runs out.

This is the first rung of the disk-space ladder (docs/retention.md): a gauge of
free space, and a loud warning each time free space falls below
``AUDIT_LOG_DISK_WARN_FREE`` (and one when it is back above), logged by the
``auditkeep.disk`` logger: on stderr when the application configured no logging. The next rungs,
a full disk, are the pipeline's: entries go to the fallback and are counted,
and delivery resumes by itself when space returns (docs/delivery.md).

Free space is read with ``os.statvfs`` (about a microsecond): at every
Prometheus scrape, and every ``CHECK_INTERVAL_S`` by one daemon thread per
process, so the warning appears even where nobody scrapes. "Free" is what an
unprivileged writer can still use (``f_bavail``), not the root reserve.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from auditkeep._env import MAX_NUMBER_CHARS, shown
from auditkeep.exceptions import ConfigError

CHECK_INTERVAL_S: Final = 5.0
"""How often the monitor thread looks at free space between scrapes."""
WARN_VARIABLE: Final = "AUDIT_LOG_DISK_WARN_FREE"
MAX_WARN_BYTES: Final = 1 << 60
_WHERE: Final = {"file": "the audit file", "spool": "the spool"}
_log: Final = logging.getLogger("auditkeep.disk")


@dataclass(frozen=True, slots=True)
class FreeSpaceThreshold:
    """Warn below this much free space: a percentage of the filesystem, or bytes.

    .. versionadded:: 0.1.0
    """

    percent: float | None = 10.0
    bytes: int | None = None

    def is_low(self, free: int, total: int) -> bool:
        """Whether ``free`` of ``total`` bytes is below the threshold (0 never is)."""
        if self.bytes is not None:
            return free < self.bytes
        if self.percent is not None and total > 0:
            return free * 100 < self.percent * total
        return False

    def __str__(self) -> str:
        if self.bytes is not None:
            return f"{self.bytes} bytes"
        return f"{self.percent:g}%"


def threshold_from_env(env: Mapping[str, str]) -> FreeSpaceThreshold:
    """Read ``AUDIT_LOG_DISK_WARN_FREE``: ``N%`` (0 to 99) or a byte count; default 10%.

    Raises:
        ConfigError: naming the variable and the allowed forms.
    """
    allowed = f"a percentage from 0% to 99%, or bytes from 0 to {MAX_WARN_BYTES}; 0 disables"
    raw = (env.get(WARN_VARIABLE) or "").strip()
    if not raw:
        return FreeSpaceThreshold()
    if len(raw) > MAX_NUMBER_CHARS:
        raise ConfigError(
            WARN_VARIABLE, f"value too long ({len(raw)} characters); allowed: {allowed}"
        )
    try:
        if raw.endswith("%"):
            percent = float(raw[:-1])
            if math.isfinite(percent) and 0 <= percent < 100:
                return FreeSpaceThreshold(percent=percent)
        else:
            count = int(raw)
            if 0 <= count <= MAX_WARN_BYTES:
                return FreeSpaceThreshold(percent=None, bytes=count)
    except ValueError:
        pass
    raise ConfigError(WARN_VARIABLE, f"got {shown(raw)}; allowed: {allowed}")


@dataclass(frozen=True, slots=True)
class DiskReading:
    """Free space of the filesystem holding one watched directory."""

    label: str
    directory: str
    free_bytes: int
    total_bytes: int
    low: bool


class DiskWatch:
    """The directories one metrics registry reports on, and whether each is low on space.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[tuple[str, str], FreeSpaceThreshold] = {}
        self._low: dict[tuple[str, str], bool] = {}

    def watch(
        self,
        label: str,
        directory: str | os.PathLike[str],
        threshold: FreeSpaceThreshold,
        *,
        monitor: bool = True,
    ) -> None:
        """Report on ``directory`` as ``path=label`` and warn below ``threshold``.

        ``monitor=False`` leaves the checks to whoever calls ``check`` (a scrape,
        or ``auditkeep check-config``) instead of the process's monitor thread.
        """
        key = (label, os.path.abspath(os.fspath(directory)))
        with self._lock:
            self._watched[key] = threshold
        if monitor:
            _monitor(self)

    def check(self) -> list[DiskReading]:
        """Read free space now; log one warning for each threshold crossing."""
        readings: list[DiskReading] = []
        with self._lock:
            for key, threshold in list(self._watched.items()):
                label, directory = key
                try:
                    stat = os.statvfs(directory)
                except FileNotFoundError:
                    # The directory is gone (a test's, or a reconfigured one): stop watching.
                    del self._watched[key]
                    self._low.pop(key, None)
                    continue
                except OSError:
                    continue
                free = stat.f_bavail * stat.f_frsize
                total = stat.f_blocks * stat.f_frsize
                low = threshold.is_low(free, total)
                if low != self._low.get(key, False):
                    _announce(label, directory, free, total, threshold, low=low)
                self._low[key] = low
                readings.append(DiskReading(label, directory, free, total, low))
        return readings


def _announce(
    label: str, directory: str, free: int, total: int, threshold: FreeSpaceThreshold, *, low: bool
) -> None:
    where = _WHERE.get(label, label)
    percent = free * 100 / total if total else 0.0
    amount = f"{free} of {total} bytes free ({percent:.1f}%) in {directory!r}"
    if low:
        line = (
            f"auditkeep: WARNING: low disk space where {where} lives: {amount}, below "
            f"{WARN_VARIABLE}={threshold}; free space or grow the volume before the disk is full "
            "and entries go to the fallback (see docs/retention.md)"
        )
    else:
        line = f"auditkeep: disk space where {where} lives is above {WARN_VARIABLE} again: {amount}"
    _log.warning("%s", line)


_monitored: weakref.WeakSet[DiskWatch] = weakref.WeakSet()
_monitor_lock = threading.Lock()
_monitor_thread: threading.Thread | None = None


def _monitor(watch: DiskWatch) -> None:
    global _monitor_thread
    with _monitor_lock:
        _monitored.add(watch)
        if _monitor_thread is None or not _monitor_thread.is_alive():
            _monitor_thread = threading.Thread(
                target=_run_monitor, name="auditkeep-disk-watch", daemon=True
            )
            _monitor_thread.start()


def _run_monitor() -> None:
    pause = threading.Event()
    while not pause.wait(CHECK_INTERVAL_S):
        for watch in list(_monitored):
            try:
                watch.check()
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive any surprise
                _log.warning("auditkeep: disk watch error: %r", exc)


def _forget_monitor_in_child() -> None:
    # A forked child has no copy of the thread (the next watch() starts its own),
    # and a lock the thread held at the fork would stay held for ever.
    global _monitor_thread, _monitor_lock
    _monitor_thread = None
    _monitor_lock = threading.Lock()
    for watch in list(_monitored):
        watch._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_monitor_in_child)
