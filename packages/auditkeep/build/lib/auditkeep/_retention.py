"""How a deletion by ``AUDIT_LOG_FILE_RETENTION=delete`` gets into the trail.

The file sink runs on a delivery worker and knows nothing of loggers; it calls
``on_rotated_out`` after each batch, with no lock held. The recorder built here
counts the deletion and emits an ``auditkeep.file.rotated_out`` entry through
the same logger, so the record of what was deleted lands in the live file (and
in every other destination). Emitting from the worker only appends to a
buffer, so it cannot wait on the worker itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from auditkeep.exceptions import LoggerClosedError
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import RotatedOut

ROTATED_OUT_ACTION: Final = "auditkeep.file.rotated_out"
_log: Final = logging.getLogger("auditkeep.retention")


def rotated_out_recorder(
    logger: AuditLogger, metrics: AuditMetrics
) -> Callable[[RotatedOut], None]:
    """A ``FileSink.on_rotated_out`` callback that counts and records each deletion."""

    def record(info: RotatedOut) -> None:
        metrics.rotation_deleted_files.inc()
        if info.entries:
            metrics.rotation_deleted_entries.inc(info.entries)
        try:
            logger.emit(
                ROTATED_OUT_ACTION,
                target={"resource_type": "audit_file", "path": info.file},
                details={
                    "file": Path(info.file).name,
                    "bytes": info.bytes,
                    "entries": info.entries,
                    "first_timestamp": info.first_timestamp,
                    "last_timestamp": info.last_timestamp,
                    "retention": "delete",
                    "backups": info.backups,
                },
            )
        except LoggerClosedError:
            # The last batches of close() can still rotate; the entry cannot be
            # emitted any more, so the deletion is told where an operator looks.
            _log.warning(
                "auditkeep: retention=delete deleted %r during shutdown: %s bytes, %s entries,"
                " %s .. %s",
                info.file,
                info.bytes,
                info.entries,
                info.first_timestamp,
                info.last_timestamp,
            )

    return record
