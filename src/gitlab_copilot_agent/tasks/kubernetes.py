"""``KubernetesExecutor`` (``TASK_EXECUTOR=kubernetes``): each coding task as a Kubernetes Job.

**Why the official ``kubernetes`` client in a thread, not ``kubernetes_asyncio``:**
the official client is the one the Kubernetes project maintains and releases
with each API version (its models are generated from the API's OpenAPI
document, and the tests validate every Job against them); ``kubernetes_asyncio``
is a community fork that follows it with a lag. The agent makes a handful of
short calls per task (create, a poll every few seconds, logs, delete), so one
worker thread per call (``asyncio.to_thread``, each with ``K8S_API_TIMEOUT_S``
as its request timeout) costs nothing that matters, and the event loop never
blocks.

How a task runs:

1. the spec and the agent's heartbeat go to Redis (``tasks.redis_channel``);
2. ``k8s.api.create_job`` (``tasks.jobspec.build_job``); a create without an
   answer (timeout, reset) may still have created the Job, so it is deleted
   too (a 404 then says it was not). A **409** means a Job of
   that name exists: it is read (``k8s.api.get_job``) and adopted only if its
   labels and correlation annotation say it is this very task and attempt (a
   create whose answer was lost); anyone else's Job is left alone and the task
   fails with ``job_conflict``;
3. while the pod runs, the agent answers it through Redis (the approval gate's
   ``verify_push``, the result) and polls ``k8s.api.get_job`` with backoff
   (0.2 s doubling to ``K8S_POLL_MAX_S``; quickly once the result is in)
   until the condition ``Complete`` or ``Failed`` (transient conditions such as
   ``FailureTarget`` are ignored), ``TASK_TIMEOUT_S`` + 30 s pass, or the task
   is cancelled. A poll that fails (timeout, 5xx) is retried until five in a
   row fail; 401/403/404 end the wait at once;
   A container that waits for something that will not come (a missing Secret
   key: ``CreateContainerConfigError``, an image that cannot be pulled) is
   seen by ``k8s.api.list_pods`` (3 s in, then every 30 s) and fails the task
   at once (``pod_cannot_start``) instead of at its deadline;
4. on failure, the pod's termination message or log tail
   (``k8s.api.list_pods``, ``k8s.api.read_pod_log``), scrubbed with the
   library's scrubber before it is cut, goes into the outcome;
5. whatever happened (done, failed, timeout, cancelled), the Job the agent
   created or adopted is deleted (``k8s.api.delete_job``,
   ``propagationPolicy: Background``, so its pod goes too) and the Redis keys
   are removed. ``ttlSecondsAfterFinished`` is the backstop if the agent dies.

Each API call is one audit entry through ``AuditLogger.audited()`` (target
``resource_type=k8s_job, namespace, job_name, task_id``; ``http_status``; on
failure the error class: ``auth_failure`` for 401/403, ``not_found``,
``conflict`` is a ``client_error``, ``server_error``, ``timeout``,
``network_error``). Outcome reasons: ``deadline_exceeded`` (status
``timeout``), ``deadline`` (the agent's own wait ran out), ``job_failed``,
``job_conflict``, ``job_gone``, ``pod_cannot_start``, ``k8s_api_error``, ``no_result``,
``state_store_unavailable``, ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from auditkeep import ErrorClass
from auditkeep.context import subprocess_env
from auditkeep.logger import AuditLogger
from gitlab_copilot_agent.logs import get_logger
from gitlab_copilot_agent.scrub import scrub_then_cut
from gitlab_copilot_agent.settings import KubernetesSettings, Settings
from gitlab_copilot_agent.state import keys
from gitlab_copilot_agent.state.base import StateStoreError
from gitlab_copilot_agent.state.redis_store import RedisStore
from gitlab_copilot_agent.tasks.executor import PushVerifier, result_outcome
from gitlab_copilot_agent.tasks.jobspec import (
    ANNOTATION_CORRELATION,
    CONTAINER,
    LABEL_ATTEMPT,
    LABEL_TASK,
    build_job,
    job_environment,
    job_name,
    task_slug,
)
from gitlab_copilot_agent.tasks.redis_channel import RedisParentChannel
from gitlab_copilot_agent.tasks.spec import TaskOutcome, TaskSpec

__all__ = ["KubernetesAPIError", "KubernetesExecutor", "api_client"]

CREATE_JOB: Final = "k8s.api.create_job"
GET_JOB: Final = "k8s.api.get_job"
DELETE_JOB: Final = "k8s.api.delete_job"
LIST_PODS: Final = "k8s.api.list_pods"
READ_POD_LOG: Final = "k8s.api.read_pod_log"
WAIT_GRACE_S: Final = 30.0
"""The agent waits this much past ``activeDeadlineSeconds`` for the Job's own verdict."""
POLL_FIRST_S: Final = 0.2
POD_CHECK_FIRST_S: Final = 3.0
POD_CHECK_EVERY_S: Final = 30.0
STUCK_REASONS: Final = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "RunContainerError",
    }
)
"""A container waiting for one of these will not start by itself (a Secret key missing, an
image that cannot be pulled): the task fails now rather than at its deadline."""
MAX_POLL_FAILURES: Final = 5
LOG_TAIL_LINES: Final = 40
LOG_LIMIT_BYTES: Final = 16_384

_log = get_logger(__name__)
T = TypeVar("T")


class KubernetesAPIError(Exception):
    """A Kubernetes API call failed; the message is short and scrubbed (no response headers).

    ``status_code`` is the HTTP status (None when no answer came);
    ``audit_error_class`` is what the audit entry says.
    """

    def __init__(self, message: str, *, status_code: int | None, error_class: ErrorClass):
        super().__init__(message)
        self.status_code = status_code
        self.audit_error_class = error_class


def _api_error(exc: Exception) -> KubernetesAPIError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = exc.status if isinstance(exc.status, int) else None
        error = {401: ErrorClass.AUTH_FAILURE, 403: ErrorClass.AUTH_FAILURE}.get(status or 0)
        if error is None:
            error = (
                ErrorClass.NOT_FOUND
                if status == 404
                else ErrorClass.TIMEOUT
                if status in (408, 504)
                else ErrorClass.SERVER_ERROR
                if status is not None and status >= 500
                else ErrorClass.CLIENT_ERROR
            )
        return KubernetesAPIError(
            scrub_then_cut(f"HTTP {status} {exc.reason or ''}".strip(), 200),
            status_code=status,
            error_class=error,
        )
    names = {cls.__name__ for cls in type(exc).__mro__}
    timed_out = bool(names & {"TimeoutError", "ReadTimeoutError", "ConnectTimeoutError"}) or (
        "timed out" in str(exc).lower()
    )
    return KubernetesAPIError(
        scrub_then_cut(f"{type(exc).__name__}: {exc}", 200),
        status_code=None,
        error_class=ErrorClass.TIMEOUT if timed_out else ErrorClass.NETWORK_ERROR,
    )


def api_client(settings: KubernetesSettings, environ: Mapping[str, str] | None = None) -> Any:
    """A ``kubernetes.client.ApiClient``: ``K8S_KUBECONFIG``, else ``KUBECONFIG``, else in-cluster.

    Raises:
        kubernetes.config.ConfigException: no usable configuration.
    """
    from kubernetes import client, config

    env = os.environ if environ is None else environ
    configuration = client.Configuration()
    path = settings.kubeconfig or env.get("KUBECONFIG")
    if path:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration, persist_config=False
        )
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # No hidden urllib3 retries (its default retries each request 3 times): one audit entry
    # is one request, and what is retried (a poll) is retried by the executor, audited.
    configuration.retries = False
    return client.ApiClient(configuration)


@dataclass
class _Waiting:
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Verdict:
    state: str  # complete | failed | timeout | cancelled | gone | api_error
    reason: str | None = None
    message: str | None = None


class KubernetesExecutor:
    """Each task as a Job (see the module docstring).

    Args:
        settings: the agent's settings (``K8S_*``, ``TASK_*``, the task sections).
        audit: where each API call is recorded.
        store: the Redis store (the pod's channel runs through it).
        client: a ``kubernetes.client.ApiClient`` (default: ``api_client(settings.kubernetes)``).
        base_environ: where ``AUDIT_LOG_*`` come from (default ``os.environ``).
    """

    name = "kubernetes"
    wait_grace_s: float = WAIT_GRACE_S

    def __init__(
        self,
        settings: Settings,
        audit: AuditLogger,
        store: RedisStore,
        *,
        client: Any = None,
        base_environ: Mapping[str, str] | None = None,
    ) -> None:
        from kubernetes import client as k8s

        self._settings = settings
        self._k8s = settings.kubernetes
        self._audit = audit
        self._store = store
        self._base = base_environ
        self._client = client if client is not None else api_client(settings.kubernetes)
        self._batch = k8s.BatchV1Api(self._client)
        self._core = k8s.CoreV1Api(self._client)
        self._running: dict[str, _Waiting] = {}
        self.namespace = self._k8s.namespace

    def running(self) -> list[str]:
        """The task ids whose Job the agent waits for now."""
        return list(self._running)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    # -- one audited call ----------------------------------------------------------

    async def _call(
        self,
        action: str,
        job: str,
        spec: TaskSpec,
        send: Callable[[], tuple[T, int, Any]],
        **details: Any,
    ) -> T:
        """One API call (a client ``*_with_http_info`` method, so the real status is recorded)."""
        target = {
            "resource_type": "k8s_job",
            "namespace": self.namespace,
            "job_name": job,
            "task_id": spec.task_id,
        }
        async with self._audit.audited(
            action, target=target, details={"namespace": self.namespace, "job_name": job, **details}
        ) as call:
            try:
                answer, status, _ = await asyncio.to_thread(send)
            except Exception as exc:  # noqa: BLE001 - every client failure becomes one class
                raise _api_error(exc) from None
            call.http_status = status
            return answer

    # -- the Executor protocol -------------------------------------------------------

    async def run(self, spec: TaskSpec, *, verify_push: PushVerifier) -> TaskOutcome:
        name = job_name(spec.task_id, spec.attempt)
        keys_ttl = self._settings.executor.timeout_s + keys.JOB_KEYS_GRACE_S
        channel = RedisParentChannel(
            self._store, verify_push, task_id=spec.task_id, correlation_id=spec.correlation_id
        )
        waiting = _Waiting()
        self._running[spec.task_id] = waiting
        ours = False
        served: asyncio.Task[None] | None = None
        try:
            try:
                await channel.open(spec, ttl_s=keys_ttl)
            except StateStoreError as exc:
                return TaskOutcome(
                    "failed",
                    reason="state_store_unavailable",
                    detail=f"the task spec could not be stored: {exc}",
                )
            base = os.environ if self._base is None else self._base
            env = subprocess_env(job_environment(self._settings, base, spec.task_id))
            body = build_job(spec, self._settings, env, namespace=self.namespace)
            try:
                await self._create(name, spec, body)
                ours = True
            except KubernetesAPIError as exc:
                if exc.status_code is None:
                    # No answer (timeout, reset): the Job may exist all the same; delete it
                    # (a 404 says it does not).
                    ours = True
                    return _api_failure("the Job could not be created", exc)
                if exc.status_code != 409:
                    return _api_failure("the Job could not be created", exc)
                ours = await self._adopt(name, spec)
                if not ours:
                    return TaskOutcome(
                        "failed",
                        reason="job_conflict",
                        detail=f"a Job named {name} exists and is not this task's; left alone",
                    )
            served = asyncio.create_task(channel.serve(ttl_s=keys_ttl))
            verdict = await self._wait(name, spec, channel, waiting)
            await channel.drain(ttl_s=keys_ttl)
            return await self._outcome(name, spec, verdict, channel.result)
        finally:
            self._running.pop(spec.task_id, None)
            if served is not None:
                await channel.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(served), 3.0)
                except (TimeoutError, asyncio.CancelledError):
                    served.cancel()
            if ours:
                await self._delete(name, spec)
            await channel.close()

    async def cancel(self, task_id: str) -> bool:
        waiting = self._running.get(task_id)
        if waiting is None or waiting.cancelled.is_set():
            return False
        waiting.cancelled.set()
        return True

    # -- steps -------------------------------------------------------------------------

    async def _create(self, name: str, spec: TaskSpec, body: dict[str, Any]) -> None:
        from kubernetes.client import V1Job

        job = V1Job.from_dict(body)  # the client's own OpenAPI model: a typo cannot pass
        assert job is not None
        timeout = self._k8s.api_timeout_s
        await self._call(
            CREATE_JOB,
            name,
            spec,
            lambda: self._batch.create_namespaced_job_with_http_info(
                self.namespace, job, _request_timeout=timeout
            ),
            attempt=spec.attempt,
        )

    async def _get(self, name: str, spec: TaskSpec) -> Any:
        timeout = self._k8s.api_timeout_s
        return await self._call(
            GET_JOB,
            name,
            spec,
            lambda: self._batch.read_namespaced_job_with_http_info(
                name, self.namespace, _request_timeout=timeout
            ),
        )

    async def _adopt(self, name: str, spec: TaskSpec) -> bool:
        """After a 409: is the existing Job this task's own (a create whose answer was lost)?"""
        try:
            existing = await self._get(name, spec)
        except KubernetesAPIError:
            return False
        meta = existing.metadata
        labels = dict(meta.labels or {}) if meta is not None else {}
        annotations = dict(meta.annotations or {}) if meta is not None else {}
        return (
            labels.get(LABEL_TASK) == task_slug(spec.task_id)
            and labels.get(LABEL_ATTEMPT) == str(spec.attempt)
            and annotations.get(ANNOTATION_CORRELATION) == spec.correlation_id
        )

    async def _wait(
        self, name: str, spec: TaskSpec, channel: RedisParentChannel, waiting: _Waiting
    ) -> _Verdict:
        deadline = time.monotonic() + self._settings.executor.timeout_s + self.wait_grace_s
        interval = POLL_FIRST_S
        failures = 0
        pod_check = time.monotonic() + POD_CHECK_FIRST_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _Verdict("timeout")
            if channel.result is not None:
                interval = POLL_FIRST_S  # the pod reported: its end is near
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiting.cancelled.wait(), min(interval, remaining))
            if waiting.cancelled.is_set():
                return _Verdict("cancelled")
            interval = min(interval * 2, self._k8s.poll_max_s)
            try:
                job = await self._get(name, spec)
            except KubernetesAPIError as exc:
                if exc.status_code == 404:
                    return _Verdict("gone", message=str(exc))
                failures += 1
                if exc.status_code in (401, 403) or failures >= MAX_POLL_FAILURES:
                    return _Verdict("api_error", message=str(exc))
                continue
            failures = 0
            for condition in (job.status.conditions if job.status else None) or []:
                if condition.status != "True":
                    continue
                if condition.type == "Complete":
                    return _Verdict("complete")
                if condition.type == "Failed":
                    return _Verdict("failed", condition.reason, condition.message)
            if channel.result is None and time.monotonic() >= pod_check:
                pod_check = time.monotonic() + POD_CHECK_EVERY_S
                stuck = await self._stuck(name, spec)
                if stuck is not None:
                    return _Verdict("stuck", stuck[0], stuck[1])

    async def _outcome(
        self, name: str, spec: TaskSpec, verdict: _Verdict, result: dict[str, Any] | None
    ) -> TaskOutcome:
        if verdict.state == "cancelled":
            return TaskOutcome("cancelled", reason="cancelled", detail="cancelled")
        if verdict.state == "timeout":
            return TaskOutcome(
                "timeout",
                reason="deadline",
                detail=f"the Job did not finish within TASK_TIMEOUT_S="
                f"{self._settings.executor.timeout_s:g} s (+{self.wait_grace_s:g} s)",
            )
        if verdict.state == "complete":
            return result_outcome(result, 0)
        if verdict.state == "gone":
            return TaskOutcome("failed", reason="job_gone", detail="the Job disappeared")
        if verdict.state == "stuck":
            return TaskOutcome(
                "failed",
                reason="pod_cannot_start",
                detail=scrub_then_cut(
                    f"the Job's pod cannot start ({verdict.reason}): {verdict.message or ''}", 480
                ),
                facts={"job_name": name},
            )
        if verdict.state == "api_error":
            return TaskOutcome(
                "failed",
                reason="k8s_api_error",
                detail=f"the Job's status could not be read: {verdict.message}",
            )
        why, code, tail = await self._why(name, spec)
        facts = {"job_name": name, "pod_log_tail": tail} if tail else {"job_name": name}
        if verdict.reason == "DeadlineExceeded":
            return TaskOutcome(
                "timeout",
                reason="deadline_exceeded",
                detail=f"the Job passed activeDeadlineSeconds "
                f"({self._settings.executor.timeout_s:g} s)",
                exit_code=code,
                facts=facts,
            )
        if result is not None:  # reported, then failed on the way out
            return result_outcome(result, code)
        detail = scrub_then_cut(
            f"the Job failed ({verdict.reason or 'no reason'}): {why or verdict.message or ''}", 480
        )
        return TaskOutcome(
            "failed", reason="job_failed", detail=detail, exit_code=code, facts=facts
        )

    async def _job_pods(self, name: str, spec: TaskSpec) -> list[Any] | None:
        """The Job's pods (``k8s.api.list_pods``), None when they cannot be listed."""
        timeout = self._k8s.api_timeout_s
        try:
            pods = await self._call(
                LIST_PODS,
                name,
                spec,
                lambda: self._core.list_namespaced_pod_with_http_info(
                    self.namespace, label_selector=f"job-name={name}", _request_timeout=timeout
                ),
            )
        except KubernetesAPIError:
            return None
        return list(pods.items or [])

    async def _stuck(self, name: str, spec: TaskSpec) -> tuple[str, str] | None:
        """A reason and message when the Job's container waits for something that will not
        come (``STUCK_REASONS``), else None (also when the pods cannot be listed)."""
        pods = await self._job_pods(name, spec)
        for pod in pods or []:
            for status in (pod.status.container_statuses if pod.status else None) or []:
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason in STUCK_REASONS:
                    return str(waiting.reason), scrub_then_cut(str(waiting.message or ""), 300)
        return None

    async def _why(self, name: str, spec: TaskSpec) -> tuple[str | None, int | None, str | None]:
        """The pod's termination message, exit code and log tail (scrubbed, then cut)."""
        items = await self._job_pods(name, spec)
        if not items:
            return None, None, None
        pod = items[-1]
        pod_name = str(pod.metadata.name) if pod.metadata is not None else ""
        message: str | None = None
        code: int | None = None
        for status in (pod.status.container_statuses if pod.status else None) or []:
            terminated = status.state.terminated if status.state else None
            if status.name == CONTAINER and terminated is not None:
                message = terminated.message or terminated.reason
                code = terminated.exit_code
        tail: str | None = None
        try:
            log = await self._call(
                READ_POD_LOG,
                name,
                spec,
                lambda: self._core.read_namespaced_pod_log_with_http_info(
                    pod_name,
                    self.namespace,
                    container=CONTAINER,
                    tail_lines=LOG_TAIL_LINES,
                    limit_bytes=LOG_LIMIT_BYTES,
                    _request_timeout=self._k8s.api_timeout_s,
                ),
                pod_name=pod_name,
            )
            tail = scrub_then_cut(str(log), 4000) if log else None
        except KubernetesAPIError:
            pass
        if tail:
            _log.warning("a task's Job failed", job_name=name, pod_log_tail=tail)
        message = scrub_then_cut(message, 300) if message else None
        return message or (tail.strip().splitlines()[-1] if tail else None), code, tail

    async def _delete(self, name: str, spec: TaskSpec) -> None:
        """Delete the Job and (in the background) its pod; a 404 means it is already gone."""
        timeout = self._k8s.api_timeout_s

        def send() -> Any:
            return self._batch.delete_namespaced_job_with_http_info(
                name, self.namespace, propagation_policy="Background", _request_timeout=timeout
            )

        with contextlib.suppress(KubernetesAPIError):
            await self._call(DELETE_JOB, name, spec, send, propagation_policy="Background")


def _api_failure(what: str, exc: KubernetesAPIError) -> TaskOutcome:
    return TaskOutcome("failed", reason="k8s_api_error", detail=f"{what}: {exc}")
