"""The ``auditkeep query``, ``trace``, ``report`` and ``tail`` commands.

``register`` adds them to the ``auditkeep`` command; ``main`` runs them on their
own (``python -m auditkeep.query.cli``).

Exit codes, for every command:

* 0: at least one entry matched (``report``: the range held entries);
* 1: no entry matched;
* 2: an error: bad arguments, no input, or a file that could not be read (the
  entries that could be read are still printed);
* 130: interrupted (Ctrl-C).

Malformed or truncated lines never stop a command: they are counted, and the
count is printed on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, Protocol

import orjson

from auditkeep._event import ActorType, ErrorClass, Outcome
from auditkeep._help import examples, help_command, silence_closed_stdout
from auditkeep.exceptions import InputError
from auditkeep.query._filters import EntryFilter, Matcher
from auditkeep.query._format import CsvWriter, query_row, render_csv
from auditkeep.query._progress import Progress
from auditkeep.query._reader import (
    ScanStats,
    TrailFile,
    discover_files,
    scan,
    search,
)
from auditkeep.query._report import DEFAULT_TOP, ReportBuilder, render_report, render_trace
from auditkeep.query._table import QUERY_TABLE, QUERY_TYPICAL, StreamTable, render_query_table
from auditkeep.query._tail import Follower
from auditkeep.query._timeparse import canonical, parse_time

ENV_PATH: Final = "AUDIT_LOG_FILE_PATH"
EXIT_MATCH: Final = 0
EXIT_NO_MATCH: Final = 1
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130
_WRITE_BATCH: Final = 10_000

_NOTES: Final = (
    "Inputs: files (with their rotated backups, .N and .N.gz), directories or globs; "
    f"default ${ENV_PATH} and its backups. Output: a table on a terminal, JSON lines "
    "(each entry as stored) when piped; --format always wins. "
    "Exit codes: 0 matches, 1 no match, 2 error (bad arguments, no input, unreadable file)."
)
_OUTCOMES: Final = tuple(outcome.value for outcome in Outcome)
_ERRORS: Final = tuple(error.value for error in ErrorClass)
_ACTOR_TYPES: Final = tuple(actor_type.value for actor_type in ActorType)

Command = Callable[[argparse.Namespace], int]


# -- argument types ----------------------------------------------------------


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _target_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice a mistyped word most likely meant: a unique prefix, else the nearest."""
    starting = [choice for choice in choices if choice.startswith(word)]
    if word and len(starting) == 1:
        return starting[0]
    near = difflib.get_close_matches(word.replace("-", "_"), choices, n=1, cutoff=0.6)
    return near[0] if near else None


def _vocabulary(kind: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    # A value outside a fixed vocabulary can match nothing: refuse it, with a hint.
    def parse(text: str) -> str:
        word = text.strip().lower()
        if word in choices:
            return word
        guess = closest(word, choices)
        hint = f"did you mean {guess}? " if guess else ""
        raise argparse.ArgumentTypeError(
            f"unknown {kind} {text!r}; {hint}use one of: {', '.join(choices)}"
        )

    return parse


def _filter_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("filters (all given must hold)")
    group.add_argument(
        "--since", type=_time_arg, metavar="TIME", help="ISO 8601, 24h, 7d, today (UTC), ..."
    )
    group.add_argument(
        "--until", type=_time_arg, metavar="TIME", help="exclusive end, same forms as --since"
    )
    group.add_argument(
        "--action",
        action="append",
        default=[],
        metavar="GLOB",
        help="action glob such as 'gitlab.api.*'; repeat for any of several",
    )
    group.add_argument(
        "--actor-type", metavar="TYPE", help=f"{', '.join(_ACTOR_TYPES)}, or your own"
    )
    group.add_argument("--actor-id", metavar="ID")
    group.add_argument(
        "--target",
        action="append",
        default=[],
        type=_target_arg,
        metavar="KEY=VALUE",
        help="target field, e.g. project_id=123, mr_iid=45, issue_key=ABC-1; repeatable",
    )
    group.add_argument(
        "--outcome",
        type=_vocabulary("outcome", _OUTCOMES),
        metavar="OUTCOME",
        help=" or ".join(_OUTCOMES),
    )
    group.add_argument(
        "--error",
        type=_vocabulary("error class", _ERRORS),
        metavar="CLASS",
        help=f"error class: {', '.join(_ERRORS)}",
    )
    group.add_argument("--correlation-id", metavar="ID", help="any letter case")
    group.add_argument("--event-id", metavar="ID", help="one entry's event_id, any letter case")
    group.add_argument("--service", metavar="NAME")
    return parent


def _input_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("input")
    group.add_argument(
        "--no-rotations",
        action="store_true",
        help="read only the files named, not their rotated backups",
    )
    group.add_argument(
        "--scan-all",
        action="store_true",
        help="read every file, even those last modified before the time asked for",
    )
    return parent


def _entry_filter(args: argparse.Namespace) -> EntryFilter:
    """The filters given, after a warning on stderr for those that can match nothing."""
    if args.since is not None and args.until is not None and args.since >= args.until:
        _warn(
            f"the time window is empty: --since is {canonical(args.since)}, not before --until "
            f"{canonical(args.until)}, so nothing can match (a duration counts back from now: "
            "--since 2h --until 1h is the hour before the last)"
        )
    if args.actor_type is not None and args.actor_type not in _ACTOR_TYPES:
        guess = closest(args.actor_type.lower(), _ACTOR_TYPES)
        hint = f"; did you mean {guess}?" if guess else ""
        _warn(
            f"actor type {args.actor_type!r} is none of the standard ones "
            f"({', '.join(_ACTOR_TYPES)}){hint} (matched exactly as given)"
        )
    return EntryFilter(
        since=args.since,
        until=args.until,
        actions=tuple(args.action),
        actor_type=args.actor_type,
        actor_id=args.actor_id,
        targets=tuple(args.target),
        outcome=args.outcome,
        error=args.error,
        correlation_id=args.correlation_id,
        service=args.service,
        event_id=args.event_id,
    )


# -- plumbing ----------------------------------------------------------------


class _BytesOut(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


def _stdout() -> _BytesOut:
    sys.stdout.flush()
    buffer: _BytesOut | None = getattr(sys.stdout, "buffer", None)
    return buffer if buffer is not None else _TextSink(sys.stdout)


class _TextSink:
    # For a stdout without a byte buffer (an embedding that swapped in a StringIO).
    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        self._text.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


def _warn(message: str) -> None:
    sys.stderr.write(f"auditkeep: {message}\n")
    sys.stderr.flush()


def _guarded(command: Command) -> Command:
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except InputError as exc:
            _warn(str(exc))
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            silence_closed_stdout()  # the reader went away (| head): stop quietly
            return EXIT_MATCH

    return run


def _files(args: argparse.Namespace) -> list[TrailFile]:
    return discover_files(
        args.paths, default=os.environ.get(ENV_PATH), rotations=not args.no_rotations
    )


def _finish(stats: ScanStats, matched: bool) -> int:
    if stats.malformed:
        _warn(stats.describe_malformed())
    for error in stats.errors:
        _warn(error)
    if stats.errors:
        return EXIT_ERROR
    return EXIT_MATCH if matched else EXIT_NO_MATCH


def _write_lines(out: _BytesOut, lines: Iterable[bytes]) -> None:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= _WRITE_BATCH:
            out.write(b"\n".join(batch) + b"\n")
            batch.clear()
    if batch:
        out.write(b"\n".join(batch) + b"\n")
    out.flush()


def _write_entries(out: _BytesOut, lines: Sequence[bytes], fmt: str) -> None:
    if fmt == "json":
        _write_lines(out, lines)
        return
    entries = [orjson.loads(line) for line in lines]
    if fmt == "table":
        text = render_query_table(entries, width=_table_width())
    else:
        text = render_csv(entries)
    out.write(text.encode())
    out.flush()


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # closed
        return False


def output_format(requested: str | None) -> str:
    """The one rule of all four commands: ``--format`` wins; else a table on a terminal, JSON."""
    if requested:
        return requested
    return "table" if _is_terminal(sys.stdout) else "json"


def _table_width() -> int | None:
    """The width a table must fit: the terminal's (``COLUMNS`` first), None off a terminal."""
    if not _is_terminal(sys.stdout):
        return None
    # shutil.get_terminal_size's rule, applied to the stream the table goes to.
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and 0 < int(columns) < 10_000:
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


@contextlib.contextmanager
def _scanning() -> Iterator[Progress | None]:
    """A progress line on stderr while a scan runs, only if stderr is a terminal."""
    progress = Progress(sys.stderr) if _is_terminal(sys.stderr) else None
    try:
        yield progress
    finally:
        if progress is not None:
            progress.close()


# -- commands ----------------------------------------------------------------


@_guarded
def run_query(args: argparse.Namespace) -> int:
    """``auditkeep query``: print the matching entries in time order."""
    files = _files(args)
    stats = ScanStats()
    wanted = _entry_filter(args)
    with _scanning() as progress:
        found = search(files, wanted, stats, prune=not args.scan_all, progress=progress)
    if args.limit is not None:
        del found[args.limit :]
    _write_entries(_stdout(), [line for _, _, line in found], output_format(args.format))
    return _finish(stats, bool(found))


@_guarded
def run_trace(args: argparse.Namespace) -> int:
    """``auditkeep trace``: the timeline of one correlation id."""
    files = _files(args)
    stats = ScanStats()
    wanted = EntryFilter(correlation_id=args.correlation_id)
    with _scanning() as progress:
        found = search(files, wanted, stats, prune=not args.scan_all, progress=progress)
    lines = [line for _, _, line in found]
    out = _stdout()
    fmt = output_format(args.format)
    if not lines:
        _warn(f"no entries with correlation id {args.correlation_id!r}")
    elif fmt == "table":
        entries = [orjson.loads(line) for line in lines]
        out.write(render_trace(args.correlation_id, entries, width=_table_width()).encode())
        out.flush()
    else:
        _write_entries(out, lines, fmt)
    return _finish(stats, bool(lines))


@_guarded
def run_report(args: argparse.Namespace) -> int:
    """``auditkeep report``: counts, failures, webhook rejections, busiest, slowest."""
    files = _files(args)
    stats = ScanStats()
    factory = functools.partial(ReportBuilder, top=args.top)
    wanted = _entry_filter(args)
    with _scanning() as progress:
        builder = scan(files, wanted, factory, stats, prune=not args.scan_all, progress=progress)
    report = builder.result()
    out = _stdout()
    if output_format(args.format) == "json":
        out.write(orjson.dumps(report) + b"\n")  # one JSON document, on one line
    else:
        out.write(render_report(report, width=_table_width()).encode())
    out.flush()
    return _finish(stats, builder.entries > 0)


def _tail_path(args: argparse.Namespace) -> str:
    path = args.path or os.environ.get(ENV_PATH)
    if not path:
        raise InputError(f"no input: give the live file or set {ENV_PATH}")
    if not os.path.isfile(path):
        raise InputError(f"no such file: {path}")
    if TrailFile.open_stat(Path(path)).compressed:
        raise InputError(
            f"cannot follow {path}: it is gzip-compressed, a rotated backup that no longer "
            f"grows; read it with: auditkeep query {path}"
        )
    return str(path)


def _selected(
    lines: Iterable[bytes], matcher: Matcher, stats: ScanStats, name: str
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    for line in lines:
        if not line:
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            stats.add_malformed(name, None)
            continue
        if type(entry) is not dict:
            stats.add_malformed(name, None)
        elif matcher.matches(entry):
            yield line, entry


class _TailWriter:
    def __init__(self, out: _BytesOut, fmt: str) -> None:
        self._out = out
        self._fmt = fmt
        self._text = _LineBuffer()
        self._table = (
            StreamTable(self._text, QUERY_TABLE, QUERY_TYPICAL, width=_table_width())
            if fmt == "table"
            else None
        )
        self._csv = CsvWriter(self._text) if fmt == "csv" else None

    def write(self, line: bytes, entry: dict[str, Any]) -> None:
        if self._fmt == "json":
            self._out.write(line + b"\n")
        elif self._table is not None:
            self._table.write(query_row(entry))
        elif self._csv is not None:
            self._csv.write(entry)
        pending = self._text.take()
        if pending:
            self._out.write(pending.encode())

    def flush(self) -> None:
        self._out.flush()


class _LineBuffer:
    # A text stream that hands its content over as it is written.
    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        return text


@_guarded
def run_tail(args: argparse.Namespace) -> int:
    """``auditkeep tail``: print matching entries as they are appended, across rotations."""
    path = _tail_path(args)
    matcher = _entry_filter(args).compile()
    stats = ScanStats()
    follower = Follower(path, poll_interval_s=args.poll_interval_s)
    writer = _TailWriter(_stdout(), output_format(args.format))
    printed = 0
    try:
        existing = follower.poll()
        if args.lines:
            # The last N matches already in the file, found from the end backwards.
            recent: deque[tuple[bytes, dict[str, Any]]] = deque()
            for item in _selected(reversed(existing), matcher, stats, path):
                recent.appendleft(item)
                if len(recent) >= args.lines:
                    break
            for line, entry in recent:
                if args.max_entries is not None and printed >= args.max_entries:
                    break
                writer.write(line, entry)
                printed += 1
            writer.flush()
        if args.max_entries is None or printed < args.max_entries:
            for line, entry in _selected(
                follower.follow(duration_s=args.duration_s), matcher, stats, path
            ):
                writer.write(line, entry)
                writer.flush()
                printed += 1
                if args.max_entries is not None and printed >= args.max_entries:
                    break
    finally:
        follower.close()
    return _finish(stats, printed > 0)


# -- wiring ------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``query``, ``trace``, ``report`` and ``tail`` to the ``auditkeep`` parser.

    Each subcommand sets ``func``, a callable that takes the parsed arguments
    and returns the exit code.

    .. versionadded:: 0.1.0
    """
    filters = _filter_parent()
    inputs = _input_parent()
    formats = "default: table on a terminal, else json"

    query = subparsers.add_parser(
        "query",
        parents=[filters, inputs],
        help="find entries: filters, time order, table/json/csv",
        description="Print the entries that match every filter given, in time order.",
        **examples(
            "auditkeep query --since 24h --action 'gitlab.api.*' --outcome failure",
            "auditkeep query /var/log/agent/audit.jsonl --target project_id=123 --limit 20",
            "auditkeep query --since 7d --error rate_limit --format csv > throttled.csv",
            notes=_NOTES,
        ),
    )
    query.add_argument("paths", nargs="*", metavar="PATH")
    query.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        help=f"{formats} (each entry exactly as stored)",
    )
    query.add_argument("--limit", type=_positive_int, metavar="N", help="the first N matches")
    query.set_defaults(func=run_query)

    trace = subparsers.add_parser(
        "trace",
        parents=[inputs],
        help="the timeline of one webhook or poll cycle (one correlation id)",
        description="Every entry of one correlation id, as a timeline with a summary.",
        **examples(
            "auditkeep trace 01a22057-2735-729e-bb1e-512c3d4713a0",
            "auditkeep trace 01a22057-2735-729e-bb1e-512c3d4713a0 --format json | jq .action",
            notes=_NOTES,
        ),
    )
    trace.add_argument("correlation_id", metavar="CORRELATION_ID", help="any letter case")
    trace.add_argument("paths", nargs="*", metavar="PATH")
    trace.add_argument("--format", choices=("table", "json", "csv"), help=formats)
    trace.set_defaults(func=run_trace)

    report = subparsers.add_parser(
        "report",
        parents=[filters, inputs],
        help="summary of a time range: actor types, outcomes, failures, webhook rejections, "
        "slowest calls",
        description=(
            "Activity by actor type (entries, failures, correlation ids, p95: webhook- and "
            "poll-driven work side by side), counts by action and outcome, failures by error "
            "class, webhook authentication failures by source IP and reason, the busiest "
            "targets and actors, and the slowest actions (p50/p95 duration)."
        ),
        **examples(
            "auditkeep report --since 7d --action 'webhook.*'",
            "auditkeep report --since 24h --format json | jq .by_actor_type",
            "auditkeep report --since yesterday --until today --top 3",
            "auditkeep report --since 24h --format json | jq .failures_by_error",
            notes=_NOTES,
        ),
    )
    report.add_argument("paths", nargs="*", metavar="PATH")
    report.add_argument(
        "--format", choices=("table", "json"), help=f"{formats} (one document, one line)"
    )
    report.add_argument(
        "--top", type=_positive_int, default=DEFAULT_TOP, metavar="N", help="rows per ranking"
    )
    report.set_defaults(func=run_report)

    tail = subparsers.add_parser(
        "tail",
        parents=[filters],
        help="follow the live file across rotations, with the same filters",
        description=(
            "Print the last matching entries of the live file, then each new matching entry "
            "as it is written, across rotations, in the order written."
        ),
        **examples(
            "auditkeep tail --action 'webhook.*'",
            "auditkeep tail /var/log/agent/audit.jsonl --outcome failure -n 50",
            notes=(
                f"Default file: ${ENV_PATH}. A gzip-compressed backup does not grow: read it "
                "with 'auditkeep query'. Exit codes: 0 printed entries, 1 none, 2 error."
            ),
        ),
    )
    tail.add_argument("path", nargs="?", metavar="PATH", help="the live file")
    tail.add_argument("--format", choices=("table", "json", "csv"), help=formats)
    tail.add_argument(
        "-n",
        "--lines",
        type=_count_arg,
        default=10,
        metavar="N",
        help="first print the last N matches already in the file (default 10)",
    )
    tail.add_argument(
        "--max-entries", type=_positive_int, metavar="N", help="stop after printing N entries"
    )
    tail.add_argument(
        "--duration-s", type=_seconds_arg, metavar="S", help="stop after following for S seconds"
    )
    tail.add_argument(
        "--poll-interval-s",
        type=_seconds_arg,
        default=0.25,
        metavar="S",
        help="how often to look for new lines (default 0.25)",
    )
    tail.set_defaults(func=run_tail)


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the query commands."""
    parser = argparse.ArgumentParser(
        prog="auditkeep",
        description="Query the audit trail written by the file sink.",
        **examples("auditkeep query --since 24h --outcome failure"),
    )
    parser.set_defaults(func=help_command(parser))
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one query command and return its exit code.

    .. versionadded:: 0.1.0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
