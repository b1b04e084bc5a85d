"""The Kubernetes Job a coding task runs as (``TASK_EXECUTOR=kubernetes``), as the API's JSON.

What every Job holds, and why:

- ``backoffLimit: 0``: a retried coding task would clone, push and comment
  again; a retry is the agent's decision, audited as a new attempt (the
  attempt is in the name). ``activeDeadlineSeconds`` = ``TASK_TIMEOUT_S``
  (the Job fails with reason ``DeadlineExceeded``), ``ttlSecondsAfterFinished``
  = ``K8S_TTL_AFTER_FINISHED_S`` (a backstop: the agent deletes its Jobs itself);
- the name ``copilot-task-<task id>-<attempt>`` (DNS-1123, at most 63 chars;
  a task id that is not already safe is replaced by its hash), the labels
  ``app.kubernetes.io/name``, ``gitlab-copilot-agent/task-id`` and
  ``gitlab-copilot-agent/attempt``, the annotation
  ``gitlab-copilot-agent/correlation-id`` (so ``kubectl`` leads to
  ``auditkeep trace``);
- the pod passes the **restricted Pod Security Standard**: ``runAsNonRoot``
  (with ``K8S_RUN_AS_USER``), ``allowPrivilegeEscalation: false``, capabilities
  ``drop: [ALL]``, ``seccompProfile: RuntimeDefault``; and beyond it
  ``readOnlyRootFilesystem`` with an ``emptyDir`` at ``/workspace`` (``HOME``,
  ``TMPDIR``, the clone, the audit spool), ``automountServiceAccountToken:
  false`` (a task never calls the Kubernetes API), ``enableServiceLinks:
  false``, ``restartPolicy: Never``, requests and limits;
- the environment: ``COPILOT_TASK_CHANNEL=redis`` and ``COPILOT_TASK_ID`` (the
  spec and the channel are in Redis, ``tasks.redis_channel``), the agent's
  ``AUDIT_LOG_*`` (the pod's entries reach the same destination; the spool is
  moved into ``/workspace``) and ``OTEL_*`` (the pod traces as the agent does;
  ``OTEL_EXPORTER_OTLP_HEADERS`` is a secret: by reference), the task
  settings (``settings.task_environment``),
  ``REDIS_URL``/``REDIS_TIMEOUT_S``, and the correlation scope and actor from
  ``auditkeep.context.subprocess_env`` (``AUDIT_CORRELATION_ID``,
  ``AUDIT_ACTOR_*``, and the trace context when tracing is on).

**No secret value is ever in the Job.** A variable is a secret when its
setting is one (``GITLAB_TOKEN``, ``LLM_API_KEY``, ``GITHUB_TOKEN``), when its
name says so (the library's credential-key rule, and ``*_HEADERS``), when its
value is a URL with userinfo (a password in ``REDIS_URL``), holds one of the
agent's configured secrets, or has a credential's shape (the library's shape
rules, e.g. ``glpat-…``). The rule is deterministic: it does not depend on what
else the process's redactor has learnt, because a variable wrongly moved to a
reference is a key the Secret lacks and a pod that cannot start. Each one
becomes ``valueFrom.secretKeyRef {name: K8S_SECRET_NAME, key: <the variable's
name>}``: the Secret holds one key per such variable, named as the variable
(only those keys reach the pod, even when the Secret holds more).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from auditkeep.redact import SecretRedactor, credential_key
from gitlab_copilot_agent.scrub import without_userinfo
from gitlab_copilot_agent.settings import SERVICE_NAME, Settings, task_environment
from gitlab_copilot_agent.tasks.channel import CHANNEL_ENV, TASK_ID_ENV
from gitlab_copilot_agent.tasks.executor import PASSTHROUGH_PREFIXES
from gitlab_copilot_agent.tasks.spec import TaskSpec

__all__ = [
    "ANNOTATION_CORRELATION",
    "CONTAINER",
    "LABEL_TASK",
    "WORK_DIR",
    "build_job",
    "job_environment",
    "job_name",
    "secret_variables",
]

WORK_DIR: Final = "/workspace"
CONTAINER: Final = "task"
LABEL_APP: Final = "app.kubernetes.io/name"
LABEL_TASK: Final = "gitlab-copilot-agent/task-id"
LABEL_ATTEMPT: Final = "gitlab-copilot-agent/attempt"
ANNOTATION_CORRELATION: Final = "gitlab-copilot-agent/correlation-id"
WORK_SIZE_LIMIT: Final = "4Gi"
_SAFE: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
_SECRET_SETTINGS: Final = frozenset({"GITLAB_TOKEN", "LLM_API_KEY", "GITHUB_TOKEN"})
_SHAPES: Final = SecretRedactor()
"""A redactor nothing is registered with: only the library's credential shapes."""


def task_slug(task_id: str) -> str:
    """The task id as a DNS-1123 label part (at most 40 chars); its hash when it is not one."""
    return (
        task_id if _SAFE.fullmatch(task_id) else hashlib.sha256(task_id.encode()).hexdigest()[:16]
    )


def job_name(task_id: str, attempt: int = 1) -> str:
    """``copilot-task-<task>-<attempt>``: unique per task and attempt, at most 63 chars."""
    return f"copilot-task-{task_slug(task_id)}-{max(1, min(attempt, 999))}"


def secret_variables(env: Mapping[str, str], secrets: Iterable[str] = ()) -> set[str]:
    """The variables of ``env`` that must come from the Secret (see the module docstring);
    ``secrets`` are the agent's configured ones (``Settings.secrets()``)."""
    known = [s for s in secrets if s]
    return {
        name
        for name, value in env.items()
        if name in _SECRET_SETTINGS
        or credential_key(name)
        or name.endswith("_HEADERS")
        or ("://" in value and without_userinfo(value) != value)
        or any(secret in value for secret in known)
        or _SHAPES.redact(value) != value
    }


def job_environment(settings: Settings, base: Mapping[str, str], task_id: str) -> dict[str, str]:
    """The pod's environment before secrets are moved to references (values included)."""
    env = {k: v for k, v in base.items() if k.startswith(PASSTHROUGH_PREFIXES)}
    env.update(task_environment(settings))
    redis = settings.redis
    if redis.url is not None:
        env["REDIS_URL"] = redis.url
    env["REDIS_TIMEOUT_S"] = f"{redis.timeout_s:g}"
    env.update(
        {
            CHANNEL_ENV: "redis",
            TASK_ID_ENV: task_id,
            "HOME": WORK_DIR,
            "TMPDIR": WORK_DIR,
            "XDG_STATE_HOME": f"{WORK_DIR}/.state",
            # The root filesystem is read-only: the pod's spool lives (and dies) with its emptyDir.
            "AUDIT_LOG_SPOOL_DIR": f"{WORK_DIR}/audit-spool",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def build_job(
    spec: TaskSpec, settings: Settings, env: Mapping[str, str], *, namespace: str
) -> dict[str, Any]:
    """The Job for ``spec``: ``env`` is the pod's whole environment (``job_environment`` plus
    the correlation scope); its secrets become ``secretKeyRef``s here."""
    k8s = settings.kubernetes
    name = job_name(spec.task_id, spec.attempt)
    labels = {
        LABEL_APP: SERVICE_NAME,
        LABEL_TASK: task_slug(spec.task_id),
        LABEL_ATTEMPT: str(spec.attempt),
    }
    secret = k8s.secret_name
    if secret is None:  # the settings refuse to start without one; never inline a value
        raise ValueError("K8S_SECRET_NAME is not set: a Job cannot get its secrets")
    hidden = secret_variables(env, settings.secrets())
    variables: list[dict[str, Any]] = []
    for variable in sorted(env):
        if variable in hidden:
            ref = {"name": secret, "key": variable}
            variables.append({"name": variable, "valueFrom": {"secretKeyRef": ref}})
        else:
            variables.append({"name": variable, "value": env[variable]})
    seccomp = {"type": "RuntimeDefault"}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": k8s.run_as_user,
            "runAsGroup": k8s.run_as_user,
            "fsGroup": k8s.run_as_user,
            "seccompProfile": seccomp,
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": k8s.image,
                "command": list(k8s.command),
                "workingDir": WORK_DIR,
                "env": variables,
                "resources": {
                    "requests": {"cpu": k8s.cpu_request, "memory": k8s.memory_request},
                    "limits": {"cpu": k8s.cpu_limit, "memory": k8s.memory_limit},
                },
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": seccomp,
                },
                "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": WORK_SIZE_LIMIT}}],
    }
    if k8s.service_account is not None:
        pod_spec["serviceAccountName"] = k8s.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_CORRELATION: spec.correlation_id},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(settings.executor.timeout_s)),
            "ttlSecondsAfterFinished": k8s.ttl_after_finished_s,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
