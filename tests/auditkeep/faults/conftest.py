"""Fixtures for the fault suite (see ``faultlab.py``)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_helper(name: str) -> ModuleType:
    # Tests are not packages (importlib mode), so load the helper by its path.
    qualified = f"auditkeep_tests_faults_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


_faultlab = _load_helper("faultlab")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    """Small real filesystems and child emitters, all stopped and unmounted afterwards."""
    laboratory = _faultlab.FaultLab(tmp_path)
    try:
        yield laboratory
    finally:
        laboratory.close()
