"""``Chainer``: the writer side of the chain, between the logger's encoding and delivery.

The logger hands it each encoded entry (``submit``); under one lock it
splices the ``chain`` field into the bytes (no re-encode), hashes the result
and passes it on to delivery. Delivery happens inside the lock too, so every
destination and the spool receive the entries in sequence order and carry
exactly the hashed bytes.

Checkpoints are made by a background thread, never by the emitting caller:
an Ed25519 signature costs ~32 µs here (bench/bench_integrity.py), several
times a whole emit. The thread wakes every ``checkpoint_interval_s`` or
when ``checkpoint_every`` entries have been chained; it signs outside the
lock when no entry arrives meanwhile and retries under the lock otherwise
(a checkpoint must directly follow the entry it covers). The final
checkpoint is made by ``close``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from binascii import hexlify as _hexlify
from collections.abc import Callable
from hashlib import sha256 as _sha256
from typing import Any, Final

import orjson

from auditkeep._event import SCHEMA_VERSION, Outcome
from auditkeep._ids import new_event_id_and_timestamp
from auditkeep.integrity import _format
from auditkeep.integrity.options import IntegrityOptions

_log: Final = logging.getLogger("auditkeep.integrity")
_TARGET: Final = {"resource_type": "audit_chain"}
_OPTIMISTIC_TRIES: Final = 3
# A signature made while the chain lock is held (entries kept arriving during the
# optimistic tries) must be quick: a separate signer gets this long, once.
_LOCKED_SIGN_TIMEOUT_S: Final = 0.25


class Chainer:
    """Chains one logger's entries and writes its checkpoints.

    Args:
        options: cadence, signing key and seal.
        service: the ``service`` field of the chain's own entries.
        submit: delivery's entry point (called under the chain lock).
        count: the logger's per-action counter, for the chain's own entries.
    """

    def __init__(
        self,
        options: IntegrityOptions,
        *,
        service: str,
        submit: Callable[[bytes], None],
        count: Callable[[str, Outcome], None],
    ) -> None:
        self.options = options
        self.chain_id = uuid.uuid4().hex
        self._service = service
        self._deliver = submit
        self._count = count
        self._every = options.checkpoint_every
        self._key = options.signing_key
        # Its own sealer, read from the state file now: close() erases it, and the
        # options may build another logger later.
        self._seal = options.seal.fresh() if options.seal is not None else None
        if self._seal is not None:
            self._seal.advance()  # to the current epoch before anything is sealed
        self._lock = threading.Lock()
        self._seq = 0
        self._prev: bytes | None = None  # hex of the last line's hash; None again once ended
        self._checkpoint_seq = -1  # seq of the last checkpoint entry
        self._due = self._every - 1  # a checkpoint is due once this seq is chained
        self._last_checkpoint: str | None = None
        self._last_checkpoint_line: bytes | None = None  # for a separate signer's link check
        self._ended = False
        self._template = _format.chain_template(self.chain_id)
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name=f"auditkeep-checkpoints-{self.chain_id[:8]}", daemon=True
        )

    def secret_texts(self) -> tuple[str, ...]:
        """For the redactor: the signing key's spellings and the seal's key as it is now."""
        texts = self._key.secret_texts if self._key is not None else ()
        return texts + ((self._seal.secret_text(),) if self._seal is not None else ())

    @property
    def seq(self) -> int:
        """The sequence number the next entry gets."""
        return self._seq

    def start(self) -> None:
        """Write the chain's first entry (``auditkeep.chain.started``) and start the thread."""
        key = self._key
        if key is None:
            _log.warning(
                "auditkeep: integrity is on without AUDIT_LOG_SIGNING_KEY_FILE or "
                "AUDIT_LOG_SIGNER_SOCKET: entries are chained, checkpoints unsigned "
                "(docs/integrity.md)"
            )
        details: dict[str, Any] = {
            "chain_id": self.chain_id,
            "format": _format.FORMAT_VERSION,
            "key_id": key.key_id if key else None,
            "public_key_fingerprint": key.fingerprint if key else None,
            "seal": _format.SEAL_FORWARD if self._seal else _format.SEAL_NONE,
            "seal_epoch": self._seal.epoch if self._seal else None,
            "checkpoint_every_entries": self._every,
            "checkpoint_every_s": self.options.checkpoint_interval_s,
            "pid": os.getpid(),
        }
        with self._lock:
            self._append(_format.ACTION_STARTED, details, time.time_ns(), checkpoint=False)
        self._thread.start()

    def submit(self, raw: bytes, _sha256: Any = _sha256, _hexlify: Any = _hexlify) -> None:
        """Chain one encoded entry and deliver it (the logger's hot path: kept lean).

        Hand-tuned (measured, bench/bench_integrity.py): the hash functions bound as
        locals and the lock taken without ``with`` save ~0.1 us of the ~1.5 us it adds.
        """
        lock = self._lock
        lock.acquire()
        try:
            prev = self._prev
            if prev is None:  # not started, or ended
                self._submit_odd(raw)
                return
            seq = self._seq
            line = self._template % (raw[:-1], seq, prev)
            self._prev = _hexlify(_sha256(line).digest())
            self._seq = seq + 1
            self._deliver(line)
        finally:
            lock.release()
        if seq >= self._due and not self._wake.is_set():
            self._wake.set()

    def _submit_odd(self, raw: bytes) -> None:
        if self._ended:
            # Emitted by a caller that passed the logger's closed check just
            # before close(): delivered (never lost), but outside the chain,
            # which has ended; verify reports it as unchained. (Right-sized: the logger
            # leaves that copy to the splice.)
            self._deliver(memoryview(raw).tobytes())
            return
        # Before start(): the entry opens the chain (seq 0, prev null).
        line = _format.splice(raw, self.chain_id, self._seq, None)
        self._prev = _format.line_hash(line).encode()
        self._seq += 1
        self._deliver(line)

    # -- checkpoints ---------------------------------------------------------

    def _run(self) -> None:
        interval = self.options.checkpoint_interval_s
        while not self._stop:
            timeout = interval
            if self._seal is not None:
                # Wake at the epoch boundary too, so the old key is erased on time.
                timeout = min(timeout, self._seal.seconds_to_next_epoch(time.time()) + 0.01)
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop:
                return
            try:
                self.checkpoint(final=False)
            except Exception as exc:  # noqa: BLE001 - the thread must survive, and say why
                _log.error("auditkeep: checkpoint failed: %s", type(exc).__name__)

    def checkpoint(self, *, final: bool) -> bool:
        """Write a checkpoint over everything chained so far; False if nothing was new.

        ``final`` always writes one and ends the chain.
        """
        if self._seal is not None:
            self._seal.advance()  # file I/O (fsync): outside the chain lock
        for _ in range(_OPTIMISTIC_TRIES):
            with self._lock:
                if self._ended or (not final and self._seq - 1 == self._checkpoint_seq):
                    return False
                seq, head, prev_cp = self._seq, self._prev, self._last_checkpoint
                prev_line = self._last_checkpoint_line
            assert head is not None
            message = _format.checkpoint_message(
                self.chain_id, seq - 1, head.decode(), prev_cp, final
            )
            signed = self._sign(message, prev_line)
            with self._lock:
                written = self._seq == seq and not self._ended
                if written:
                    self._write_checkpoint(seq - 1, head, prev_cp, final, signed)
                    line = self._last_checkpoint_line
            if written:
                self._confirm(line)
                return True
        with self._lock:  # entries kept arriving: sign while holding the lock
            if self._ended or (not final and self._seq - 1 == self._checkpoint_seq):
                return False
            assert self._prev is not None
            seq, head, prev_cp = self._seq, self._prev, self._last_checkpoint
            message = _format.checkpoint_message(
                self.chain_id, seq - 1, head.decode(), prev_cp, final
            )
            signed = self._sign(message, self._last_checkpoint_line, _LOCKED_SIGN_TIMEOUT_S)
            self._write_checkpoint(seq - 1, head, prev_cp, final, signed)
            line = self._last_checkpoint_line
        self._confirm(line)
        return True

    def _confirm(self, line: bytes | None) -> None:
        """A separate signer learns the checkpoint is written (outside the lock; best effort:
        the next request carries it anyway)."""
        confirm = getattr(self._key, "confirm", None)
        if confirm is not None and line is not None:
            try:
                confirm(line)
            except Exception as exc:  # noqa: BLE001 - the checkpoint is written already
                _log.warning("auditkeep: the signer did not take the confirmation: %s", exc)

    def _sign(
        self, message: bytes, prev_line: bytes | None, timeout_s: float | None = None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Signature and seal tag of ``message``; a signer that is down raises ``SignerError``
        on the optimistic tries already (outside the lock), so the lock never waits for it."""
        key = self._key
        signature = key.sign(message, prev_line, timeout_s) if key is not None else None
        seal = self._seal.tag(message) if self._seal is not None else None
        return signature, seal

    def _write_checkpoint(
        self,
        covered: int,
        head: bytes,
        prev_cp: str | None,
        final: bool,
        signed: tuple[str | None, dict[str, Any] | None],
    ) -> None:
        details = {
            "chain_id": self.chain_id,
            "seq": covered,
            "head": head.decode(),
            "prev_checkpoint": prev_cp,
            "final": final,
            "key_id": self._key.key_id if self._key else None,
            "signature": signed[0],
            "seal": signed[1],
        }
        self._last_checkpoint = self._append(
            _format.ACTION_CHECKPOINT, details, time.time_ns(), checkpoint=True
        )
        if final:
            self._ended = True
            self._prev = None  # what still arrives is delivered unchained (_submit_odd)

    def _append(
        self, action: str, details: dict[str, Any], now_ns: int, *, checkpoint: bool
    ) -> str:
        """Encode, chain and deliver one of the chain's own entries (lock held); its hash.

        Built here rather than through ``emit``: its values are the chain's own
        (hashes, signatures), which the scrubber must not touch.
        """
        event_id, timestamp = new_event_id_and_timestamp(now_ns)
        entry = {
            "schema_version": SCHEMA_VERSION,
            "event_id": event_id,
            "timestamp": timestamp,
            "event_type": "audit",
            "action": action,
            "actor": _format.ACTOR,
            "target": _TARGET,
            "outcome": Outcome.SUCCESS,
            "correlation_id": event_id,
            "service": self._service,
            "details": details,
        }
        prev = self._prev.decode() if self._prev is not None else None
        line = _format.splice(orjson.dumps(entry), self.chain_id, self._seq, prev)
        digest = _format.line_hash(line)
        self._prev = digest.encode()
        if checkpoint:
            self._last_checkpoint_line = line
            self._checkpoint_seq = self._seq
            self._due = self._seq + self._every
        self._seq += 1
        self._count(action, Outcome.SUCCESS)
        self._deliver(line)
        return digest

    def close(self) -> None:
        """Stop the thread and end the chain with a final checkpoint (idempotent)."""
        if self._stop:
            return
        self._stop = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self.checkpoint(final=True)
        except Exception as exc:  # noqa: BLE001 - closing must go on to deliver what is buffered
            _log.error("auditkeep: final checkpoint failed: %s", type(exc).__name__)
        finally:
            if self._seal is not None:
                self._seal.erase()
            close = getattr(self._key, "close", None)  # a separate signer's connection
            if close is not None:
                close()
