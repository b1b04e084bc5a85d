"""A real ``redis-server`` for tests: started on a free loopback port, stopped after.

Debian's ``redis-server`` (``scripts/install-system-deps`` installs it). No
persistence unless ``data_dir`` is given (then an append-only file there, so a
restart of the server keeps its keys). Test modules import this with their
own directory put on ``sys.path``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """``redis-server --port <free> --bind 127.0.0.1``; ``url``, ``client()``, ``stop()``."""

    def __init__(self, workdir: Path, *, data_dir: Path | None = None, port: int = 0) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = (workdir / f"redis-{self.port}.log").open("w")
        persistence = (
            ["--appendonly", "yes", "--dir", str(data_dir), "--appendfsync", "always"]
            if data_dir is not None
            else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--daemonize", "no", "--protected-mode", "yes", *persistence],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as probe:
                    probe.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def dump(self) -> dict[str, bytes]:
        """Every key and its value (strings; other types as their members), for sweeps."""
        found: dict[str, bytes] = {}
        with self.client() as client:
            for key in client.keys("*"):
                kind = client.type(key)
                if kind == b"string":
                    found[key.decode()] = client.get(key) or b""
                else:
                    found[key.decode()] = repr(client.dump(key)).encode()
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
