"""A separate signer: the checkpoint key in its own process, reached over a unix socket.

``auditkeep signer --key FILE --socket PATH [--state LEDGER]`` holds the
private key (run it as another user than the agent); the agent sets
``AUDIT_LOG_SIGNER_SOCKET=PATH`` instead of ``AUDIT_LOG_SIGNING_KEY_FILE`` and
never holds the key. The signer signs checkpoint messages only (it parses each
one: nothing else gets its signature), and on each chain only links from the
newest checkpoint it knows is in the trail (``_Ledger``): an agent taken over
can have new checkpoints signed while it is controlled, but can neither carry
the key away nor have the past signed again. The ledger is kept in memory,
and in ``--state`` when given, so that a restart forgets nothing
(docs/integrity.md).

Protocol: one JSON object per line each way. ``{"op": "public"}`` answers
``{"public_key": "<base64 raw 32 bytes>", "key_id"}``; ``{"op": "sign",
"message": "<checkpoint message>", "previous": "<the chain's newest checkpoint
line>"}`` answers ``{"signature": "<base64>"}``; ``{"op": "confirm", "line":
"<a checkpoint line just written>"}`` answers ``{"ok": true}``; a refusal is
``{"error": "<why>"}``. Lines are bounded (``MAX_LINE_BYTES``). Hand-written on
``socketserver`` because the protocol is three requests; an RPC framework
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

from auditkeep.exceptions import ConfigError
from auditkeep.integrity import _format
from auditkeep.integrity._private import read_private, replace_atomically
from auditkeep.integrity.keys import SigningKey, public_raw
from auditkeep.integrity.remote import MAX_LINE_BYTES

MAX_CHAINS: Final = 100_000
_CHAIN_ID: Final = re.compile(r"[0-9a-f]{32}")
_MESSAGE: Final = re.compile(
    rb"auditkeep-checkpoint/v1\n([0-9a-f]{32})\n(0|[1-9][0-9]{0,19})\n[0-9a-f]{64}\n"
    rb"(-|[0-9a-f]{64})\n(final|open)\n"
)


class _Ledger:
    """Per chain: the newest checkpoint known to be in the trail, and whether the chain ended.

    A checkpoint is known to be in the trail once the logger presents its line
    (signed by this signer; its hash and signature are checked): as the
    ``previous`` of the next request, or right after writing it (``confirm``).
    A request must link to that newest checkpoint or a later one of its own,
    never to an older one, so the signed checkpoints of a chain form one line
    that can only grow; after a confirmed final checkpoint nothing more is
    signed. Signatures the logger asked for but never wrote (an optimistic try
    overtaken by new entries, an answer lost) block nothing.
    """

    def __init__(self, key: SigningKey, state: Path | None = None) -> None:
        self._key = key
        self._public = key.private.public_key()
        self._lock = threading.Lock()
        # chain id -> (seq of the newest checkpoint known in the trail, or -1; ended)
        self._chains: OrderedDict[bytes, tuple[int, bool]] = OrderedDict()
        self._state = state
        if state is not None and state.exists():
            self._load(state)

    def _load(self, state: Path) -> None:
        """The ledger a previous run left (``--state``): a restart forgets nothing."""
        try:
            data = orjson.loads(read_private(state, "--state"))
            for chain_id, (seq, ended) in data["chains"].items():
                if _CHAIN_ID.fullmatch(chain_id) and type(seq) is int and type(ended) is bool:
                    self._chains[chain_id.encode()] = (seq, ended)
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - any malformed ledger is refused alike
            raise ConfigError("--state", f"{str(state)!r} is not a signer ledger") from None

    def _record(self, chain_id: bytes, known: int, ended: bool) -> str | None:
        """Remember (lock held), on disk too with ``--state``; why not, if that failed."""
        self._chains[chain_id] = (known, ended)
        self._chains.move_to_end(chain_id)
        while len(self._chains) > MAX_CHAINS:
            self._chains.popitem(last=False)
        if self._state is not None:
            chains = {k.decode(): [seq, end] for k, (seq, end) in self._chains.items()}
            try:
                replace_atomically(self._state, orjson.dumps({"format": 1, "chains": chains}))
            except OSError as exc:
                return f"the signer cannot record what it signs ({exc.strerror})"
        return None

    def admit(self, message: bytes, previous: object) -> str | None:
        """None when ``message`` may be signed, else why not."""
        found = _MESSAGE.fullmatch(message)
        if found is None:
            return "not a checkpoint message"
        chain_id, seq = found.group(1), int(found.group(2))
        prev_hash = found.group(3)
        with self._lock:
            known, ended = self._chains.get(chain_id, (-1, False))
            if ended:
                return f"chain {chain_id.decode()} ended with a final checkpoint"
            if prev_hash == b"-":
                if known >= 0:
                    return (
                        f"chain {chain_id.decode()} has checkpoints up to seq {known}; "
                        "link to the newest"
                    )
                return None
            d = self._signed_line(previous)
            if isinstance(d, str):
                return d
            assert isinstance(previous, str)  # _signed_line checked it
            if _format.line_hash(previous.encode()).encode() != prev_hash:
                return "prev_checkpoint is not the hash of the previous checkpoint's line"
            if d["chain_id"].encode() != chain_id or d["final"] or not d["seq"] < seq:
                return "the previous checkpoint does not precede this one on its chain"
            if d["seq"] < known:
                return (
                    f"chain {chain_id.decode()} has checkpoints up to seq {known}; "
                    "link to the newest"
                )
            if d["seq"] > known:
                return self._record(chain_id, d["seq"], False)
        return None

    def confirm(self, line: object) -> str | None:
        """The logger wrote this checkpoint: it is now the newest known (None when taken)."""
        d = self._signed_line(line)
        if isinstance(d, str):
            return d
        chain_id = d["chain_id"].encode()
        with self._lock:
            known, ended = self._chains.get(chain_id, (-1, False))
            if ended or d["seq"] < known:
                return None  # nothing to learn
            return self._record(chain_id, d["seq"], bool(d["final"]))

    def _signed_line(self, line: object) -> dict[str, Any] | str:
        """The details of a checkpoint line this signer signed, or why it is not one."""
        if not isinstance(line, str) or len(line) > MAX_LINE_BYTES:
            return "the previous checkpoint's line is needed"
        try:
            d: dict[str, Any] = orjson.loads(line)["details"]
            prev_message = _format.checkpoint_message(
                d["chain_id"], d["seq"], d["head"], d["prev_checkpoint"], d["final"] is True
            )
            self._public.verify(base64.b64decode(d["signature"], validate=True), prev_message)
            if not (_CHAIN_ID.fullmatch(d["chain_id"]) and type(d["seq"]) is int):
                raise ValueError
        except Exception:  # noqa: BLE001 - any malformed or foreign line is refused alike
            return "the previous checkpoint is not one this signer signed"
        return d


class SignerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The signer process's server (``auditkeep signer``)."""

    daemon_threads = True

    def __init__(
        self, key: SigningKey, path: Path, mode: int = 0o660, state: Path | None = None
    ) -> None:
        self.key = key
        self.ledger = _Ledger(key, state)
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
        if op == "confirm":
            why = self.ledger.confirm(request.get("line"))
            return {"error": why} if why is not None else {"ok": True}
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
