"""Audit sinks: where encoded entries go.

.. versionadded:: 0.1.0
"""

from auditrail.sinks.file import FileSink, install_sighup_reopen, rotated_files
from auditrail.sinks.memory import InMemorySink
from auditrail.sinks.stdout import StdoutSink

__all__ = ["FileSink", "InMemorySink", "StdoutSink", "install_sighup_reopen", "rotated_files"]
