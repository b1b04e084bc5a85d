"""Query tools for the trail written by the file sink: query, trace, report, tail.

The command line lives in ``auditkeep.query.cli``; these are the pieces it is
made of, for use from Python::

    from auditkeep.query import EntryFilter, ScanStats, discover_files, search

    files = discover_files(["/var/log/agent/audit.jsonl"])
    stats = ScanStats()
    for timestamp, event_id, line in search(
        files, EntryFilter(actions=("gitlab.api.*",), outcome="failure"), stats
    ):
        ...

.. versionadded:: 0.1.0
"""

from auditkeep._rotation import rotation_family
from auditkeep.exceptions import InputError
from auditkeep.query._filters import EntryFilter, Matcher
from auditkeep.query._reader import (
    MatchCollector,
    ScanStats,
    TrailFile,
    discover_files,
    scan,
    scan_file,
    search,
)
from auditkeep.query._report import ReportBuilder, render_report, render_trace
from auditkeep.query._tail import Follower
from auditkeep.query._timeparse import parse_time

__all__ = [
    "EntryFilter",
    "Follower",
    "InputError",
    "MatchCollector",
    "Matcher",
    "ReportBuilder",
    "ScanStats",
    "TrailFile",
    "discover_files",
    "parse_time",
    "render_report",
    "render_trace",
    "rotation_family",
    "scan",
    "scan_file",
    "search",
]
