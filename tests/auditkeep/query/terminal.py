"""Run a command in this process with stdout and/or stderr on real pseudo-terminals.

A test helper (imported with its directory on ``sys.path``, like ``trailkit``):
each stream gets its own pty of a given width, so what the command prints on
a terminal is told apart from what it prints into a pipe.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import sys
import termios
import threading
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest


class Terminal:
    """One pty: the command writes to its slave side, a thread drains the master side."""

    def __init__(self, columns: int) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # no "\n" -> "\r\n": the bytes arrive as written
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.stream = io.TextIOWrapper(
            io.FileIO(self.slave, "w", closefd=False), encoding="utf-8", write_through=True
        )

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:  # EIO: the slave side is closed and everything was read
                return
            if not data:
                return
            self._chunks.append(data)

    def close(self) -> str:
        """Everything written, once it has all arrived."""
        self.stream.flush()
        termios.tcdrain(self.slave)
        os.close(self.slave)
        self._reader.join(timeout=10)
        os.close(self.master)
        return b"".join(self._chunks).decode()


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_on_terminals(
    main: Callable[[list[str]], int],
    argv: Sequence[str],
    *,
    columns: int = 120,
    stdout_tty: bool = True,
    stderr_tty: bool = True,
) -> Result:
    """Run ``main(argv)``; each stream is a terminal of ``columns`` or an in-memory pipe."""
    terminals: dict[str, Terminal] = {}
    pipes: dict[str, io.TextIOWrapper] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("COLUMNS", raising=False)
        for name, on_tty in (("stdout", stdout_tty), ("stderr", stderr_tty)):
            if on_tty:
                terminals[name] = Terminal(columns)
                patch.setattr(sys, name, terminals[name].stream)
            else:
                pipes[name] = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
                patch.setattr(sys, name, pipes[name])
        try:
            code = main(list(argv))
        finally:
            texts = {name: terminal.close() for name, terminal in terminals.items()}
            for name, pipe in pipes.items():
                assert isinstance(pipe.buffer, io.BytesIO)
                texts[name] = pipe.buffer.getvalue().decode()
    return Result(code, texts["stdout"], texts["stderr"])
