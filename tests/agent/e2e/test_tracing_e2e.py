"""One trace from the webhook to the push, across the task process; and none when tracing is off.

The real chain of ``codingkit`` (the agent on a real socket, the GitLab stand-in, a real git
server, a real redis-server, real ``run-task`` child processes writing the same audit file).
The agent runs in this process, so its spans are read from the SDK's
``InMemorySpanExporter`` (``tracing.install``). Each task process is a separate process that
sets tracing up from its environment as in production (``OTEL_TRACES_EXPORTER=otlp``, passed
on by the executor): it exports its spans over OTLP/HTTP to a receiver on loopback here, which
decodes them with the official ``opentelemetry-proto`` messages. The audit entries are read
from the real file and validated against the schema.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from codingkit import MAINTAINER, PROJECT, SECRET, World, coding_world
from otlpkit import OTLPReceiver

from gitlab_copilot_agent import tracing

EXEMPT = {"APPROVAL_EXEMPT_PROJECTS": str(PROJECT)}
CHILD_ACTIONS = {
    "gitlab.api.clone_repo",
    "copilot.sdk.coding_request",
    "copilot.sdk.response_received",
    "copilot.patch.generated",
    "copilot.patch.validated",
    "gitlab.api.push_branch",
}
TASK_STEPS = {"task.clone", "task.code", "task.validate", "task.commit", "task.push"}


def hex_ids(span: ReadableSpan) -> tuple[str, str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = format(span.parent.span_id, "016x") if span.parent is not None else ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), parent


def finished(
    exporter: InMemorySpanExporter,
    wanted: Callable[[ReadableSpan], bool],
    at_least: int = 1,
    timeout_s: float = 10,
) -> list[ReadableSpan]:
    """The finished spans ``wanted`` accepts, once there are ``at_least`` (a span ends after
    the work the test waited for: the reply, the response)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [s for s in exporter.get_finished_spans() if wanted(s)]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as found:
        yield found


@contextmanager
def traced_world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    receiver: OTLPReceiver,
    extra: dict[str, str],
) -> Iterator[tuple[World, InMemorySpanExporter]]:
    # What the operator sets; the agent in this process is given its provider directly.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        with coding_world(tmp_path, monkeypatch, redis_url=redis_url, extra=extra) as world:
            yield world, exporter
    finally:
        tracing.shutdown()
        provider.shutdown()


@pytest.fixture
def traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, receiver: OTLPReceiver
) -> Iterator[tuple[World, InMemorySpanExporter]]:
    with traced_world(tmp_path, monkeypatch, redis_url, receiver, EXEMPT) as found:
        yield found


def test_one_trace_spans_webhook_gitlab_calls_task_process_and_push(
    traced: tuple[World, InMemorySpanExporter], receiver: OTLPReceiver
) -> None:
    """``/copilot fix`` (approval exempt): every entry of the command, the task process's
    included, carries one trace id, that of the ``POST /webhook`` span; each call's entry
    names its own span; the task process's spans continue the agent's ``coding.task`` span."""
    world, exporter = traced
    cid = world.note("/copilot fix add a line about search to the README", note_id=3001)
    world.wait_for("task.finished", cid)
    entries = world.entries(cid)
    assert {e["action"] for e in entries} >= CHILD_ACTIONS
    # coding.task and webhook.handle end just after task.finished is written.
    finished(exporter, lambda s: s.name in ("coding.task", "webhook.handle"), at_least=2)
    agent_spans = {hex_ids(s)[1]: s for s in exporter.get_finished_spans()}

    (webhook,) = [
        s
        for s in agent_spans.values()
        if s.name == "POST /webhook" and (s.attributes or {}).get("correlation_id") == cid
    ]
    trace_id, webhook_span_id, webhook_parent = hex_ids(webhook)
    assert webhook_parent == ""  # a new root: the sender does not choose the trace
    assert (webhook.attributes or {})["http.response.status_code"] == 202

    # One trace id on every entry of the command, in the agent and in the task process.
    assert {e.get("trace_id") for e in entries} == {trace_id}, [
        (e["action"], e.get("trace_id")) for e in entries
    ]
    validated = next(e for e in entries if e["action"] == "webhook.auth.validated")
    assert validated["span_id"] == webhook_span_id

    # The agent's own calls (GitLab API, Redis) are spans of that trace, and each call's
    # entry names the call's own span.
    for entry in entries:
        if entry["action"].startswith("gitlab.api.") and entry["action"] not in CHILD_ACTIONS:
            span = agent_spans[entry["span_id"]]
            assert span.name == entry["action"]
            assert (span.attributes or {})["audit.event_id"] == entry["event_id"]
            assert hex_ids(span)[0] == trace_id
    names = {s.name for s in agent_spans.values() if hex_ids(s)[0] == trace_id}
    assert {"webhook.handle", "coding.task", "redis SET", "gitlab.api.post_mr_note"} <= names
    (coding_task,) = [
        s for s in agent_spans.values() if s.name == "coding.task" and hex_ids(s)[0] == trace_id
    ]
    task_started = next(e for e in entries if e["action"] == "task.started")
    assert task_started["span_id"] == hex_ids(coding_task)[1]
    # The correlation id is an attribute of every span of the command.
    for span in agent_spans.values():
        if hex_ids(span)[0] == trace_id:
            assert (span.attributes or {}).get("correlation_id") == cid, span.name

    # The task process: its spans reached the OTLP receiver at its exit, in the same trace,
    # its root a child of the agent's coding.task span (TRACEPARENT).
    child = {s.span_id: s for s in receiver.spans if s.trace_id == trace_id}
    (process,) = [s for s in child.values() if s.name == "task.process"]
    assert process.parent_span_id == hex_ids(coding_task)[1]
    steps = {s.name: s for s in child.values() if s.name in TASK_STEPS}
    assert set(steps) == TASK_STEPS
    assert {s.parent_span_id for s in steps.values()} == {process.span_id}
    for entry in entries:
        if entry["action"] in CHILD_ACTIONS:
            assert entry["span_id"] in child, entry["action"]
            assert entry["span_id"] not in agent_spans
    push = next(e for e in entries if e["action"] == "gitlab.api.push_branch")
    push_span = child[push["span_id"]]
    assert push_span.name == "gitlab.api.push_branch"
    assert push_span.parent_span_id == steps["task.push"].span_id
    assert push_span.attributes["correlation_id"] == cid
    assert {s.attributes.get("correlation_id") for s in child.values()} == {cid}
    assert push_span.attributes["audit.event_id"] == push["event_id"]
    clone = next(e for e in entries if e["action"] == "gitlab.api.clone_repo")
    assert child[clone["span_id"]].parent_span_id == steps["task.clone"].span_id
    assert world.pushes()  # the push really happened


def test_tracing_off_the_whole_chain_writes_no_trace_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """Without ``OTEL_*`` the same scenario's entries, the task process's included, have
    neither ``trace_id`` nor ``span_id``, and the task process got no ``TRACEPARENT``."""
    assert not tracing.active()
    with coding_world(tmp_path, monkeypatch, redis_url=redis_url, extra=EXEMPT) as world:
        cid = world.note("/copilot fix add a line about search to the README", note_id=3002)
        world.wait_for("task.finished", cid)
        entries = world.entries(cid)
    assert {e["action"] for e in entries} >= CHILD_ACTIONS
    assert [e["action"] for e in entries if "trace_id" in e or "span_id" in e] == []


def test_a_senders_traceparent_and_baggage_are_not_continued(
    traced: tuple[World, InMemorySpanExporter],
) -> None:
    """A delivery carrying its own ``traceparent``/``baggage`` still starts a new trace: the
    sender, unauthenticated when the span opens, chooses neither the trace id nor the
    correlation id, and its baggage goes nowhere. It is the only server span: FastAPI's own
    telemetry is off."""
    world, exporter = traced
    forged_trace = "a" * 32
    forged_cid = "0192f3a4-5b6c-7d8e-9f01-23456789abcd"
    answer = world.client.post(
        "/webhook",
        content=b'{"object_kind": "push", "project_id": 42}',
        headers={
            "content-type": "application/json",
            "x-gitlab-event": "Push Hook",
            "x-gitlab-token": SECRET,
            "x-gitlab-event-uuid": "7f4b8a2e-0c1d-4e5f-8a9b-0c1d2e3f4a5b",
            "traceparent": f"00-{forged_trace}-{'b' * 16}-01",
            "baggage": f"correlation_id={forged_cid},tenant=evil",
        },
    )
    assert answer.status_code == 202, answer.text
    cid = answer.json()["correlation_id"]
    assert cid != forged_cid
    (entry,) = world.entries(cid)
    assert entry["trace_id"] != forged_trace
    # The span ends once the response is sent, which may be just after the client read it.
    servers = finished(exporter, lambda s: s.kind is SpanKind.SERVER)
    assert [s.name for s in servers] == ["POST /webhook"]
    assert servers[0].parent is None
    assert hex_ids(servers[0])[0] == entry["trace_id"]
    assert set(servers[0].attributes or {}) == {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "correlation_id",
    }


def test_with_an_approval_the_task_runs_in_the_approving_deliverys_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, receiver: OTLPReceiver
) -> None:
    """``fix`` then ``approve``: the task's entries keep the ``fix`` correlation id (the
    trail's contract) and carry the trace of the approving delivery, which started the task;
    the ``fix`` delivery's own entries carry its own trace."""
    with traced_world(tmp_path, monkeypatch, redis_url, receiver, {}) as (world, exporter):
        cid = world.note("/copilot fix add a line about search to the README", note_id=3003)
        task_id = world.requested_task(cid)
        approver_cid = world.note(f"/copilot approve {task_id}", MAINTAINER, note_id=3004)
        world.wait_for("task.finished", cid)
        entries = world.entries(cid)
        webhooks = {
            (s.attributes or {}).get("correlation_id"): hex_ids(s)[0]
            for s in finished(exporter, lambda s: s.name == "POST /webhook", at_least=2)
        }
        (coding_task,) = finished(exporter, lambda s: s.name == "coding.task")
        handles = finished(exporter, lambda s: s.name == "webhook.handle", at_least=2)
    fix_trace, approve_trace = webhooks[cid], webhooks[approver_cid]
    assert fix_trace != approve_trace
    by_action = {e["action"]: e for e in entries}
    for action in ("copilot.command.received", "approval_gate.requested"):
        assert by_action[action]["trace_id"] == fix_trace
    for action in ("approval_gate.decision", "task.started", "task.finished", *CHILD_ACTIONS):
        assert by_action[action]["trace_id"] == approve_trace, action
    assert by_action["task.started"]["details"]["trigger_correlation_id"] == approver_cid
    # The approving delivery's own spans name it; the task's span names the task's.
    assert (coding_task.attributes or {})["correlation_id"] == cid
    assert {(s.attributes or {})["correlation_id"] for s in handles} == {cid, approver_cid}
