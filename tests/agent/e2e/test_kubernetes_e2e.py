"""``TASK_EXECUTOR=kubernetes`` end to end, through the Kubernetes API **stand-in**.

A real API server cannot run here (no kube-apiserver, k3s, kind or kwok), so the
agent's official ``kubernetes`` client talks, through an ordinary kubeconfig
file, to ``agent_standins.kubernetes.KubernetesStandin`` on loopback, which
runs the Job's command (``gitlab-copilot-agent run-task``) as a local process
with exactly the Job's environment. Everything else is real: the agent on a
socket, the GitLab stand-in, a git server, a redis-server (the pod's channel),
the audit file both write to, read back and validated against the JSON Schema.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from codingkit import (
    MAINTAINER,
    SRC,
    TOKEN,
    US3,
    World,
    actions,
    coding_world,
    in_order,
)

import gitlab_copilot_agent
from agent_standins.faults import Fault
from agent_standins.kubernetes import KubernetesStandin

AUDITKEEP_SRC = Path(gitlab_copilot_agent.__file__).resolve().parents[2] / "packages/auditkeep/src"
NAMESPACE = "agents"
SECRET_NAME = "agent-secrets"
IMAGE_ENV = {
    "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    "PYTHONPATH": f"{SRC}:{AUDITKEEP_SRC}",
    "LANG": "C.UTF-8",
}
"""What the agent's image would give every container (the stand-in's "image")."""
EXEMPT = {"APPROVAL_EXEMPT_PROJECTS": "42"}
K8S_ACTIONS = ("k8s.api.create_job", "k8s.api.get_job", "k8s.api.delete_job")
POD_ACTIONS = {
    "gitlab.api.clone_repo",
    "copilot.sdk.coding_request",
    "copilot.sdk.response_received",
    "copilot.patch.generated",
    "copilot.patch.validated",
    "gitlab.api.push_branch",
}
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
RBAC = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "rbac.yaml"
_REQUEST = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z.]+)/v1)/namespaces/[^/]+/(?P<resource>[a-z]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$"
)


@contextmanager
def kubernetes_world(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    extra: Mapping[str, str] | None = None,
) -> Iterator[tuple[World, KubernetesStandin]]:
    standin = KubernetesStandin(tmp / "pods", image_env=IMAGE_ENV)
    standin.add_secret(NAMESPACE, SECRET_NAME, {"GITLAB_TOKEN": TOKEN})
    with standin.serve() as api:
        kubeconfig = standin.write_kubeconfig(tmp / "kubeconfig", api.url, namespace=NAMESPACE)
        settings = {
            "TASK_EXECUTOR": "kubernetes",
            "K8S_NAMESPACE": NAMESPACE,
            "K8S_IMAGE": "registry.example.com/gitlab-copilot-agent:1.0",
            "K8S_SECRET_NAME": SECRET_NAME,
            "K8S_KUBECONFIG": str(kubeconfig),
            "K8S_POLL_MAX_S": "0.5",
            "K8S_API_TIMEOUT_S": "2",
            **(extra or {}),
        }
        try:
            with coding_world(tmp, monkeypatch, redis_url=redis_url, extra=settings) as world:
                yield world, standin
        finally:
            standin.stop_all()


def k8s_entries(world: World) -> list[dict[str, Any]]:
    return [e for e in world.entries() if e["action"].startswith("k8s.api.")]


def no_job_left(world: World, standin: KubernetesStandin) -> None:
    deadline = time.monotonic() + 10
    while standin.job_names(NAMESPACE) or standin.live_processes():
        assert time.monotonic() < deadline, (standin.job_names(NAMESPACE), standin.live_processes())
        time.sleep(0.05)


def rbac_rules() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the manifest's Role grants."""
    (role,) = [d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "Role"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def needed(standin: KubernetesStandin) -> set[tuple[str, str, str]]:
    """What the requests the stand-in received needed, as RBAC names it."""
    found = set()
    for request in standin.requests:
        match = _REQUEST.match(request.path)
        assert match is not None, request.path
        resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
        verb = {"POST": "create", "DELETE": "delete"}.get(request.method)
        if verb is None:
            verb = (
                "get" if match["name"] else ("watch" if "watch=true" in request.query else "list")
            )
        found.add((match["group"] or "", resource, verb))
    return found


class TestRBAC:
    def test_the_manifest_is_valid_and_grants_exactly_the_agents_needs(self) -> None:
        from agent_standins.kubernetes import openapi_problems

        documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
        models = {"ServiceAccount": "V1ServiceAccount", "Role": "V1Role",
                  "RoleBinding": "V1RoleBinding"}  # fmt: skip
        assert sorted(d["kind"] for d in documents) == [
            "Role", "RoleBinding", "ServiceAccount", "ServiceAccount",
        ]  # fmt: skip
        for document in documents:
            assert openapi_problems(document, models[document["kind"]]) == []
        assert rbac_rules() == {
            ("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")
        } | {("", "pods", "get"), ("", "pods", "list"), ("", "pods/log", "get")}
        assert not any(resource == "secrets" for _, resource, _ in rbac_rules())


class TestAJobRunsTheTask:
    def test_fix_as_a_job_same_trail_as_local_plus_the_api_calls(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """The US-3 trail in order under the fix webhook's id, the pod's own entries too (its
        environment carried the id), plus create/get/delete Job entries; the push happened,
        the result is in Redis with the id, no Job and no pod process is left, and the
        channel's Redis keys are gone."""
        with kubernetes_world(tmp_path, monkeypatch, redis_url) as (world, standin):
            before = world.head()
            cid = world.note("/copilot fix add a line about search to the README")
            task_id = world.requested_task(cid)
            world.note(f"/copilot approve {task_id}", MAINTAINER)
            world.wait_for("task.finished", cid)
            entries = world.entries(cid)
            assert in_order(actions(entries), US3), actions(entries)
            for entry in world.entries():
                if entry["action"] in POD_ACTIONS or entry["action"].startswith("k8s.api."):
                    assert entry["correlation_id"] == cid, entry
            started = next(e for e in entries if e["action"] == "task.started")
            assert started["details"]["executor"] == "kubernetes"
            finished = next(e for e in entries if e["action"] == "task.finished")
            assert finished["outcome"] == "success"
            assert finished["details"]["executor"] == "kubernetes"
            assert world.head() != before
            calls = [e for e in entries if e["action"].startswith("k8s.api.")]
            assert calls[0]["action"] == "k8s.api.create_job"
            assert calls[-1]["action"] == "k8s.api.delete_job"
            # (list_pods too if the pod took longer than 3 s: the check for a pod that
            # cannot start)
            assert (
                set(K8S_ACTIONS)
                <= {e["action"] for e in calls}
                <= {
                    *K8S_ACTIONS,
                    "k8s.api.list_pods",
                }
            )
            for entry in calls:
                assert entry["outcome"] == "success", entry
                assert entry["target"]["namespace"] == NAMESPACE
                assert entry["target"]["job_name"] == f"copilot-task-{task_id}-1"
                assert entry["http_status"] in (200, 201)
            assert in_order(actions(entries), ["task.started", "k8s.api.create_job",
                                               "gitlab.api.clone_repo", "gitlab.api.push_branch",
                                               "k8s.api.delete_job", "task.finished"])  # fmt: skip
            job = standin.created[0]
            assert job["metadata"]["annotations"]["gitlab-copilot-agent/correlation-id"] == cid
            env = {v["name"]: v for v in job["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["AUDIT_CORRELATION_ID"]["value"] == cid
            assert env["COPILOT_TASK_ID"]["value"] == task_id
            assert env["GITLAB_TOKEN"] == {
                "name": "GITLAB_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "GITLAB_TOKEN"}},
            }
            no_job_left(world, standin)
            assert standin.deleted[0][2] == "Background"
            assert needed(standin) <= rbac_rules()
            # Nothing the agent sent the API holds the token or 8 characters of it.
            sent = b"".join(r.body + r.query.encode() for r in standin.requests)
            fragments = {TOKEN[i : i + 8] for i in range(len(TOKEN) - 7)}
            assert [f for f in fragments if f.encode() in sent] == []
            # Nor does anything the pod left in its work directory (the clone's .git/config
            # included): the token reached git through the environment only.
            left = [p for p in standin.root.rglob("*") if p.is_file()]
            assert any(p.name == "config" and p.parent.name == ".git" for p in left)
            for path in left:
                data = path.read_bytes()
                assert [f for f in fragments if f.encode() in data] == [], path
            with redis.Redis.from_url(redis_url) as client:
                result = json.loads(client.get(f"copilot:result:{task_id}") or b"{}")
                assert client.keys(f"copilot:job:{task_id}:*") == []
            assert (result["correlation_id"], result["status"]) == (cid, "pushed")


class TestFailuresAreHandled:
    def test_a_failing_job_is_failed_with_its_scrubbed_log_and_deleted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """A pod that exits 1 printing the token: ``job_failed``, list_pods and read_pod_log
        audited, the token nowhere in the trail or the stored result, the Job deleted."""
        command = f"sh -c 'echo cloning with {TOKEN}; echo boom >&2; exit 1'"
        extra = {**EXEMPT, "K8S_COMMAND": command}
        with kubernetes_world(tmp_path, monkeypatch, redis_url, extra) as (world, standin):
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["outcome"] == "failure"
            assert (finished["details"]["status"], finished["details"]["reason"]) == (
                "failed",
                "job_failed",
            )
            assert "boom" in finished["error_message"]
            assert finished["details"]["exit_code"] == 1
            got = actions(k8s_entries(world))
            assert "k8s.api.list_pods" in got
            assert "k8s.api.read_pod_log" in got
            assert got[-1] == "k8s.api.delete_job"
            no_job_left(world, standin)
            # Every call the executor made is one the Role grants; what the Role grants beyond
            # them is the watch pair (for a watching executor) and reading one named pod.
            assert needed(standin) <= rbac_rules()
            unused = {("batch", "jobs", "list"), ("batch", "jobs", "watch"), ("", "pods", "get")}
            assert rbac_rules() - needed(standin) == unused
            assert world.pushes() == []
            assert TOKEN not in world.trail.read_text()
            with redis.Redis.from_url(world.settings.redis.url or "") as client:
                for key in client.keys("*"):
                    if client.type(key) == b"string":
                        assert TOKEN.encode() not in (client.get(key) or b"")

    def test_a_secret_without_the_key_fails_the_task_at_once_not_at_the_deadline(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """The Secret lacks GITLAB_TOKEN: the pod waits in CreateContainerConfigError, which
        list_pods sees; the task fails ``pod_cannot_start`` naming the key, the Job goes."""
        with kubernetes_world(tmp_path, monkeypatch, redis_url, EXEMPT) as (world, standin):
            standin.add_secret(NAMESPACE, SECRET_NAME, {"SOMETHING_ELSE": "x"})
            started = time.monotonic()
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert time.monotonic() - started < 20  # TASK_TIMEOUT_S is 60
            assert finished["details"]["reason"] == "pod_cannot_start"
            assert "CreateContainerConfigError" in finished["error_message"]
            assert "couldn't find key GITLAB_TOKEN" in finished["error_message"]
            assert "k8s.api.list_pods" in actions(k8s_entries(world))
            no_job_left(world, standin)
            assert world.pushes() == []

    def test_deadline_exceeded_is_a_timeout_and_the_job_is_deleted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        extra = {**EXEMPT, "K8S_COMMAND": "sleep 60", "TASK_TIMEOUT_S": "2"}
        with kubernetes_world(tmp_path, monkeypatch, redis_url, extra) as (world, standin):
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert (finished["outcome"], finished["error"]) == ("failure", "timeout")
            assert (finished["details"]["status"], finished["details"]["reason"]) == (
                "timeout",
                "deadline_exceeded",
            )
            no_job_left(world, standin)
            assert world.pushes() == []

    def test_a_409_for_someone_elses_job_leaves_it_alone(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """The create answers 409 (a Job of that name exists, not this task's): get_job reads
        it, the task fails ``job_conflict``, and the foreign Job is not deleted."""
        with kubernetes_world(tmp_path, monkeypatch, redis_url, EXEMPT) as (world, standin):
            standin.faults.add(JOBS, Fault.http(409), method="POST")
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["reason"] == "job_conflict"
            calls = k8s_entries(world)
            assert [(e["action"], e["outcome"], e.get("http_status")) for e in calls] == [
                ("k8s.api.create_job", "failure", 409),
                ("k8s.api.get_job", "failure", 404),
            ]
            assert calls[0]["error"] == "client_error"
            assert standin.deleted == []
            assert world.pushes() == []

    def test_a_409_for_its_own_job_adopts_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """A create that reached the server but whose answer was lost (then 409 on the retry):
        the existing Job carries this task's labels and correlation id, so it is adopted,
        watched to its end, and deleted."""
        with kubernetes_world(tmp_path, monkeypatch, redis_url, EXEMPT) as (world, standin):
            original = standin._create_job

            async def create_then_conflict(request: Any, ns: str) -> Any:
                await original(request, ns)
                from agent_standins.kubernetes import _answer, _status

                return _answer(_status(409, "already exists"))

            standin.routes[0] = type(standin.routes[0])(
                "POST", standin.routes[0].pattern, create_then_conflict
            )
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["status"] == "pushed", finished
            got = [(e["action"], e.get("http_status")) for e in k8s_entries(world)]
            assert got[:2] == [("k8s.api.create_job", 409), ("k8s.api.get_job", 200)]
            assert got[-1] == ("k8s.api.delete_job", 200)
            no_job_left(world, standin)

    @pytest.mark.parametrize(("status", "error"), [(403, "auth_failure"), (500, "server_error")])
    def test_an_api_error_at_create_fails_the_task_audited(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        redis_url: str,
        status: int,
        error: str,
    ) -> None:
        with kubernetes_world(tmp_path, monkeypatch, redis_url, EXEMPT) as (world, standin):
            standin.faults.add(JOBS, Fault.http(status), method="POST")
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["reason"] == "k8s_api_error"
            assert f"HTTP {status}" in finished["error_message"]
            (call,) = k8s_entries(world)
            assert (call["action"], call["outcome"], call["http_status"], call["error"]) == (
                "k8s.api.create_job",
                "failure",
                status,
                error,
            )
            assert standin.job_names(NAMESPACE) == []
            assert world.pushes() == []

    def test_a_create_without_an_answer_is_deleted_to_be_sure(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """The create times out (no answer): the Job may exist, so the agent deletes it (here
        the API never created it: 404), and the task fails ``k8s_api_error``."""
        extra = {**EXEMPT, "K8S_API_TIMEOUT_S": "0.3"}
        with kubernetes_world(tmp_path, monkeypatch, redis_url, extra) as (world, standin):
            standin.faults.add(JOBS, Fault.slow(5), method="POST")
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["reason"] == "k8s_api_error"
            got = [(e["action"], e["outcome"], e.get("error")) for e in k8s_entries(world)]
            assert got == [
                ("k8s.api.create_job", "failure", "timeout"),
                ("k8s.api.delete_job", "failure", "not_found"),
            ]
            no_job_left(world, standin)

    def test_a_403_while_polling_ends_the_wait_and_deletes_the_job(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        extra = {**EXEMPT, "K8S_COMMAND": "sleep 30"}
        with kubernetes_world(tmp_path, monkeypatch, redis_url, extra) as (world, standin):
            standin.faults.add(f"{JOBS}/*", Fault.http(403), method="GET")
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["reason"] == "k8s_api_error"
            gets = [e for e in k8s_entries(world) if e["action"] == "k8s.api.get_job"]
            assert [(e["http_status"], e["error"]) for e in gets] == [(403, "auth_failure")]
            assert k8s_entries(world)[-1]["action"] == "k8s.api.delete_job"
            no_job_left(world, standin)

    def test_a_job_that_disappears_is_job_gone(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        extra = {**EXEMPT, "K8S_COMMAND": "sleep 30"}
        with kubernetes_world(tmp_path, monkeypatch, redis_url, extra) as (world, standin):
            standin.faults.add(f"{JOBS}/*", Fault.http(404), method="GET")
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["reason"] == "job_gone"
            gets = [e for e in k8s_entries(world) if e["action"] == "k8s.api.get_job"]
            assert [(e["http_status"], e["error"]) for e in gets] == [(404, "not_found")]
            assert k8s_entries(world)[-1]["action"] == "k8s.api.delete_job"
            no_job_left(world, standin)

    def test_a_transient_500_while_polling_is_retried_and_the_task_goes_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        with kubernetes_world(tmp_path, monkeypatch, redis_url, EXEMPT) as (world, standin):
            standin.faults.add(f"{JOBS}/*", Fault.http(500), method="GET", times=2)
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["status"] == "pushed", finished
            gets = [e for e in k8s_entries(world) if e["action"] == "k8s.api.get_job"]
            assert [(e["http_status"], e.get("error")) for e in gets[:3]] == [
                (500, "server_error"), (500, "server_error"), (200, None),
            ]  # fmt: skip
            no_job_left(world, standin)

    def test_poll_timeouts_are_retried_then_the_task_fails_and_the_job_goes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        """Every status read outlasts K8S_API_TIMEOUT_S: five timed-out polls (each audited,
        ``timeout``), then the wait ends, and the Job is deleted."""
        extra = {**EXEMPT, "K8S_COMMAND": "sleep 30", "K8S_API_TIMEOUT_S": "1"}
        with kubernetes_world(tmp_path, monkeypatch, redis_url, extra) as (world, standin):
            standin.faults.add(f"{JOBS}/*", Fault.slow(10), method="GET")
            cid = world.note("/copilot fix add a line about search to the README")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["reason"] == "k8s_api_error"
            gets = [e for e in k8s_entries(world) if e["action"] == "k8s.api.get_job"]
            assert [e["error"] for e in gets] == ["timeout"] * 5
            assert k8s_entries(world)[-1]["action"] == "k8s.api.delete_job"
            no_job_left(world, standin)

    def test_cancel_deletes_the_running_job(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
    ) -> None:
        extra = {**EXEMPT, "CODING_CHECK_COMMAND": "sleep 30"}
        with kubernetes_world(tmp_path, monkeypatch, redis_url, extra) as (world, standin):
            cid = world.note("/copilot fix add a line about search to the README")
            world.wait_for("copilot.patch.generated", cid)
            world.note("/copilot cancel")
            finished = world.wait_for("task.finished", cid)
            assert finished["details"]["status"] == "cancelled"
            assert k8s_entries(world)[-1]["action"] == "k8s.api.delete_job"
            no_job_left(world, standin)
            assert world.pushes() == []
