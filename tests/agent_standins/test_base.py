"""The shared stand-in base: a third stand-in is a subclass, and faults echo headers on demand."""

from __future__ import annotations

import base64

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent_standins.base import Standin, match_route, path_of, route
from agent_standins.faults import Fault, Rendered
from agent_standins.gitlab import DEFAULT_TOKEN, GitLabStandin
from agent_standins.llm import DEFAULT_API_KEY, LLMStandin


class IssueTracker(Standin):
    """A minimal third stand-in (Jira-shaped): only what a subclass has to write."""

    def __init__(self) -> None:
        super().__init__(prefix="/rest/api/3")
        self.routes = [route("GET", "/issue/{key}", self._issue)]

    async def dispatch(self, request: Request) -> Response:
        return await match_route(self.routes, request, self.faults.relative(path_of(request)))

    def render_error(self, fault: Fault) -> Rendered:
        body = orjson.dumps({"errorMessages": [fault.message or f"HTTP {fault.status}"]})
        return Rendered(fault.status, {"content-type": "application/json"}, body)

    async def _issue(self, request: Request, key: str) -> Response:
        return JSONResponse({"key": key, "fields": {"summary": "Search"}})


class TestSharedBase:
    def test_a_new_standin_gets_faults_recording_and_serving_from_the_base(self) -> None:
        """Routes, 404/405, scripted faults in its own shape, recorded requests, reset."""
        tracker = IssueTracker()
        tracker.faults.add("/issue/PROJ-2", Fault.http(503), times=1)
        with tracker.serve() as server, httpx.Client(base_url=server.url) as client:
            ok = client.get("/rest/api/3/issue/PROJ-1")
            failed = client.get("/rest/api/3/issue/PROJ-2")
            recovered = client.get("/rest/api/3/issue/PROJ-2")
            unknown = client.get("/rest/api/3/nothing")
            wrong_method = client.post("/rest/api/3/issue/PROJ-1")
        assert ok.json() == {"key": "PROJ-1", "fields": {"summary": "Search"}}
        assert (failed.status_code, failed.json()) == (503, {"errorMessages": ["HTTP 503"]})
        assert recovered.status_code == 200
        assert (unknown.status_code, wrong_method.status_code) == (404, 405)
        assert [r.fault for r in tracker.requests] == [None, "http", None, None, None]
        tracker.reset()
        assert tracker.requests == []

    @pytest.mark.parametrize("offset", [0, 5, 480, 499, 700])
    def test_echo_puts_the_header_at_the_offset_in_gitlabs_error_shape(self, offset: int) -> None:
        """``Fault.echo_header``: the request's header value at exactly ``offset``."""
        gitlab = GitLabStandin()
        gitlab.faults.add("/user", Fault.echo_header(401, "PRIVATE-TOKEN", offset=offset))
        with gitlab.serve() as server:
            answer = httpx.get(
                f"{server.url}/api/v4/user", headers={"private-token": DEFAULT_TOKEN}
            )
        message = answer.json()["message"]
        assert answer.status_code == 401
        assert message.index(DEFAULT_TOKEN) == offset
        assert len(message) == max(600, offset + len(DEFAULT_TOKEN))

    def test_llm_standin_echoes_in_openai_shape_and_takes_basic_auth(self) -> None:
        """The LLM stand-in's echo is an OpenAI error; Basic auth works when configured."""
        llm = LLMStandin(basic_auth=("llm-user", "llm-password"))
        llm.faults.add("/v1/models", Fault.echo_header(400, "authorization", offset=10), times=1)
        basic = "Basic " + base64.b64encode(b"llm-user:llm-password").decode()
        with llm.serve() as server, httpx.Client(base_url=server.url) as client:
            echoed = client.get("/v1/models", headers={"authorization": basic})
            with_basic = client.get("/v1/models", headers={"authorization": basic})
            with_bearer = client.get(
                "/v1/models", headers={"authorization": f"Bearer {DEFAULT_API_KEY}"}
            )
            wrong = client.get("/v1/models", headers={"authorization": "Basic bm9wZTpub3Bl"})
        assert echoed.json()["error"]["message"].index(basic) == 10
        assert (with_basic.status_code, with_bearer.status_code, wrong.status_code) == (
            200,
            200,
            401,
        )
