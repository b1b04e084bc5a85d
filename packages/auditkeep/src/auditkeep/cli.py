"""The ``auditkeep`` command: schema, configuration check, spool status, demo, queries.

Also ``python -m auditkeep``. Alone, the command (or ``auditkeep spool``) prints
its help. Every ``--help`` ends with examples (``auditkeep._help``).

Exit codes: 0 success (or matches found, or help asked for), 1 no match /
check failed, 2 usage or input error (``verify`` adds 3: verified, but incomplete).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from auditkeep import __version__
from auditkeep._event import load_schema
from auditkeep._help import examples, help_command
from auditkeep.config import AuditConfig, nearest_existing
from auditkeep.exceptions import ConfigError


def _cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(orjson.dumps(load_schema(), option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _config_or_none(*, read_only: bool = False) -> AuditConfig | None:
    """The environment's settings, or None after saying on stderr what is wrong."""
    try:
        return AuditConfig.from_env(read_only=read_only)
    except ConfigError as exc:
        print(f"auditkeep: invalid configuration: {exc}", file=sys.stderr)
        return None


def _cmd_check_config(args: argparse.Namespace) -> int:
    from auditkeep._disk import DiskWatch

    # Read-only: a check before rollout must leave no file or folder behind.
    config = _config_or_none(read_only=True)
    if config is None:
        return 1
    print(config.summary())
    findings = config.preflight() if config.enabled else []
    for fatal, message in findings:
        label = "" if fatal else "warning: "
        print(f"auditkeep: {label}{message}", file=sys.stderr)
    if any(fatal for fatal, _ in findings):
        print("configuration NOT OK")
        return 1
    print("configuration OK")
    if config.enabled:
        # Valid, but say so on stderr if the disk is already below the warning level.
        watch = DiskWatch()
        for label, directory in config.watched_directories():
            # A folder start-up will create: its free space is that of its nearest ancestor.
            watch.watch(label, nearest_existing(directory), config.disk_warn_free, monitor=False)
        watch.check()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from auditkeep.demo import run_demo

    return run_demo(args.dir, entries=args.entries, force=args.force)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="auditkeep",
        description="Structured, lossless audit trails: inspect and query them.",
        **examples(
            "auditkeep check-config                 # what AUDIT_LOG_* resolve to, checked",
            "auditkeep query --since 24h --outcome failure",
            "auditkeep trace 01a22057-2735-729e-bb1e-512c3d4713a0",
            "auditkeep demo --dir /tmp/audit-demo   # a trail to try the commands on",
            "auditkeep verify --public-key audit.pub /var/log/agent/audit.jsonl",
            notes="Run 'auditkeep COMMAND --help' for a command's options and examples.",
        ),
    )
    parser.add_argument("--version", action="version", version=f"auditkeep {__version__}")
    parser.set_defaults(func=help_command(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of an audit entry",
        **examples("auditkeep schema > audit-event.schema.json"),
    )
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser(
        "check-config",
        help="validate the AUDIT_LOG_* settings of this environment",
        description=(
            "Validate the AUDIT_LOG_* settings and print every resolved destination. "
            "Read-only: creates no file or folder."
        ),
        **examples(
            "AUDIT_LOG_DESTINATION=file AUDIT_LOG_FILE_PATH=/var/log/agent/audit.jsonl "
            "auditkeep check-config",
            "AUDIT_LOG_DESTINATION=syslog AUDIT_LOG_SYSLOG_ADDRESS=tcp://siem-relay:601 "
            "auditkeep check-config",
            notes=(
                "Exit codes: 0 valid (warnings, such as a udp:// syslog address, on stderr), "
                "1 invalid or not deployable (a syslog socket nothing listens on)."
            ),
        ),
    )
    p.set_defaults(func=_cmd_check_config)

    from auditkeep.delivery.cli import register as register_spool

    register_spool(sub)

    from auditkeep.integrity.cli import register as register_keygen

    register_keygen(sub)

    p = sub.add_parser(
        "demo",
        help="emit a burst of correlated entries to a file and query them back",
        **examples(
            "auditkeep demo",
            "auditkeep demo --dir /tmp/audit-demo --entries 5000",
            notes=(
                "The demo writes audit.jsonl (with its rotations), spool/ and the key its trail "
                "is signed with (audit-signing.pem, .pub) in the folder. "
                "It refuses a folder that holds anything it did not write; --force writes "
                "there anyway, replacing only its own files."
            ),
        ),
    )
    p.add_argument("--dir", default="audit-demo", help="where to write the demo trail")
    p.add_argument("--entries", type=int, default=20_000, help="how many background entries")
    p.add_argument(
        "--force",
        action="store_true",
        help="use a folder that holds other files (they are kept; the demo's own are replaced)",
    )
    p.set_defaults(func=_cmd_demo)

    from auditkeep.query.cli import register

    register(sub)

    from auditkeep.integrity.verify_cli import register as register_verify

    register_verify(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``auditkeep`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
