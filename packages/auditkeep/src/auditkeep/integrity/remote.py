"""The agent's side of the separate signer (``AUDIT_LOG_SIGNER_SOCKET``): no key, a socket.

See ``auditkeep.integrity.signer`` for the signer and its protocol. Needs no
``cryptography``: the agent only asks.
"""

from __future__ import annotations

import base64
import socket
import threading
from pathlib import Path
from typing import Any, Final

import orjson

from auditkeep.exceptions import ConfigError, SignerError
from auditkeep.integrity import _format

SIGNER_SOCKET_VARIABLE: Final = "AUDIT_LOG_SIGNER_SOCKET"
MAX_LINE_BYTES: Final = 8192


class RemoteSigner:
    """The agent's side: signs through the signer's socket; holds no key.

    Used from the checkpoint thread and ``close`` only (never on an emitting
    caller's thread); one connection, re-opened after a failure.
    """

    def __init__(
        self, path: Path, variable: str = SIGNER_SOCKET_VARIABLE, timeout_s: float = 2.0
    ) -> None:
        self.path = path
        self.variable = variable
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: Any = None
        try:
            answer = self._ask({"op": "public"})
            raw = base64.b64decode(answer["public_key"], validate=True)
        except (SignerError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                variable, f"no auditkeep signer answers at {str(path)!r} ({exc})"
            ) from None
        finally:
            self.close()  # connected again when the first checkpoint is signed
        if len(raw) != 32:
            raise ConfigError(variable, f"the signer at {str(path)!r} sent no Ed25519 key")
        self.key_id = _format.key_id(raw)
        self.fingerprint = _format.fingerprint(raw)
        self.secret_texts: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"RemoteSigner(path={str(self.path)!r}, key_id={self.key_id!r})"

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._reader = sock.makefile("rb")

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    def _ask(self, request: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        # A short deadline also means no second try: the caller holds the chain lock.
        attempts = 2 if timeout_s is None else 1
        with self._lock:
            for attempt in range(attempts):  # the signer may have restarted: reconnect once
                try:
                    if self._sock is None:
                        self._connect()
                    assert self._sock is not None
                    self._sock.settimeout(self.timeout_s if timeout_s is None else timeout_s)
                    self._sock.sendall(orjson.dumps(request) + b"\n")
                    line = self._reader.readline(MAX_LINE_BYTES + 1)
                    answer = orjson.loads(line)  # b"" (the signer hung up) fails here too
                    if not isinstance(answer, dict):
                        raise SignerError("the signer's answer is no JSON object")
                    return answer
                except (OSError, orjson.JSONDecodeError) as exc:
                    self._close()
                    if attempt == attempts - 1:
                        raise SignerError(type(exc).__name__) from None
        raise AssertionError("unreachable")

    def sign(
        self, message: bytes, previous: bytes | None = None, timeout_s: float | None = None
    ) -> str:
        """The signature of a checkpoint message; ``previous``: the chain's last checkpoint line.

        ``timeout_s``: a tighter deadline, one try (the chain lock is held meanwhile).
        """
        request: dict[str, Any] = {"op": "sign", "message": message.decode("ascii")}
        if previous is not None:
            request["previous"] = previous.decode("utf-8")
        answer = self._ask(request, timeout_s)
        signature = answer.get("signature")
        if not isinstance(signature, str):
            raise SignerError(str(answer.get("error", "no signature")))
        return signature

    def confirm(self, line: bytes) -> None:
        """Tell the signer this checkpoint line is in the trail (its newest known link)."""
        answer = self._ask({"op": "confirm", "line": line.decode("utf-8")})
        if answer.get("ok") is not True:
            raise SignerError(str(answer.get("error", "not confirmed")))

    def close(self) -> None:
        with self._lock:
            self._close()
