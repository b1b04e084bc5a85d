"""The names of a file destination's rotated backups: one rule for the sink and the readers.

Backups use logrotate's names: ``live.N`` or ``live.N.gz``, a higher ``N``
being older. The file sink renames and deletes them (``backups``); the query
commands and ``auditkeep.testing.read_trail`` read them (``rotation_family``).

When both ``live.N`` and ``live.N.gz`` exist, the plain one is read and the
compressed one is not: every writer that leaves both behind leaves the plain
one complete. The sink compresses into ``live.N.gz.tmp``, fsyncs, renames it
to ``live.N.gz`` and only then deletes ``live.N`` (a crash between the last
two steps leaves two complete copies); gzip, as logrotate runs it, writes
``live.N.gz`` progressively and deletes ``live.N`` at the end, so there the
compressed copy may still be half written. Reading one copy, never both,
means no line is read twice. (Decompressing a backup by hand in place,
``gunzip live.N.gz``, is the reverse case: read it once gunzip has finished.)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

GZ_SUFFIX: Final = ".gz"


def backup_name(live_name: str) -> re.Pattern[str]:
    """The file names of ``live_name``'s backups (``fullmatch``): group 1 is N, group 2 ``.gz``."""
    return re.compile(re.escape(live_name) + r"\.([1-9][0-9]*)(\.gz)?")


def backups(live: str | os.PathLike[str]) -> list[tuple[int, str, Path]]:
    """Every backup of ``live`` that exists, both forms: ``(N, "" or ".gz", path)``, unordered.

    The sink needs both forms (it renames each one); readers use ``rotation_family``.
    """
    live_path = Path(live)
    pattern = backup_name(live_path.name)
    found: list[tuple[int, str, Path]] = []
    with (
        contextlib.suppress(FileNotFoundError, NotADirectoryError),
        os.scandir(live_path.parent) as entries,
    ):
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and entry.is_file():
                found.append((int(match[1]), match[2] or "", Path(entry.path)))
    return found


def without_compressing_twins(paths: Iterable[Path]) -> list[Path]:
    """Drop each ``X.gz`` whose plain ``X`` is among ``paths`` (the plain copy is complete)."""
    listed = list(paths)
    names = {str(path) for path in listed}
    return [
        path
        for path in listed
        if not (path.name.endswith(GZ_SUFFIX) and str(path)[: -len(GZ_SUFFIX)] in names)
    ]


def rotation_family(live: str | os.PathLike[str]) -> list[Path]:
    """The live file's backups that exist, oldest first (highest ``N``), then the live file.

    One file per number: when ``live.N`` and ``live.N.gz`` both exist, only
    ``live.N`` (see the module's docstring). Names that external tools choose,
    such as logrotate's ``dateext``, are not included.

    .. versionadded:: 0.1.0
    """
    live_path = Path(live)
    found = sorted(backups(live_path), key=lambda backup: (-backup[0], backup[1]))
    files = without_compressing_twins(path for _, _, path in found)
    if live_path.is_file():
        files.append(live_path)
    return files
