"""Fixtures for the sink tests: a real rsyslogd (see ``rsyslog_server.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load_helper(name: str) -> ModuleType:
    # Tests are not packages (importlib mode), so load the helper by its path.
    qualified = f"auditkeep_tests_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


_rsyslog_server = _load_helper("rsyslog_server")
tls_files = _rsyslog_server.tls_files
rsyslog = _rsyslog_server.rsyslog
private_rsyslog = _rsyslog_server.private_rsyslog
