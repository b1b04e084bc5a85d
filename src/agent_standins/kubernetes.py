"""A Kubernetes API stand-in: ``batch/v1`` Jobs and ``v1`` Pods, logs and Secrets, on loopback.

**A stand-in, not Kubernetes**: no real API server can run here (no
kube-apiserver, k3s, kind or kwok in the package registries), so the agent's
Kubernetes executor is tested against this. It speaks the endpoints the
official client calls, with the API's JSON shapes and ``Status`` errors:

- ``POST/GET /apis/batch/v1/namespaces/{ns}/jobs`` (create, list with
  ``labelSelector``/``fieldSelector=metadata.name=…``), ``GET/DELETE
  …/jobs/{name}`` (delete honours ``propagationPolicy``: the pods go too,
  except with ``Orphan``);
- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=job-name=…``, ``GET
  …/pods/{name}``, ``GET …/pods/{name}/log`` (``tailLines``, ``limitBytes``);
- ``POST/GET /api/v1/namespaces/{ns}/secrets[/{name}]`` (``data`` base64 or
  ``stringData``), also ``add_secret()`` from a test;
- ``Authorization: Bearer <token>`` required (401 otherwise), as the
  generated kubeconfig (``write_kubeconfig``) sends it — the client is
  configured the ordinary way, nothing is monkeypatched. No watch: ``watch=true``
  is refused with 400 (the executor polls).

**Every Job is validated against the official client's OpenAPI models**
(``openapi_problems``: deserialised into ``V1Job`` and compared after a round
trip, so an unknown field name or a wrong type is found) and refused with 422
``Invalid`` like a real API server; a name that exists gets 409 ``AlreadyExists``.
Every accepted body is kept in ``created`` as received.

**Running a Job** (one pod, ``backoffLimit`` is not retried): the container's
``command`` + ``args`` run as a local child process (its own session) with
exactly the pod's environment, built as the kubelet would:
``image_env`` (what the image's ``ENV`` would give, e.g. ``PATH``; the stand-in's
stand-in for an image), then ``envFrom`` (``secretRef``, with ``prefix``), then
``env`` (``value``, or ``valueFrom.secretKeyRef`` resolved from the Secrets
created here). A missing Secret or key leaves the pod ``Pending`` with
``CreateContainerConfigError`` (as a kubelet does), until the deadline.
**Mapped paths:** each ``emptyDir`` volume gets its own new directory
``<root>/<pod>/volumes/<volume>``; wherever the container mounts it
(``mountPath``), an env value the Job sets (not the ``image_env`` ones) equal
to the mount path, or starting with it and ``/``, has that prefix replaced by
the directory, and so has ``workingDir`` (the process's cwd). Nothing else is
mapped or enforced: ``readOnlyRootFilesystem``, users, capabilities, seccomp
and resources are recorded, not applied (the process runs as the test's user
on the real filesystem). ``activeDeadlineSeconds`` is
enforced: the process group is killed and the Job gets ``Failed`` with reason
``DeadlineExceeded``; exit 0 gives ``SuccessCriteriaMet`` then ``Complete``,
another exit code ``FailureTarget`` then ``Failed`` (``BackoffLimitExceeded``)
with the pod's termination message (the log's last 80 lines, as with
``FallbackToLogsOnError``). ``ttlSecondsAfterFinished`` deletes a finished Job.

Faults as for the other stand-ins: ``faults.add("/apis/batch/v1/namespaces/*/jobs",
Fault.http(403), method="POST")``, ``Fault.slow(5)`` for a call that times out.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from agent_standins.base import Standin, match_route, path_of, route
from agent_standins.faults import Fault, Rendered

__all__ = ["DEFAULT_TOKEN", "KubernetesStandin", "openapi_problems"]

DEFAULT_TOKEN = "k8s-standin-token-6f1e2d3c4b5a"  # noqa: S105 - the stand-in's own
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def openapi_problems(body: Any, model: str = "V1Job") -> list[str]:
    """What in ``body`` the client's OpenAPI model ``model`` does not accept (empty: valid).

    The body is deserialised with the model (strict types: ``"5"`` is not an
    integer) and serialised back; a field the model does not know disappears on
    the way, so any difference names it.
    """
    from kubernetes import client
    from pydantic import ValidationError

    cls = getattr(client, model)
    try:
        parsed = cls.from_dict(body)
    except (ValidationError, ValueError, TypeError, AttributeError) as exc:
        return [f"{model}: {str(exc).splitlines()[0:3]}"]
    back = client.ApiClient().sanitize_for_serialization(parsed)  # type: ignore[no-untyped-call]
    return _differences(body, back, "")


def _differences(sent: Any, kept: Any, where: str) -> list[str]:
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [f"{where or '.'}: wrong type"]
        found: list[str] = []
        for key, value in sent.items():
            if key not in kept:
                found.append(f"{where}.{key}: unknown field")
            else:
                found += _differences(value, kept[key], f"{where}.{key}")
        return found
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [f"{where}: wrong type"]
        return [
            p
            for i, (a, b) in enumerate(zip(sent, kept, strict=True))
            for p in _differences(a, b, f"{where}[{i}]")
        ]
    if sent != kept or type(sent) is not type(kept):
        return [f"{where}: wrong type or value ({type(sent).__name__})"]
    return []


def _status(code: int, message: str, *, reason: str | None = None, **details: Any) -> Rendered:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "details": details or None,
        "code": code,
    }
    return Rendered(code, {"content-type": "application/json"}, orjson.dumps(body))


def _answer(rendered: Rendered) -> Response:
    return Response(rendered.body, status_code=rendered.status, headers=dict(rendered.headers))


@dataclass
class _Pod:
    name: str
    namespace: str
    job: str
    labels: dict[str, str]
    created: str
    directory: Path
    log: Path
    phase: str = "Pending"
    waiting_reason: str | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None
    message: str | None = None
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    cwd: str | None = None


@dataclass
class _Job:
    body: dict[str, Any]
    uid: str
    created: str
    started_at: float
    conditions: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    pods: list[str] = field(default_factory=list)


class KubernetesStandin(Standin):
    """The stand-in API server (see the module docstring).

    Args:
        root: where pods' directories and logs go (a new temporary one by default).
        token: the bearer token the API requires.
        image_env: the variables the "image" gives every container (``PATH``…).
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        image_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="k8s-"))
        self.token = token
        self.image_env = dict(image_env or {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.jobs: dict[tuple[str, str], _Job] = {}
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str | None]] = []
        self._state = threading.RLock()
        self._timers: list[threading.Timer] = []
        self._names = itertools.count(1)
        jobs, pods = "/apis/batch/v1/namespaces/{ns}/jobs", "/api/v1/namespaces/{ns}/pods"
        secrets_path = "/api/v1/namespaces/{ns}/secrets"
        self.routes = [
            route("POST", jobs, self._create_job),
            route("GET", jobs, self._list_jobs),
            route("GET", jobs + "/{name}", self._get_job),
            route("GET", jobs + "/{name}/status", self._get_job),
            route("DELETE", jobs + "/{name}", self._delete_job),
            route("GET", pods, self._list_pods),
            route("GET", pods + "/{name}", self._get_pod),
            route("GET", pods + "/{name}/log", self._pod_log),
            route("POST", secrets_path, self._create_secret),
            route("GET", secrets_path + "/{name}", self._get_secret),
        ]

    # -- for tests and the demo -----------------------------------------------------

    def write_kubeconfig(self, path: Path, url: str, *, namespace: str = "default") -> Path:
        """A kubeconfig for this stand-in at ``url`` (JSON is YAML), 0600."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": url}}],
            "users": [{"name": "agent", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "agent", "namespace": namespace},
                }
            ],
            "current-context": "standin",
        }
        path.write_bytes(orjson.dumps(config))
        path.chmod(0o600)
        return path

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        with self._state:
            self.secrets[(namespace, name)] = {k: v.encode() for k, v in data.items()}

    def job_names(self, namespace: str = "default") -> list[str]:
        with self._state:
            return sorted(n for ns, n in self.jobs if ns == namespace)

    def live_processes(self) -> list[int]:
        """Pids of pod processes still running."""
        with self._state:
            return [
                p.process.pid
                for p in self.pods.values()
                if p.process is not None and p.process.poll() is None
            ]

    def pod_of(self, job: str, namespace: str = "default") -> _Pod | None:
        with self._state:
            found = [p for p in self.pods.values() if p.job == job and p.namespace == namespace]
            return found[-1] if found else None

    def stop_all(self) -> None:
        """Kill every pod process and cancel the timers (call at the end of a test)."""
        for timer in self._timers:
            timer.cancel()
        with self._state:
            for pod in self.pods.values():
                _kill(pod)
        for pod in list(self.pods.values()):
            if pod.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    pod.process.wait(5)

    def reset(self) -> None:
        super().reset()
        self.stop_all()
        with self._state:
            self.jobs.clear()
            self.pods.clear()
            self.created.clear()
            self.deleted.clear()

    # -- the API ---------------------------------------------------------------------

    def recorded_headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: ("<hidden>" if k == "authorization" else v) for k, v in headers.items()}

    def render_error(self, fault: Fault) -> Rendered:
        if fault.body is not None:
            return Rendered(
                fault.status, {"content-type": fault.content_type or "text/plain"}, fault.body
            )
        return _status(fault.status, fault.message or f"stand-in fault {fault.status}")

    async def dispatch(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _answer(_status(401, "Unauthorized"))
        if request.query_params.get("watch") in ("true", "1"):
            return _answer(_status(400, "watch is not supported by this stand-in; poll"))
        return await match_route(
            self.routes,
            request,
            path_of(request),
            not_found=lambda: _answer(_status(404, "the server could not find the resource")),
            not_allowed=lambda: _answer(
                _status(405, "method not allowed", reason="MethodNotAllowed")
            ),
        )

    async def _create_job(self, request: Request, ns: str) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _answer(_status(400, "the body is not JSON"))
        problems = openapi_problems(body, "V1Job") if isinstance(body, dict) else ["not an object"]
        name = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
        if not problems and not isinstance(name, str):
            problems = ["metadata.name: Required value"]
        if problems:
            return _answer(
                _status(422, f"Job.batch {name!r} is invalid: {'; '.join(problems)[:2000]}",
                        name=name, group="batch", kind="jobs")
            )  # fmt: skip
        assert isinstance(name, str)
        with self._state:
            if (ns, name) in self.jobs:
                return _answer(
                    _status(409, f'jobs.batch "{name}" already exists', name=name,
                            group="batch", kind="jobs")
                )  # fmt: skip
            self.created.append(orjson.loads(orjson.dumps(body)))
            job = _Job(body, secrets.token_hex(16), _now(), time.monotonic())
            body.setdefault("metadata", {}).update(
                {"namespace": ns, "uid": job.uid, "creationTimestamp": job.created}
            )
            self.jobs[(ns, name)] = job
            self._start_pod(ns, name, job)
            return JSONResponse(self._job_json(job), status_code=201)

    async def _get_job(self, request: Request, ns: str, name: str) -> Response:
        with self._state:
            job = self.jobs.get((ns, name))
            if job is None:
                return _answer(_status(404, f'jobs.batch "{name}" not found', name=name))
            return JSONResponse(self._job_json(job))

    async def _list_jobs(self, request: Request, ns: str) -> Response:
        selector = _selector(request.query_params.get("labelSelector"))
        fields = _selector(request.query_params.get("fieldSelector"))
        with self._state:
            items = [
                self._job_json(job)
                for (space, name), job in sorted(self.jobs.items())
                if space == ns
                and _matches(job.body["metadata"].get("labels") or {}, selector)
                and fields.get("metadata.name", name) == name
            ]
        return JSONResponse(
            {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {"resourceVersion": "1"},
             "items": items}
        )  # fmt: skip

    async def _delete_job(self, request: Request, ns: str, name: str) -> Response:
        policy = request.query_params.get("propagationPolicy")
        raw = await request.body()
        if raw:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                policy = orjson.loads(raw).get("propagationPolicy") or policy
        with self._state:
            job = self.jobs.pop((ns, name), None)
            if job is None:
                return _answer(_status(404, f'jobs.batch "{name}" not found', name=name))
            self.deleted.append((ns, name, policy))
            if policy != "Orphan":
                for pod_name in job.pods:
                    pod = self.pods.pop((ns, pod_name), None)
                    if pod is not None:
                        _kill(pod)
        return JSONResponse(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
             "details": {"name": name, "group": "batch", "kind": "jobs", "uid": job.uid}}
        )  # fmt: skip

    async def _list_pods(self, request: Request, ns: str) -> Response:
        selector = _selector(request.query_params.get("labelSelector"))
        with self._state:
            items = [
                self._pod_json(pod)
                for (space, _), pod in sorted(self.pods.items())
                if space == ns and _matches(pod.labels, selector)
            ]
        return JSONResponse(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
             "items": items}
        )  # fmt: skip

    async def _get_pod(self, request: Request, ns: str, name: str) -> Response:
        with self._state:
            pod = self.pods.get((ns, name))
            if pod is None:
                return _answer(_status(404, f'pods "{name}" not found', name=name, kind="pods"))
            return JSONResponse(self._pod_json(pod))

    async def _pod_log(self, request: Request, ns: str, name: str) -> Response:
        with self._state:
            pod = self.pods.get((ns, name))
        if pod is None:
            return _answer(_status(404, f'pods "{name}" not found', name=name, kind="pods"))
        text = pod.log.read_bytes() if pod.log.exists() else b""
        tail = _bounded_int(request.query_params.get("tailLines"))
        if tail is not None:
            text = b"".join(text.splitlines(keepends=True)[-tail:]) if tail else b""
        limit = _bounded_int(request.query_params.get("limitBytes"))
        if limit is not None:
            text = text[:limit]
        return PlainTextResponse(text.decode("utf-8", "replace"))

    async def _create_secret(self, request: Request, ns: str) -> Response:
        body = orjson.loads(await request.body())
        problems = openapi_problems(body, "V1Secret")
        if problems:
            return _answer(_status(422, "; ".join(problems)))
        name = body["metadata"]["name"]
        data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (body.get("stringData") or {}).items()})
        with self._state:
            if (ns, name) in self.secrets:
                return _answer(_status(409, f'secrets "{name}" already exists', name=name))
            self.secrets[(ns, name)] = data
        return JSONResponse(
            {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns},
             "type": "Opaque"}, status_code=201,
        )  # fmt: skip

    async def _get_secret(self, request: Request, ns: str, name: str) -> Response:
        with self._state:
            data = self.secrets.get((ns, name))
        if data is None:
            return _answer(_status(404, f'secrets "{name}" not found', name=name))
        return JSONResponse(
            {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns},
             "type": "Opaque", "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
        )  # fmt: skip

    # -- running a Job -----------------------------------------------------------------

    def _start_pod(self, ns: str, job_name: str, job: _Job) -> None:
        template = job.body["spec"]["template"]
        spec = template["spec"]
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "job-name": job_name,
            "batch.kubernetes.io/job-name": job_name,
            "controller-uid": job.uid,
        }
        pod_name = f"{job_name}-{secrets.token_hex(3)[:5]}"
        directory = self.root / pod_name
        directory.mkdir(parents=True, exist_ok=True)
        pod = _Pod(pod_name, ns, job_name, labels, _now(), directory, directory / "container.log")
        self.pods[(ns, pod_name)] = pod
        job.pods.append(pod_name)
        job.active = 1
        container = spec["containers"][0]
        mounts = self._mounts(spec, container, directory)
        env, missing = self._environment(ns, container)
        deadline = job.body["spec"].get("activeDeadlineSeconds")
        if missing is not None:
            pod.waiting_reason = "CreateContainerConfigError"
            pod.message = missing
        else:
            pod.env = {
                k: v if self.image_env.get(k) == v else _mapped(v, mounts) for k, v in env.items()
            }
            pod.argv = list(container.get("command") or []) + list(container.get("args") or [])
            working = container.get("workingDir")
            pod.cwd = _mapped(working, mounts) if working else str(directory)
            executable = shutil.which(pod.argv[0], path=pod.env.get("PATH")) if pod.argv else None
            if executable is None:
                pod.waiting_reason = "RunContainerError"
                pod.message = f"executable not found: {pod.argv[:1]}"
            else:
                with pod.log.open("wb") as log:
                    pod.process = subprocess.Popen(
                        [executable, *pod.argv[1:]],
                        env=pod.env,
                        cwd=pod.cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                pod.phase = "Running"
        watcher = threading.Thread(
            target=self._watch, args=(ns, job_name, job, pod, deadline), daemon=True
        )
        watcher.start()

    def _mounts(
        self, spec: dict[str, Any], container: dict[str, Any], directory: Path
    ) -> dict[str, str]:
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if "emptyDir" in volume:
                local = directory / "volumes" / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"].rstrip("/") or "/"] = str(local)
        return mounts

    def _environment(self, ns: str, container: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        env = dict(self.image_env)
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref is None:
                return {}, "only envFrom.secretRef is supported by the stand-in"
            data = self.secrets.get((ns, ref["name"]))
            if data is None:
                return {}, f'secret "{ref["name"]}" not found'
            prefix = source.get("prefix") or ""
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for variable in container.get("env") or []:
            if "value" in variable or "valueFrom" not in variable:
                env[variable["name"]] = variable.get("value") or ""
                continue
            ref = (variable["valueFrom"] or {}).get("secretKeyRef")
            if ref is None:
                return {}, f"{variable['name']}: only secretKeyRef is supported by the stand-in"
            data = self.secrets.get((ns, ref["name"]))
            if data is None:
                return {}, f'secret "{ref["name"]}" not found'
            if ref["key"] not in data:
                return {}, f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}"
            env[variable["name"]] = data[ref["key"]].decode()
        return env, None

    def _watch(self, ns: str, name: str, job: _Job, pod: _Pod, deadline: int | None) -> None:
        limit = None if deadline is None else job.started_at + deadline
        code: int | None = None
        while True:
            left = None if limit is None else limit - time.monotonic()
            if left is not None and left <= 0:
                break
            if pod.process is None:
                time.sleep(min(0.05, left) if left is not None else 0.05)
                if (ns, name) not in self.jobs:
                    return
                continue
            try:
                code = pod.process.wait(timeout=min(0.2, left) if left is not None else 0.2)
                break
            except subprocess.TimeoutExpired:
                if (ns, name) not in self.jobs:
                    return
        with self._state:
            if self.jobs.get((ns, name)) is not job:
                return
            job.active = 0
            if code is None:  # the deadline
                _kill(pod)
                pod.phase, pod.terminated_reason = "Failed", "DeadlineExceeded"
                pod.exit_code = 137 if pod.process is not None else None
                job.failed = 1
                self._finish(
                    job,
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            elif code == 0:
                pod.phase, pod.exit_code, pod.terminated_reason = "Succeeded", 0, "Completed"
                job.succeeded = 1
                job.conditions.append(_condition("SuccessCriteriaMet", "CompletionsReached"))
                self._finish(job, "Complete", None, None)
            else:
                pod.phase, pod.exit_code, pod.terminated_reason = "Failed", code, "Error"
                lines = pod.log.read_bytes().splitlines()[-80:] if pod.log.exists() else []
                pod.message = b"\n".join(lines).decode("utf-8", "replace")[-2048:]
                job.failed = 1
                job.conditions.append(_condition("FailureTarget", "BackoffLimitExceeded"))
                self._finish(
                    job,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
        ttl = job.body["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            timer = threading.Timer(ttl, self._expire, args=(ns, name, job))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def _finish(self, job: _Job, kind: str, reason: str | None, message: str | None) -> None:
        job.conditions.append(_condition(kind, reason, message))

    def _expire(self, ns: str, name: str, job: _Job) -> None:
        with self._state:
            if self.jobs.get((ns, name)) is job:
                del self.jobs[(ns, name)]
                self.deleted.append((ns, name, "ttlSecondsAfterFinished"))
                for pod_name in job.pods:
                    self.pods.pop((ns, pod_name), None)

    # -- JSON --------------------------------------------------------------------------

    def _job_json(self, job: _Job) -> dict[str, Any]:
        status: dict[str, Any] = {"startTime": job.created}
        if job.active:
            status["active"] = job.active
        if job.succeeded:
            status["succeeded"] = job.succeeded
        if job.failed:
            status["failed"] = job.failed
        if job.conditions:
            status["conditions"] = list(job.conditions)
        return {**job.body, "status": status}

    def _pod_json(self, pod: _Pod) -> dict[str, Any]:
        state: dict[str, Any]
        if pod.terminated_reason is not None:
            code = pod.exit_code if pod.exit_code is not None else 137
            terminated: dict[str, Any] = {"exitCode": code, "reason": pod.terminated_reason}
            if pod.message:
                terminated["message"] = pod.message
            state = {"terminated": terminated}
        elif pod.phase == "Running":
            state = {"running": {"startedAt": pod.created}}
        else:
            state = {"waiting": {"reason": pod.waiting_reason or "ContainerCreating",
                                 "message": pod.message or ""}}  # fmt: skip
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels,
                         "creationTimestamp": pod.created},
            "status": {
                "phase": pod.phase,
                "containerStatuses": [
                    {"name": "task", "image": "standin", "imageID": "",
                     "ready": pod.phase == "Running", "restartCount": 0, "state": state}
                ],
            },
        }  # fmt: skip


def _condition(kind: str, reason: str | None, message: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"type": kind, "status": "True", "lastTransitionTime": _now(),
                             "lastProbeTime": _now()}  # fmt: skip
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


def _kill(pod: _Pod) -> None:
    if pod.process is not None and pod.process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pod.process.pid, signal.SIGKILL)


def _mapped(value: str, mounts: Mapping[str, str]) -> str:
    for path, local in mounts.items():
        if value == path:
            return local
        if value.startswith(path + "/"):
            return local + value[len(path) :]
    return value


def _selector(raw: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in urllib.parse.unquote(raw or "").split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            found[key.strip().rstrip("=")] = value.strip().lstrip("=")
    return found


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _bounded_int(raw: str | None) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > 9:
        return None
    return int(raw)
