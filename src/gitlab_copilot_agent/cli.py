"""``gitlab-copilot-agent``: ``serve`` the agent, ``check-config``, ``run-task`` (one coding task,
started by the agent), or run the one-command ``demo``.

A bad setting stops ``serve`` and ``check-config`` before anything starts,
with one plain line on stderr naming the variable (exit code 2); the lines
below are the CLI's own messages to a person, so they are printed, while the
running service logs through ``gitlab_copilot_agent.logs``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from auditkeep.exceptions import ConfigError

if TYPE_CHECKING:
    from auditkeep.config import AuditConfig
    from gitlab_copilot_agent.settings import Settings

INVALID = "gitlab-copilot-agent: invalid configuration: "


def _load(*, read_only: bool = False) -> tuple[Settings, AuditConfig] | None:
    """Both configurations, or None after printing the one line that says what is wrong.

    ``read_only`` (check-config) judges paths by their permissions and creates nothing.
    """
    from auditkeep.config import AuditConfig
    from gitlab_copilot_agent.settings import SERVICE_NAME, Settings, SettingsError

    problems: list[str] = []
    settings: Settings | None = None
    audit: AuditConfig | None = None
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        audit = AuditConfig.from_env(service=SERVICE_NAME, read_only=read_only)
    except ConfigError as exc:
        problems.append(str(exc))
    from gitlab_copilot_agent.tracing import config_problem

    tracing_problem = config_problem()  # OTEL_*: judged here, set up by serve and run-task
    if tracing_problem is not None:
        problems.append(tracing_problem)
    if settings is None or audit is None or tracing_problem is not None:
        print(INVALID + " | ".join(problems), file=sys.stderr)
        return None
    return settings, audit


def _serve(args: argparse.Namespace) -> int:
    loaded = _load()
    if loaded is None:
        return 2
    settings, _ = loaded
    port = args.port if args.port is not None else settings.server.port
    if settings.server.metrics_port is not None and settings.server.metrics_port == port:
        print(INVALID + "METRICS_PORT: must differ from the port serve listens on", file=sys.stderr)
        return 2
    from gitlab_copilot_agent import tracing
    from gitlab_copilot_agent.ingress.server_options import run_server
    from gitlab_copilot_agent.logs import configure_logging
    from gitlab_copilot_agent.main import create_app

    try:
        tracing.configure_from_env()  # only when OTEL_* say so; else imports nothing
    except tracing.TracingError as exc:
        print(INVALID + str(exc), file=sys.stderr)
        return 2
    configure_logging(settings.logs)
    # run_server adds the ingress's limits (header size and deadline, connections,
    # keep-alive, no proxy headers: TRUSTED_PROXIES decides) and METRICS_PORT's listener.
    run_server(
        create_app(settings),
        settings,
        host=args.host or settings.server.host,
        port=port,
        # The agent's logging (gitlab_copilot_agent.logs) renders and scrubs uvicorn's records.
        log_config=None,
        log_level=settings.logs.level,
        # Every POST /webhook already leaves an audit entry; an access line per
        # request would double what an unauthenticated flood makes the agent write.
        access_log=False,
        server_header=False,
        # uvicorn owns SIGTERM: its graceful shutdown runs the lifespan, which
        # drains the work in flight and closes the audit logger.
        timeout_graceful_shutdown=30,
    )
    tracing.shutdown()  # exports the spans still held
    return 0


def _check_config(args: argparse.Namespace) -> int:
    loaded = _load(read_only=True)
    if loaded is None:
        return 2
    settings, audit = loaded
    print(settings.summary())
    print("audit:")
    print("\n".join(f"  {line}" for line in audit.summary().splitlines()))
    from gitlab_copilot_agent.tracing import describe

    print(describe())
    print("configuration OK")
    return 0


def _run_task(args: argparse.Namespace) -> int:
    from gitlab_copilot_agent.tasks.main import run_task_command

    return run_task_command(args.task_file)


def _demo(args: argparse.Namespace) -> int:
    # The only command that needs the stand-ins; imported here, never by the service.
    from gitlab_copilot_agent.demo import run_demo

    return run_demo(args.dir, force=args.force)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitlab-copilot-agent", description="A GitLab merge-request agent with an audit trail."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the agent (configuration from the environment)")
    serve.add_argument("--host", help="default: HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: PORT or 8080")
    serve.set_defaults(func=_serve)
    check = sub.add_parser(
        "check-config",
        help="check the settings (the agent's and AUDIT_LOG_*) and print what they resolve to",
    )
    check.set_defaults(func=_check_config)
    task = sub.add_parser(
        "run-task",
        help="run one coding task (the agent starts this; the spec comes on stdin, "
        "secrets in the environment)",
    )
    task.add_argument("--task-file", help="read the task spec from this file instead of stdin")
    task.set_defaults(func=_run_task)
    demo = sub.add_parser(
        "demo",
        help="run the agent against local GitLab and LLM stand-ins and show its audit trail",
    )
    demo.add_argument("--dir", default="agent-demo", help="where the demo writes its trail")
    demo.add_argument(
        "--force",
        action="store_true",
        help="use a folder that holds other files (they are kept; the demo's own are replaced)",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gitlab-copilot-agent`` command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
