"""``gitlab-copilot-agent``: ``serve`` the agent, or run the one-command ``demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from auditrail.exceptions import ConfigError


def _settings_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        variable = "_".join(str(part) for part in error["loc"]).upper() or "settings"
        lines.append(f"{variable}: {error['msg']}")
    return "; ".join(lines)


def _serve(args: argparse.Namespace) -> int:
    from gitlab_copilot_agent.ingress.server_options import run_server
    from gitlab_copilot_agent.main import create_app
    from gitlab_copilot_agent.settings import Settings

    try:
        settings = Settings()  # type: ignore[call-arg]  # pydantic-settings reads the environment
    except ValidationError as exc:
        print(
            f"gitlab-copilot-agent: invalid configuration: {_settings_error(exc)}", file=sys.stderr
        )
        return 2
    try:
        from auditrail.config import AuditConfig
        from gitlab_copilot_agent.settings import SERVICE_NAME

        AuditConfig.from_env(service=SERVICE_NAME)  # fail before binding the port
    except ConfigError as exc:
        print(f"gitlab-copilot-agent: invalid configuration: {exc}", file=sys.stderr)
        return 2
    run_server(
        create_app(settings),
        settings,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        log_level="info",
        # uvicorn owns SIGTERM: its graceful shutdown runs the lifespan, which
        # drains the work in flight and closes the audit logger.
        timeout_graceful_shutdown=30,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gitlab_copilot_agent.demo.run import run_demo

    return run_demo(args.dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitlab-copilot-agent", description="A GitLab merge-request agent with an audit trail."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the agent (configuration from the environment)")
    serve.add_argument("--host", help="default: HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: PORT or 8080")
    serve.set_defaults(func=_serve)
    demo = sub.add_parser(
        "demo",
        help="run the agent against local GitLab and LLM stand-ins and show its audit trail",
    )
    demo.add_argument("--dir", default="agent-demo", help="where the demo writes its trail")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gitlab-copilot-agent`` command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
