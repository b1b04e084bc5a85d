"""The Job a task runs as: the restricted Pod Security profile, no secret value, valid OpenAPI."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_standins.kubernetes import KubernetesStandin, openapi_problems
from auditkeep import Actor, register_secret
from auditkeep.context import correlation_scope, subprocess_env
from gitlab_copilot_agent.settings import Settings
from gitlab_copilot_agent.tasks.jobspec import build_job, job_environment, job_name
from gitlab_copilot_agent.tasks.spec import TaskSpec

GITLAB_TOKEN = "glpat-Jb7Qm2Xv9Kp4Wr8Ts3Yb"
LLM_KEY = "sk-jobspec-Hf5Jc0Lz1Nd6Yb3Ts8"
BASE_URL_PASSWORD = "Up9Rt4Ew2Qz7Lk"
REDIS_PASSWORD = "Rd3Mx8Vn1Bq6Pw"
WEBHOOK_SECRET = "jobspec-webhook-secret-Aa91"
AUDIT_AUTHORIZATION = "Bearer audit-sink-Zx5Cv8Bn2Mm4"
SECRETS = [GITLAB_TOKEN, LLM_KEY, BASE_URL_PASSWORD, REDIS_PASSWORD, WEBHOOK_SECRET]
CID = "01a23127-9d23-738b-ac8b-84e879241d90"
SPEC = TaskSpec(
    "0123456789abcdef", CID, 42, 7, "https://gitlab.example.com/g/app.git",
    "feature/x", "a" * 40, "add a line", "f" * 64,
)  # fmt: skip
KUBECONFIG = (
    KubernetesStandin()
    .write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig", "https://127.0.0.1:6443")
    .as_posix()
)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def settings(**extra: str) -> Settings:
    return Settings.from_env(
        {
            "GITLAB_URL": "https://gitlab.example.com",
            "GITLAB_TOKEN": GITLAB_TOKEN,
            "GITLAB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": f"https://agent:{BASE_URL_PASSWORD}@models.example.com/v1",
            "LLM_API_KEY": LLM_KEY,
            "REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis.agents.svc:6379/0",
            "TASK_EXECUTOR": "kubernetes",
            "TASK_TIMEOUT_S": "900",
            "K8S_IMAGE": "registry.example.com/gitlab-copilot-agent:1.0",
            "K8S_SECRET_NAME": "agent-secrets",
            "K8S_SERVICE_ACCOUNT": "agent-task",
            "K8S_KUBECONFIG": KUBECONFIG,
            **extra,
        }
    )


def job(s: Settings | None = None, **more: str) -> dict[str, Any]:
    s = s or settings()
    register_secret(*s.secrets())  # as compose() does at start
    register_secret(AUDIT_AUTHORIZATION.split()[1])
    base = {
        "AUDIT_LOG_DESTINATION": "http",
        "AUDIT_LOG_HTTP_ENDPOINT": "https://audit.example.com/ingest",
        "AUDIT_LOG_HTTP_AUTHORIZATION": AUDIT_AUTHORIZATION,
        "HOME": "/root",
        **more,
    }
    with correlation_scope(Actor("webhook_event", "jdoe"), SPEC.correlation_id):
        env = subprocess_env(job_environment(s, base, SPEC.task_id))
    return build_job(SPEC, s, env, namespace="agents")


def test_the_job_passes_the_restricted_profile_and_the_issue_list() -> None:
    body = job()
    spec = body["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 900)
    assert spec["ttlSecondsAfterFinished"] == 600
    meta = body["metadata"]
    assert meta["name"] == "copilot-task-0123456789abcdef-1"
    assert DNS_LABEL.fullmatch(meta["name"])
    assert meta["labels"]["gitlab-copilot-agent/task-id"] == SPEC.task_id
    assert meta["annotations"]["gitlab-copilot-agent/correlation-id"] == CID
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "agent-task"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    for volume in pod["volumes"]:
        assert set(volume) == {"name", "emptyDir"}  # no hostPath, nothing but emptyDir
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert "privileged" not in sc
    assert container["volumeMounts"] == [{"name": "work", "mountPath": "/workspace"}]
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    env = {v["name"]: v for v in container["env"]}
    assert env["HOME"]["value"] == "/workspace"
    assert env["AUDIT_CORRELATION_ID"]["value"] == CID
    assert env["AUDIT_ACTOR_TYPE"]["value"] == "webhook_event"
    assert env["AUDIT_ACTOR_ID"]["value"] == "jdoe"
    assert env["COPILOT_TASK_ID"]["value"] == SPEC.task_id
    assert env["AUDIT_LOG_DESTINATION"]["value"] == "http"
    assert openapi_problems(body) == []


def test_the_job_holds_no_secret_value_only_references() -> None:
    """Search the whole Job for every secret and each 8-character fragment of it; every
    secret variable is a secretKeyRef to K8S_SECRET_NAME under its own name; the webhook
    secret is not even referenced."""
    body = job()
    text = orjson.dumps(body).decode()
    for secret in [*SECRETS, AUDIT_AUTHORIZATION.split()[1]]:
        fragments = {secret[i : i + 8] for i in range(len(secret) - 7)}
        found = [f for f in fragments if f in text]
        assert found == [], (secret[:3], found)
    env = body["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in env if "valueFrom" in v}
    assert refs == {
        name: {"name": "agent-secrets", "key": name}
        for name in (
            "GITLAB_TOKEN",
            "LLM_API_KEY",
            "LLM_BASE_URL",
            "REDIS_URL",
            "AUDIT_LOG_HTTP_AUTHORIZATION",
        )
    }
    assert "GITLAB_WEBHOOK_SECRET" not in text
    assert "envFrom" not in body["spec"]["template"]["spec"]["containers"][0]


def test_the_pod_traces_as_the_agent_does_with_the_collector_credential_by_reference() -> None:
    """OTEL_* reach the pod (it sets up tracing from them, as the local task process does);
    the collector's header credential is a secretKeyRef, never a value."""
    token = "otlp-collector-credential-4f9d"
    body = job(
        OTEL_EXPORTER_OTLP_ENDPOINT="https://collector.example.com:4318",
        OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {token}",
    )
    env = {v["name"]: v for v in body["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "https://collector.example.com:4318"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == {
        "name": "OTEL_EXPORTER_OTLP_HEADERS",
        "valueFrom": {
            "secretKeyRef": {"name": "agent-secrets", "key": "OTEL_EXPORTER_OTLP_HEADERS"}
        },
    }
    assert token[:8] not in orjson.dumps(body).decode()


def test_a_job_without_a_secret_name_is_refused_not_inlined() -> None:
    s = settings()
    unset = s.model_copy(
        update={"kubernetes": s.kubernetes.model_copy(update={"secret_name": None})}
    )
    with pytest.raises(ValueError, match="K8S_SECRET_NAME"):
        job(unset)


@given(st.text(min_size=1, max_size=80), st.integers(1, 5000))
def test_job_names_are_dns_1123_labels(task_id: str, attempt: int) -> None:
    name = job_name(task_id, attempt)
    assert len(name) <= 63
    assert DNS_LABEL.fullmatch(name)


class TestOpenAPIValidation:
    def test_a_misspelt_field_or_a_wrong_type_is_found(self) -> None:
        body = job()
        typo = orjson.loads(orjson.dumps(body))
        typo["spec"]["backofLimit"] = typo["spec"].pop("backoffLimit")
        assert openapi_problems(typo) == [".spec.backofLimit: unknown field"]
        nested = orjson.loads(orjson.dumps(body))
        container = nested["spec"]["template"]["spec"]["containers"][0]
        container["securityContext"]["readOnlyRootFileSystem"] = True
        assert openapi_problems(nested) == [
            ".spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem: "
            "unknown field"
        ]
        wrong = orjson.loads(orjson.dumps(body))
        wrong["spec"]["activeDeadlineSeconds"] = "900"
        assert openapi_problems(wrong) != []

    def test_the_standin_refuses_an_invalid_job_with_422(self) -> None:
        standin = KubernetesStandin()
        body = job()
        body["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
        with standin.serve() as api:
            answer = httpx.post(
                f"{api.url}/apis/batch/v1/namespaces/agents/jobs",
                content=orjson.dumps(body),
                headers={"authorization": f"Bearer {standin.token}"},
            )
        assert answer.status_code == 422
        status = answer.json()
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "Invalid", 422)
        assert "imagePullPolice: unknown field" in status["message"]
        assert standin.job_names("agents") == []


def test_what_else_the_redactor_learnt_does_not_move_a_variable() -> None:
    """A value the process's redactor happens to know (another test's refused secret, say)
    is no reason for a reference: that would be a key the Secret lacks, a pod that cannot
    start. Only the agent's own secrets, credential names and shapes count."""
    register_secret("determinism-check-value-7Qx")
    s = settings()
    with correlation_scope(Actor("webhook_event", "jdoe"), SPEC.correlation_id):
        base = {"AUDIT_LOG_FILE_PATH": "/var/log/determinism-check-value-7Qx.jsonl"}
        env = subprocess_env(job_environment(s, base, SPEC.task_id))
    body = build_job(SPEC, s, env, namespace="agents")
    variables = {v["name"]: v for v in body["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert variables["AUDIT_LOG_FILE_PATH"]["value"] == base["AUDIT_LOG_FILE_PATH"]
