"""Command line entry point of the agent (placeholder)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Explain that the agent is not built yet and point at what is."""
    print(
        "gitlab-copilot-agent: the service is not built yet (issue 5); "
        "run 'auditrail demo' to see the audit library at work.",
        file=sys.stderr,
    )
    return 2
