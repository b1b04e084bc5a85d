"""JSON lines to a local file, rotated by size, shared safely between processes.

Several processes may write to one destination, each with its own ``FileSink``
(the agent and the task processes it starts). They coordinate through an
exclusive ``flock`` on a sidecar file, ``<path>.lock``. Holding that lock, a
sink does this for every batch:

1. It checks that ``path`` still names the file it has open (same ``st_dev``
   and ``st_ino``), and reopens ``path`` if the file was renamed or removed.
2. It rotates if the batch would take a non-empty file past ``max_bytes``.
3. It appends the whole batch with one ``os.write`` loop.

When every writer is a ``FileSink``, this gives these guarantees:

* A line is never split, and lines from different processes never interleave.
* Every line of a successful ``write_batch`` is in exactly one file. A rotation
  by one process loses nothing written by another, because a writer that has
  not yet noticed the rotation checks the inode again, under the lock, before
  it writes.
* Batches are never split across files, so a file is larger than
  ``max_bytes`` only when it holds one batch that is itself larger.
* On an ``OSError``, ``write_batch`` returns ``SinkResult.RETRY`` and reopens
  the file on the next call. If only part of a batch was written, that part is
  truncated away (best effort), so a retry leaves no half line behind.

Rotation uses logrotate's names: ``path`` → ``path.1`` → ``path.2`` → …, a
higher number being older. With ``compress=True`` the backups are
``path.1.gz``, ``path.2.gz``, and so on. Compression runs under the lock, so
writers in other processes wait for it (roughly a second per 100 MiB).

What happens once there are ``backups`` rotated files is the ``retention``:

* ``"keep"`` (the default): nothing is ever deleted; numbering goes on past
  ``backups`` (``path.11``, ``path.12``, …), and every rotation renames each
  backup once (~18 µs a file measured: 35 ms with 2,000 backups). An audit
  trail that a flood of writes can push out is no trail; disk space is watched
  instead (``auditkeep._disk``) and the operator decides what to archive.
* ``"delete"``: every backup numbered above ``backups`` is deleted, and the
  sink reports each deletion (name, size, entries, first and last timestamp)
  to ``on_rotated_out`` (the logger built by ``auditkeep.config`` records it as
  an ``auditkeep.file.rotated_out`` entry and counts it) or, without a
  callback, as a warning of the ``auditkeep.sinks.file`` logger (on stderr
  when the application configured no logging). Deletion is never silent. To count its entries, the
  file is read once, under the lock, before it is deleted.

External logrotate is supported in its ``create`` mode (rename the file, then
start a new one). The sink reopens ``path`` on its next write, or at once when
``FileSink.reopen`` runs (see ``install_sighup_reopen``). A batch written
between the rename and the reopen lands in the renamed file, which still means
exactly once. Use ``delaycompress`` so that logrotate never compresses a file
that a sink may still be appending to. ``copytruncate`` is not supported: lines
written between the copy and the truncate are lost, and that is inherent to
copytruncate.

Limitations: the lock file must stay where it is while writers run (keep it out
of logrotate's patterns), and ``flock`` needs a local filesystem.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import os
import shutil
import signal
import threading
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar, Final, TypeAlias

import orjson

from auditkeep._rotation import GZ_SUFFIX as _GZ
from auditkeep._rotation import backups, rotation_family
from auditkeep.delivery._files import held
from auditkeep.typing import SinkResult

__all__ = ["RETENTIONS", "FileSink", "RotatedOut", "install_sighup_reopen", "rotated_files"]

rotated_files = rotation_family
"""The live file and its backups that exist, oldest first, one per number (``auditkeep._rotation``).

.. versionadded:: 0.1.0
"""

RETENTIONS: Final = ("keep", "delete")
"""What rotation does once ``backups`` files exist: keep them all, or delete the oldest."""
_SUMMARY_BLOCK: Final = 1 << 20
_EDGE_BYTES: Final = 64 * 1024
_log: Final = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RotatedOut:
    """A rotated file that ``retention="delete"`` deleted, and what it held.

    ``entries``, ``first_timestamp`` and ``last_timestamp`` are None when the
    file could not be read to the end; the timestamps are those of the file's
    first and last lines (a spool replay can put older entries later).

    .. versionadded:: 0.1.0
    """

    file: str
    bytes: int
    entries: int | None
    first_timestamp: str | None
    last_timestamp: str | None
    backups: int
    """The ``backups`` setting that made the deletion happen."""


class FileSink:
    """Appends each batch as JSON lines to a file and rotates the file by size.

    Args:
        path: The live file. Its directory must already exist.
        max_bytes: Rotate before a batch would take a non-empty file past this
            size. ``0`` disables rotation.
        backups: With ``retention="delete"``, how many rotated files to keep
            (``path.1`` … ``path.<backups>``). Must be at least 1 when
            ``max_bytes > 0``. Not used with ``retention="keep"``.
        compress: Gzip rotated files (``path.1.gz`` …). Needs ``max_bytes > 0``.
        file_mode: Permissions of the files the sink creates, set exactly
            whatever the umask is. Must include owner read and write.
        fsync: ``fsync`` the file after every batch.
        retention: ``"keep"`` (never delete a rotated file) or ``"delete"``
            (delete those numbered above ``backups``); see the module docs.
        on_rotated_out: Called with a ``RotatedOut`` for every file
            ``retention="delete"`` deleted, in the writing thread, after the
            batch and with no lock held. Without it, each deletion is logged
            as a warning. Also settable later as the attribute of that name.

    Raises:
        ValueError: An argument is out of range, or the combination is impossible.
        FileNotFoundError: The directory of ``path`` does not exist.
        OSError: The file or its lock file cannot be opened.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 10,
        compress: bool = False,
        file_mode: int = 0o600,
        fsync: bool = False,
        retention: str = "keep",
        on_rotated_out: Callable[[RotatedOut], None] | None = None,
    ) -> None:
        _check_count("max_bytes", max_bytes)
        if retention not in RETENTIONS:
            raise ValueError(f"retention must be one of {RETENTIONS}, got {retention!r}")
        _check_count("backups", backups)
        if max_bytes > 0 and backups < 1:
            raise ValueError(
                "backups must be >= 1 when max_bytes > 0 (rotation needs somewhere to keep the "
                "old file); use max_bytes=0 to disable rotation"
            )
        if compress and max_bytes == 0:
            raise ValueError("compress=True needs rotation: set max_bytes > 0")
        if file_mode & ~0o777 or file_mode & 0o600 != 0o600:
            raise ValueError(
                f"file_mode must be permission bits including owner read and write (0o600), "
                f"got {file_mode:#o}"
            )
        self._path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self._path))
        if not os.path.isdir(parent):
            raise FileNotFoundError(
                errno.ENOENT, "directory of the audit file does not exist", parent
            )
        self._lock_path = self._path + ".lock"
        self._max_bytes = max_bytes
        self._backups = backups
        self._compress = compress
        self._file_mode = file_mode
        self._fsync = fsync
        self._retention = retention
        self.on_rotated_out = on_rotated_out
        self._rotated_out: list[RotatedOut] = []
        # Serialises threads: flock cannot, since they share one open file description.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._reopen_requested = False
        self._fd: int | None = None
        self._lock_fd: int | None = _open_private(self._lock_path, os.O_WRONLY, file_mode)
        try:
            self._fd = self._open_live()
        except OSError:
            self._close_fds()
            raise
        _register(self, add=True)

    def __repr__(self) -> str:
        return (
            f"FileSink(path={self._path!r}, max_bytes={self._max_bytes}, "
            f"backups={self._backups}, compress={self._compress}, retention={self._retention!r})"
        )

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if self._closed:
            return SinkResult.retry("sink closed")
        if not lines:
            return SinkResult.SUCCESS
        data = b"\n".join(lines) + b"\n"
        result = SinkResult.SUCCESS
        with self._lock:
            if self._closed:
                return SinkResult.retry("sink closed")
            try:
                self._append(data)
            except OSError as exc:
                # The file may have been replaced or its disk may have filled:
                # start again from fresh descriptors on the next batch.
                self._close_fds()
                result = SinkResult.retry(f"cannot write {self._path}: {exc.strerror or exc}")
            finally:
                if self._closed:
                    # close() timed out waiting for this batch and left the closing to us.
                    self._close_fds()
                deleted, self._rotated_out = self._rotated_out, []
        # Reported with no lock held: the callback emits an entry, which may
        # come back to this sink (another thread's batch) without deadlock.
        for info in deleted:
            self._report_rotated_out(info)
        return result

    def _report_rotated_out(self, info: RotatedOut) -> None:
        callback = self.on_rotated_out
        if callback is not None:
            try:
                callback(info)
                return
            except Exception as exc:  # noqa: BLE001 - reporting must not fail the batch
                why = f" (on_rotated_out failed: {exc.__class__.__name__})"
        else:
            why = ""
        _log.warning(
            "auditkeep: retention=delete deleted %r: %s bytes, %s entries, %s .. %s%s",
            info.file,
            info.bytes,
            info.entries,
            info.first_timestamp,
            info.last_timestamp,
            why,
        )

    def flush(self, timeout_s: float) -> bool:
        # os.write keeps nothing in user space; fsync=True already syncs every batch.
        return True

    def close(self, timeout_s: float) -> None:
        self._closed = True
        _register(self, add=False)
        if self._lock.acquire(timeout=max(timeout_s, 0.0)):
            try:
                self._close_fds()
            finally:
                self._lock.release()

    def reopen(self) -> None:
        """Close the file and open ``path`` again, after an external rotation.

        This is safe to call from a signal handler and never blocks: if a write
        is in progress, the reopen happens at the start of the next batch.
        Errors are not raised. If ``path`` cannot be opened, the next
        ``write_batch`` tries again and returns ``SinkResult.RETRY`` if it fails.

        .. versionadded:: 0.1.0
        """
        self._reopen_requested = True
        # Never wait: a signal handler may be interrupting the thread that holds the lock.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self._closed:
                self._reopen_requested = False
                self._close_file()
                with contextlib.suppress(OSError):
                    self._fd = self._open_live()
        finally:
            self._lock.release()

    def _append(self, data: bytes) -> None:
        if self._pid != os.getpid():
            # A forked child shares the parent's open file descriptions, and a flock
            # belongs to one of those, so the child needs its own to exclude the parent.
            self._close_fds()
            self._pid = os.getpid()
        if self._lock_fd is None:
            self._lock_fd = _open_private(self._lock_path, os.O_WRONLY, self._file_mode)
        with held(self._lock_fd):
            fd = self._current_fd()
            size = os.fstat(fd).st_size
            if self._max_bytes and size and size + len(data) > self._max_bytes:
                fd = self._rotate()
                size = 0
            _write_all(fd, data, size)
            if self._fsync:
                os.fsync(fd)

    def _current_fd(self) -> int:
        fd = self._fd
        if fd is not None and not self._reopen_requested and _same_file(self._path, fd):
            return fd
        self._reopen_requested = False
        self._close_file()
        self._fd = self._open_live()
        return self._fd

    def _rotate(self) -> int:
        base = self._path
        # Highest number first, so that no rename ever lands on an existing name.
        # Both forms move, so that a change of `compress` keeps one file per number.
        for number, suffix in sorted(_backup_names(base), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{base}.{number}{suffix}", f"{base}.{number + 1}{suffix}")
        os.rename(base, f"{base}.1")
        self._close_file()
        self._fd = self._open_live()
        if self._compress:
            _gzip_file(f"{base}.1", f"{base}.1{_GZ}", self._file_mode)
        if self._retention == "delete":
            for number, suffix in sorted(_backup_names(base), reverse=True):
                if number > self._backups:
                    self._delete_backup(f"{base}.{number}{suffix}")
        return self._fd

    def _delete_backup(self, path: str) -> None:
        info = _summarize(path, self._backups)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        self._rotated_out.append(info)

    def _open_live(self) -> int:
        return _open_private(self._path, os.O_WRONLY | os.O_APPEND, self._file_mode)

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_fds(self) -> None:
        self._close_file()
        lock_fd, self._lock_fd = self._lock_fd, None
        if lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock_fd)


def _backup_names(base: str) -> list[tuple[int, str]]:
    """(number, "" or ".gz") of every backup of ``base`` that exists."""
    return [(number, suffix) for number, suffix, _ in backups(base)]


def _summarize(path: str, backups: int) -> RotatedOut:
    """What a backup holds, read once from start to end (bounded memory)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    entries: int | None = 0
    head = b""
    tail = b""
    try:
        opener: Callable[[str], Any] = gzip.open if path.endswith(_GZ) else _open_binary
        with opener(path) as handle:
            while block := handle.read(_SUMMARY_BLOCK):
                if b"\n" not in head and len(head) < _EDGE_BYTES:
                    head += block[:_EDGE_BYTES]
                assert entries is not None
                entries += block.count(b"\n")
                tail = tail[-_EDGE_BYTES:] + block
    except (OSError, EOFError, ValueError, zlib.error):
        entries = None  # unreadable or a cut-off gzip member: size and name still say it
    first = head.split(b"\n", 1)[0]
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return RotatedOut(
        file=path,
        bytes=size,
        entries=entries,
        first_timestamp=_timestamp_of(first),
        last_timestamp=_timestamp_of(last),
        backups=backups,
    )


def _open_binary(path: str) -> Any:
    return open(path, "rb")


def _timestamp_of(line: bytes) -> str | None:
    try:
        value = orjson.loads(line).get("timestamp")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and len(value) <= 64 else None


_Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | None

_registry_lock = threading.Lock()
_live_sinks: weakref.WeakSet[FileSink] = weakref.WeakSet()
_previous_sighup: _Handler = None


def install_sighup_reopen() -> None:
    """Make SIGHUP reopen every live ``FileSink``, as logrotate's ``postrotate`` expects.

    A Python handler that was installed before is still called, after the
    reopens. Calling this function again does nothing.

    Raises:
        RuntimeError: Not called from the main thread (Python sets signal
            handlers only there).

    .. versionadded:: 0.1.0
    """
    global _previous_sighup
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_sighup_reopen() must be called from the main thread")
    current = signal.getsignal(signal.SIGHUP)
    if current is _on_sighup:
        return
    _previous_sighup = current
    signal.signal(signal.SIGHUP, _on_sighup)


def _on_sighup(signum: int, frame: FrameType | None) -> None:
    for sink in _live_sinks:
        sink.reopen()
    previous = _previous_sighup
    if callable(previous):
        previous(signum, frame)


def _register(sink: FileSink, *, add: bool) -> None:
    global _live_sinks
    with _registry_lock:
        # Copy on write: the SIGHUP handler reads the set without the lock (it may
        # interrupt the thread that holds it), so the set it sees must never change.
        sinks = weakref.WeakSet(_live_sinks)
        if add:
            sinks.add(sink)
        else:
            sinks.discard(sink)
        _live_sinks = sinks


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _open_private(path: str, flags: int, mode: int) -> int:
    flags |= os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, flags, mode)
    try:
        # A file we create gets exactly `mode`; the umask could have narrowed it.
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def _same_file(path: str, fd: int) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _write_all(fd: int, data: bytes, start: int) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        if len(view) < len(data):
            # Other writers wait on the lock, so everything past `start` is ours:
            # cutting it keeps the retried batch from leaving half a line behind.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
        raise


def _gzip_file(src: str, dst: str, mode: int) -> None:
    tmp = dst + ".tmp"
    fd = _open_private(tmp, os.O_WRONLY | os.O_TRUNC, mode)
    try:
        with open(fd, "wb") as raw, open(src, "rb") as plain:
            with gzip.GzipFile(fileobj=raw, mode="wb") as packed:
                shutil.copyfileobj(plain, packed, 1 << 20)
            raw.flush()
            # The plain copy is deleted next, so the compressed one must be on disk first.
            os.fsync(raw.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.unlink(src)
