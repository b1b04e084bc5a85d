"""Command-line help: every ``--help`` ends with examples; a command alone prints its help;
a closed stdout (``| head``) ends a command quietly.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable
from typing import Any, Final

_WIDTH: Final = 78


def examples(*commands: str, notes: str = "") -> dict[str, Any]:
    """``add_parser``/``ArgumentParser`` keywords for an epilog of examples, then notes.

    ``commands`` are shown as typed (one per line, ``# comment`` allowed);
    ``notes`` is a paragraph, wrapped here because the raw formatter keeps the
    examples' line breaks.
    """
    text = "examples:\n" + "\n".join(f"  {command}" for command in commands)
    if notes:
        text += "\n\n" + textwrap.fill(notes, _WIDTH)
    return {"epilog": text, "formatter_class": argparse.RawDescriptionHelpFormatter}


def help_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command that prints ``parser``'s help on stdout and succeeds.

    Set as the default ``func`` of a parser with subcommands: run without one,
    it asks for nothing that could be wrong, so it shows what it can do (exit 0,
    as ``--help`` does) instead of a usage error.
    """

    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stdout)
        return 0

    return show


def silence_closed_stdout() -> None:
    """After a ``BrokenPipeError`` (the reader went away, ``| head``): point stdout at
    ``/dev/null`` so Python's exit flush does not fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real descriptor: nothing will flush to a pipe
    finally:
        os.close(devnull)
