"""The ``auditrail`` command: schema, configuration check, spool status, demo, queries.

Exit codes: 0 success (or matches found), 1 no match / check failed, 2 usage or
input error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from auditrail._event import load_schema
from auditrail.config import AuditConfig
from auditrail.exceptions import ConfigError


def _cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(orjson.dumps(load_schema(), option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _config_or_none() -> AuditConfig | None:
    """The environment's settings, or None after saying on stderr what is wrong."""
    try:
        return AuditConfig.from_env()
    except ConfigError as exc:
        print(f"auditrail: invalid configuration: {exc}", file=sys.stderr)
        return None


def _cmd_check_config(args: argparse.Namespace) -> int:
    from auditrail._disk import DiskWatch

    config = _config_or_none()
    if config is None:
        return 1
    print(config.summary())
    print("configuration OK")
    if config.enabled:
        # Valid, but say so on stderr if the disk is already below the warning level.
        watch = DiskWatch()
        for label, directory in config.watched_directories():
            watch.watch(label, directory, config.disk_warn_free, monitor=False)
        watch.check()
    return 0


def _cmd_spool_status(args: argparse.Namespace) -> int:
    from auditrail.delivery.status import spool_status

    config = _config_or_none()
    if config is None:
        return 2
    report = spool_status(args.spool_dir or config.spool_dir)
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    else:
        for slot in report["slots"]:
            state = "in use" if slot["locked"] else "free (replayed by the next start)"
            print(f"{slot['slot']}: {state}")
            for name, dest in slot["destinations"].items():
                print(
                    f"  {name}: {dest['pending']} pending, {dest['bytes']} bytes "
                    f"in {dest['segments']} segments"
                )
        print(f"dead letters: {report['dead_letters']}")
    return 0


def _cmd_spool_redeliver(args: argparse.Namespace) -> int:
    from auditrail.delivery.redeliver import dead_letter_path, redeliver_dead_letters

    config = _config_or_none()
    if config is None:
        return 2
    sinks = [s for s in config.build_sinks() if args.destination in (None, s.name)]
    if not sinks:
        print(f"auditrail: no configured destination named {args.destination!r}", file=sys.stderr)
        return 2
    left = 0
    for sink in sinks:
        try:
            sent = redeliver_dead_letters(config.spool_dir, sink)
        finally:
            sink.close(5.0)
        remaining = dead_letter_path(config.spool_dir, sink.name)
        still = sum(1 for _ in remaining.open("rb")) if remaining.exists() else 0
        left += still
        print(f"{sink.name}: redelivered {sent}, still dead-lettered {still}")
    return 0 if left == 0 else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from auditrail.demo import run_demo

    return run_demo(args.dir, entries=args.entries)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="auditrail", description="Structured, lossless audit trails: inspect and query them."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("schema", help="print the JSON Schema of an audit entry")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("check-config", help="validate the AUDIT_LOG_* settings of this environment")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("spool", help="inspect the durable spool")
    spool_sub = p.add_subparsers(dest="spool_command", required=True, metavar="ACTION")
    status = spool_sub.add_parser("status", help="what is waiting in the spool")
    status.add_argument("--spool-dir", help="default: AUDIT_LOG_SPOOL_DIR or its default")
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.set_defaults(func=_cmd_spool_status)
    redeliver = spool_sub.add_parser(
        "redeliver", help="re-send dead-lettered entries to the configured destinations"
    )
    redeliver.add_argument("--destination", help="only this destination (e.g. http)")
    redeliver.set_defaults(func=_cmd_spool_redeliver)

    p = sub.add_parser(
        "demo", help="emit a burst of correlated entries to a file and query them back"
    )
    p.add_argument("--dir", default="audit-demo", help="where to write the demo trail")
    p.add_argument("--entries", type=int, default=20_000, help="how many background entries")
    p.set_defaults(func=_cmd_demo)

    from auditrail.query.cli import register

    register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``auditrail`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
