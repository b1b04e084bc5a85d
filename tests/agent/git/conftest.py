"""Loads the git-layer fixtures (defined in ``gitkit.py``, which mypy checks)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gitkit import runner, server, trail

__all__ = ["runner", "server", "trail"]
