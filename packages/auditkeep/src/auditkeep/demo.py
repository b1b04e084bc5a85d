"""``auditkeep demo``: a burst of realistic, correlated entries to a rotating file, queried back.

Runs on embedded defaults with no external accounts: it plays the part of the
agent (webhooks, GitLab, Jira and LLM calls) so a new user can see a trail and
the query tools before the agent itself is configured.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Final

from auditkeep._event import Actor, ErrorClass, Outcome
from auditkeep._rotation import backup_name
from auditkeep.context import correlation_scope
from auditkeep.integrity.options import IntegrityOptions
from auditkeep.logger import AuditLogger
from auditkeep.redact import register_secret
from auditkeep.sinks.file import FileSink, rotated_files
from auditkeep.testing import read_trail

MARKER: Final = ".auditkeep-demo"
"""Marks a folder a demo created, so that the next run may replace the demo's files in it."""
TRAIL: Final = "audit.jsonl"
SPOOL: Final = "spool"
KEY: Final = "audit-signing.pem"
"""The demo's checkpoint signing key (and ``.pub``), made per run: its trail is signed."""
_BACKUP: Final = backup_name(TRAIL)

# A fake token, registered to show redaction at work.
_DEMO_TOKEN = "glpat-demoDEMOdemo1234567890"  # noqa: S105


def _review(logger: AuditLogger, project_id: int, mr_iid: int, *, throttled: bool) -> str:
    delivery = f"demo-delivery-{project_id}-{mr_iid}"
    with correlation_scope(Actor("webhook_event", delivery)) as cid:
        mr = {"resource_type": "merge_request", "project_id": project_id, "mr_iid": mr_iid}
        logger.emit(
            "webhook.auth.validated",
            target={"resource_type": "webhook", "project_id": project_id},
            details={"event_type": "Merge Request Hook", "source_ip": "127.0.0.1"},
        )
        logger.emit("gitlab.api.get_mr_details", target=mr, duration_ms=31.2, http_status=200)
        if throttled:
            logger.emit(
                "gitlab.api.get_mr_diff",
                target=mr,
                outcome=Outcome.FAILURE,
                error=ErrorClass.RATE_LIMIT,
                error_message=f"429 Retry later (GET /api/v4/...?private_token={_DEMO_TOKEN})",
                duration_ms=4.1,
                http_status=429,
            )
        logger.emit("gitlab.api.get_mr_diff", target=mr, duration_ms=58.0, http_status=200)
        llm = {"resource_type": "llm", "project_id": project_id, "mr_iid": mr_iid}
        logger.emit("copilot.sdk.review_request", target=llm, details={"model": "offline"})
        logger.emit(
            "copilot.sdk.response_received",
            target=llm,
            duration_ms=912.5,
            details={"model": "offline", "prompt_tokens": 1830, "completion_tokens": 412},
        )
        logger.emit(
            "gitlab.api.post_mr_note",
            target={**mr, "comment_type": "review"},
            duration_ms=44.0,
            http_status=201,
        )
        return cid


def _background(logger: AuditLogger, count: int, seed: int) -> None:
    rng = random.Random(seed)
    actions = [
        ("gitlab.api.get_project_info", "project"),
        ("gitlab.api.get_mr_details", "merge_request"),
        ("jira.api.search_issues", "jira_search"),
        ("jira.api.get_issue", "jira_issue"),
        ("jira.api.transition_issue", "jira_issue"),
    ]
    done = 0
    while done < count:
        with correlation_scope(Actor("poll_cycle", f"poller-{seed}")):
            for _ in range(min(10, count - done)):
                action, kind = rng.choice(actions)
                failed = rng.random() < 0.05
                target: dict[str, object] = {"resource_type": kind, "project_id": rng.randint(1, 9)}
                if kind == "jira_issue":
                    target["issue_key"] = f"OPS-{rng.randint(1, 400)}"
                logger.emit(
                    action,
                    target=target,
                    outcome=Outcome.FAILURE if failed else Outcome.SUCCESS,
                    error=rng.choice([ErrorClass.TIMEOUT, ErrorClass.SERVER_ERROR])
                    if failed
                    else None,
                    duration_ms=rng.uniform(5, 300),
                    http_status=(503 if failed else 200),
                )
                done += 1


def demo_wrote(name: str) -> bool:
    """Whether a demo run writes ``name`` in its folder: the trail and its rotations, the spool.

    .. versionadded:: 0.1.0
    """
    if name in (MARKER, TRAIL, SPOOL, f"{TRAIL}.lock", KEY, f"{KEY}.pub"):
        return True
    # A rotation, or one being compressed when a run was interrupted.
    return _BACKUP.fullmatch(name.removesuffix(".tmp")) is not None


def claim_demo_dir(directory: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Make ``directory`` ready for a demo run, deleting only what a demo wrote there.

    A new or empty folder is taken, and marked (``.auditkeep-demo``) as the
    demo's. A marked folder holding only the demo's files (``audit.jsonl`` and
    its rotations, ``spool/``) is reused: those files are replaced. Anything
    else is refused unless ``force``, and even then only the demo's own files
    are replaced: a demo never deletes what it did not write.

    Returns:
        The folder, absolute.

    Raises:
        FileExistsError: The folder holds files the demo did not write (the
            message names some and the way out), or is not a folder.

    .. versionadded:: 0.1.0
    """
    root = Path(directory).resolve()
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; give a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    names = sorted(child.name for child in root.iterdir())
    others = [name for name in names if not demo_wrote(name)]
    if names and not force and (others or not (root / MARKER).exists()):
        shown = ", ".join((others or names)[:5]) + (", ..." if len(others or names) > 5 else "")
        raise FileExistsError(
            f"{root} is not empty and not a previous demo's folder ({shown}); give a new or "
            "empty folder, or add --force to write there anyway (only the demo's own files, "
            f"{TRAIL}* and {SPOOL}/, are replaced; everything else is kept)"
        )
    for name in names:
        if name != MARKER and demo_wrote(name):
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    (root / MARKER).touch()
    return root


def _demo_integrity(root: Path) -> IntegrityOptions:
    """Chained and, when ``cryptography`` is installed, signed with a key made for this run."""
    try:
        from auditkeep.integrity.keys import generate, load_signing_key
    except ImportError:
        return IntegrityOptions()
    generate(root / KEY)
    return IntegrityOptions(signing_key=load_signing_key(root / KEY))


def run_demo(
    directory: str | os.PathLike[str], *, entries: int = 20_000, force: bool = False
) -> int:
    """Write the demo trail under ``directory`` and show it with the query tools."""
    from auditkeep.query.cli import main as query_main

    try:
        root = claim_demo_dir(directory, force=force)
    except FileExistsError as exc:
        print(f"auditkeep demo: {exc}", file=sys.stderr)
        return 2
    path = root / TRAIL
    register_secret(_DEMO_TOKEN)
    logger = AuditLogger(
        FileSink(path, max_bytes=2 * 1024 * 1024, backups=20, compress=True),
        service="auditkeep-demo",
        spool_dir=root / SPOOL,
        integrity=_demo_integrity(root),
    )
    started = time.perf_counter()
    threads = [
        threading.Thread(target=_background, args=(logger, entries // 4, n)) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    first = _review(logger, 42, 7, throttled=True)
    _review(logger, 42, 8, throttled=False)
    with correlation_scope(Actor("webhook_event", "demo-delivery-forged")):
        logger.emit(
            "webhook.auth.rejected",
            target={"resource_type": "webhook", "project_id": 42},
            outcome=Outcome.FAILURE,
            error=ErrorClass.AUTH_FAILURE,
            details={"rejection_reason": "invalid_token", "source_ip": "203.0.113.9"},
        )
    for thread in threads:
        thread.join()
    logger.close()
    elapsed = time.perf_counter() - started
    files = rotated_files(path)
    total = len(read_trail(path))
    print(f"== wrote {total} audit entries in {elapsed:.2f} s to {path} (and its rotations)")
    for file in files:
        print(f"   {file.name:<22} {file.stat().st_size:>10} bytes")
    print(f"\n== auditkeep trace {first}   (one webhook, from delivery to review note)")
    query_main(["trace", first, str(path), "--format", "table"])
    print("\n== auditkeep query --outcome failure --action 'gitlab.api.*' --limit 5")
    query_main(
        [
            "query",
            str(path),
            "--outcome",
            "failure",
            "--action",
            "gitlab.api.*",
            "--limit",
            "5",
            "--format",
            "table",
        ]
    )
    print("\n== auditkeep report")
    query_main(["report", str(path), "--format", "table"])
    print(f"\nThe trail stays in {root}; try: .venv/bin/auditkeep query {path} --help")
    return 0
