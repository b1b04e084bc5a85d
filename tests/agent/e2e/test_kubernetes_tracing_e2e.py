"""One trace from the webhook to the push when the task runs as a Kubernetes Job.

The chain of ``test_kubernetes_e2e`` (the agent on a real socket, the GitLab stand-in, a real
git server and redis-server, and the **Kubernetes API stand-in**, which runs the Job's command
as a local process with exactly the Job's environment — a real API server cannot run here)
with tracing on as an operator turns it on (``OTEL_*``). The agent's spans are read from the
SDK's ``InMemorySpanExporter``; the pod sets tracing up from the environment the Job gave it
and exports its spans over OTLP/HTTP to a receiver on loopback (decoded with the official
``opentelemetry-proto`` messages). Entries are read from the real file, schema-validated.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from otlpkit import OTLPReceiver
from test_kubernetes_e2e import EXEMPT, POD_ACTIONS, kubernetes_world

from gitlab_copilot_agent import tracing


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as found:
        yield found


def test_a_job_continues_the_webhooks_trace_to_the_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, receiver: OTLPReceiver
) -> None:
    """Every entry of ``/copilot fix`` run as a Job — the agent's, the ``k8s.api.*`` calls and
    the pod's — carries the ``POST /webhook`` span's trace id; each ``k8s.api.*`` entry names
    its own span; the pod's ``task.process`` span is a child of the agent's ``coding.task``
    (``TRACEPARENT`` in the Job's environment), and its push is a span of that trace."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        with kubernetes_world(tmp_path, monkeypatch, redis_url, EXEMPT) as (world, standin):
            cid = world.note("/copilot fix add a line about search to the README")
            world.wait_for("task.finished", cid)
            entries = world.entries(cid)
            job_env = standin.created[0]["spec"]["template"]["spec"]["containers"][0]
            names = {v["name"] for v in job_env["env"]}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                s.name == "coding.task" for s in exporter.get_finished_spans()
            ):
                time.sleep(0.02)
    finally:
        tracing.shutdown()
        provider.shutdown()

    assert {"TRACEPARENT", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} <= names
    spans = {format(s.context.span_id, "016x"): s for s in exporter.get_finished_spans()}
    (webhook,) = [
        s
        for s in spans.values()
        if s.name == "POST /webhook" and (s.attributes or {}).get("correlation_id") == cid
    ]
    trace_id = format(webhook.context.trace_id, "032x")
    assert {e.get("trace_id") for e in entries} == {trace_id}, [
        (e["action"], e.get("trace_id")) for e in entries
    ]
    k8s = [e for e in entries if e["action"].startswith("k8s.api.")]
    assert {e["action"] for e in k8s} >= {"k8s.api.create_job", "k8s.api.delete_job"}
    for entry in k8s:
        span = spans[entry["span_id"]]
        assert span.name == entry["action"]
        assert (span.attributes or {})["audit.event_id"] == entry["event_id"]
    (coding_task,) = [
        s
        for s in spans.values()
        if s.name == "coding.task" and format(s.context.trace_id, "032x") == trace_id
    ]

    pod = {s.span_id: s for s in receiver.spans if s.trace_id == trace_id}
    (process,) = [s for s in pod.values() if s.name == "task.process"]
    assert process.parent_span_id == format(coding_task.context.span_id, "016x")
    pod_entries = [e for e in entries if e["action"] in POD_ACTIONS]
    assert {e["action"] for e in pod_entries} >= {"gitlab.api.clone_repo", "gitlab.api.push_branch"}
    for entry in pod_entries:
        assert entry["span_id"] in pod, entry["action"]
    push = next(e for e in pod_entries if e["action"] == "gitlab.api.push_branch")
    assert pod[push["span_id"]].name == "gitlab.api.push_branch"
    assert world.pushes()
