"""``KubernetesExecutor`` on its own, against the Kubernetes API stand-in and a real Redis:
the agent's own deadline when the API never reports an end, and a cancelled ``run()`` (the
agent shutting down) still deletes the Job it created."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

import gitlab_copilot_agent
from agent_standins.faults import Fault
from agent_standins.kubernetes import KubernetesStandin
from auditkeep import Actor, correlation_scope, subprocess_env
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.file import FileSink
from auditkeep.testing import read_trail, validate_entries
from gitlab_copilot_agent.settings import Settings
from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.redis_store import RedisStore
from gitlab_copilot_agent.tasks.jobspec import build_job, job_environment
from gitlab_copilot_agent.tasks.kubernetes import KubernetesExecutor
from gitlab_copilot_agent.tasks.redis_channel import RedisParentChannel
from gitlab_copilot_agent.tasks.spec import TaskSpec

SPEC = TaskSpec(
    "00aa11bb22cc33dd", "01a23127-9d23-738b-ac8b-84e879241d90", 1, 2, "http://x/r.git", "b",
    "a" * 40, "do it", "f" * 64,
)  # fmt: skip
NS = "default"


@pytest.fixture
def world(tmp_path: Path, redis_url: str) -> Iterator[tuple[KubernetesStandin, Any, Path]]:
    standin = KubernetesStandin(tmp_path / "pods", image_env={"PATH": "/usr/bin:/bin"})
    standin.add_secret(NS, "agent-secrets", {"GITLAB_TOKEN": "glpat-executor-test-00000"})
    with standin.serve() as api:
        kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig", api.url)

        def settings(**extra: str) -> Settings:
            return Settings.from_env(
                {
                    "GITLAB_URL": "http://127.0.0.1:9",
                    "GITLAB_TOKEN": "glpat-executor-test-00000",
                    "GITLAB_WEBHOOK_SECRET": "executor-test-webhook-secret",
                    "REDIS_URL": redis_url,
                    "TASK_EXECUTOR": "kubernetes",
                    "K8S_IMAGE": "agent:1",
                    "K8S_SECRET_NAME": "agent-secrets",
                    "K8S_KUBECONFIG": str(kubeconfig),
                    "K8S_POLL_MAX_S": "0.2",
                    **extra,
                }
            )

        try:
            yield standin, settings, tmp_path
        finally:
            standin.stop_all()


def run(settings: Settings, trail: Path, body: Any) -> list[dict[str, Any]]:
    audit = AuditLogger(
        FileSink(trail, max_bytes=0), service="t", spool_dir=trail.parent / "spool",
        metrics=AuditMetrics(CollectorRegistry()),
    )  # fmt: skip

    async def main() -> None:
        assert settings.redis.url is not None
        store = RedisStore(settings.redis.url)
        executor = KubernetesExecutor(settings, audit, store)
        try:
            await body(executor)
        finally:
            await executor.close()
            await store.aclose()

    asyncio.run(main())
    audit.close()
    return validate_entries(read_trail(trail))


async def allow(task_id: str, head: str, instruction: str) -> None:
    return None


def test_the_agents_own_deadline_ends_a_job_the_api_never_finishes(world: Any) -> None:
    """The API keeps answering a Job without conditions: after TASK_TIMEOUT_S + the grace the
    outcome is ``timeout``/``deadline`` and the Job is deleted."""
    standin, settings, tmp = world
    endless = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "status": {}}
    never = Fault.http(200, body=orjson.dumps(endless), content_type="application/json")
    standin.faults.add("/apis/batch/v1/namespaces/*/jobs/*", never, method="GET")
    found: dict[str, Any] = {}

    async def body(executor: KubernetesExecutor) -> None:
        executor.wait_grace_s = 0.5
        found["outcome"] = await executor.run(SPEC, verify_push=allow)

    s = settings(TASK_TIMEOUT_S="1", K8S_COMMAND="sleep 30")
    started = time.monotonic()
    entries = run(s, tmp / "a.jsonl", body)
    assert time.monotonic() - started < 10
    outcome = found["outcome"]
    assert (outcome.status, outcome.reason) == ("timeout", "deadline")
    assert entries[-1]["action"] == "k8s.api.delete_job"
    assert entries[-1]["outcome"] == "success"
    assert standin.job_names(NS) == []


def test_a_cancelled_run_deletes_its_job(world: Any) -> None:
    """The agent shutting down cancels ``run()``: the Job is deleted all the same."""
    standin, settings, tmp = world

    async def body(executor: KubernetesExecutor) -> None:
        task = asyncio.create_task(executor.run(SPEC, verify_push=allow))
        while not standin.job_names(NS):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    entries = run(settings(K8S_COMMAND="sleep 30"), tmp / "a.jsonl", body)
    actions = [e["action"] for e in entries]
    assert actions[0] == "k8s.api.create_job"
    assert actions[-1] == "k8s.api.delete_job"
    assert entries[-1]["outcome"] == "success"
    assert standin.job_names(NS) == []
    deadline = time.monotonic() + 5
    while standin.live_processes():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_pod_whose_agent_is_gone_stops_without_pushing(tmp_path: Path, redis_url: str) -> None:
    """The real ``run-task`` in a Job whose agent has gone (its spec is in Redis, its
    heartbeat is not): the pod stops with exit code 3 before anything is pushed."""

    src = Path(gitlab_copilot_agent.__file__).resolve().parents[1]
    image_env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": f"{src}:{src.parent / 'packages/auditkeep/src'}",
    }
    standin = KubernetesStandin(tmp_path / "pods", image_env=image_env)
    standin.add_secret(NS, "agent-secrets", {"GITLAB_TOKEN": "glpat-executor-test-00000"})
    # A git server that accepts connections and never answers: the clone hangs, so only the
    # missing heartbeat can end the task.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    spec = TaskSpec(**{**SPEC.__dict__, "repo_url": f"http://127.0.0.1:{port}/g/app.git"})
    settings = Settings.from_env(
        {
            "GITLAB_URL": f"http://127.0.0.1:{port}",
            "GITLAB_TOKEN": "glpat-executor-test-00000",
            "GITLAB_WEBHOOK_SECRET": "executor-test-webhook-secret",
            "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
            "REDIS_URL": redis_url,
            "TASK_EXECUTOR": "kubernetes",
            "K8S_IMAGE": "agent:1",
            "K8S_SECRET_NAME": "agent-secrets",
            "K8S_KUBECONFIG": str(standin.write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9")),
            "AUDIT_LOG_ENABLED": "false",
        }
    )

    async def store_spec_only() -> None:
        store = RedisStore(redis_url)

        async def never(task_id: str, head: str, instruction: str) -> None:
            raise AssertionError("nobody may answer")

        channel = RedisParentChannel(
            store, never, task_id=spec.task_id, correlation_id=spec.correlation_id
        )
        await channel.open(spec, ttl_s=60)
        await store.delete(keys.job_agent(spec.task_id))  # the agent is gone
        await store.aclose()

    asyncio.run(store_spec_only())
    with correlation_scope(Actor("webhook_event", "jdoe"), spec.correlation_id):
        env = subprocess_env(
            job_environment(settings, {"AUDIT_LOG_ENABLED": "false"}, spec.task_id)
        )
    body = build_job(spec, settings, env, namespace=NS)
    try:
        with standin.serve() as api:
            answer = httpx.post(
                f"{api.url}/apis/batch/v1/namespaces/{NS}/jobs",
                content=orjson.dumps(body),
                headers={"authorization": f"Bearer {standin.token}"},
            )
            assert answer.status_code == 201, answer.text
            deadline = time.monotonic() + 30
            pod = standin.pod_of(body["metadata"]["name"], NS)
            assert pod is not None
            while pod.exit_code is None:
                assert time.monotonic() < deadline, pod.log.read_text()[-2000:]
                time.sleep(0.1)
            assert pod.exit_code == 3, pod.log.read_text()[-2000:]
            assert "the agent went away" in pod.log.read_text()
    finally:
        standin.stop_all()
        silent.close()
