"""``auditkeep verify``: check a trail's hash chains, checkpoint signatures and seals, offline.

The wire format is ``_format`` (docs/integrity.md). What is evidence:

* **The bytes of each line and its ``chain`` field.** Every entry commits to
  the SHA-256 of the previous entry of its chain (``prev``); a checkpoint signs
  the hash of the entry it covers (``head``) and names the previous checkpoint.
  Trust flows *backwards* from a checkpoint whose signature (or seal tag)
  verifies: a line is verified when the chain links from it, without a break,
  up to such a checkpoint. Links are checked forwards as lines are read (one
  pass, constant work per line); by collision resistance this is the same as
  walking back from the head.
* **The sequence number, not the arrival order.** The spool and at-least-once
  delivery reorder and repeat entries, so lines are grouped by chain and put in
  ``seq`` order wherever they were read. A byte-identical repeat is a
  duplicate (counted, fine); two different lines claiming one ``(chain, seq)``
  are tampering. A line whose ``seq`` goes backwards within one file is
  reported as a ``reordered`` *notice*: the library itself does that after an
  outage or an overflow, and the order is not signed, so it cannot be told
  from a moved line (``--strict-order`` makes it a problem, for trails known
  to have had no outage).
* **What cannot be decided from the trail alone** is reported as incomplete,
  never as verified (exit 3): entries after the last checkpoint (the unsealed
  tail), a chain that ends without its final checkpoint (a crash and a cut-off
  end look alike), a chain whose first entries are not in the inputs
  (retention deleted them, or someone did), and signatures when no
  ``--public-key`` was given.

Speed: each line is hashed as stored, and its chain field is read from the
line's end with one regular expression (the writer splices it in as the last
key); only checkpoints and chain starts (one line in a thousand) and lines
that are not compact (a SIEM copy re-encoded) are parsed with ``orjson``.

The chain logic is hand-written: it *is* the format; no library verifies it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from auditkeep.integrity import _format
from auditkeep.integrity._chains import HEX64
from auditkeep.integrity._findings import (
    EXIT_INCOMPLETE,
    EXIT_PROBLEM,
    EXIT_USAGE,
    EXIT_VERIFIED,
    MAX_LISTED,
    PROBLEM_KINDS,
    ChainReport,
    Problem,
    SealSeed,
    VerifyOptions,
    VerifyReport,
)
from auditkeep.integrity._judging import Judge, unix_time
from auditkeep.integrity._reading import Reader, read_chains, reading_order
from auditkeep.query._reader import (
    TrailFile,
)

__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "EXIT_VERIFIED",
    "MAX_LISTED",
    "PROBLEM_KINDS",
    "ChainReport",
    "Problem",
    "SealSeed",
    "VerifyOptions",
    "VerifyReport",
    "iter_problems",
    "load_public_key",
    "load_seal_seed",
    "reading_order",
    "verify",
]


def verify(
    files: Sequence[TrailFile],
    options: VerifyOptions | None = None,
    *,
    workers: int | None = None,
) -> VerifyReport:
    """Verify every chain found in ``files`` (from ``discover_files``).

    ``workers``: processes reading files (None: one per CPU; 1: this process).
    """
    options = options or VerifyOptions()
    began = time.perf_counter()
    ordered = reading_order(files)
    reader = read_chains(ordered, options, workers)
    report = VerifyReport(
        files=reader.names,
        lines=reader.lines,
        signatures_checked=bool(options.public_keys),
        seal_checked=options.seal is not None,
    )
    reorders: dict[str, list[tuple[int, int]]] = {}
    for (file_index, chain_id), lines in reader.reorders.items():
        reorders.setdefault(chain_id, []).extend((file_index, line) for line in lines)
    for chain_id in sorted(reader.chains):
        judge = Judge(reader.chains[chain_id], reader, options)
        report.chains.append(judge.judge(reorders))
    for problem in reader.problems:
        if problem.kind == "torn":
            report.incomplete = True
            report.notices.append(problem)
        else:
            report.problems.append(problem)
    if reader.unchained:
        if not options.allow_unchained and reader.chains:
            _judge_unchained(report, reader)
        else:
            report.notices.append(
                Problem("unchained", f"{reader.unchained} entries carry no chain field")
            )
    if not reader.chains:
        report.problems.append(
            Problem("unchained", "no chained entry in the inputs (is AUDIT_LOG_INTEGRITY on?)")
        )
    report.seconds = time.perf_counter() - began
    return report


# An entry that raced close() is stamped before the final checkpoint; how long before
# is how long close() took to stop the checkpoint thread and sign (a loaded machine).
_CLOSE_RACE_BEFORE_S: Final = 2.0
_CLOSE_RACE_AFTER_S: Final = 1.0


def _judge_unchained(report: VerifyReport, reader: Reader) -> None:
    """Entries without a chain: problems, except one a caller emitted as its logger closed.

    Such an entry reaches the chain after its final checkpoint and is delivered
    without a chain field (never lost): it is stamped within moments before a
    final checkpoint of a chain of the same service, and stored after it. That is
    a notice and makes the result incomplete (nothing vouches for it); any other
    is a problem.
    """
    finals: list[tuple[str | None, float, tuple[int, int]]] = []
    for chain in reader.chains.values():
        for seq, parsed in chain.meta.items():
            details = parsed.get("details")
            if parsed.get("action") == _format.ACTION_CHECKPOINT and isinstance(details, dict):
                stamp = unix_time(parsed.get("timestamp"))
                if details.get("final") is True and stamp is not None and chain.has(seq):
                    finals.append((parsed.get("service"), stamp, chain.where(seq)))
    order = {name: index for index, name in enumerate(reader.names)}
    listed = 0
    for problem, timestamp, service in reader.unchained_listed:
        stamp = unix_time(timestamp)
        place = (order.get(problem.file or "", -1), problem.line or 0)
        # Delivered after the final checkpoint (read later), stamped just before it.
        raced = stamp is not None and any(
            service == final_service
            and final - _CLOSE_RACE_BEFORE_S <= stamp <= final + _CLOSE_RACE_AFTER_S
            and place > final_place
            for final_service, final, final_place in finals
        )
        if raced:
            report.incomplete = True
            report.notices.append(
                Problem(
                    "unchained",
                    "an entry with no chain field, stamped as its logger closed (a caller "
                    "raced close(): delivered, not chained, not vouched for)",
                    problem.file,
                    problem.line,
                )
            )
        elif listed < MAX_LISTED:
            report.problems.append(problem)
            listed += 1
        else:
            report.omitted += 1
    report.omitted += reader.unchained - len(reader.unchained_listed)


def iter_problems(report: VerifyReport) -> Iterator[Problem]:
    """Every listed problem, chain by chain, then those outside any chain."""
    for chain in report.chains:
        yield from chain.problems
    yield from report.problems


def load_public_key(path: Path) -> tuple[str, Any]:
    """A PEM public key (``keygen``'s ``.pub``, or ``openssl pkey -pubout``): (key id, key).

    Raises ``ValueError`` with a plain sentence (never the file's content).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path} holds a private key; give its public key (the .pub file)")
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # noqa: BLE001 - any parse failure, without its text
        raise ValueError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} holds a {type(key).__name__}; an Ed25519 key is needed")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _format.key_id(raw), key


def load_seal_seed(path: Path) -> SealSeed:
    """The seal's ``.verify`` file. Raises ``ValueError`` with a plain sentence."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > 4096:
        raise ValueError(f"{path} is not a seal verification file (too large)")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("format") != _format.FORMAT_VERSION:
        raise ValueError(f"{path} is not a seal verification file (format 1 JSON)")
    if "key" in parsed and "seed" not in parsed:
        raise ValueError(f"{path} is the host's seal state; give the .verify file (the seed)")
    seed, t0, epoch_s = parsed.get("seed"), parsed.get("t0"), parsed.get("epoch_s")
    if type(seed) is not str or not HEX64.fullmatch(seed):
        raise ValueError(f"{path}: 'seed' must be 64 lowercase hex characters")
    if type(t0) is not int or not 0 <= t0 < 1 << 40:
        raise ValueError(f"{path}: 't0' must be unix seconds")
    if type(epoch_s) is not int or not 1 <= epoch_s <= 86_400 * 366:
        raise ValueError(f"{path}: 'epoch_s' must be seconds between 1 and a year")
    return SealSeed(bytes.fromhex(seed), t0, epoch_s)
