"""Audit sinks: where encoded entries go.

.. versionadded:: 0.1.0
"""

from auditrail.sinks.file import FileSink, install_sighup_reopen, rotated_files
from auditrail.sinks.http import HttpSink
from auditrail.sinks.memory import InMemorySink
from auditrail.sinks.stdout import StdoutSink
from auditrail.sinks.syslog import SyslogSink

__all__ = [
    "FileSink",
    "HttpSink",
    "InMemorySink",
    "StdoutSink",
    "SyslogSink",
    "install_sighup_reopen",
    "rotated_files",
]
