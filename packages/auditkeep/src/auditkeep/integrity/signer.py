"""A separate signer: the checkpoint key in its own process, reached over a unix socket.

``auditkeep signer --key FILE --socket PATH`` holds the private key (run it as
another user than the agent); the agent sets ``AUDIT_LOG_SIGNER_SOCKET=PATH``
instead of ``AUDIT_LOG_SIGNING_KEY_FILE`` and never holds the key. The signer
signs checkpoint messages only (it parses each one: nothing else gets its
signature), and for each chain only positions after the last one it signed,
and nothing after a final checkpoint: an agent taken over can have new
checkpoints signed while it is controlled, but can neither carry the key away
nor have the past signed again. The memory of what was signed lives as long
as the signer process (docs/integrity.md).

Protocol: one JSON object per line each way. ``{"op": "public"}`` answers
``{"public_key": "<base64 raw 32 bytes>"}``; ``{"op": "sign", "message":
"<checkpoint message>"}`` answers ``{"signature": "<base64>"}`` or
``{"error": "<why>"}``. Lines are bounded (``MAX_LINE_BYTES``). Hand-written
on ``socketserver`` because the protocol is two requests; an RPC framework
would be most of the signer.
"""

from __future__ import annotations

import base64
import os
import re
import socketserver
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

import orjson

from auditkeep.integrity import _format
from auditkeep.integrity.keys import SigningKey, public_raw
from auditkeep.integrity.remote import MAX_LINE_BYTES

MAX_CHAINS: Final = 100_000
_MESSAGE: Final = re.compile(
    rb"auditkeep-checkpoint/v1\n([0-9a-f]{32})\n(0|[1-9][0-9]{0,19})\n[0-9a-f]{64}\n"
    rb"(-|[0-9a-f]{64})\n(final|open)\n"
)


class _Ledger:
    """What was signed, per chain: the last checkpoint's seq and message, and whether it ended.

    A checkpoint is signed only as the next link of the checkpoints signed
    before on its chain: its ``prev_checkpoint`` must be the hash of the line
    of the last one this signer signed (the caller sends that line; its
    signature, by this signer's key, and its hash are checked). So the signed
    checkpoints of a chain form one line that can only grow.
    """

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self._public = key.private.public_key()
        self._lock = threading.Lock()
        self._chains: OrderedDict[bytes, tuple[int, bool]] = OrderedDict()

    def admit(self, message: bytes, previous: object) -> str | None:
        """None when ``message`` may be signed (and records it), else why not."""
        found = _MESSAGE.fullmatch(message)
        if found is None:
            return "not a checkpoint message"
        chain_id, seq = found.group(1), int(found.group(2))
        prev_hash, final = found.group(3), found.group(4) == b"final"
        with self._lock:
            last = self._chains.get(chain_id)
            if last is not None and last[1]:
                return f"chain {chain_id.decode()} ended with a final checkpoint"
            if prev_hash == b"-":
                if last is not None:
                    return f"chain {chain_id.decode()} has signed checkpoints; link to the last"
            else:
                why = self._check_previous(chain_id, seq, prev_hash, previous, last)
                if why is not None:
                    return why
            self._chains[chain_id] = (seq, final)
            self._chains.move_to_end(chain_id)
            while len(self._chains) > MAX_CHAINS:
                self._chains.popitem(last=False)
        return None

    def _check_previous(
        self,
        chain_id: bytes,
        seq: int,
        prev_hash: bytes,
        previous: object,
        last: tuple[int, bool] | None,
    ) -> str | None:
        if not isinstance(previous, str) or len(previous) > MAX_LINE_BYTES:
            return "the previous checkpoint's line is needed"
        line = previous.encode("utf-8", "replace")
        if _format.line_hash(line).encode() != prev_hash:
            return "prev_checkpoint is not the hash of the previous checkpoint's line"
        try:
            d = orjson.loads(line)["details"]
            prev_message = _format.checkpoint_message(
                d["chain_id"], d["seq"], d["head"], d["prev_checkpoint"], d["final"] is True
            )
            self._public.verify(base64.b64decode(d["signature"], validate=True), prev_message)
        except Exception:  # noqa: BLE001 - any malformed or foreign line is refused alike
            return "the previous checkpoint is not one this signer signed"
        if d["chain_id"].encode() != chain_id or d["final"] is True or not d["seq"] < seq:
            return "the previous checkpoint does not precede this one on its chain"
        if last is not None and d["seq"] != last[0]:
            return (
                f"chain {chain_id.decode()} was signed up to seq {last[0]}; link to that checkpoint"
            )
        # last is None: this signer restarted since (its ledger is in memory): adopt.
        return None


class SignerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The signer process's server (``auditkeep signer``)."""

    daemon_threads = True

    def __init__(self, key: SigningKey, path: Path, mode: int = 0o660) -> None:
        self.key = key
        self.ledger = _Ledger(key)
        self.public_b64 = base64.b64encode(public_raw(key.private.public_key())).decode()
        if path.is_socket():
            path.unlink()  # a stale socket of an earlier run
        old = os.umask(0o777 & ~mode)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        os.chmod(path, mode)

    def answer(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"error": "expected a JSON object"}
        op = request.get("op")
        if op == "public":
            return {"public_key": self.public_b64, "key_id": self.key.key_id}
        if op == "sign":
            text = request.get("message")
            if not isinstance(text, str):
                return {"error": "message must be a string"}
            message = text.encode("utf-8", "replace")
            why = self.ledger.admit(message, request.get("previous"))
            if why is not None:
                return {"error": why}
            return {"signature": self.key.sign(message)}
        return {"error": "unknown op"}


class _Handler(socketserver.StreamRequestHandler):
    server: SignerServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
                self.wfile.write(b'{"error":"request too long"}\n')
                return
            try:
                request = orjson.loads(line)
            except orjson.JSONDecodeError:
                answer: dict[str, Any] = {"error": "not JSON"}
            else:
                answer = self.server.answer(request)
            self.wfile.write(orjson.dumps(answer) + b"\n")
