"""Audit sinks: where encoded entries go.

.. versionadded:: 0.1.0
"""

from auditkeep.sinks.file import FileSink, install_sighup_reopen, rotated_files
from auditkeep.sinks.http import HttpSink
from auditkeep.sinks.memory import InMemorySink
from auditkeep.sinks.otlp import OtlpSink
from auditkeep.sinks.stdout import StdoutSink
from auditkeep.sinks.syslog import SyslogSink

__all__ = [
    "FileSink",
    "HttpSink",
    "InMemorySink",
    "OtlpSink",
    "StdoutSink",
    "SyslogSink",
    "install_sighup_reopen",
    "rotated_files",
]
