"""Judging one read chain: links, duplicates, checkpoints, signatures, seals -> a report."""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import math
import time
from datetime import datetime
from typing import Any, Final

from auditkeep.integrity import _format
from auditkeep.integrity._chains import HEX64, MAX_SEQ, Chain
from auditkeep.integrity._findings import MAX_LISTED, ChainReport, Problem, SealSeed, VerifyOptions
from auditkeep.integrity._reading import Reader

_MAX_EPOCH_AHEAD: Final = 2
"""Seal epochs claimed beyond the current one (clock differences) before they are refused."""


def unix_time(ts: Any) -> float | None:
    if type(ts) is not str or len(ts) > 40:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Judge:
    """Turns one read chain into a report: links, checkpoints, signatures, seals."""

    def __init__(self, chain: Chain, reader: Reader, options: VerifyOptions) -> None:
        self.chain = chain
        self.names = reader.names
        self.options = options
        self.problems: list[Problem] = []
        self.notices: list[Problem] = []
        self.counts: dict[str, int] = {}
        self.omitted = 0
        self.bad_seqs: list[int] = []
        self.modified: set[int] = set()
        self.started: dict[str, Any] = {}

    def at(self, kind: str, message: str, seq: int | None, *, notice: bool = False) -> None:
        chain = self.chain
        file = line = None
        if seq is not None and chain.has(seq):
            file_index, line = chain.where(seq)
            file = self.names[file_index]
        self.entry(kind, message, file, line, seq, notice=notice)

    def entry(
        self,
        kind: str,
        message: str,
        file: str | None,
        line: int | None,
        seq: int | None,
        *,
        notice: bool = False,
    ) -> None:
        if not notice and seq is not None:
            self.bad_seqs.append(seq)
        target = self.notices if notice else self.problems
        count = self.counts.get(kind, 0)
        self.counts[kind] = count + 1
        if count >= MAX_LISTED:
            if not notice:
                self.omitted += 1
            return
        target.append(Problem(kind, message, file, line, self.chain.id, seq))

    def judge(self, reorders: dict[str, list[tuple[int, int]]]) -> ChainReport:
        chain = self.chain
        started = chain.meta.get(0) if chain.base == 0 else None
        if started is not None and started.get("action") != _format.ACTION_STARTED:
            started = None
        started_details = started.get("details") if started else None
        if not isinstance(started_details, dict):
            started_details = {}
        self.started = started_details
        self._links()
        self._duplicates()
        checkpoints = self._checkpoints(started_details)
        for file_index, line in reorders.get(chain.id, []):
            self.entry(
                "reordered",
                "this entry comes after a later one of its chain in this file "
                "(the spool and overflow do this; the order is not signed)",
                self.names[file_index],
                line,
                None,
                notice=not self.options.strict_order,
            )
        return self._report(started is not None, started_details, checkpoints)

    def _links(self) -> None:
        chain = self.chain
        for first, last in chain.gaps:
            count = last - first + 1
            what = f"seq {first}" if count == 1 else f"seq {first}-{last} ({count} entries)"
            self.at("deleted", f"{what} missing before this entry", last + 1)
            self.bad_seqs.append(first)
        breaks = sorted(chain.breaks)
        explained: set[int] = set()
        for b in breaks:
            if b in explained:
                continue
            if b == 0:
                self.at("modified", "seq 0 names a previous entry", 0)
                self.modified.add(0)
            elif b + 1 in chain.breaks:
                # Its own hash and its link both fail: this line was changed.
                self.at("modified", "this entry's bytes and link do not match its neighbours", b)
                self.modified.add(b)
                explained.add(b + 1)
            elif chain.has(b - 1):
                self.modified.add(b - 1)
                self.at(
                    "modified",
                    f"this entry's bytes are not what seq {b} commits to (hash differs)",
                    b - 1,
                )

    def _duplicates(self) -> None:
        chain = self.chain
        for seq, variants in sorted(chain.alternates.items()):
            linked = chain.has(seq + 1) and (seq + 1) not in chain.breaks
            for variant in variants:
                file, line = self.names[variant[3]], variant[4]
                if linked:
                    self.entry(
                        "inserted",
                        f"a different entry claims seq {seq} of this chain; the chain links "
                        "to the other one",
                        file,
                        line,
                        seq,
                    )
                else:
                    self.entry(
                        "conflicting_duplicate",
                        f"two different entries claim seq {seq} of this chain",
                        file,
                        line,
                        seq,
                    )

    def _checkpoints(self, started: dict[str, Any]) -> list[tuple[int, bool, dict[str, Any]]]:
        """Every checkpoint in seq order: (chain seq, trusted as an anchor, details)."""
        chain = self.chain
        options = self.options
        out: list[tuple[int, bool, dict[str, Any]]] = []
        previous: int | None = None
        last_epoch = -1
        started_key = started.get("key_id")
        for seq in sorted(chain.meta):
            parsed = chain.meta[seq]
            if parsed.get("action") != _format.ACTION_CHECKPOINT:
                if seq != 0:
                    self.at("forged", "a chain start in the middle of a chain", seq)
                continue
            before = len(self.bad_seqs)
            details = parsed.get("details")
            fields = _checkpoint_fields(details, chain.id)
            if fields is None or not isinstance(details, dict):
                self.at("forged", "a checkpoint whose details are not the v1 format", seq)
                out.append((seq, False, {}))
                previous = seq
                continue
            covered, head, prev_checkpoint, final = fields
            if covered != seq - 1:
                self.at("forged", f"a checkpoint at seq {seq} claiming to cover seq {covered}", seq)
            elif chain.prev_at(seq) != bytes.fromhex(head):
                self.at("forged", "the checkpoint's own link is not the head it signs", seq)
            if previous is not None:
                expected = chain.digest_at(previous).hex()
                if (
                    prev_checkpoint != expected
                    and previous not in self.modified
                    and not self._gap_between(previous, seq)
                ):
                    self.at(
                        "forged",
                        f"prev_checkpoint does not name the checkpoint at seq {previous}",
                        seq,
                    )
            elif prev_checkpoint is not None and chain.base == 0 and not chain.gaps:
                self.at("forged", "the first checkpoint names an earlier one", seq)
            message = _format.checkpoint_message(chain.id, covered, head, prev_checkpoint, final)
            signed = self._signature(seq, details, message, started_key)
            sealed = False
            if options.seal is not None:
                sealed, last_epoch = self._seal(seq, parsed, details, message, last_epoch)
            anchored = len(self.bad_seqs) == before and (
                (signed or not options.public_keys)
                and (sealed or options.seal is None)
                and (signed or sealed)
            )
            out.append((seq, anchored, details))
            previous = seq
        return out

    def _gap_between(self, low: int, high: int) -> bool:
        return any(low < last + 1 and first < high for first, last in self.chain.gaps)

    def _signature(
        self, seq: int, details: dict[str, Any], message: bytes, started_key: Any
    ) -> bool:
        keys = self.options.public_keys
        if not keys:
            return False
        signature = details.get("signature")
        key = details.get("key_id")
        if signature is None:
            self.at("missing_signature", "a checkpoint without a signature", seq)
            return False
        if type(key) is not str or key not in keys:
            self.at("unknown_key", f"signed by key {str(key)[:32]!r}, not a --public-key", seq)
            return False
        if started_key is not None and key != started_key:
            self.at(
                "unknown_key", f"signed by key {key}; the chain started with {started_key}", seq
            )
            return False
        try:
            raw = base64.b64decode(signature, validate=True) if type(signature) is str else b""
        except (binascii.Error, ValueError):
            raw = b""
        from cryptography.exceptions import InvalidSignature

        try:
            keys[key].verify(raw, message)
        except (InvalidSignature, ValueError):
            self.at("bad_signature", f"the signature does not verify with key {key}", seq)
            return False
        return True

    def _seal(
        self,
        seq: int,
        parsed: dict[str, Any],
        details: dict[str, Any],
        message: bytes,
        last_epoch: int,
    ) -> tuple[bool, int]:
        seed = self.options.seal
        assert seed is not None
        seal = details.get("seal")
        if not isinstance(seal, dict):
            self.at("bad_seal", "a checkpoint without a seal tag", seq)
            return False, last_epoch
        epoch, tag = seal.get("epoch"), seal.get("tag")
        now = self.options.now if self.options.now is not None else time.time()
        newest = _format.seal_epoch_of(now, seed.t0, seed.epoch_s) + _MAX_EPOCH_AHEAD
        if type(epoch) is not int or not 0 <= epoch <= newest or type(tag) is not str:
            self.at("bad_seal", f"seal epoch {str(epoch)[:24]!r} is not a valid epoch", seq)
            return False, last_epoch
        # The tag must be made with THIS epoch's key (CVE-2023-31439).
        want = _format.seal_tag(_seal_key(seed, epoch), epoch, message)
        if not hmac.compare_digest(want, tag):
            self.at("bad_seal", f"the seal tag is not epoch {epoch}'s", seq)
            return False, last_epoch
        ok = True
        start, end = seed.epoch_window(epoch)
        tol = _format.EPOCH_TOLERANCE_S
        stamp = unix_time(parsed.get("timestamp"))
        if stamp is None or not start - tol <= stamp < end + tol:
            self.at("seal_epoch_mismatch", f"sealed in epoch {epoch}, stamped outside it", seq)
            ok = False
        if epoch < last_epoch:
            self.at("seal_epoch_mismatch", f"epoch {epoch} after epoch {last_epoch}", seq)
            ok = False
        earliest = unix_time(self.chain.min_ts.get(seq))
        every = _number(self.started, "checkpoint_every_s", _format.DEFAULT_CHECKPOINT_INTERVAL_S)
        # Covered entries are at most one interval old when the writer signs; twice that,
        # for a checkpoint thread that a loaded machine held back.
        if earliest is not None and earliest < start - 2 * every - tol:
            self.at(
                "seal_epoch_mismatch",
                f"entries stamped before epoch {epoch} began are sealed by it "
                "(re-sealed with a later key?)",
                seq,
            )
            ok = False
        return ok, max(last_epoch, epoch)

    def _report(
        self,
        has_start: bool,
        started: dict[str, Any],
        checkpoints: list[tuple[int, bool, dict[str, Any]]],
    ) -> ChainReport:
        chain = self.chain
        first_bad = min(self.bad_seqs, default=None)
        verified_cp: int | None = None
        verified_through: int | None = None
        closed = False
        final_seq: int | None = None
        for seq, anchored, details in checkpoints:
            if first_bad is not None and seq >= first_bad:
                break
            if not anchored:
                continue
            verified_cp, verified_through = seq, seq - 1
            if details.get("final") is True:
                final_seq = seq
        checkpoint_seqs = {seq for seq, _, _ in checkpoints}
        if final_seq is not None:
            after = chain.count_from(final_seq + 1)
            listed = 0
            for seq in chain.seqs():
                if seq > final_seq and listed < MAX_LISTED:
                    self.at("inserted", "an entry after the chain's final checkpoint", seq)
                    listed += 1
            closed = not after
        if has_start:
            # A checkpoint is asked for every N entries, but made by a background thread
            # that a fast caller can outrun: a long run is worth a note, not evidence.
            every = _int(started, "checkpoint_every_entries", _format.DEFAULT_CHECKPOINT_EVERY)
            marks = sorted(checkpoint_seqs | {chain.base - 1, chain.next})
            for low, high in itertools.pairwise(marks):
                if high - low - 1 > 2 * every + 1 and not self._gap_between(low, high):
                    self.at(
                        "sparse_checkpoints",
                        f"{high - low - 1} entries without a checkpoint (one is asked for "
                        f"every {every})",
                        low + 1 if chain.has(low + 1) else None,
                        notice=True,
                    )
        tail_from = chain.base if verified_cp is None else verified_cp + 1
        tail = chain.count_from(tail_from) - sum(1 for seq in checkpoint_seqs if seq >= tail_from)
        status = "verified"
        if self.problems or self.omitted:
            status = "problems"
        elif not closed:
            status = "incomplete"
            where = (
                "before any checkpoint"
                if verified_cp is None
                else f"after the checkpoint at seq {verified_cp}"
            )
            if not self.options.public_keys and not self.options.seal:
                message = "no --public-key or --seal-key: links checked, nothing authenticated"
            elif final_seq is None:
                message = (
                    f"ended without close {where} (a crash, or its end was cut off); "
                    f"{tail} entries unsealed"
                )
            else:
                message = f"{tail} entries unsealed"
            self.entry("truncated", message, None, None, None, notice=True)
        if chain.base > 0:
            status = "problems" if status == "problems" else "incomplete"
            self.at(
                "starts_late",
                f"the chain's first {chain.base} entries are not in the inputs",
                chain.base,
                notice=True,
            )
        key_id = started.get("key_id")
        seal = started.get("seal")
        pid = started.get("pid")
        return ChainReport(
            chain_id=chain.id,
            first_seq=chain.base,
            last_seq=chain.next - 1,
            entries=len(chain.files),
            duplicates=chain.duplicates,
            checkpoints=len(checkpoints),
            verified_checkpoint_seq=verified_cp,
            verified_through_seq=verified_through,
            unsealed_tail=tail,
            closed=closed,
            started=has_start,
            key_id=key_id if type(key_id) is str else None,
            seal=seal if type(seal) is str else None,
            pid=pid if type(pid) is int else None,
            status=status,
            problems=sorted(self.problems, key=_in_chain_order),
            notices=self.notices,
            omitted=self.omitted,
        )


def _checkpoint_fields(details: Any, chain_id: str) -> tuple[int, str, str | None, bool] | None:
    if not isinstance(details, dict) or details.get("chain_id") != chain_id:
        return None
    covered, head = details.get("seq"), details.get("head")
    prev, final = details.get("prev_checkpoint"), details.get("final")
    if type(covered) is not int or not 0 <= covered <= MAX_SEQ:
        return None
    if type(head) is not str or not HEX64.fullmatch(head) or type(final) is not bool:
        return None
    if prev is not None and (type(prev) is not str or not HEX64.fullmatch(prev)):
        return None
    return covered, head, prev, final


def _int(details: dict[str, Any], name: str, default: int) -> int:
    value = details.get(name)
    return value if type(value) is int and 0 < value <= 1 << 30 else default


def _number(details: dict[str, Any], name: str, default: float) -> float:
    value = details.get(name)
    if isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 86_400:
        return float(value)
    return default


_SEAL_KEYS: dict[tuple[bytes, int], bytes] = {}


def _seal_key(seed: SealSeed, epoch: int) -> bytes:
    """Epoch ``epoch``'s key, evolving from the nearest lower epoch already derived."""
    cached = _SEAL_KEYS.get((seed.seed, epoch))
    if cached is not None:
        return cached
    lower = [e for (s, e) in _SEAL_KEYS if s == seed.seed and e < epoch]
    start = max(lower, default=None)
    key = _format.seal_key0(seed.seed) if start is None else _SEAL_KEYS[(seed.seed, start)]
    for _ in range((0 if start is None else start), epoch):
        key = _format.seal_evolve(key)
    if len(_SEAL_KEYS) > 4096:
        _SEAL_KEYS.clear()
    _SEAL_KEYS[(seed.seed, epoch)] = key
    return key


def _in_chain_order(problem: Problem) -> tuple[int, int]:
    return (problem.seq if problem.seq is not None else -1, problem.line or 0)
