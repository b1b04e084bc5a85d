"""The LLM stand-in, the fault script and ``run_in_thread``, over real loopback sockets."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from agent_standins.faults import Fault, FaultScript
from agent_standins.llm import DEFAULT_API_KEY, LLMStandin, deterministic_review
from agent_standins.servers import ServerHandle, run_in_thread

AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
PROMPT = (
    "Merge request !7: Add search\n\nDiff:\n"
    "--- a/src/app.py\n+++ b/src/app.py\n@@ -3,1 +3,3 @@\n context\n-ROUTES = {}\n"
    "+from search import search\n+ROUTES = {'/search': search}\n"
    "--- a/README.md\n+++ b/README.md\n@@ -10,0 +10,1 @@\n+## Search\n"
)


@pytest.fixture(scope="module")
def llm() -> LLMStandin:
    return LLMStandin()


@pytest.fixture(scope="module")
def llm_server(llm: LLMStandin) -> Iterator[ServerHandle]:
    with run_in_thread(llm.app) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(llm: LLMStandin) -> None:
    llm.reset()


def chat(url: str, content: str = PROMPT, **kwargs: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, **{"headers": AUTH, **kwargs})


class TestDeterministicReview:
    def test_names_the_first_added_line(self) -> None:
        """The comment points at the first ``+`` line of the first hunk, on the new side."""
        review = orjson.loads(deterministic_review([{"role": "user", "content": PROMPT}]))
        assert [(c["file"], c["line"]) for c in review["comments"]] == [("src/app.py", 4)]
        assert review["summary"].startswith("Reviewed 2 changed file(s): src/app.py, README.md.")

    def test_same_prompt_same_answer(self) -> None:
        """Deterministic: equal prompts give equal reviews."""
        messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": PROMPT}]
        assert deterministic_review(messages) == deterministic_review(list(messages))

    def test_no_diff_no_comments(self) -> None:
        """Without a hunk the review has no inline comment."""
        review = orjson.loads(deterministic_review([{"role": "user", "content": "Hello"}]))
        assert review["comments"] == []


class TestLLMStandin:
    def test_answer_has_the_openai_shape(self, llm: LLMStandin, llm_server: ServerHandle) -> None:
        """id, object, model, choices[0].message, finish_reason and consistent usage."""
        answer = chat(llm_server.url).json()
        assert answer["object"] == "chat.completion"
        assert answer["model"] == "gpt-4o-mini"
        (choice,) = answer["choices"]
        assert (choice["index"], choice["finish_reason"], choice["message"]["role"]) == (
            0,
            "stop",
            "assistant",
        )
        assert orjson.loads(choice["message"]["content"])["comments"][0]["file"] == "src/app.py"
        usage = answer["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        assert [c["response"] for c in llm.completions()] == [answer]

    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer sk-wrong"}], ids=["missing", "wrong"]
    )
    def test_bad_key_is_401_with_an_error_body(
        self, headers: dict[str, str], llm_server: ServerHandle
    ) -> None:
        """OpenAI's ``{"error": {...}}`` body, code ``invalid_api_key``; the key is not echoed."""
        response = chat(llm_server.url, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert "sk-wrong" not in response.text

    @pytest.mark.parametrize(
        ("status", "error_type", "code"),
        [
            (429, "requests", "rate_limit_exceeded"),
            (500, "server_error", None),
            (503, "server_error", None),
        ],
    )
    def test_scripted_errors_have_openai_shapes(
        self,
        status: int,
        error_type: str,
        code: str | None,
        llm: LLMStandin,
        llm_server: ServerHandle,
    ) -> None:
        """Errors come with OpenAI's type and code; 429 adds retry-after and x-ratelimit-*."""
        llm.faults.add("/v1/chat/completions", Fault.http(status, retry_after_s=2), times=1)
        failed, recovered = chat(llm_server.url), chat(llm_server.url)
        error = failed.json()["error"]
        assert (failed.status_code, error["type"], error["code"]) == (status, error_type, code)
        assert failed.headers["retry-after"] == "2"
        if status == 429:
            assert failed.headers["x-ratelimit-remaining-requests"] == "0"
        assert recovered.status_code == 200

    def test_slow_answer_times_out_the_client(
        self, llm: LLMStandin, llm_server: ServerHandle
    ) -> None:
        """``Fault.slow`` holds the answer past the client's timeout."""
        llm.faults.add("*/chat/completions", Fault.slow(3.0))
        with pytest.raises(httpx.ReadTimeout):
            chat(llm_server.url, timeout=0.2)

    def test_reset_drops_the_connection(self, llm: LLMStandin, llm_server: ServerHandle) -> None:
        """``Fault.reset`` closes the socket without an HTTP answer."""
        llm.faults.add("*/chat/completions", Fault.reset(), times=1)
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            chat(llm_server.url)
        assert chat(llm_server.url).status_code == 200


class TestFaultScript:
    def test_rules_apply_in_order_and_run_out(self) -> None:
        """A rule with ``times`` is used up, then the next matching rule (or none) applies."""
        script = FaultScript(prefix="/api/v4")
        first, second = Fault.http(503), Fault.http(500)
        script.add("/projects/*", first, times=2)
        script.add("/projects/42", second, method="GET")
        taken = [script.take("GET", "/api/v4/projects/42") for _ in range(4)]
        assert taken == [first, first, second, second]
        assert script.take("POST", "/api/v4/projects/42") is None
        script.clear()
        assert script.take("GET", "/api/v4/projects/42") is None

    def test_times_must_be_positive(self) -> None:
        """``times=0`` is a mistake, not "never"."""
        with pytest.raises(ValueError, match="times"):
            FaultScript().add("/x", Fault.reset(), times=0)


class TestRunInThread:
    def test_serves_on_a_free_loopback_port_and_stops(self) -> None:
        """``url`` answers while running; ``stop()`` ends the thread and is idempotent."""
        handle = run_in_thread(LLMStandin().app)
        try:
            assert handle.host == "127.0.0.1"
            assert handle.port > 0
            assert httpx.get(f"{handle.url}/v1/models", headers=AUTH).status_code == 200
        finally:
            handle.stop()
        assert not handle.running
        handle.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{handle.url}/v1/models", headers=AUTH)

    def test_lifespan_runs_at_start_and_stop(self) -> None:
        """The app's lifespan startup runs before ``run_in_thread`` returns; shutdown on stop."""
        events: list[str] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            events.append("startup")
            yield
            events.append("shutdown")

        with run_in_thread(Starlette(lifespan=lifespan)):
            assert events == ["startup"]
        assert events == ["startup", "shutdown"]

    def test_failed_startup_raises(self) -> None:
        """A port already in use is reported, not waited on."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(RuntimeError, match="did not start"):
                run_in_thread(LLMStandin().app, port=port, startup_timeout_s=5.0)
