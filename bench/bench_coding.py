"""What the audit trail costs a whole coding task, from the ``/copilot fix`` note to the push.

The same stand-ins for every run (served by this process): the GitLab stand-in, a git
server (``git http-backend``), the offline model; the agent and its ``run-task`` processes
audited to a file vs ``AUDIT_LOG_ENABLED=false`` (the agent's logger disabled, and the
variable handed to its task processes), rounds interleaved, each round a fresh worker
process with two agents, one audited and one not, each on its own MR; the coding tasks
alternate between them, pair by pair, so each pair runs under the same machine load
(approval not required, so only the task's own work is timed: the note, the MR reads, the
gate, the task process, clone, model, patch validation, commit, push, result, note).

Reported per task: the wall time from posting the note to the result note, and the number
of audit entries the audited run wrote for it (the agent's and the task process's). The
added time per audited operation is the difference of the medians divided by that count.
The seed's budget is 5 ms per operation.

Run: ``.venv/bin/python bench/bench_coding.py`` (``--quick``, ``--rounds N``, ``--pairs N``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

TOKEN = "gl7Qm2Xv9Kp4Wr8Ts3Yb6Nd1Hf5Jc0Lz"
SECRET = "bench-coding-webhook-secret-01"
PROJECT, MR = 42, 7
REPO, BRANCH = "group/app", "feature/bench"
WORKER_TIMEOUT_S = 900


MRS = {True: (7, "feature/bench-audited"), False: (8, "feature/bench-disabled")}


def serve_standins(workdir: Path) -> None:
    """The GitLab stand-in and the git server; print the URL; run until stdin closes."""
    from agent_standins.git_server import GitServer
    from agent_standins.gitlab import GitLabStandin, diff_file

    git = GitServer(workdir / "git", token=TOKEN).start()
    git.create_repo(REPO, {"README.md": "# App\n\nA small app.\n"})
    gitlab = GitLabStandin(token=TOKEN)
    gitlab.add_project(PROJECT, REPO, http_url_to_repo=git.repo_url(REPO))
    for iid, branch in MRS.values():
        git.create_branch(REPO, branch)
        gitlab.add_merge_request(
            PROJECT,
            iid,
            source_branch=branch,
            files=[diff_file("README.md", ["A small app."], start_line=3)],
            head=lambda branch=branch: git.head(REPO, branch),  # type: ignore[misc]
        )
    with gitlab.serve(log_level="error") as server:
        print(json.dumps({"gitlab": server.url}), flush=True)
        sys.stdin.read()
    git.stop()


def worker(gitlab_url: str, pairs: int, workdir: Path, flip: bool) -> dict[str, Any]:
    """Two agents in this process, one audited and one not, on their own MRs; the tasks
    alternate between them, so each pair runs under the same load. ``flip`` swaps which
    agent gets which MR and which is built first (odd rounds), so neither carries a bias."""
    import contextlib

    import httpx
    from prometheus_client import CollectorRegistry

    from agent_standins.servers import run_in_thread
    from auditkeep.logger import AuditLogger
    from auditkeep.metrics import AuditMetrics
    from auditkeep.sinks.file import FileSink
    from auditkeep.testing import read_trail
    from gitlab_copilot_agent.main import create_app
    from gitlab_copilot_agent.settings import Settings

    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=workdir))
    trail = run_dir / "audit.jsonl"
    os.environ.update(
        {
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(trail),
            "AUDIT_LOG_FILE_MAX_BYTES": "0",
            "AUDIT_LOG_SPOOL_DIR": str(run_dir / "spool-tasks"),
        }
    )
    settings = Settings.from_env(
        {
            "GITLAB_URL": gitlab_url,
            "GITLAB_TOKEN": TOKEN,
            "GITLAB_WEBHOOK_SECRET": SECRET,
            "GITLAB_MAX_RETRIES": "0",
            "APPROVAL_EXEMPT_PROJECTS": str(PROJECT),
            "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
            "TASK_WORK_DIR": str(run_dir / "work"),
            "LLM_PROVIDER": "offline",
        }
    )
    mrs = {audited: MRS[audited != flip] for audited in (True, False)}
    audits = {
        audited: AuditLogger(
            FileSink(trail, max_bytes=0),
            service="gitlab-copilot-agent",
            spool_dir=run_dir / f"spool-{audited}",
            metrics=AuditMetrics(CollectorRegistry()),
            enabled=audited,
        )
        for audited in ((False, True) if flip else (True, False))
    }
    # The agent-side cost of the trail itself: time inside emit() (the caller's part; the
    # task process runs the same code).
    emit_ns = [0, 0]
    audited_logger = audits[True]
    real_emit = audited_logger.emit

    def timed_emit(*args: Any, **kwargs: Any) -> str:
        started = time.perf_counter_ns()
        try:
            return real_emit(*args, **kwargs)
        finally:
            emit_ns[0] += time.perf_counter_ns() - started
            emit_ns[1] += 1

    audited_logger.emit = timed_emit  # type: ignore[method-assign]
    gitlab = httpx.Client(base_url=gitlab_url, headers={"PRIVATE-TOKEN": TOKEN})

    def results(iid: int) -> int:
        answer = gitlab.get(
            f"/api/v4/projects/{PROJECT}/merge_requests/{iid}/notes", params={"per_page": 100}
        )
        found = [n for n in answer.json() if "Coding task" in n["body"]]
        if found and "pushed" not in found[-1]["body"]:
            raise RuntimeError(f"a task did not push: {found[-1]['body'][:200]}")
        return len(found)

    times: dict[bool, list[float]] = {True: [], False: []}
    cids: list[str] = []
    with contextlib.ExitStack() as stack:
        clients = {}
        for audited, audit in audits.items():
            app = create_app(settings, audit=audit, registry=CollectorRegistry())
            agent = stack.enter_context(run_in_thread(app, log_level="error"))
            clients[audited] = stack.enter_context(httpx.Client(base_url=agent.url))
        for i in range(pairs + 1):  # the first pair is a warm-up
            for audited in (True, False) if i % 2 == 0 else (False, True):
                iid, _ = mrs[audited]
                os.environ["AUDIT_LOG_ENABLED"] = "true" if audited else "false"
                seen = results(iid)
                payload = {
                    "object_kind": "note",
                    "user": {"id": 5, "username": "jdoe"},
                    "project_id": PROJECT,
                    "project": {"id": PROJECT},
                    "object_attributes": {
                        "id": uuid.uuid4().int % 10**9,
                        "note": f"/copilot fix bench change {i} in the README",
                        "noteable_type": "MergeRequest",
                        "author_id": 5,
                        "system": False,
                        "action": "create",
                    },
                    "merge_request": {"iid": iid},
                }
                started = time.perf_counter()
                answer = clients[audited].post(
                    "/webhook",
                    content=json.dumps(payload),
                    headers={
                        "content-type": "application/json",
                        "x-gitlab-event": "Note Hook",
                        "x-gitlab-token": SECRET,
                    },
                )
                deadline = time.monotonic() + 120
                while results(iid) <= seen:
                    if time.monotonic() > deadline:
                        raise RuntimeError("a coding task did not finish within 120 s")
                    time.sleep(0.005)
                elapsed = (time.perf_counter() - started) * 1000
                if i > 0:
                    times[audited].append(elapsed)
                    if audited:
                        cids.append(answer.json()["correlation_id"])
    for audit in audits.values():
        audit.close()
    gitlab.close()
    entries = [json.loads(line) for line in read_trail(trail)]
    counts = [sum(e["correlation_id"] == cid for e in entries) for cid in cids]
    return {
        "audited_ms": times[True],
        "disabled_ms": times[False],
        "entries": counts,
        "agent_emit_us_mean": emit_ns[0] / max(1, emit_ns[1]) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("workdir", nargs="?")
    args = parser.parse_args()
    if args.serve:
        serve_standins(Path(args.workdir))
        return
    if args.worker:
        print(json.dumps(worker(args.url, args.pairs, Path(args.workdir), args.flip)))
        return

    rounds = 1 if args.quick else args.rounds
    pairs = 3 if args.quick else args.pairs
    differences: list[float] = []
    on: list[float] = []
    off: list[float] = []
    entries: list[int] = []
    emits: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-coding-") as workdir:
        standins = subprocess.Popen(
            [sys.executable, __file__, "--serve", workdir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert standins.stdout is not None
        url = json.loads(standins.stdout.readline())["gitlab"]
        try:
            for r in range(rounds):
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", "--url", url,
                     "--pairs", str(pairs), *(["--flip"] if r % 2 else []), workdir],
                    capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=True,
                )  # fmt: skip
                found = json.loads(out.stdout.strip().splitlines()[-1])
                pair = [
                    a - d for a, d in zip(found["audited_ms"], found["disabled_ms"], strict=True)
                ]
                row = {
                    "bench": "coding",
                    "round": r,
                    "audited_ms_p50": round(statistics.median(found["audited_ms"]), 1),
                    "disabled_ms_p50": round(statistics.median(found["disabled_ms"]), 1),
                    "paired_difference_ms_p50": round(statistics.median(pair), 1),
                    "entries_per_task": found["entries"],
                    "agent_emit_us_mean": round(found["agent_emit_us_mean"], 1),
                }
                print(json.dumps(row), flush=True)
                differences += pair
                on += found["audited_ms"]
                off += found["disabled_ms"]
                entries += found["entries"]
                emits.append(found["agent_emit_us_mean"])
        finally:
            assert standins.stdin is not None
            standins.stdin.close()
            standins.wait(60)
    per_task = statistics.mean(entries)
    added = statistics.median(differences)
    per_operation = added / per_task
    rng = random.Random(20261201)
    resampled = sorted(
        statistics.median(rng.choices(differences, k=len(differences))) for _ in range(2000)
    )
    low, high = resampled[50] / per_task, resampled[1949] / per_task
    print(
        json.dumps(
            {
                "bench": "coding",
                "summary": True,
                "pairs": len(differences),
                "task_ms_p50_audited": round(statistics.median(on), 1),
                "task_ms_p50_disabled": round(statistics.median(off), 1),
                "added_ms_per_task_paired_p50": round(added, 2),
                "audited_operations_per_task": per_task,
                "added_ms_per_operation": round(per_operation, 3),
                "added_ms_per_operation_95ci": [round(low, 3), round(high, 3)],
                "agent_emit_us_mean": round(statistics.mean(emits), 1),
                "target_le_5ms_per_operation": per_operation <= 5.0,
                "target_le_5ms_at_95ci_high": high <= 5.0,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
