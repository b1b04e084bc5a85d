"""The ``auditkeep spool`` commands: ``status`` (read-only) and ``redeliver``.

Both find the spool as the service does: ``--spool-dir``, else
``AUDIT_LOG_SPOOL_DIR``, else the default folder of the service named by
``--service`` (else ``AUDIT_LOG_SERVICE_NAME``, else ``auditkeep``).

Exit codes: 0 success (``redeliver``: nothing left), 1 entries left
dead-lettered, 2 usage error, invalid settings or no spool folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from auditkeep._help import help_command
from auditkeep._names import service_name_problem
from auditkeep.delivery.status import SpoolStatus, spool_status
from auditkeep.exceptions import ConfigError

_WHERE = """\
The spool folder is --spool-dir, else AUDIT_LOG_SPOOL_DIR, else the default
folder of the service (--service, else AUDIT_LOG_SERVICE_NAME, else auditkeep)."""

_STATUS_EXAMPLES = f"""\
{_WHERE}

examples:
  auditkeep spool status --service gitlab-copilot-agent
  auditkeep spool status --spool-dir /var/lib/agent/spool --json"""

_REDELIVER_EXAMPLES = f"""\
{_WHERE} The destinations are the configured ones (AUDIT_LOG_DESTINATION, ...).

examples:
  auditkeep spool redeliver --service gitlab-copilot-agent
  AUDIT_LOG_DESTINATION=http AUDIT_LOG_HTTP_ENDPOINT=https://siem/intake \\
    auditkeep spool redeliver --destination http"""


def register(sub: Any) -> None:
    """Add ``spool status`` and ``spool redeliver`` to the ``auditkeep`` command."""
    raw = argparse.RawDescriptionHelpFormatter
    spool = sub.add_parser(
        "spool",
        help="inspect the durable spool, re-send dead letters",
        description="Inspect the durable spool, or re-send what a destination refused.",
        epilog=_STATUS_EXAMPLES,
        formatter_class=raw,
    )
    # `auditkeep spool` alone prints its help (asking for nothing is no mistake).
    spool.set_defaults(func=help_command(spool))
    actions = spool.add_subparsers(dest="spool_command", metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="what is waiting in the spool (read-only: creates nothing)",
        description="What is waiting in each slot of the spool, and the dead letters.",
        epilog=_STATUS_EXAMPLES,
        formatter_class=raw,
    )
    _where_arguments(status)
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.add_argument(
        "--json", action="store_const", const="json", dest="format", help="same as --format json"
    )
    status.set_defaults(func=_status)
    redeliver = actions.add_parser(
        "redeliver",
        help="re-send dead-lettered entries to the configured destinations",
        description="Re-send the entries a destination refused for good, once it is fixed.",
        epilog=_REDELIVER_EXAMPLES,
        formatter_class=raw,
    )
    _where_arguments(redeliver)
    redeliver.add_argument("--destination", help="only this destination (e.g. http)")
    redeliver.set_defaults(func=_redeliver)


def _where_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spool-dir", help="the spool folder (default: see below)")
    parser.add_argument("--service", help="the service whose default spool folder to use")


def _environment(args: argparse.Namespace) -> Mapping[str, str] | None:
    """The environment with the command line's choices applied; None after saying why not."""
    env = dict(os.environ)
    if args.service is not None:
        problem = service_name_problem(args.service)
        if problem is not None:
            _error(f"--service: {problem}")
            return None
        env["AUDIT_LOG_SERVICE_NAME"] = args.service
    if args.spool_dir is not None:
        env["AUDIT_LOG_SPOOL_DIR"] = args.spool_dir
    return env


def _error(message: str) -> None:
    print(f"auditkeep: {message}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    from auditkeep.config import spool_dir_from_env

    env = _environment(args)
    if env is None:
        return 2
    try:
        base = spool_dir_from_env(env)
    except ConfigError as exc:
        _error(f"invalid configuration: {exc}")
        return 2
    if not base.is_dir():
        _error(
            f"no spool folder at {base} (nothing was spooled there yet, or the service"
            " uses another one: give --service or --spool-dir)"
        )
        return 2
    report = spool_status(base)
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(report.to_json()) + b"\n")
    else:
        sys.stdout.write(render_status(report))
    return 0


def render_status(report: SpoolStatus) -> str:
    """``spool status`` as a table: one row per slot and destination, then the dead letters."""
    lines = [f"spool folder: {report.spool_dir}"]
    rows = [("SLOT", "OWNER", "DESTINATION", "PENDING", "OLDEST PENDING", "BYTES", "SEGMENTS")]
    corrupt: list[str] = []
    for slot in report.slots:
        owner = "in use" if slot.locked else "free"
        if not slot.destinations:
            rows.append((slot.slot, owner, "-", "0", "-", "0", "0"))
        for d in slot.destinations:
            oldest = "-" if d.oldest_pending_ms is None else _utc(d.oldest_pending_ms)
            rows.append(
                (slot.slot, owner, d.name, str(d.pending), oldest, str(d.bytes), str(d.segments))
            )
            if d.corrupt:
                corrupt.append(f"{slot.slot}/{d.name}: {d.corrupt} unreadable stretch(es) skipped")
    if len(rows) == 1:
        lines.append("no slot: no process has used this spool yet")
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        numeric = {3, 5, 6}
        for row in rows:
            cells = [
                cell.rjust(w) if i in numeric else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        lines += corrupt
        pending = report.pending
        free = [
            s.slot for s in report.slots if not s.locked and any(d.pending for d in s.destinations)
        ]
        lines.append(f"{pending} entries pending")
        lines += [
            f"{slot} is free: replayed by the next start, or by a live process within 30 s"
            for slot in free
        ]
    if report.dead_letters:
        lines.append("dead letters (refused for good; `auditkeep spool redeliver` re-sends them):")
        for dead in report.dead_letters:
            lines.append(f"  {dead.destination}: {dead.entries} entries in {dead.path}")
    else:
        lines.append("dead letters: none")
    return "\n".join(lines) + "\n"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _redeliver(args: argparse.Namespace) -> int:
    from auditkeep.config import AuditConfig
    from auditkeep.delivery.dead_letters import dead_letter_path
    from auditkeep.delivery.redeliver import redeliver_dead_letters

    env = _environment(args)
    if env is None:
        return 2
    try:
        config = AuditConfig.from_env(env)
    except ConfigError as exc:
        _error(f"invalid configuration: {exc}")
        return 2
    sinks = config.build_sinks()
    chosen = [s for s in sinks if args.destination in (None, s.name)]
    if not chosen:
        names = ", ".join(s.name for s in sinks)
        _error(f"no configured destination named {args.destination!r} (configured: {names})")
        for sink in sinks:
            sink.close(0)
        return 2
    left = 0
    for sink in sinks:
        if sink not in chosen:
            sink.close(0)
            continue
        path = dead_letter_path(config.spool_dir, sink.name)
        try:
            done = redeliver_dead_letters(config.spool_dir, sink)
        finally:
            sink.close(config.delivery.shutdown_timeout_s)
        if not (done.delivered or done.remaining):
            print(f"{sink.name}: no dead letters in {path.parent}")
            continue
        left += done.remaining
        line = f"{sink.name}: redelivered {done.delivered}, still dead-lettered {done.remaining}"
        if done.remaining:
            line += f" in {path}"
            if done.why:
                line += f" ({done.why})"
        print(line)
    return 0 if left == 0 else 1
