"""``auditrail demo``: a burst of realistic, correlated entries to a rotating file, queried back.

Runs on embedded defaults with no external accounts: it plays the part of the
agent (webhooks, GitLab, Jira and LLM calls) so a new user can see a trail and
the query tools before the agent itself is configured.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

from auditrail._event import Actor, ErrorClass, Outcome
from auditrail.context import correlation_scope
from auditrail.logger import AuditLogger
from auditrail.redact import register_secret
from auditrail.sinks.file import FileSink, rotated_files
from auditrail.testing import read_trail

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


def run_demo(directory: str | os.PathLike[str], *, entries: int = 20_000) -> int:
    """Write the demo trail under ``directory`` and show it with the query tools."""
    from auditrail.query.cli import main as query_main

    root = Path(directory).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    path = root / "audit.jsonl"
    register_secret(_DEMO_TOKEN)
    logger = AuditLogger(
        FileSink(path, max_bytes=2 * 1024 * 1024, backups=20, compress=True),
        service="auditrail-demo",
        spool_dir=root / "spool",
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
    print(f"\n== auditrail trace {first}   (one webhook, from delivery to review note)")
    query_main(["trace", first, str(path)])
    print("\n== auditrail query --outcome failure --action 'gitlab.api.*' --limit 5")
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
    print("\n== auditrail report")
    query_main(["report", str(path)])
    print(f"\nThe trail stays in {root}; try: .venv/bin/auditrail query {path} --help")
    return 0
