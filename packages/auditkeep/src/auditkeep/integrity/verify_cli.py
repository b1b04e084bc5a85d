"""The ``auditkeep verify`` command: wiring and the text report (the engine is ``verify``).

Exit codes: 0 every chain verified and closed by its final checkpoint; 1 any
problem (tampering, bad or missing signature, unknown key, bad seal, an entry
nothing vouches for, an unreadable file); 2 usage error (bad flag, no input, a
key file that cannot be used); 3 verified as far as it goes, but a chain has
an unsealed tail, ended without its final checkpoint, begins before the
inputs do, or no key was given to check signatures with.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from auditkeep._help import examples, silence_closed_stdout
from auditkeep.exceptions import InputError
from auditkeep.integrity.verify import (
    EXIT_USAGE,
    ChainReport,
    Problem,
    VerifyOptions,
    VerifyReport,
    load_public_key,
    load_seal_seed,
    verify,
)
from auditkeep.query._reader import discover_files

ENV_PATH: Final = "AUDIT_LOG_FILE_PATH"
_NOTES: Final = (
    "Inputs: files (with their rotated backups, .N and .N.gz), directories or globs, "
    f"default ${ENV_PATH}; a SIEM export as JSON lines verifies the same way, alone or "
    "together with the host's files (duplicates are fine). Lines are put in chain order "
    "whatever order they were read in. Exit codes: 0 verified and closed; 1 a problem; "
    "2 usage error; 3 verified so far, but unsealed entries, a chain that ended without "
    "its final checkpoint (crash or cut off), or no key to check signatures with."
)


def register(sub: Any) -> None:
    """Add ``verify`` to the ``auditkeep`` command."""
    parser = sub.add_parser(
        "verify",
        help="check the trail's hash chains, checkpoint signatures and seals (offline)",
        description=(
            "Check that no entry of the trail was changed, removed or added: every chain "
            "linked, every checkpoint signed by a key you trust (and sealed, with --seal-key)."
        ),
        **examples(
            "auditkeep verify --public-key audit-signing.pem.pub /var/log/agent/audit.jsonl",
            "auditkeep verify --public-key k.pub --seal-key seal.verify /var/log/agent/",
            "auditkeep verify --public-key k.pub --json siem-export.jsonl | jq .chains",
            notes=_NOTES,
        ),
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files, directories or globs")
    parser.add_argument(
        "--public-key",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="PEM Ed25519 public key (keygen's .pub); repeat for several",
    )
    parser.add_argument(
        "--seal-key",
        type=Path,
        metavar="FILE",
        help="the forward seal's seed file (keygen --seal's .verify, kept off the host)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--json", action="store_const", const="json", dest="format", help="same as --format json"
    )
    parser.add_argument(
        "--no-rotations",
        action="store_true",
        help="read only the files named, not their rotated backups",
    )
    parser.add_argument(
        "--strict-order",
        action="store_true",
        help="a line out of seq order within a file is a problem, not a notice",
    )
    parser.add_argument(
        "--allow-unchained",
        action="store_true",
        help="entries with no chain field are a notice, not a problem (mixed trails)",
    )
    parser.set_defaults(func=run)


def _usage(message: str) -> int:
    print(f"auditkeep verify: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Run ``auditkeep verify``."""
    keys: dict[str, Any] = {}
    try:
        for path in args.public_key:
            key_id, key = load_public_key(path)
            keys[key_id] = key
        seal = load_seal_seed(args.seal_key) if args.seal_key is not None else None
    except ValueError as exc:
        return _usage(str(exc))
    try:
        files = discover_files(
            args.paths, default=os.environ.get(ENV_PATH), rotations=not args.no_rotations
        )
    except InputError as exc:
        return _usage(str(exc))
    options = VerifyOptions(
        public_keys=keys,
        seal=seal,
        strict_order=args.strict_order,
        allow_unchained=args.allow_unchained,
    )
    try:
        report = verify(files, options)
    except KeyboardInterrupt:
        print("auditkeep verify: interrupted", file=sys.stderr)
        return 130
    try:
        if args.format == "json":
            out = orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n"
            sys.stdout.buffer.write(out)
        else:
            render_text(report, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_closed_stdout()  # the reader went away (| head): the exit code still says it
    return report.exit_code


def _place(problem: Problem) -> str:
    if problem.file is None:
        return ""
    return f"{problem.file}:{problem.line}: " if problem.line is not None else f"{problem.file}: "


def _problem_line(problem: Problem, label: str) -> str:
    seq = f" (seq {problem.seq})" if problem.seq is not None else ""
    return f"  {label} {problem.kind}: {_place(problem)}{problem.message}{seq}"


def _chain_line(chain: ChainReport) -> str:
    parts = [f"chain {chain.chain_id}"]
    if chain.pid is not None:
        parts.append(f"pid {chain.pid}")
    if chain.key_id:
        parts.append(f"key {chain.key_id}")
    if chain.seal == "forward":
        parts.append("sealed")
    head = parts[0] + (f" ({', '.join(parts[1:])})" if parts[1:] else "")
    span = f"seq {chain.first_seq}-{chain.last_seq}, {chain.entries} entries"
    if chain.duplicates:
        span += f" (+{chain.duplicates} duplicates)"
    if chain.verified_checkpoint_seq is None:
        upto = "nothing verified"
    else:
        upto = (
            f"verified through seq {chain.verified_through_seq} "
            f"(checkpoint at seq {chain.verified_checkpoint_seq})"
        )
    tail = f", {chain.unsealed_tail} unsealed" if chain.unsealed_tail else ""
    closed = ", closed" if chain.closed else ""
    return f"{chain.status.upper()}: {head}: {span}; {upto}{tail}{closed}"


def render_text(report: VerifyReport, out: TextIO) -> None:
    """The human report: one line per chain, then its problems and notices."""
    for chain in report.chains:
        out.write(_chain_line(chain) + "\n")
        for problem in chain.problems:
            out.write(_problem_line(problem, "PROBLEM") + "\n")
        if chain.omitted:
            out.write(f"  ... and {chain.omitted} more problems\n")
        for notice in chain.notices:
            out.write(_problem_line(notice, "note") + "\n")
    for problem in report.problems:
        out.write(_problem_line(problem, "PROBLEM").lstrip() + "\n")
    if report.omitted:
        out.write(f"... and {report.omitted} more problems\n")
    for notice in report.notices:
        out.write(_problem_line(notice, "note").lstrip() + "\n")
    code = report.exit_code
    verdict = {0: "VERIFIED", 1: "PROBLEMS FOUND"}.get(code, "INCOMPLETE")
    problems = len(report.all_problems) + report.omitted + sum(c.omitted for c in report.chains)
    checked = []
    if report.signatures_checked:
        checked.append("signatures")
    if report.seal_checked:
        checked.append("seals")
    what = " and ".join(checked) if checked else "links only (no key given)"
    out.write(
        f"{verdict}: {len(report.chains)} chains, {report.lines} lines in "
        f"{len(report.files)} files, {problems} problems; checked {what}; "
        f"{report.seconds:.2f} s (exit {code})\n"
    )
