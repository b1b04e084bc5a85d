"""Reading and writing files that hold secrets: owner-only, checked on the open descriptor."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from auditkeep.exceptions import ConfigError

MAX_SECRET_FILE_BYTES: Final = 64 * 1024
SIGNING_KEY_VARIABLE: Final = "AUDIT_LOG_SIGNING_KEY_FILE"
SEAL_KEY_VARIABLE: Final = "AUDIT_LOG_SEAL_KEY_FILE"


def read_private(path: Path, variable: str) -> bytes:
    """The content of an owner-only file, or ``ConfigError`` naming ``variable``.

    Mode and owner are read from the descriptor that is then read (``fstat``),
    so a file swapped between check and read cannot slip through. Symbolic
    links are followed (secret mounts are links); the file they reach is
    judged. The content never appears in an error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(variable, f"cannot open {str(path)!r} ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(variable, f"{str(path)!r} is not a regular file")
        if info.st_uid != os.getuid():
            raise ConfigError(
                variable,
                f"{str(path)!r} is owned by uid {info.st_uid}, not by this process's user "
                f"(uid {os.getuid()}); a key file must belong to the user that runs the service",
            )
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise ConfigError(
                variable,
                f"{str(path)!r} has mode {mode:04o}; a key file must be readable by its owner "
                f"only: chmod 600 {str(path)!r}",
            )
        if info.st_size > MAX_SECRET_FILE_BYTES:
            raise ConfigError(variable, f"{str(path)!r} is too large to be a key file")
        chunks = []
        total = 0
        while chunk := os.read(fd, 8192):
            total += len(chunk)
            if total > MAX_SECRET_FILE_BYTES:
                raise ConfigError(variable, f"{str(path)!r} is too large to be a key file")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (refusing to replace a file) and write ``data``, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widened beyond `mode`
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename over it, fsync the dir."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        write_new(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
