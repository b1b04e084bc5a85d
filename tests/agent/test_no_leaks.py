"""``serve`` as a process, fed secrets in every awkward form: none of them, nor any 8 characters
of one, reaches its stdout, its stderr, the audit file or the spool.

- tokens with a trailing newline are refused at start, naming each variable;
- then, with valid tokens: the LLM base URL carries userinfo (``user:password@``),
  the GitLab stand-in echoes the token in error bodies at every offset around the
  client's 500-character cut and the edge of its scrubbed window, the LLM stand-in
  echoes the Authorization header around its 300-character cut and once resets the
  connection (``LLMConnectionError`` names the URL), and a last delivery is reviewed
  end to end.

Secrets are random and shaped like no known credential, so only their registration
with the redactor (``Settings.secrets()``) can scrub them.
"""

from __future__ import annotations

import base64
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agent_standins.faults import Fault
from agent_standins.gitlab import DEFAULT_MR_IID, DEFAULT_PROJECT_ID, GitLabStandin
from agent_standins.llm import LLMStandin
from agent_standins.servers import ServerHandle

sys.path.insert(0, str(Path(__file__).parent))
from agentproc import Served, bound, run

MR_PATH = f"/projects/{DEFAULT_PROJECT_ID}/merge_requests/{DEFAULT_MR_IID}"
GITLAB_CUT = 500  # clients.gitlab._MAX_MESSAGE_CHARS
LLM_CUT = 300  # llm.openai_compat._MAX_ERROR_CHARS
WINDOW = 4096  # scrub.WINDOW_MARGIN


def _random(prefix: str, chars: int) -> str:
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(chars - len(prefix)))


@dataclass
class Secrets:
    gitlab_token: str
    webhook_secret: str
    signing_token: str
    llm_api_key: str
    llm_password: str

    @property
    def basic(self) -> str:
        return base64.b64encode(f"llm-user:{self.llm_password}".encode()).decode()

    def all(self) -> list[str]:
        signing_key = self.signing_token.removeprefix("whsec_")
        return [
            self.gitlab_token,
            self.webhook_secret,
            self.signing_token,
            signing_key,
            self.llm_api_key,
            self.llm_password,
            self.basic,
        ]


@pytest.fixture
def keys() -> Secrets:
    return Secrets(
        gitlab_token=_random("Gt", 28),
        webhook_secret=_random("Wh", 24),
        signing_token="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        llm_api_key=_random("Lk", 30),
        llm_password=_random("Pw", 20),
    )


def leaks(blob: str, values: list[str]) -> list[str]:
    """Every 8-character fragment of a secret found in ``blob``."""
    return sorted({v[i : i + 8] for v in values for i in range(len(v) - 7) if v[i : i + 8] in blob})


def everything_written(tmp: Path, served_output: str) -> str:
    """stdout + stderr + every file under the audit directory (trail and spool)."""
    files = sorted(p for p in (tmp / "audit").rglob("*") if p.is_file())
    assert any(p.name == "audit.jsonl" for p in files)
    return served_output + "".join(p.read_bytes().decode("latin-1") for p in files)


def test_tokens_with_a_trailing_newline_are_refused_naming_each(
    tmp_path: Path, keys: Secrets
) -> None:
    """The usual ``echo`` mistake: refused at start, one line, each variable named, no leak."""
    values = {
        "GITLAB_URL": "http://127.0.0.1:9",
        "GITLAB_TOKEN": keys.gitlab_token + "\n",
        "GITLAB_WEBHOOK_SECRET": keys.webhook_secret + "\n",
        "GITLAB_WEBHOOK_SIGNING_TOKEN": keys.signing_token + "\n",
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "LLM_API_KEY": keys.llm_api_key + "\r\n",
    }
    result = run(tmp_path, values, "serve")
    assert result.returncode == 2
    assert result.stderr.splitlines(keepends=True) == [result.stderr]
    for variable in (
        "GITLAB_TOKEN",
        "GITLAB_WEBHOOK_SECRET",
        "GITLAB_WEBHOOK_SIGNING_TOKEN",
        "LLM_API_KEY",
    ):
        assert f"{variable}: contains a control character" in result.stderr
    assert "Traceback" not in result.stderr
    assert leaks(result.stdout + result.stderr, keys.all()) == []
    assert bound(tmp_path) == []


class Harness:
    """The stand-ins in this process, the agent in its own, webhooks over loopback."""

    def __init__(self, tmp: Path, keys: Secrets, gitlab: ServerHandle, llm: ServerHandle) -> None:
        self.tmp = tmp
        self.keys = keys
        self.trail = tmp / "audit" / "audit.jsonl"
        self.served = Served(
            tmp,
            {
                "GITLAB_URL": gitlab.url,
                "GITLAB_TOKEN": keys.gitlab_token,
                "GITLAB_WEBHOOK_SECRET": keys.webhook_secret,
                "GITLAB_WEBHOOK_SIGNING_TOKEN": keys.signing_token,
                # Deliveries here carry the token (one more secret in flight); with a
                # signing token set, the agent takes them only when told to.
                "WEBHOOK_ALLOW_UNSIGNED": "true",
                "GITLAB_MAX_RETRIES": "0",
                "GITLAB_TIMEOUT_S": "5",
                "LLM_PROVIDER": "openai",
                "LLM_BASE_URL": f"http://llm-user:{keys.llm_password}@{llm.host}:{llm.port}/v1",
                "LLM_API_KEY": keys.llm_api_key,
                "LLM_TIMEOUT_S": "10",
                "AUDIT_LOG_DESTINATION": "file",
                "AUDIT_LOG_FILE_PATH": str(self.trail),
                "AUDIT_LOG_SPOOL_DIR": str(tmp / "audit" / "spool"),
                "AUDIT_LOG_FLUSH_INTERVAL_S": "0.05",
            },
        )
        (tmp / "audit").mkdir(exist_ok=True)
        self.deliveries = 0

    def open_mr(self) -> None:
        # Each delivery its own body, as GitLab's are (an exact body seen before is a replay).
        self.deliveries += 1
        body = orjson.dumps(
            {
                "object_kind": "merge_request",
                "project": {"id": DEFAULT_PROJECT_ID},
                "object_attributes": {
                    "iid": DEFAULT_MR_IID,
                    "action": "open",
                    "state": "opened",
                    "updated_at": f"2026-01-01T00:00:00.{self.deliveries:06d}Z",
                },
            }
        )
        answer = httpx.post(
            f"{self.served.url}/webhook",
            content=body,
            headers={
                "content-type": "application/json",
                "x-gitlab-event": "Merge Request Hook",
                "x-gitlab-token": self.keys.webhook_secret,
                "x-gitlab-event-uuid": str(uuid.uuid4()),
                "idempotency-key": str(uuid.uuid4()),
            },
            timeout=10,
        )
        assert answer.status_code == 202, answer.text

    def entries(self) -> list[dict[str, Any]]:
        if not self.trail.exists():
            return []
        return [orjson.loads(line) for line in self.trail.read_bytes().splitlines() if line]

    def wait_for(
        self, count: int, matches: Callable[[dict[str, Any]], bool], timeout_s: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(1 for e in self.entries() if matches(e)) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} matching entries: {self.served.stderr()}")


def failed(action: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["action"] == action and e["outcome"] == "failure"


def test_no_secret_reaches_output_trail_or_spool(tmp_path: Path, keys: Secrets) -> None:
    """Echoed tokens at every offset around each cut, a userinfo URL in a connection error,
    then a full review: zero secrets, zero 8-character fragments, anywhere the agent wrote."""
    gitlab = GitLabStandin(token=keys.gitlab_token)
    llm = LLMStandin(api_key=keys.llm_api_key, basic_auth=("llm-user", keys.llm_password))
    token_length = len(keys.gitlab_token)
    gitlab_offsets = [
        *range(GITLAB_CUT - token_length - 2, GITLAB_CUT + 2),
        *range(GITLAB_CUT + WINDOW - token_length - 2, GITLAB_CUT + WINDOW + 2),
    ]
    llm_offsets = list(range(LLM_CUT - 40, LLM_CUT + 2, 3))
    with gitlab.serve() as gitlab_server, llm.serve() as llm_server:
        harness = Harness(tmp_path, keys, gitlab_server, llm_server)
        try:
            harness.served.wait_listening()
            # 1. GitLab echoes the token in the MR's error body, once per offset.
            for offset in gitlab_offsets:
                gitlab.faults.add(
                    MR_PATH,
                    Fault.echo_header(404, "private-token", offset=offset, length=GITLAB_CUT * 10),
                    method="GET",
                    times=1,
                )
            for _ in gitlab_offsets:
                harness.open_mr()
            harness.wait_for(len(gitlab_offsets), failed("gitlab.api.get_mr_details"))
            # 2. The LLM echoes the Authorization header, then resets the connection once.
            for offset in llm_offsets:
                llm.faults.add(
                    "*/chat/completions",
                    Fault.echo_header(400, "authorization", offset=offset),
                    times=1,
                )
            llm.faults.add("*/chat/completions", Fault.reset(), times=1)
            for _ in range(len(llm_offsets) + 1):
                harness.open_mr()
            harness.wait_for(len(llm_offsets) + 1, failed("copilot.sdk.response_received"))
            # 3. A review end to end, through the userinfo URL (Basic auth to the LLM).
            harness.open_mr()
            harness.wait_for(1, lambda e: e["action"] == "gitlab.api.post_mr_note")
        finally:
            harness.served.stop()
    stderr = harness.served.stderr()
    assert len(gitlab.posted_notes(DEFAULT_PROJECT_ID, DEFAULT_MR_IID)) == 1
    # The leak surface was exercised: each failure was logged, scrubbed.
    failures = [line for line in stderr.splitlines() if '"workflow failed"' in line]
    assert len(failures) == len(gitlab_offsets) + len(llm_offsets) + 1
    # Where the token started inside the kept 499 characters, its replacement shows instead.
    inside = sum(1 for o in gitlab_offsets if o + len("[REDA") <= GITLAB_CUT - 1)
    assert sum("[REDA" in line for line in failures) >= inside > 20
    assert any("cannot reach http://127.0.0.1:" in line for line in failures)
    assert "Traceback" not in stderr
    assert "uvicorn.access" not in stderr  # no access log: the audit entry is the record
    written = everything_written(tmp_path, harness.served.stdout() + stderr)
    assert leaks(written, keys.all()) == []
