"""The coding scenario with the agent as a real process (``serve``) and its task processes:

- **no secret anywhere**: after the scenario, every file under the task and clone directories
  (``.git/config`` included) and the git server, the audit file, the spools, every Redis key
  and value, the stdout/stderr of the agent and its task processes, and the argv of every
  process they started hold neither the GitLab token, the LLM key, the webhook secret, nor
  any 8-character fragment of one;
- **every call site audited, proven by instrumentation**: a PEP 578 hook (a ``sitecustomize``
  loaded by the agent and by each task process from ``PYTHONPATH``) records every
  ``subprocess.Popen`` and ``socket.connect``; each git process and each outgoing connection
  must have its audit entry.

Redis connections are matched too, to the entries that say what the store did (``details.store
== "redis"``: the request stored, the decision recorded, the result stored): a pooled connection
serves many calls, so an entry per round trip would say less than those.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from codingkit import (
    BRANCH,
    CHILD_PYTHONPATH,
    DEV,
    FILES,
    MAINTAINER,
    MR,
    OUTSIDER,
    PROJECT,
    REPO,
    US3,
    in_order,
)
from redisproc import RedisServer, free_port

from agent_standins.git_server import GitServer
from agent_standins.gitlab import GitLabStandin, diff_file
from agent_standins.llm import LLMStandin
from auditkeep.testing import read_trail, validate_entries

HOOK = r"""
import json, os, sys, threading, time
_LOG = {log!r}
_lock = threading.Lock()
def _write(record):
    with _lock:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
def _hook(event, args):
    if event == "subprocess.Popen":
        executable, argv, cwd, env = args
        argv = [argv] if isinstance(argv, (str, bytes)) else list(argv)
        _write({{"event": "popen", "pid": os.getpid(), "t": time.time(),
                 "executable": str(executable), "argv": [str(a) for a in argv]}})
    elif event == "socket.connect":
        sock, address = args
        _write({{"event": "connect", "pid": os.getpid(), "t": time.time(),
                 "family": int(sock.family), "address": repr(address)}})
sys.addaudithook(_hook)
"""
NETWORK_GIT = {"clone", "fetch", "push", "ls-remote"}
STEP_ACTIONS = ("gitlab.api.clone_repo", "copilot.patch.validated", "gitlab.api.push_branch")


def _random(prefix: str, length: int) -> str:
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length - len(prefix)))


@dataclass
class Run:
    tmp: Path
    trail: Path
    hook_log: Path
    redis: RedisServer
    git: GitServer
    gitlab: GitLabStandin
    stdout: Path
    stderr: Path
    secrets: dict[str, str]
    cids: dict[str, str]
    ports: dict[str, int]

    def entries(self) -> list[dict[str, Any]]:
        return validate_entries(read_trail(self.trail))

    def hook_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.hook_log.read_text().splitlines()]


def _post(client: httpx.Client, secret: str, event: str, payload: dict[str, Any]) -> str:
    answer = client.post(
        "/webhook",
        content=orjson.dumps(payload),
        headers={
            "content-type": "application/json",
            "x-gitlab-event": event,
            "x-gitlab-token": secret,
            "x-gitlab-event-uuid": str(uuid.uuid4()),
        },
    )
    assert answer.status_code == 202, answer.text
    cid: str = answer.json()["correlation_id"]
    return cid


def _note(client: httpx.Client, secret: str, text: str, user: dict[str, Any]) -> str:
    return _post(
        client,
        secret,
        "Note Hook",
        {
            "object_kind": "note",
            "user": user,
            "project_id": PROJECT,
            "project": {"id": PROJECT},
            "object_attributes": {
                "id": secrets.randbelow(10**9),
                "note": text,
                "noteable_type": "MergeRequest",
                "author_id": user["id"],
                "system": False,
                "action": "create",
            },
            "merge_request": {"iid": MR, "state": "opened"},
        },
    )


def _entries_until(trail: Path, done: Any, timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = validate_entries(read_trail(trail)) if trail.exists() else []
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {[e['action'] for e in found][-30:]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The scenario once: review, fix, two refused approvals, approval, push; agent stopped."""
    tmp = tmp_path_factory.mktemp("coding-process")
    token = _random("", 36)
    llm_key = _random("", 40)
    webhook_secret = _random("", 32)
    hook_dir = tmp / "hook"
    hook_dir.mkdir()
    hook_log = tmp / "hook-events.jsonl"
    (hook_dir / "sitecustomize.py").write_text(HOOK.format(log=str(hook_log)))
    trail = tmp / "audit.jsonl"
    redis_server = RedisServer(tmp)
    git = GitServer(tmp / "git", token=token).start()
    git.create_repo(REPO, FILES)
    git.create_branch(REPO, BRANCH)
    gitlab = GitLabStandin(token=token)
    gitlab.add_project(PROJECT, REPO, http_url_to_repo=git.repo_url(REPO))
    gitlab.add_merge_request(
        PROJECT,
        MR,
        source_branch=BRANCH,
        files=[diff_file("src/app.py", ["    return 'hello ' + name"], start_line=2)],
        head=lambda: git.head(REPO, BRANCH),
    )
    gitlab.add_member(PROJECT, MAINTAINER["id"], MAINTAINER["username"], 40)
    llm = LLMStandin(llm_key)  # reviews, and a diff for coding requests
    port = free_port()
    stdout, stderr = tmp / "agent.stdout", tmp / "agent.stderr"
    cids: dict[str, str] = {}
    ports: dict[str, int] = {}
    with gitlab.serve() as gitlab_server, llm.serve() as llm_server:
        ports.update(gitlab=gitlab_server.port, llm=llm_server.port)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": f"{hook_dir}:{CHILD_PYTHONPATH}",
            "HOME": str(tmp / "home"),
            "LANG": "C.UTF-8",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "GITLAB_URL": gitlab_server.url,
            "GITLAB_TOKEN": token,
            "GITLAB_WEBHOOK_SECRET": webhook_secret,
            "GITLAB_MAX_RETRIES": "0",
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": f"{llm_server.url}/v1",
            "LLM_API_KEY": llm_key,
            "REDIS_URL": redis_server.url,
            "GIT_ALLOWED_HTTP_HOSTS": "127.0.0.1",
            "TASK_WORK_DIR": str(tmp / "work"),
            "TASK_KEEP_WORK_DIRS": "true",
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_FILE_PATH": str(trail),
            "AUDIT_LOG_FILE_MAX_BYTES": "0",
            "AUDIT_LOG_SPOOL_DIR": str(tmp / "spool"),
            "AUDIT_LOG_FLUSH_INTERVAL_S": "0.05",
        }
        with stdout.open("w") as out, stderr.open("w") as err:
            agent = subprocess.Popen(
                [sys.executable, "-m", "gitlab_copilot_agent.cli", "serve"],
                env=env,
                stdout=out,
                stderr=err,
            )
            try:
                _wait_listening(agent, port, stderr)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                    cids["review"] = _post(
                        client,
                        webhook_secret,
                        "Merge Request Hook",
                        {
                            "object_kind": "merge_request",
                            "project": {"id": PROJECT},
                            "object_attributes": {"iid": MR, "action": "open", "state": "opened"},
                        },
                    )
                    cids["fix"] = _note(client, webhook_secret, "/copilot fix mention search", DEV)
                    requested = _entries_until(
                        trail,
                        lambda es: any(e["action"] == "approval_gate.requested" for e in es),
                    )
                    task_id = next(
                        e for e in requested if e["action"] == "approval_gate.requested"
                    )["details"]["task_id"]
                    for user in (DEV, OUTSIDER):
                        _note(client, webhook_secret, f"/copilot approve {task_id}", user)
                    _entries_until(
                        trail,
                        lambda es: (
                            sum(e["action"] == "approval_gate.approval_refused" for e in es) == 2
                        ),
                    )
                    cids["approve"] = _note(
                        client, webhook_secret, f"/copilot approve {task_id}", MAINTAINER
                    )
                    _entries_until(
                        trail,
                        lambda es: (
                            any(e["action"] == "task.finished" for e in es)
                            and sum(
                                e["action"] == "gitlab.api.post_mr_note"
                                and e["target"].get("comment_type") == "review"
                                for e in es
                            )
                            == 1
                        ),
                    )
            finally:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(40)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait(10)
    try:
        yield Run(
            tmp,
            trail,
            hook_log,
            redis_server,
            git,
            gitlab,
            stdout,
            stderr,
            {
                "GITLAB_TOKEN": token,
                "LLM_API_KEY": llm_key,
                "GITLAB_WEBHOOK_SECRET": webhook_secret,
            },
            cids,
            ports,
        )
    finally:
        git.stop()
        redis_server.stop()


def _wait_listening(agent: subprocess.Popen[bytes], port: int, stderr: Path) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise AssertionError(f"serve exited: {stderr.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"serve did not listen: {stderr.read_text()}")


def _fragments(secret: str) -> set[str]:
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


class TestTheScenarioRan:
    def test_the_push_happened_under_one_correlation_id(self, run: Run) -> None:
        entries = run.entries()
        task = [e for e in entries if e["correlation_id"] == run.cids["fix"]]
        assert in_order([e["action"] for e in task], US3)
        finished = next(e for e in task if e["action"] == "task.finished")
        assert finished["outcome"] == "success"
        assert "Copilot-Task-Id" in run.git.commit_message(REPO, BRANCH)


class TestNoSecretAnywhere:
    def test_no_secret_nor_any_8_character_fragment_anywhere(self, run: Run) -> None:
        places: dict[str, bytes] = {}
        roots = [run.tmp / "work", run.tmp / "git", run.tmp / "spool", run.tmp / "home"]
        for root in roots:
            for path in root.rglob("*") if root.exists() else ():
                if path.is_file() and not path.is_symlink():
                    places[str(path)] = path.read_bytes()
        clones = list((run.tmp / "work").rglob(".git/config"))
        assert clones, "the task's clone (with its .git/config) must be searched"
        places["audit file"] = run.trail.read_bytes()
        places["agent and task stdout"] = run.stdout.read_bytes()
        places["agent and task stderr"] = run.stderr.read_bytes()
        dump = run.redis.dump()
        assert any(k.startswith("copilot:result:") for k in dump)
        places.update({f"redis {k}": k.encode() + b" " + v for k, v in dump.items()})
        spawned = [e for e in run.hook_events() if e["event"] == "popen"]
        assert any("run-task" in e["argv"] for e in spawned)
        assert any(Path(e["argv"][0]).name == "git" for e in spawned)
        places["argv of every process started"] = "\n".join(
            " ".join(e["argv"]) + " " + e["executable"] for e in spawned
        ).encode()
        leaks = []
        for name, secret in run.secrets.items():
            for fragment in _fragments(secret):
                for where, content in places.items():
                    if fragment.encode() in content:
                        leaks.append((name, fragment, where))
        assert leaks == []
        assert len(places) > 20


def unmatched_git(entries: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[str]:
    """Git processes without their entry: a network command (clone, fetch, push, ls-remote)
    must be named in a step's ``details.git_commands`` (as many times as it ran); any other
    git process must be followed by the audited step that ran it (clone, validation, push)."""
    listed: dict[str, int] = {}
    for entry in entries:
        for command in (entry.get("details") or {}).get("git_commands", []):
            listed[command] = listed.get(command, 0) + 1
    steps = [_ts(e) for e in entries if e["action"] in STEP_ACTIONS]
    unmatched = []
    network: dict[str, int] = {}
    for spawn in events:
        if spawn["event"] != "popen" or Path(spawn["argv"][0]).name != "git":
            continue
        sub = _subcommand(spawn["argv"])
        if sub in NETWORK_GIT:
            network[sub] = network.get(sub, 0) + 1
        elif not any(t >= spawn["t"] for t in steps):
            unmatched.append(" ".join(spawn["argv"][:3]))
    for sub, count in network.items():
        if listed.get(sub, 0) < count:
            unmatched.append(f"{count} x git {sub}, named by {listed.get(sub, 0)} entries")
    return unmatched


def unmatched_connects(
    entries: list[dict[str, Any]], events: list[dict[str, Any]], ports: dict[str, int]
) -> list[str]:
    """Connections without an entry of their API after them (or to an unknown endpoint)."""
    endpoints: dict[int, Any] = {
        ports["gitlab"]: lambda e: (
            e["action"].startswith("gitlab.api.")
            and e["action"] not in ("gitlab.api.clone_repo", "gitlab.api.push_branch")
        ),
        ports["llm"]: lambda e: e["action"].startswith("copilot.sdk."),
        ports["redis"]: lambda e: (e.get("details") or {}).get("store") == "redis",
    }
    unmatched = []
    for connect in (e for e in events if e["event"] == "connect"):
        port = next((p for p in endpoints if connect["address"].endswith(f", {p})")), None)
        if port is None or not any(endpoints[port](e) and _ts(e) >= connect["t"] for e in entries):
            unmatched.append(connect["address"])
    return unmatched


class TestEveryCallSiteIsAudited:
    def test_every_git_process_has_its_entry(self, run: Run) -> None:
        entries = [e for e in run.entries() if e["correlation_id"] == run.cids["fix"]]
        events = run.hook_events()
        gits = [e for e in events if e["event"] == "popen" and Path(e["argv"][0]).name == "git"]
        assert len(gits) > 5
        assert unmatched_git(entries, events) == []
        assert [_subcommand(e["argv"]) for e in gits].count("clone") == 1
        assert [_subcommand(e["argv"]) for e in gits].count("push") == 1

    def test_every_other_process_the_agent_starts_has_its_entry(self, run: Run) -> None:
        """The task process: ``task.started`` before it; nothing else is started."""
        entries = run.entries()
        started = [_ts(e) for e in entries if e["action"] == "task.started"]
        others = [
            e for e in run.hook_events()
            if e["event"] == "popen" and Path(e["argv"][0]).name != "git"
        ]  # fmt: skip
        assert others
        for spawn in others:
            assert "run-task" in spawn["argv"], spawn["argv"]
            assert any(t <= spawn["t"] for t in started)
        assert len(others) == len(started) == 1

    def test_every_outgoing_connection_has_its_entry(self, run: Run) -> None:
        """Each connect (the agent's and the task process's) to GitLab, the LLM or Redis is
        followed by an entry of that API: ``gitlab.api.*``, ``copilot.sdk.*``, or one saying
        what the Redis store did."""
        events = run.hook_events()
        pids = {e["pid"] for e in events if e["event"] == "connect"}
        assert len(pids) == 2, "both the agent and its task process connect somewhere"
        ports = {**run.ports, "redis": run.redis.port}
        assert unmatched_connects(run.entries(), events, ports) == []

    def test_the_checks_catch_a_call_without_its_entry(self, run: Run) -> None:
        """An unaudited ``git fetch``, a late git process, a connection to somewhere else or
        one after the last entry of its API: each is reported."""
        entries = [e for e in run.entries() if e["correlation_id"] == run.cids["fix"]]
        events = run.hook_events()
        late = max(_ts(e) for e in run.entries()) + 1
        fetch = {"event": "popen", "pid": 1, "t": 0.0, "argv": ["git", "fetch", "origin"]}
        stray = {"event": "popen", "pid": 1, "t": late, "argv": ["git", "commit", "-m", "x"]}
        elsewhere = {"event": "connect", "pid": 1, "t": 0.0, "address": "('192.0.2.1', 443)"}
        after = {
            "event": "connect",
            "pid": 1,
            "t": late,
            "address": f"('127.0.0.1', {run.ports['llm']})",
        }
        assert unmatched_git(entries, [*events, fetch]) == ["1 x git fetch, named by 0 entries"]
        assert unmatched_git(entries, [*events, stray]) == ["git commit -m"]
        ports = {**run.ports, "redis": run.redis.port}
        assert unmatched_connects(run.entries(), [*events, elsewhere, after], ports) == [
            "('192.0.2.1', 443)",
            f"('127.0.0.1', {run.ports['llm']})",
        ]


def _subcommand(argv: list[str]) -> str:
    args = argv[1:]
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] in ("-c", "-C") else args[1:]
    return args[0] if args else ""


def _ts(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
