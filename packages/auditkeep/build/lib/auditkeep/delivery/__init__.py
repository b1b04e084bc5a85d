"""Delivery: from ``emit()``'s encoded bytes to each destination, without losing one.

=====================  ===============================================================
module                 holds
=====================  ===============================================================
``options``            ``DeliveryOptions`` (every setting and default, once), ``Durability``
``fanout``             one pipeline and spool per destination in one claimed slot; close
``pipeline``           ``DeliveryPipeline``: the worker loop and the moves between its parts
``backoff``            when to try a failing sink (or a refusing spool) again
``fallback``           the fallback rule and its copied-once ledger
``hold``               the memory hold while the spool refuses writes
``dead_letters``       entries refused for good: their path and their file
``housekeeping``       periodic fsync, orphan adoption, corrupt-record counts
``spool``              the write-ahead log (``_records``: its record format)
``slots``              slot claims per process, adopting what dead processes left
``status``             read-only ``spool status``
``redeliver``          ``spool redeliver``
``cli``                the ``auditkeep spool`` commands
``_files``             the one durable append, lock helper and ack reader
``_report``            diagnostics through ``logging`` (``auditkeep.delivery``)
=====================  ===============================================================

.. versionadded:: 0.1.0
"""

from auditkeep.delivery.dead_letters import dead_letter_path
from auditkeep.delivery.options import DeliveryOptions, DeliverySettings, Durability
from auditkeep.delivery.pipeline import DeliveryPipeline
from auditkeep.delivery.redeliver import Redelivery, redeliver_dead_letters
from auditkeep.delivery.slots import SpoolClaim, adopt_orphans, claim_spool_dir
from auditkeep.delivery.spool import (
    Spool,
    SpoolFullError,
    SpoolRecord,
    SpoolStats,
    SpoolSyncError,
    SpoolWriteError,
)
from auditkeep.delivery.status import SpoolStatus, spool_status

__all__ = [
    "DeliveryOptions",
    "DeliveryPipeline",
    "DeliverySettings",
    "Durability",
    "Redelivery",
    "Spool",
    "SpoolClaim",
    "SpoolFullError",
    "SpoolRecord",
    "SpoolStats",
    "SpoolStatus",
    "SpoolSyncError",
    "SpoolWriteError",
    "adopt_orphans",
    "claim_spool_dir",
    "dead_letter_path",
    "redeliver_dead_letters",
    "spool_status",
]
