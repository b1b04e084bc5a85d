"""The Kubernetes API stand-in, driven by the official client through a kubeconfig file.

A stand-in, not Kubernetes: these tests pin down what it promises (its module docstring):
the Job's command runs with exactly the Job's environment (Secrets resolved, ``emptyDir``
mounts mapped), the deadline is enforced, conditions and errors have the API's shapes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agent_standins.kubernetes import KubernetesStandin

NS = "tasks"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[KubernetesStandin, client.BatchV1Api, client.CoreV1Api]]:
    standin = KubernetesStandin(tmp_path / "pods", image_env={"PATH": "/usr/bin:/bin", "IMG": "1"})
    with standin.serve() as server:
        path = standin.write_kubeconfig(tmp_path / "kubeconfig", server.url, namespace=NS)
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), client_configuration=configuration
        )
        api_client = client.ApiClient(configuration)
        try:
            yield standin, client.BatchV1Api(api_client), client.CoreV1Api(api_client)
        finally:
            standin.stop_all()
            api_client.close()  # type: ignore[no-untyped-call]


def job(name: str, script: str, *, deadline: int = 30, **container: Any) -> client.V1Job:
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "t"}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "task", "image": "x", "command": [sys.executable, "-c", script],
                         **container}
                    ],
                    "volumes": [{"name": "work", "emptyDir": {}}],
                }
            },
        },
    }  # fmt: skip
    found = client.V1Job.from_dict(body)
    assert found is not None
    return found


def pods_of(core: client.CoreV1Api, name: str) -> list[Any]:
    found: Any = core.list_namespaced_pod(NS, label_selector=f"job-name={name}")
    return list(found.items or [])


def wait(batch: client.BatchV1Api, name: str, timeout_s: float = 20) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status: Any = batch.read_namespaced_job(name, NS).status
        conditions = {c.type: c.reason or "" for c in (status.conditions or [])}
        if "Complete" in conditions or "Failed" in conditions:
            return conditions
        time.sleep(0.05)
    raise AssertionError("the Job did not finish")


def test_the_command_gets_exactly_the_jobs_environment(
    api: tuple[KubernetesStandin, client.BatchV1Api, client.CoreV1Api],
) -> None:
    """image env, then envFrom (with prefix), then env (value, secretKeyRef): nothing else;
    the emptyDir mount path is mapped in env values and the working directory."""
    standin, batch, core = api
    standin.add_secret(NS, "s", {"TOKEN": "t0ken-value-123", "OTHER": "o"})
    script = "import os, json; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    body = job(
        "env-job",
        script,
        env=[
            {"name": "PLAIN", "value": "v"},
            {"name": "HOME", "value": "/workspace"},
            {"name": "SPOOL", "value": "/workspace/spool"},
            {"name": "NOT_MAPPED", "value": "/workspaces"},
            {"name": "GITLAB_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "TOKEN"}}},
        ],
        envFrom=[{"secretRef": {"name": "s"}, "prefix": "S_"}],
        workingDir="/workspace",
        volumeMounts=[{"name": "work", "mountPath": "/workspace"}],
    )
    batch.create_namespaced_job(NS, body)
    assert wait(batch, "env-job") == {"SuccessCriteriaMet": "CompletionsReached", "Complete": ""}
    (pod,) = pods_of(core, "env-job")
    seen = orjson.loads(core.read_namespaced_pod_log(pod.metadata.name, NS))
    local = str(standin.pod_of("env-job", NS).directory / "volumes" / "work")  # type: ignore[union-attr]
    assert seen["cwd"] == local
    env = {k: v for k, v in seen["env"].items() if k not in ("LC_CTYPE",)}
    assert env == {
        "PATH": "/usr/bin:/bin",
        "IMG": "1",
        "S_TOKEN": "t0ken-value-123",
        "S_OTHER": "o",
        "PLAIN": "v",
        "HOME": local,
        "SPOOL": f"{local}/spool",
        "NOT_MAPPED": "/workspaces",
        "GITLAB_TOKEN": "t0ken-value-123",
    }
    assert pod.status.phase == "Succeeded"


def test_the_deadline_kills_the_process_and_fails_the_job(
    api: tuple[KubernetesStandin, client.BatchV1Api, client.CoreV1Api],
) -> None:
    standin, batch, _ = api
    batch.create_namespaced_job(NS, job("slow", "import time; time.sleep(60)", deadline=1))
    started = time.monotonic()
    assert wait(batch, "slow")["Failed"] == "DeadlineExceeded"
    assert time.monotonic() - started < 5
    assert standin.live_processes() == []


def test_a_failing_command_fails_the_job_with_its_log_as_termination_message(
    api: tuple[KubernetesStandin, client.BatchV1Api, client.CoreV1Api],
) -> None:
    _, batch, core = api
    batch.create_namespaced_job(NS, job("bad", "import sys; print('it broke'); sys.exit(3)"))
    assert wait(batch, "bad") == {"FailureTarget": "BackoffLimitExceeded",
                                  "Failed": "BackoffLimitExceeded"}  # fmt: skip
    (pod,) = pods_of(core, "bad")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert "it broke" in terminated.message


def test_a_missing_secret_key_leaves_the_pod_pending_until_the_deadline(
    api: tuple[KubernetesStandin, client.BatchV1Api, client.CoreV1Api],
) -> None:
    standin, batch, core = api
    standin.add_secret(NS, "s", {"A": "1"})
    ref = {"secretKeyRef": {"name": "s", "key": "GITLAB_TOKEN"}}
    body = job("nokey", "print(1)", deadline=1, env=[{"name": "T", "valueFrom": ref}])
    batch.create_namespaced_job(NS, body)
    (pod,) = pods_of(core, "nokey")
    assert pod.status.container_statuses[0].state.waiting.reason == "CreateContainerConfigError"
    assert wait(batch, "nokey")["Failed"] == "DeadlineExceeded"


def test_conflict_delete_auth_and_ttl(
    api: tuple[KubernetesStandin, client.BatchV1Api, client.CoreV1Api], tmp_path: Path
) -> None:
    standin, batch, core = api
    body = job("twice", "print(1)")
    body.spec.ttl_seconds_after_finished = 1  # type: ignore[union-attr]
    batch.create_namespaced_job(NS, body)
    with pytest.raises(ApiException) as conflict:
        batch.create_namespaced_job(NS, body)
    assert conflict.value.status == 409
    assert orjson.loads(conflict.value.body or "{}")["reason"] == "AlreadyExists"
    wait(batch, "twice")
    deadline = time.monotonic() + 10
    while standin.job_names(NS):  # ttlSecondsAfterFinished
        assert time.monotonic() < deadline
        time.sleep(0.05)
    batch.create_namespaced_job(NS, job("gone", "import time; time.sleep(60)"))
    batch.delete_namespaced_job("gone", NS, propagation_policy="Background")
    assert standin.deleted[-1] == (NS, "gone", "Background")
    assert pods_of(core, "gone") == []
    with pytest.raises(ApiException) as missing:
        batch.read_namespaced_job("gone", NS)
    assert missing.value.status == 404
    standin.token = "another-token-entirely-0000"
    with pytest.raises(ApiException) as refused:
        batch.read_namespaced_job("gone", NS)
    assert refused.value.status == 401
    assert all(r.headers.get("authorization") in (None, "<hidden>") for r in standin.requests)
