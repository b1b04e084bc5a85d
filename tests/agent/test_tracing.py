"""``gitlab_copilot_agent.tracing``: on only when ``OTEL_*`` say so, one plain line when they are
wrong, off it sets nothing up, and on a served agent exports its spans before it exits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agentproc import VALID, Served, bound, run
from otlpkit import OTLPReceiver

import auditkeep
import gitlab_copilot_agent
from gitlab_copilot_agent import tracing

PREFIX = "gitlab-copilot-agent: invalid configuration: "
PYTHONPATH = ":".join(
    str(Path(m.__file__ or "").resolve().parents[1]) for m in (gitlab_copilot_agent, auditkeep)
)


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "agent"}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": " Console , none "}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_which_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on
    assert tracing.config_problem(environ) is None


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'; use otlp, console, none",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported by this agent",
        ),
    ],
)
def test_a_wrong_variable_is_one_line_naming_it(environ: dict[str, str], line: str) -> None:
    assert tracing.config_problem(environ) == line
    with pytest.raises(tracing.TracingError) as caught:
        tracing.configure_from_env(environ)
    assert str(caught.value) == line
    assert not tracing.active()


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_serve_and_check_config_stop_with_one_line_before_binding(
    tmp_path: Path, command: str
) -> None:
    result = run(tmp_path, {**VALID, "OTEL_TRACES_EXPORTER": "zipkin"}, command)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"{PREFIX}OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'; use otlp, console, none\n"
    )
    assert bound(tmp_path) == []


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        ({}, "tracing: off (no OTEL_TRACES_EXPORTER, no OTLP endpoint)"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "tracing: on, exporters otlp"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
            "tracing: off (OTEL_SDK_DISABLED=true)",
        ),
    ],
)
def test_check_config_says_whether_tracing_is_on(
    tmp_path: Path, environ: dict[str, str], line: str
) -> None:
    result = run(tmp_path, {**VALID, **environ}, "check-config")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.endswith(f"\n{line}\nconfiguration OK\n")


def test_without_the_extra_the_line_says_what_to_install(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry.exporter"] = None
        from gitlab_copilot_agent import tracing
        print(tracing.config_problem({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        "OTEL_TRACES_EXPORTER: tracing needs opentelemetry.exporter.otlp.proto.http, which is "
        "not installed: pip install 'gitlab-copilot-agent[tracing]'\n"
    )


SCRIPT = r"""
import sys
import orjson
from gitlab_copilot_agent import tracing
{imports}
from auditkeep.testing import capture_events

def provider():
    if "opentelemetry.trace" not in sys.modules:
        return {{}}
    return {{"provider": type(sys.modules["opentelemetry.trace"].get_tracer_provider()).__name__}}

on = tracing.configure_from_env()
{app}
with tracing.span("task.clone"), capture_events() as (logger, sink):
    with logger.audited("gitlab.api.clone_repo"):
        pass
    assert logger.flush(5)
    entry = orjson.loads(sink.lines[0])
sys.stdout.write(orjson.dumps({{
    "on": on,
    "middleware": middleware,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"),
    "integration": "auditkeep.integrations.opentelemetry" in sys.modules,
    "trace_fields": sorted(k for k in entry if k in ("trace_id", "span_id")),
    **provider(),
}}).decode())
"""
# What a task process (run-task) loads: FastAPI is not among it.
TASK = SCRIPT.format(
    imports="import gitlab_copilot_agent.cli, gitlab_copilot_agent.tasks.main\n"
    "import gitlab_copilot_agent.tasks.runner, gitlab_copilot_agent.llm.factory",
    app="middleware = []",
)
# The service: the app and the modules behind it.
SERVICE = SCRIPT.format(
    imports="from gitlab_copilot_agent.main import create_app\n"
    "from gitlab_copilot_agent.settings import Settings\n"
    "import gitlab_copilot_agent.composition, gitlab_copilot_agent.dispatcher\n"
    "import gitlab_copilot_agent.state.redis_store, gitlab_copilot_agent.workflows.coding",
    app="app = create_app(Settings.from_env({'GITLAB_URL': 'http://127.0.0.1:9', "
    "'GITLAB_TOKEN': 'glpat-process-test-000000', "
    "'GITLAB_WEBHOOK_SECRET': 'process-test-webhook-secret'}))\n"
    "middleware = [m.cls.__name__ for m in app.user_middleware]",
)
OFF_ENVIRONMENTS = [{}, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}]


def report_of(script: str, environ: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    # The report comes first; a console exporter prints its spans after it, at exit.
    report, _ = json.JSONDecoder().raw_decode(proc.stdout)
    assert isinstance(report, dict)
    return report


@pytest.mark.parametrize("environ", OFF_ENVIRONMENTS, ids=["unset", "sdk-disabled"])
def test_off_a_task_process_imports_no_opentelemetry(environ: dict[str, str]) -> None:
    """run-task's modules, a step span, an audited call: not one ``opentelemetry`` module is
    loaded (though the packages are installed), and the entry has no trace field."""
    assert report_of(TASK, environ) == {
        "on": False,
        "middleware": [],
        "loaded": [],
        "integration": False,
        "trace_fields": [],
    }


@pytest.mark.parametrize("environ", OFF_ENVIRONMENTS, ids=["unset", "sdk-disabled"])
def test_off_the_service_sets_up_nothing(environ: dict[str, str]) -> None:
    """The service: no exporter loaded, no tracer provider set, no auditkeep hook, no
    middleware, no trace field.

    The service's dependencies load OpenTelemetry modules themselves when the packages are
    installed: FastAPI 0.16x the API (its native telemetry, which the agent turns off:
    ``tracing.FASTAPI_TELEMETRY_OFF``), redis-py 8 ``opentelemetry.sdk.metrics`` (its opt-in
    metrics). The agent adds nothing to that while tracing is off.
    """
    report = report_of(SERVICE, environ)
    loaded = report.pop("loaded")
    assert isinstance(loaded, list)
    assert [
        m for m in loaded if m.startswith(("opentelemetry.exporter", "opentelemetry.sdk.trace"))
    ] == []
    assert report == {
        "on": False,
        "middleware": [],
        "integration": False,
        "trace_fields": [],
        "provider": "ProxyTracerProvider",
    }


def test_on_the_same_scripts_see_opentelemetry() -> None:
    """Guards the tests above: with ``OTEL_TRACES_EXPORTER=console`` the SDK is loaded, the
    webhook middleware added, and the audited call's entry carries the span's ids."""
    environ = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    for script, middleware in ((TASK, []), (SERVICE, ["WebhookSpans"])):
        report = report_of(script, environ)
        assert report["on"] is True
        assert report["middleware"] == middleware
        assert "opentelemetry.sdk.trace" in report["loaded"]  # type: ignore[operator]
        assert report["integration"] is True
        assert report["trace_fields"] == ["span_id", "trace_id"]
        assert report["provider"] == "TracerProvider"


def test_the_collectors_credential_is_registered_with_the_redactor() -> None:
    """``OTEL_EXPORTER_OTLP_HEADERS``' values (percent-encoded, as the SDK takes them) are
    scrubbed from everything the agent writes once tracing is set up."""
    code = textwrap.dedent(
        """
        from gitlab_copilot_agent import tracing
        from auditkeep.redact import default_redactor
        assert tracing.configure_from_env()
        text = "sent Bearer otlp-Cr3dential-9f2a and otlp-Cr3dential-9f2a alone"
        print(default_redactor.scrub_then_cut(text, 500))
        tracing.shutdown()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={
            "PYTHONPATH": PYTHONPATH,
            "PATH": "/usr/bin:/bin",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20otlp-Cr3dential-9f2a",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "otlp-Cr3dential-9f2a" not in proc.stdout
    assert proc.stdout.startswith("sent ")


def test_a_served_agent_exports_its_webhook_span_before_it_exits(tmp_path: Path) -> None:
    """``serve`` as a real process with ``OTEL_TRACES_EXPORTER=otlp`` to a receiver on
    loopback: after SIGTERM (uvicorn re-raises it, so no atexit hook runs) the receiver holds
    the delivery's ``POST /webhook`` span, and the delivery's audit entry on stdout carries
    its trace and span ids."""
    with OTLPReceiver() as receiver:
        served = Served(
            tmp_path,
            {
                **VALID,
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only the shutdown's flush exports
            },
        )
        try:
            served.wait_listening()
            answer = httpx.post(
                f"{served.url}/webhook",
                content=b'{"object_kind": "push", "project_id": 42}',
                headers={
                    "content-type": "application/json",
                    "x-gitlab-event": "Push Hook",
                    "x-gitlab-token": VALID["GITLAB_WEBHOOK_SECRET"],
                    "x-gitlab-event-uuid": "5d0b6c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e",
                },
                timeout=30,
            )
        finally:
            served.stop()
        assert answer.status_code == 202, answer.text
        cid = answer.json()["correlation_id"]
        spans = [s for s in receiver.spans if s.attributes.get("correlation_id") == cid]
    (webhook,) = [s for s in spans if s.name == "POST /webhook"]
    assert webhook.parent_span_id == ""
    assert webhook.attributes["http.response.status_code"] == 202
    audit = [json.loads(line) for line in served.stdout().splitlines() if '"event_id"' in line]
    (entry,) = [e for e in audit if e["correlation_id"] == cid]
    assert entry["action"] == "webhook.auth.validated"
    assert (entry["trace_id"], entry["span_id"]) == (webhook.trace_id, webhook.span_id)
