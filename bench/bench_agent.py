"""What the audit trail costs the agent: a real GitLab client call, and webhook ingress.

* ``gitlab-call``: latency of ``GitLabClient.get_mr_details`` against the GitLab
  stand-in (served by a separate process on loopback), audited to a file vs
  ``AUDIT_LOG_ENABLED=false`` (``enabled=False``), same run, interleaved rounds,
  each round a fresh worker process. Target of issue 5: <= 0.2 ms added at the
  median, <= 1 ms at p99.
* ``webhook``: requests/s of token-authenticated deliveries (``Push Hook``: accepted,
  audited, ignored, so only ingress is measured; each with its own event UUID and
  body, as the replay guard requires) to the agent app served in a separate process
  with the production uvicorn options, audited vs disabled: both agents run at
  once and are measured in alternating slices, so load from elsewhere on the
  machine hits both alike.

Prints one JSON object per run, then a summary per scenario with the differences.
Run: ``.venv/bin/python bench/bench_agent.py`` (``--quick``, ``--rounds N``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = "bench-webhook-secret-0001"
WORKER_TIMEOUT_S = 300


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def serve(kind: str, audited: bool, workdir: str) -> None:
    """Serve the GitLab stand-in or the agent; print the URL; run until stdin closes."""
    from prometheus_client import CollectorRegistry

    from agent_standins.gitlab import GitLabStandin
    from agent_standins.servers import run_in_thread
    from auditkeep.logger import AuditLogger
    from auditkeep.metrics import AuditMetrics
    from auditkeep.sinks.file import FileSink

    if kind == "gitlab":
        app: Any = GitLabStandin().app
        audit = None
    else:
        from gitlab_copilot_agent.main import create_app
        from gitlab_copilot_agent.settings import Settings

        audit = AuditLogger(
            FileSink(Path(workdir) / "agent.jsonl", max_bytes=0),
            service="gitlab-copilot-agent",
            spool_dir=Path(workdir) / "agent-spool",
            metrics=AuditMetrics(CollectorRegistry()),
            enabled=audited,
        )
        settings = Settings.from_env(
            {
                "GITLAB_URL": "http://127.0.0.1:9",
                "GITLAB_TOKEN": "glpat-bench-unused-000000",
                "GITLAB_WEBHOOK_SECRET": SECRET,
            }
        )
        # No workflows: only the ingress is measured (a Push Hook is accepted and ignored).
        app = create_app(settings, audit=audit, plugins=[])
        _serve_like_production(app, settings)
        audit.close()
        return
    with run_in_thread(app, log_level="error") as server:
        print(server.url, flush=True)
        sys.stdin.read()


def _serve_like_production(app: Any, settings: Any) -> None:
    """The agent as `serve` runs it: its uvicorn options (limits, deadlines) and socket."""
    import threading

    import uvicorn

    from gitlab_copilot_agent.ingress.server_options import listen, uvicorn_options

    sock = listen("127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        log_level="error",
        log_config=None,
        access_log=False,
        **uvicorn_options(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the agent did not start"
        time.sleep(0.01)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    sys.stdin.read()
    server.should_exit = True
    thread.join(30)


def _start(kind: str, audited: bool, workdir: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--audited", str(int(audited)), workdir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def gitlab_worker(url: str, audited: bool, calls: int, workdir: str) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from agent_standins.gitlab import DEFAULT_TOKEN
    from auditkeep import Actor, correlation_scope
    from auditkeep.logger import AuditLogger
    from auditkeep.metrics import AuditMetrics
    from auditkeep.sinks.file import FileSink
    from gitlab_copilot_agent.clients.gitlab import GitLabClient

    trail = Path(workdir) / f"client-{os.getpid()}.jsonl"
    audit = AuditLogger(
        FileSink(trail, max_bytes=0),
        service="bench",
        spool_dir=Path(workdir) / f"spool-{os.getpid()}",
        metrics=AuditMetrics(CollectorRegistry()),
        enabled=audited,
    )

    async def run() -> list[float]:
        client = GitLabClient(url, DEFAULT_TOKEN, audit, max_retries=0)
        latencies: list[float] = []
        with correlation_scope(Actor("webhook_event", "bench")):
            for i in range(calls + 200):
                start = time.perf_counter_ns()
                await client.get_mr_details(42, 7)
                if i >= 200:  # warm-up excluded
                    latencies.append((time.perf_counter_ns() - start) / 1e6)
        await client.aclose()
        return latencies

    latencies = asyncio.run(run())
    audit.close()
    lines = sum(1 for _ in trail.open("rb")) if trail.exists() else 0
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": _percentile(latencies, 0.99),
        "calls": len(latencies),
        "entries_written": lines,
    }


def _deliveries(count: int) -> list[tuple[bytes, dict[str, str]]]:
    import uuid

    # Each delivery is distinct (its own X-Gitlab-Event-UUID and body), as GitLab
    # sends them: the replay guard refuses a repeated id or body.
    return [
        (
            json.dumps({"object_kind": "push", "project_id": 42, "n": i}).encode(),
            {
                "content-type": "application/json",
                "x-gitlab-event": "Push Hook",
                "x-gitlab-token": SECRET,
                "x-gitlab-event-uuid": str(uuid.uuid4()),
            },
        )
        for i in range(count)
    ]


def webhook_paired(urls: dict[bool, str], requests: int, slices: int = 10) -> dict[bool, Any]:
    """Requests/s of the audited and the disabled agent, measured in alternating slices.

    Both agents run at once; each slice sends ``requests / slices`` deliveries
    from 8 concurrent clients to one of them, alternately, so a burst of load
    from elsewhere on the machine hits both modes alike.
    """
    import httpx

    per_slice = max(8, requests // slices // 8 * 8)
    todo = {mode: _deliveries(per_slice * slices) for mode in urls}

    async def run() -> dict[bool, float]:
        elapsed = dict.fromkeys(urls, 0.0)
        clients = {mode: httpx.AsyncClient(base_url=url) for mode, url in urls.items()}
        try:
            for s in range(slices):
                for mode in (True, False) if s % 2 == 0 else (False, True):
                    batch = todo[mode][s * per_slice : (s + 1) * per_slice]
                    client = clients[mode]

                    async def one_client(mine: list[tuple[bytes, dict[str, str]]]) -> None:
                        for body, headers in mine:
                            response = await client.post("/webhook", content=body, headers=headers)  # noqa: B023
                            assert response.status_code == 202, response.text

                    start = time.perf_counter()
                    await asyncio.gather(*(one_client(batch[c::8]) for c in range(8)))
                    elapsed[mode] += time.perf_counter() - start
        finally:
            for client in clients.values():
                await client.aclose()
        return elapsed

    elapsed = asyncio.run(run())
    return {
        mode: {"requests_per_s": per_slice * slices / elapsed[mode], "requests": per_slice * slices}
        for mode in urls
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", choices=("gitlab", "agent"))
    parser.add_argument("--audited", type=int, default=1)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("workdir", nargs="?")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, bool(args.audited), args.workdir)
        return
    if args.worker:
        print(json.dumps(gitlab_worker(args.url, bool(args.audited), args.calls, args.workdir)))
        return

    rounds = 1 if args.quick else args.rounds
    calls = 300 if args.quick else 2000
    requests = 1200 if args.quick else 3000
    results: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as workdir:
        gitlab, gitlab_url = _start("gitlab", True, workdir)
        try:
            for r in range(rounds):
                for audited in (True, False) if r % 2 == 0 else (False, True):
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", "--url", gitlab_url,
                         "--audited", str(int(audited)), "--calls", str(calls), workdir],
                        capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=True,
                    )  # fmt: skip
                    row = {"bench": "agent", "scenario": "gitlab-call", "round": r,
                           "audited": audited, **json.loads(out.stdout)}  # fmt: skip
                    print(json.dumps(row), flush=True)
                    results.setdefault(("gitlab-call", audited), []).append(row)
                agents = {audited: _start("agent", audited, workdir) for audited in (True, False)}
                try:
                    paired = webhook_paired({a: url for a, (_, url) in agents.items()}, requests)
                finally:
                    for agent, _url in agents.values():
                        assert agent.stdin is not None
                        agent.stdin.close()
                        agent.wait(60)
                for audited in (True, False):
                    row = {"bench": "agent", "scenario": "webhook", "round": r,
                           "audited": audited, **paired[audited]}  # fmt: skip
                    print(json.dumps(row), flush=True)
                    results.setdefault(("webhook", audited), []).append(row)
        finally:
            assert gitlab.stdin is not None
            gitlab.stdin.close()
            gitlab.wait(60)

    on, off = results[("gitlab-call", True)], results[("gitlab-call", False)]
    added_p50 = [a["p50_ms"] - b["p50_ms"] for a, b in zip(on, off, strict=True)]
    added_p99 = [a["p99_ms"] - b["p99_ms"] for a, b in zip(on, off, strict=True)]
    won = results[("webhook", True)]
    woff = results[("webhook", False)]
    ratio = [a["requests_per_s"] / b["requests_per_s"] for a, b in zip(won, woff, strict=True)]
    summary = {
        "bench": "agent",
        "summary": True,
        "gitlab_call_p50_ms_audited": [round(r["p50_ms"], 3) for r in on],
        "gitlab_call_p50_ms_disabled": [round(r["p50_ms"], 3) for r in off],
        "added_p50_ms": [round(x, 3) for x in added_p50],
        "added_p99_ms": [round(x, 3) for x in added_p99],
        "webhook_rps_audited": [round(r["requests_per_s"]) for r in won],
        "webhook_rps_disabled": [round(r["requests_per_s"]) for r in woff],
        "webhook_audited_over_disabled": [round(x, 3) for x in ratio],
        "targets": {
            "added_p50_le_0.2ms": statistics.median(added_p50) <= 0.2,
            "added_p99_le_1ms": statistics.median(added_p99) <= 1.0,
        },
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
