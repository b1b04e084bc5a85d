"""LLM providers: every call leaves a request entry and a response entry, and nothing secret.

The OpenAI-compatible backend is driven over a real socket against the LLM
stand-in (faults scripted there). The Copilot SDK backend is driven through
the SDK's session boundary with a fake client/session that emits the SDK's own
event objects (parsed by the installed SDK from wire-shaped dicts), and the
fake is checked against the real classes' signatures so it cannot drift.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest

from agent_standins.faults import Fault
from agent_standins.llm import LLMStandin
from agent_standins.servers import ServerHandle, run_in_thread
from auditkeep import Actor
from auditkeep.context import correlation_scope
from auditkeep.logger import AuditLogger
from auditkeep.sinks.memory import InMemorySink
from auditkeep.testing import capture_events, validate_entries
from gitlab_copilot_agent.llm import (
    CODING_REQUEST,
    RESPONSE_RECEIVED,
    REVIEW_REQUEST,
    AuditedProvider,
    CodingRequest,
    CodingResult,
    DiffFile,
    LLMConnectionError,
    LLMHTTPError,
    LLMTimeoutError,
    ReviewRequest,
    ReviewResult,
    build_provider,
)
from gitlab_copilot_agent.llm.base import LLMBackend
from gitlab_copilot_agent.llm.copilot_sdk import (
    CopilotSDKBackend,
    _coding_permissions,
    _review_permissions,
    child_env,
    sdk_client_factory,
)
from gitlab_copilot_agent.llm.offline import OfflineBackend
from gitlab_copilot_agent.llm.openai_compat import OpenAICompatBackend
from gitlab_copilot_agent.settings import LLMSettings, Settings, SettingsError

PROMPT_CANARY = "PROMPT-CANARY-3b9d1e77"
API_KEY = "sk-test-key-0d8e2a6c4b1f9e7d5a3c"
GITHUB_TOKEN = "gho_0123456789abcdefABCDEF0123456789"

DIFF = "\n".join(
    [
        "@@ -1,3 +1,6 @@",
        " import os",
        "-OLD = 1",
        "+# TODO: remove this hack",
        "+print('debug')",
        " ",
        "+API_TOKEN = 'hunter2-very-secret'",
        "+x = " + "1 + " * 40 + "1",
    ]
)


def review_request(files: tuple[DiffFile, ...] | None = None) -> ReviewRequest:
    return ReviewRequest(
        prompt=f"{PROMPT_CANARY}\nReview this merge request.\n\n{DIFF}",
        files=files if files is not None else (DiffFile("src/app.py", DIFF),),
        project_id=42,
        mr_iid=7,
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def init_repo(path: Path) -> Path:
    """A committed git repository with one file (coding sessions work on a copy of one)."""
    path.mkdir(parents=True)
    (path / "README.md").write_text("# App\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(path.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    for args in (["init", "-q"], ["add", "--all"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)
    return path


@pytest.fixture
def captured() -> Iterator[tuple[AuditLogger, InMemorySink]]:
    with capture_events(service="gitlab-copilot-agent") as pair:
        yield pair


@pytest.fixture(autouse=True)
def _no_secret_in_process_output(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Nothing the process prints (the SDK's logging included) holds a prompt or a key."""
    yield
    out, err = capfd.readouterr()
    for secret in (PROMPT_CANARY, API_KEY, GITHUB_TOKEN):
        assert secret not in out + err


def entries_of(audit: AuditLogger, sink: InMemorySink) -> list[dict[str, Any]]:
    assert audit.flush(5.0)
    return validate_entries(sink.lines)


def assert_audited_pair(
    audit: AuditLogger,
    sink: InMemorySink,
    request_action: str,
    *,
    prompt: str,
    outcome: str,
    error: str | None = None,
    secrets: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The LLM entries are exactly one request then one response, linked and clean."""
    entries = [e for e in entries_of(audit, sink) if e["action"].startswith("copilot.sdk.")]
    assert [e["action"] for e in entries] == [request_action, RESPONSE_RECEIVED]
    request, response = entries
    assert request["correlation_id"] == response["correlation_id"]
    assert request["details"]["llm_call_id"] == response["details"]["llm_call_id"]
    assert request["event_id"] < response["event_id"]  # UUIDv7: time-ordered
    assert request["target"] == response["target"]
    assert request["details"]["prompt_chars"] == len(prompt)
    assert request["details"]["prompt_sha256"] == sha256(prompt)
    assert response["outcome"] == outcome
    assert response.get("error") == error
    assert response["duration_ms"] >= 0
    blob = b"\n".join(sink.lines)
    assert PROMPT_CANARY.encode() not in blob
    for secret in (API_KEY, GITHUB_TOKEN, *secrets):
        assert secret.encode() not in blob
    return request, response


# -- the shared wrapper ----------------------------------------------------------


class TestAuditedProvider:
    def test_pair_joins_the_callers_correlation_scope(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Inside a scope, both entries carry the scope's id and the MR target."""
        audit, sink = captured
        provider = AuditedProvider(OfflineBackend(), audit)
        request = review_request()
        with correlation_scope(Actor("webhook_event", "delivery-1")) as cid:
            asyncio.run(provider.review(request))
        req, _resp = assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="success"
        )
        assert req["correlation_id"] == cid
        assert req["actor"] == {"type": "webhook_event", "id": "delivery-1"}
        assert req["target"] == {"resource_type": "llm", "project_id": 42, "mr_iid": 7}
        assert req["details"]["provider"] == "offline"
        assert req["details"]["model"] == "offline-rules-1"
        assert "uncorrelated" not in req

    def test_pair_outside_a_scope_still_shares_one_correlation_id(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Without a caller scope the wrapper opens one, so the pair is still linked."""
        audit, sink = captured
        provider = AuditedProvider(OfflineBackend(), audit)
        request = review_request()
        asyncio.run(provider.review(request))
        req, _ = assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="success"
        )
        assert req["actor"] == {"type": "system", "id": "llm-provider"}

    def test_cancellation_is_recorded_as_a_failed_response(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A request cancelled mid-flight still gets its response entry: timeout, cancelled."""
        audit, sink = captured
        started = asyncio.Event()

        class Hanging(OfflineBackend):
            async def review(self, request: ReviewRequest) -> ReviewResult:
                started.set()
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

        provider = AuditedProvider(Hanging(), audit)
        request = review_request()

        async def main() -> None:
            task = asyncio.create_task(provider.review(request))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        _, resp = assert_audited_pair(
            audit,
            sink,
            REVIEW_REQUEST,
            prompt=request.prompt,
            outcome="failure",
            error="timeout",
        )
        assert resp["error_message"].startswith("CancelledError")
        assert resp["details"]["cancelled"] is True

    def test_a_backend_without_coding_raises_before_any_entry(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A backend that declares ``supports_coding = False``: nothing is sent or logged."""
        audit, sink = captured

        class ReviewOnly(OfflineBackend):
            supports_coding = False

        provider = AuditedProvider(ReviewOnly(), audit)
        assert provider.supports_coding is False
        with pytest.raises(NotImplementedError, match="does not answer coding requests"):
            asyncio.run(provider.code(CodingRequest(prompt="fix", working_directory=".")))
        assert entries_of(audit, sink) == []


# -- offline -------------------------------------------------------------------------


class TestOfflineBackend:
    def test_same_diff_gives_the_same_review_byte_for_byte(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Determinism: two runs produce identical text (and response hashes)."""
        audit, sink = captured
        provider = AuditedProvider(OfflineBackend(), audit)
        first = asyncio.run(provider.review(review_request()))
        second = asyncio.run(provider.review(review_request()))
        assert first == second
        responses = [e for e in entries_of(audit, sink) if e["action"] == RESPONSE_RECEIVED]
        assert [r["details"]["response_sha256"] for r in responses] == [sha256(first.text)] * 2

    def test_flags_added_lines_with_file_and_line(self) -> None:
        """TODOs, prints, credentials and long lines on added lines, numbered on the new side."""
        result = asyncio.run(OfflineBackend().review(review_request()))
        findings = [line for line in result.text.splitlines() if line.startswith("- `")]
        assert findings == [
            "- `src/app.py:2` — leftover `TODO` marker: track it in an issue instead",
            "- `src/app.py:3` — debug `print()` call: use logging or remove it",
            "- `src/app.py:5` — looks like a hard-coded credential: load it from configuration",
            "- `src/app.py:6` — line is 165 characters long (limit 120)",
        ]
        assert "hunter2" not in result.text
        assert result.finish_reason == "stop"
        assert result.model == "offline-rules-1"
        assert result.prompt_tokens is not None
        assert result.completion_tokens is not None

    def test_clean_diff_and_deleted_files_give_no_findings(self) -> None:
        """Context and removed lines are never flagged; deleted files are skipped."""
        clean = DiffFile("src/ok.py", "@@ -1,2 +1,2 @@\n-# TODO old\n+value = 1\n")
        gone = DiffFile("src/gone.py", "@@ -1 +0,0 @@\n-print('x')\n", deleted_file=True)
        result = asyncio.run(OfflineBackend().review(review_request((clean, gone))))
        assert "No issues found by the offline rules." in result.text
        assert "found 0 issue(s)" in result.text


# -- OpenAI-compatible, over a real socket -------------------------------------------


@pytest.fixture(scope="module")
def llm_server() -> Iterator[tuple[LLMStandin, ServerHandle]]:
    standin = LLMStandin(api_key=API_KEY)
    with run_in_thread(standin.app) as server:
        yield standin, server


@pytest.fixture
def llm(llm_server: tuple[LLMStandin, ServerHandle]) -> Iterator[tuple[LLMStandin, str]]:
    standin, server = llm_server
    standin.reset()
    yield standin, f"{server.url}/v1"
    standin.reset()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestOpenAICompatBackend:
    def test_review_succeeds_with_usage_and_correlation_header(
        self,
        llm: tuple[LLMStandin, str],
        captured: tuple[AuditLogger, InMemorySink],
    ) -> None:
        """The request has the Bearer key, model and messages; usage lands in the entry."""
        standin, base_url = llm
        audit, sink = captured
        provider = AuditedProvider(
            OpenAICompatBackend(base_url, API_KEY, "gpt-4o-mini", timeout_s=5.0), audit
        )
        request = review_request()

        async def main() -> ReviewResult:
            try:
                return await provider.review(request)
            finally:
                await provider.aclose()

        with correlation_scope(Actor("webhook_event", "d-1")) as cid:
            result = asyncio.run(main())
        req, resp = assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="success"
        )
        (completion,) = standin.completions()
        body, answer = completion["request"], completion["response"]
        assert body["model"] == "gpt-4o-mini"
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["messages"][1]["content"] == request.prompt
        (recorded,) = standin.requests
        assert recorded.headers["authorization"] == f"Bearer {API_KEY}"
        assert recorded.headers["x-correlation-id"] == cid == req["correlation_id"]
        assert result.text == answer["choices"][0]["message"]["content"]
        usage = answer["usage"]
        assert resp["details"] | {"llm_call_id": None} == {
            "provider": "openai",
            "llm_call_id": None,
            "model": "gpt-4o-mini",
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
            "response_chars": len(result.text),
            "response_sha256": sha256(result.text),
            "finish_reason": "stop",
            "model_calls": 1,
            "completion_id": answer["id"],
        }

    @pytest.mark.parametrize(
        ("fault", "error", "status"),
        [
            (Fault.http(401), "auth_failure", 401),
            (Fault.http(429, retry_after_s=7), "rate_limit", 429),
            (Fault.http(500), "server_error", 500),
            (Fault.http(503), "server_error", 503),
        ],
        ids=["401", "429", "500", "503"],
    )
    def test_error_answers_become_classified_failures(
        self,
        llm: tuple[LLMStandin, str],
        captured: tuple[AuditLogger, InMemorySink],
        fault: Fault,
        error: str,
        status: int,
    ) -> None:
        """The endpoint's status decides the error class; the key appears nowhere."""
        standin, base_url = llm
        audit, sink = captured
        standin.faults.add("*/chat/completions", fault)
        backend = OpenAICompatBackend(base_url, API_KEY, "gpt-4o-mini", timeout_s=5.0)
        provider = AuditedProvider(backend, audit)
        request = review_request()
        with pytest.raises(LLMHTTPError) as raised:
            asyncio.run(_review_and_close(provider, request))
        _, resp = assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="failure", error=error
        )
        assert raised.value.status_code == status
        assert resp["http_status"] == status
        assert resp["error_message"].startswith(f"LLMHTTPError: HTTP {status}")
        if status == 429:
            assert raised.value.retry_after == "7"
        for text in (str(raised.value), repr(raised.value), repr(backend), repr(provider)):
            assert API_KEY not in text

    def test_wrong_key_is_an_auth_failure_without_the_key_anywhere(
        self, llm: tuple[LLMStandin, str], captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """A real 401 from the stand-in's key check, with the wrong key kept out of the trail."""
        _, base_url = llm
        audit, sink = captured
        wrong = "sk-wrong-key-7a7a7a7a7a7a7a7a7a"
        provider = AuditedProvider(OpenAICompatBackend(base_url, wrong, "m", timeout_s=5.0), audit)
        request = review_request()
        with pytest.raises(LLMHTTPError) as raised:
            asyncio.run(_review_and_close(provider, request))
        assert_audited_pair(
            audit,
            sink,
            REVIEW_REQUEST,
            prompt=request.prompt,
            outcome="failure",
            error="auth_failure",
            secrets=(wrong,),
        )
        assert wrong not in str(raised.value)
        assert "Incorrect API key" in str(raised.value)

    def test_slow_answer_is_a_timeout(
        self, llm: tuple[LLMStandin, str], captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """No answer within ``timeout_s``: error class ``timeout``, no HTTP status."""
        standin, base_url = llm
        audit, sink = captured
        standin.faults.add("*/chat/completions", Fault.slow(3.0))
        provider = AuditedProvider(
            OpenAICompatBackend(base_url, API_KEY, "m", timeout_s=0.3), audit
        )
        request = review_request()
        with pytest.raises(LLMTimeoutError):
            asyncio.run(_review_and_close(provider, request))
        _, resp = assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="failure", error="timeout"
        )
        assert "http_status" not in resp
        assert resp["duration_ms"] >= 250

    def test_unreachable_endpoint_is_a_network_error(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Connection refused: error class ``network_error``."""
        audit, sink = captured
        base_url = f"http://127.0.0.1:{_free_port()}/v1"
        provider = AuditedProvider(OpenAICompatBackend(base_url, API_KEY, "m", timeout_s=2), audit)
        request = review_request()
        with pytest.raises(ConnectionError):
            asyncio.run(_review_and_close(provider, request))
        assert_audited_pair(
            audit,
            sink,
            REVIEW_REQUEST,
            prompt=request.prompt,
            outcome="failure",
            error="network_error",
        )

    @pytest.mark.parametrize(
        ("answer", "error", "tokens"),
        [
            (
                httpx.Response(
                    200,
                    json={
                        "model": "llama3",
                        "choices": [{"message": {"content": "LGTM"}, "finish_reason": "stop"}],
                    },
                ),
                None,
                None,
            ),
            (httpx.Response(200, text="<html>proxy login</html>"), "server_error", None),
            (httpx.Response(200, json={"choices": []}), "server_error", None),
        ],
        ids=["no-usage", "not-json", "no-choices"],
    )
    def test_odd_answers(
        self,
        captured: tuple[AuditLogger, InMemorySink],
        answer: httpx.Response,
        error: str | None,
        tokens: int | None,
    ) -> None:
        """Missing usage is audited as null; a 2xx that is no completion is a server error."""
        audit, sink = captured
        transport = httpx.MockTransport(lambda request: answer)
        backend = OpenAICompatBackend("http://llm.test/v1", None, "m", transport=transport)
        provider = AuditedProvider(backend, audit)
        request = review_request()
        if error is None:
            asyncio.run(_review_and_close(provider, request))
        else:
            with pytest.raises(Exception, match=r"completion|JSON"):
                asyncio.run(_review_and_close(provider, request))
        _, resp = assert_audited_pair(
            audit,
            sink,
            REVIEW_REQUEST,
            prompt=request.prompt,
            outcome="failure" if error else "success",
            error=error,
        )
        if error is None:
            assert resp["details"]["prompt_tokens"] is tokens
            assert resp["details"]["total_tokens"] is None
            assert resp["details"]["model"] == "llama3"


async def _review_and_close(provider: AuditedProvider, request: ReviewRequest) -> ReviewResult:
    try:
        return await provider.review(request)
    finally:
        await provider.aclose()


# -- Copilot SDK, through the session boundary -----------------------------------------


def _sdk() -> ModuleType | None:
    try:
        return importlib.import_module("copilot")
    except ImportError:
        return None


SDK = _sdk()
needs_sdk = pytest.mark.skipif(SDK is None, reason="github-copilot-sdk (the copilot extra) absent")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def make_event(kind: str, data: dict[str, Any]) -> Any:
    """A session event from its wire form: the SDK's own parser when installed."""
    wire = {
        "type": kind,
        "id": str(uuid.uuid4()),
        "timestamp": "2026-05-01T10:00:00.000Z",
        "data": data,
    }
    if SDK is not None:
        events = importlib.import_module("copilot.session_events")
        return events.session_event_from_dict(wire)
    return SimpleNamespace(
        type=SimpleNamespace(value=kind),
        agent_id=None,
        data=SimpleNamespace(**{_snake(k): v for k, v in data.items()}),
    )


def usage(model: str, tokens_in: int, tokens_out: int, reason: str = "stop") -> Any:
    return make_event(
        "assistant.usage",
        {
            "model": model,
            "inputTokens": tokens_in,
            "outputTokens": tokens_out,
            "finishReason": reason,
            "cost": 1.0,
            "apiCallId": f"call-{tokens_in}",
        },
    )


def message(content: str) -> Any:
    return make_event("assistant.message", {"content": content, "messageId": "msg-1"})


@dataclass
class FakeSession:
    """Behaves like ``copilot.CopilotSession`` for what the backend uses."""

    session_id: str
    script: list[Any]
    outcome: str = "idle"  # idle | error | timeout
    handlers: list[Callable[[Any], None]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    aborted: bool = False
    disconnected: bool = False
    edit: Callable[[Path], None] | None = None  # what the CLI would change in its directory
    workdir: Path | None = None

    def on(self, handler: Callable[[Any], None]) -> Callable[[], None]:
        self.handlers.append(handler)
        return lambda: self.handlers.remove(handler)

    async def send_and_wait(self, prompt: str, *, timeout: float = 60.0) -> Any:
        self.prompts.append(prompt)
        self.timeouts.append(timeout)
        if self.edit is not None and self.workdir is not None:
            self.edit(self.workdir)
        final = None
        for event in self.script:
            for handler in list(self.handlers):
                handler(event)
            if getattr(event.type, "value", None) == "assistant.message":
                final = event
        if self.outcome == "timeout":
            await asyncio.sleep(timeout)
            raise TimeoutError(f"Timeout after {timeout}s waiting for session.idle")
        if self.outcome == "error":
            raise Exception("Session error: see session.error")
        for handler in list(self.handlers):
            handler(make_event("session.idle", {}))
        return final

    async def abort(self) -> None:
        self.aborted = True

    async def disconnect(self) -> None:
        self.disconnected = True


@dataclass
class FakeClient:
    """Behaves like ``copilot.CopilotClient`` for what the backend uses."""

    sessions: list[FakeSession]
    authenticated: bool = True
    started: int = 0
    stopped: int = 0
    session_options: list[dict[str, Any]] = field(default_factory=list)

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def get_auth_status(self) -> Any:
        if SDK is not None:
            return SDK.GetAuthStatusResponse(isAuthenticated=self.authenticated, authType="token")
        return SimpleNamespace(isAuthenticated=self.authenticated)

    async def create_session(self, **options: Any) -> FakeSession:
        self.session_options.append(options)
        session = self.sessions.pop(0)
        session.workdir = Path(options["working_directory"])
        return session


def copilot_provider(
    audit: AuditLogger, client: FakeClient, timeout_s: float = 5.0
) -> AuditedProvider:
    backend = CopilotSDKBackend(model="gpt-5", timeout_s=timeout_s, client_factory=lambda: client)
    return AuditedProvider(backend, audit)


class TestOpenAICompatSecrets:
    def test_base_url_userinfo_never_reaches_an_error_or_a_repr(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """``cannot reach http://user:password@…`` is shown without the userinfo."""
        audit, sink = captured
        password = "userinfo-Pass-0c4f9e"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        backend = OpenAICompatBackend(
            f"http://llm-user:{password}@127.0.0.1:{closed}/v1", API_KEY, "m", timeout_s=2
        )
        provider = AuditedProvider(backend, audit)

        async def main() -> None:
            try:
                await provider.review(review_request())
            finally:
                await provider.aclose()

        with pytest.raises(LLMConnectionError) as raised:
            asyncio.run(main())
        shown = f"{raised.value}{raised.value!r}{backend!r}"
        assert f"cannot reach http://127.0.0.1:{closed}/v1" in str(raised.value)
        assert password not in shown
        assert "llm-user" not in shown
        assert password not in b"".join(sink.lines).decode()

    def test_an_echoed_key_is_scrubbed_before_the_message_is_cut(
        self, llm: tuple[LLMStandin, str], captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """The endpoint echoes the Authorization header at every offset around the cut."""
        standin, base_url = llm
        _audit, _ = captured
        offsets = range(300 - len(API_KEY) - 12, 302)
        for offset in offsets:
            standin.faults.add(
                "*/chat/completions",
                Fault.echo_header(400, "authorization", offset=offset),
                times=1,
            )
        backend = OpenAICompatBackend(base_url, API_KEY, "m", timeout_s=5)
        messages: list[str] = []

        async def main() -> None:
            try:
                for _ in offsets:
                    try:
                        await backend.review(review_request())
                    except LLMHTTPError as exc:
                        messages.append(str(exc))
            finally:
                await backend.aclose()

        asyncio.run(main())
        assert len(messages) == len(offsets)
        fragments = {API_KEY[i : i + 8] for i in range(len(API_KEY) - 7)}
        assert [m for m in messages if any(f in m for f in fragments)] == []


class TestCopilotSDKBackend:
    def test_review_sums_usage_events_and_cleans_up(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """Tokens are summed over every ``assistant.usage``; the session is disconnected."""
        audit, sink = captured
        answer = "## Review\n- `src/app.py:2` — remove the TODO"
        session = FakeSession(
            "sess-1",
            [usage("gpt-5", 1200, 40, "tool_calls"), usage("gpt-5", 1500, 300), message(answer)],
        )
        client = FakeClient([session])
        provider = copilot_provider(audit, client)
        request = review_request()

        async def main() -> ReviewResult:
            try:
                return await provider.review(request)
            finally:
                await provider.aclose()

        result = asyncio.run(main())
        _, resp = assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="success"
        )
        assert result.text == answer
        assert resp["details"] | {"llm_call_id": None} == {
            "provider": "copilot",
            "llm_call_id": None,
            "model": "gpt-5",
            "prompt_tokens": 2700,
            "completion_tokens": 340,
            "total_tokens": 3040,
            "response_chars": len(answer),
            "response_sha256": sha256(answer),
            "finish_reason": "stop",
            "model_calls": 2,
            "copilot_session": "sess-1",
            "message_id": "msg-1",
            "mode": "copilot",
            "models": ["gpt-5"],
            "premium_requests": 2.0,
            "tool_calls": 0,
        }
        assert session.prompts == [request.prompt]
        assert session.timeouts == [5.0]
        assert session.disconnected
        assert not session.handlers
        assert (client.started, client.stopped) == (1, 1)
        (options,) = client.session_options
        assert options["model"] == "gpt-5"
        assert options["system_message"] == {"mode": "append", "content": request.system_prompt}
        assert options["on_permission_request"] is _review_permissions
        scratch = Path(options["working_directory"])  # an empty scratch dir, removed at close
        assert scratch.name.startswith("copilot-review-")
        assert not scratch.exists()

    def test_client_is_started_once_for_many_requests(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """One CLI process serves every request; each request gets its own session."""
        audit, _ = captured
        sessions = [FakeSession(f"s{i}", [message("ok")]) for i in range(3)]
        client = FakeClient(list(sessions))
        provider = copilot_provider(audit, client)

        async def main() -> None:
            await asyncio.gather(*(provider.review(review_request()) for _ in range(3)))
            await provider.aclose()

        asyncio.run(main())
        assert (client.started, client.stopped) == (1, 1)
        assert all(s.disconnected for s in sessions)

    @pytest.mark.parametrize(
        ("error_data", "error", "status"),
        [
            (
                {"errorType": "rate_limit", "message": "slow down", "statusCode": 429},
                "rate_limit",
                429,
            ),
            ({"errorType": "authentication", "message": "bad token"}, "auth_failure", None),
            (
                {"errorType": "query", "message": "model failed", "statusCode": 502},
                "server_error",
                502,
            ),
        ],
        ids=["429", "auth", "502"],
    )
    def test_session_error_becomes_a_classified_failure(
        self,
        captured: tuple[AuditLogger, InMemorySink],
        error_data: dict[str, Any],
        error: str,
        status: int | None,
    ) -> None:
        """``session.error`` decides the error class (status first, then its type)."""
        audit, sink = captured
        session = FakeSession(
            "s", [usage("gpt-5", 10, 0), make_event("session.error", error_data)], outcome="error"
        )
        provider = copilot_provider(audit, FakeClient([session]))
        request = review_request()
        with pytest.raises(Exception, match="Copilot session error"):
            asyncio.run(_review_and_close(provider, request))
        _, resp = assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="failure", error=error
        )
        assert resp.get("http_status") == status
        assert error_data["message"] in resp["error_message"]
        assert session.disconnected

    def test_timeout_aborts_the_turn(self, captured: tuple[AuditLogger, InMemorySink]) -> None:
        """``send_and_wait`` timing out is a ``timeout`` failure and the turn is aborted."""
        audit, sink = captured
        session = FakeSession("s", [], outcome="timeout")
        provider = copilot_provider(audit, FakeClient([session]), timeout_s=0.05)
        request = review_request()
        with pytest.raises(LLMTimeoutError):
            asyncio.run(_review_and_close(provider, request))
        assert_audited_pair(
            audit, sink, REVIEW_REQUEST, prompt=request.prompt, outcome="failure", error="timeout"
        )
        assert session.aborted
        assert session.disconnected

    def test_unauthenticated_cli_is_an_auth_failure(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """The auth status is checked once after start; a refusal stops the client."""
        audit, sink = captured
        client = FakeClient([], authenticated=False)
        provider = copilot_provider(audit, client)
        request = review_request()
        with pytest.raises(Exception, match="not authenticated"):
            asyncio.run(_review_and_close(provider, request))
        assert_audited_pair(
            audit,
            sink,
            REVIEW_REQUEST,
            prompt=request.prompt,
            outcome="failure",
            error="auth_failure",
        )
        assert (client.started, client.stopped) == (1, 1)

    def test_coding_runs_in_a_scratch_copy_and_returns_its_diff(
        self, captured: tuple[AuditLogger, InMemorySink], tmp_path: Path
    ) -> None:
        """The session edits a copy of the clone; the clone is untouched; the patch is the edit."""
        audit, sink = captured
        clone = init_repo(tmp_path / "clone")

        def edit(workdir: Path) -> None:
            (workdir / "src").mkdir()
            (workdir / "src" / "fix.py").write_text("FIXED = True\n")

        session = FakeSession("s", [usage("gpt-5", 50, 20), message("Added src/fix.py")], edit=edit)
        client = FakeClient([session])
        provider = copilot_provider(audit, client)
        request = CodingRequest(
            prompt=f"{PROMPT_CANARY} fix the null check",
            working_directory=str(clone),
            project_id=42,
            mr_iid=7,
            issue_key="PROJ-12",
        )

        async def main() -> CodingResult:
            try:
                return await provider.code(request)
            finally:
                await provider.aclose()

        result = asyncio.run(main())
        req, resp = assert_audited_pair(
            audit, sink, CODING_REQUEST, prompt=request.prompt, outcome="success"
        )
        assert req["target"] == {
            "resource_type": "llm",
            "project_id": 42,
            "mr_iid": 7,
            "issue_key": "PROJ-12",
        }
        used = Path(client.session_options[0]["working_directory"])
        assert used != clone
        assert not used.exists()  # the scratch copy is gone
        assert not (clone / "src").exists()
        assert "+++ b/src/fix.py" in result.patch
        assert "+FIXED = True" in result.patch
        assert resp["details"]["patch_source"] == "working_tree"
        assert resp["details"]["patch_sha256"] == sha256(result.patch)

    def test_a_session_that_only_answers_gives_the_diff_in_its_answer(
        self, captured: tuple[AuditLogger, InMemorySink], tmp_path: Path
    ) -> None:
        audit, _ = captured
        clone = init_repo(tmp_path / "clone")
        diff = "diff --git a/x.txt b/x.txt\nnew file mode 100644\n--- /dev/null\n+++ b/x.txt\n"
        diff += "@@ -0,0 +1 @@\n+x\n"
        session = FakeSession("s", [message(f"Here:\n```diff\n{diff}```\n")])
        provider = copilot_provider(audit, FakeClient([session]))

        async def main() -> CodingResult:
            try:
                return await provider.code(CodingRequest("add x", working_directory=str(clone)))
            finally:
                await provider.aclose()

        assert asyncio.run(main()).patch == diff

    def test_cli_environment_is_an_allow_list(self) -> None:
        """The CLI never inherits GitLab, Jira or LLM secrets."""
        environ = {
            "PATH": "/usr/bin",
            "HOME": "/home/agent",
            "GITLAB_TOKEN": "glpat-secret-secret-secret",
            "GITLAB_WEBHOOK_SECRET": "s3cr3t-s3cr3t",
            "JIRA_API_TOKEN": "ATATT-secret",
            "LLM_API_KEY": API_KEY,
            "GITHUB_TOKEN": GITHUB_TOKEN,
            "AWS_SECRET_ACCESS_KEY": "aws",
            "HTTPS_PROXY": "http://proxy:3128",
        }
        assert child_env("/opt/copilot", environ) == {
            "PATH": "/usr/bin",
            "HOME": "/home/agent",
            "HTTPS_PROXY": "http://proxy:3128",
            "COPILOT_SKIP_CLI_DOWNLOAD": "1",
            "COPILOT_CLI_PATH": "/opt/copilot",
        }


@needs_sdk
class TestCopilotSDKContract:
    """The fake and the backend against the installed SDK's real classes."""

    def test_fake_methods_match_the_real_signatures(self) -> None:
        """Every method the backend calls exists on the real class, async alike."""
        assert SDK is not None
        pairs = [
            (SDK.CopilotClient, FakeClient, ["start", "stop", "get_auth_status", "create_session"]),
            (SDK.CopilotSession, FakeSession, ["on", "send_and_wait", "abort", "disconnect"]),
        ]
        for real_cls, fake_cls, names in pairs:
            for name in names:
                real, fake = getattr(real_cls, name), getattr(fake_cls, name)
                assert inspect.iscoroutinefunction(real) == inspect.iscoroutinefunction(fake), name
                real_params = inspect.signature(real).parameters
                for param in inspect.signature(fake).parameters.values():
                    if param.kind is param.VAR_KEYWORD:
                        continue
                    assert param.name in real_params, f"{fake_cls.__name__}.{name}({param.name})"
                    assert real_params[param.name].kind == param.kind, (name, param.name)
        init = inspect.signature(SDK.CopilotSession.__init__).parameters
        assert "session_id" in init  # the attribute the backend reads

    def test_backend_calls_bind_to_the_real_signatures(
        self, captured: tuple[AuditLogger, InMemorySink], tmp_path: Path
    ) -> None:
        """The options the backend passes are accepted by the real methods."""
        assert SDK is not None
        audit, _ = captured
        sessions = [FakeSession("a", [message("ok")]), FakeSession("b", [message("ok")])]
        client = FakeClient(list(sessions))
        backend = CopilotSDKBackend(
            model="gpt-5",
            client_factory=lambda: client,
            byok={"type": "openai", "base_url": "http://llm.test/v1", "api_key": API_KEY},
        )
        provider = AuditedProvider(backend, audit)

        async def main() -> None:
            await provider.review(review_request())
            clone = init_repo(tmp_path / "clone")
            await provider.code(CodingRequest(prompt="x", working_directory=str(clone)))
            await provider.aclose()

        asyncio.run(main())
        create = inspect.signature(SDK.CopilotClient.create_session)
        for options in client.session_options:
            create.bind(None, **options)
        send = inspect.signature(SDK.CopilotSession.send_and_wait)
        send.bind(None, sessions[0].prompts[0], timeout=sessions[0].timeouts[0])
        assert client.session_options[0]["provider"]["base_url"] == "http://llm.test/v1"

    def test_events_used_are_the_sdk_event_classes(self) -> None:
        """The fake's events are real SDK objects with the fields the backend reads."""
        events = importlib.import_module("copilot.session_events")
        event = usage("gpt-5", 1, 2)
        assert isinstance(event, events.SessionEvent)
        assert isinstance(event.data, events.AssistantUsageData)
        assert (event.data.input_tokens, event.data.output_tokens) == (1, 2)
        error = make_event("session.error", {"errorType": "x", "message": "m", "statusCode": 500})
        assert isinstance(error.data, events.SessionErrorData)
        assert error.data.status_code == 500

    def test_permission_policies(self, tmp_path: Path) -> None:
        """Reviews may use no tool; coding may read/write inside its directory only."""
        rpc = importlib.import_module("copilot.generated.rpc")
        assert isinstance(
            _review_permissions(SimpleNamespace(kind="read", path="x"), {}),
            rpc.PermissionDecisionReject,
        )
        decide = _coding_permissions(tmp_path)
        allowed = decide(SimpleNamespace(kind="write", file_name="src/app.py"), {})
        assert isinstance(allowed, rpc.PermissionDecisionApproveOnce)
        for request in (
            SimpleNamespace(kind="write", file_name="../escape.py"),
            SimpleNamespace(kind="read", path="/etc/passwd"),
            SimpleNamespace(kind="shell", full_command_text="curl evil"),
            SimpleNamespace(kind="url", url="http://x"),
        ):
            assert isinstance(decide(request, {}), rpc.PermissionDecisionReject), request

    def test_real_client_with_a_missing_cli_fails_cleanly(
        self, captured: tuple[AuditLogger, InMemorySink]
    ) -> None:
        """The real SDK client, a CLI path that does not exist: one failure entry, no token."""
        audit, sink = captured
        factory = sdk_client_factory(
            cli_path="/nonexistent/copilot", github_token=GITHUB_TOKEN, environ={"PATH": "/bin"}
        )
        backend = CopilotSDKBackend(model="gpt-5", timeout_s=5.0, client_factory=factory)
        provider = AuditedProvider(backend, audit)
        request = review_request()
        with pytest.raises(RuntimeError, match="not found"):
            asyncio.run(_review_and_close(provider, request))
        assert_audited_pair(
            audit,
            sink,
            REVIEW_REQUEST,
            prompt=request.prompt,
            outcome="failure",
            error="internal_error",
        )


# -- factory ---------------------------------------------------------------------------


def settings(**values: str) -> LLMSettings:
    """The LLM section of validated settings (``values`` as environment variables)."""
    return Settings.from_env(
        {
            "GITLAB_URL": "http://gitlab.test",
            "GITLAB_TOKEN": "glpat-0123456789abcdef",
            "GITLAB_WEBHOOK_SECRET": "webhook-secret",
            **{name.upper(): value for name, value in values.items()},
        }
    ).llm


class TestBuildProvider:
    @pytest.mark.parametrize(
        ("values", "backend_type"),
        [
            ({"llm_provider": "offline"}, OfflineBackend),
            (
                {
                    "llm_provider": "openai",
                    "llm_base_url": "http://llm.test/v1",
                    "llm_api_key": API_KEY,
                },
                OpenAICompatBackend,
            ),
            pytest.param(
                {"llm_provider": "copilot", "github_token": GITHUB_TOKEN},
                CopilotSDKBackend,
                marks=needs_sdk,
            ),
        ],
        ids=["offline", "openai", "copilot"],
    )
    def test_every_provider_is_wrapped_for_auditing(
        self,
        captured: tuple[AuditLogger, InMemorySink],
        values: dict[str, Any],
        backend_type: type[LLMBackend],
    ) -> None:
        """``build_provider`` never hands out an unaudited backend; reprs hold no key."""
        audit, _ = captured
        provider = build_provider(settings(**values), audit)
        assert isinstance(provider, AuditedProvider)
        assert isinstance(provider.backend, backend_type)
        assert API_KEY not in repr(provider) + repr(provider.backend)
        assert GITHUB_TOKEN not in repr(provider) + repr(provider.backend)
        asyncio.run(provider.aclose())

    def test_copilot_configuration_is_checked_at_start(
        self, captured: tuple[AuditLogger, InMemorySink], tmp_path: Path
    ) -> None:
        """A CLI path that is missing or not executable stops the settings, naming it."""
        audit, _ = captured
        not_executable = tmp_path / "copilot"
        not_executable.write_text("#!/bin/sh\n")
        for path, problem in ((tmp_path / "nope", "does not exist"), (not_executable, "not exec")):
            with pytest.raises(SettingsError, match=problem) as raised:
                settings(llm_provider="copilot", copilot_cli_path=str(path))
            assert list(raised.value.problems) == ["COPILOT_CLI_PATH"]
        # build_provider checks again for callers that build LLMSettings themselves.
        unchecked = LLMSettings.model_construct(
            provider="copilot", copilot_cli_path=str(not_executable), model="m", timeout_s=1.0
        )
        with pytest.raises(ValueError, match="not an executable"):
            build_provider(unchecked, audit)
        not_executable.chmod(0o755)
        if SDK is not None:  # without the extra, LLM_PROVIDER is refused (next test)
            configured = settings(llm_provider="copilot", copilot_cli_path=str(not_executable))
            asyncio.run(build_provider(configured, audit).aclose())

    def test_missing_sdk_is_a_clear_start_error(
        self, captured: tuple[AuditLogger, InMemorySink], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the ``copilot`` extra, the settings (and the factory) say what to install."""
        audit, _ = captured
        real_find_spec = importlib.util.find_spec

        def find_spec(name: str, package: str | None = None) -> Any:
            return None if name == "copilot" else real_find_spec(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        wanted = r"pip install 'gitlab-copilot-agent\[copilot\]'"
        with pytest.raises(SettingsError, match=wanted) as raised:
            settings(llm_provider="copilot")
        assert list(raised.value.problems) == ["LLM_PROVIDER"]
        unchecked = LLMSettings.model_construct(
            provider="copilot", copilot_cli_path=None, model="m", timeout_s=1.0
        )
        with pytest.raises(ValueError, match=r"github-copilot-sdk==1\.0\.27"):
            build_provider(unchecked, audit)
