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

    from auditrail.delivery.cli import register as register_spool

    register_spool(sub)

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
