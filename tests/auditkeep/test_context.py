"""Correlation scopes: binding, nesting, and hand-over to tasks, threads and child processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest

from auditkeep import (
    Actor,
    ContextThreadPoolExecutor,
    bind_correlation,
    copy_context_to_thread,
    correlation_headers,
    correlation_scope,
    get_actor,
    get_correlation_id,
    reset_correlation,
    scope_from_env,
    subprocess_env,
)
from auditkeep.logger import AuditLogger
from auditkeep.sinks.memory import InMemorySink

CID = "0192f3a4-5b6c-7d8e-9f01-23456789abcd"
WEBHOOK = Actor("webhook_event", "delivery-1")
SCOPE_VARIABLES = ("AUDIT_CORRELATION_ID", "AUDIT_ACTOR_TYPE", "AUDIT_ACTOR_ID")
THREADS_INHERIT_CONTEXT = bool(getattr(sys.flags, "thread_inherit_context", False))

CHILD = r"""
import sys
import orjson
from auditkeep import get_actor, get_correlation_id, scope_from_env

with scope_from_env() as yielded:
    actor = get_actor()
    seen = {
        "yielded": yielded,
        "correlation_id": get_correlation_id(),
        "actor": None if actor is None else [actor.type, actor.id],
    }
after = [get_correlation_id(), get_actor()]
sys.stdout.buffer.write(orjson.dumps({**seen, "after": after}))
"""


def _scope() -> tuple[str | None, Actor | None]:
    return get_correlation_id(), get_actor()


def _run_child(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stderr.decode()) == (0, "")
    result: dict[str, Any] = orjson.loads(proc.stdout)
    return result


class TestScope:
    def test_no_scope_by_default(self) -> None:
        """Outside any scope there is no correlation id and no actor."""
        assert _scope() == (None, None)

    def test_scope_sets_and_resets_id_and_actor(self) -> None:
        """correlation_scope binds the id and actor for its block and restores them after."""
        with correlation_scope(WEBHOOK, CID) as cid:
            assert cid == CID
            assert _scope() == (CID, WEBHOOK)
        assert _scope() == (None, None)

    def test_scope_without_id_makes_a_new_uuid7(self) -> None:
        """A scope opened without an id gets a fresh UUIDv7."""
        with correlation_scope(WEBHOOK) as first, correlation_scope(WEBHOOK) as second:
            pass
        assert first != second
        assert [uuid.UUID(first).version, uuid.UUID(second).version] == [7, 7]

    def test_scope_resets_when_the_block_raises(self) -> None:
        """An exception in the block still closes the scope."""
        with pytest.raises(RuntimeError), correlation_scope(WEBHOOK, CID):
            raise RuntimeError("boom")
        assert _scope() == (None, None)

    def test_nested_scopes_restore_the_outer_one(self) -> None:
        """Leaving an inner scope brings back the outer scope's id and actor."""
        poll = Actor("poll_cycle", "poll-1")
        seen = []
        with correlation_scope(WEBHOOK, CID):
            seen.append(_scope())
            with correlation_scope(poll) as inner:
                seen.append(_scope())
            seen.append(_scope())
        seen.append(_scope())
        assert seen == [(CID, WEBHOOK), (inner, poll), (CID, WEBHOOK), (None, None)]

    def test_bind_and_reset_correlation(self) -> None:
        """bind_correlation returns tokens that reset_correlation uses to undo it."""
        tokens = bind_correlation(WEBHOOK, CID)
        try:
            assert _scope() == (CID, WEBHOOK)
        finally:
            reset_correlation(tokens)
        assert _scope() == (None, None)

    def test_bind_correlation_normalises_a_uuid(self) -> None:
        """An uppercase or braced UUID is stored in its canonical lowercase form."""
        with correlation_scope(WEBHOOK, "{" + CID.upper() + "}") as cid:
            assert (cid, get_correlation_id()) == (CID, CID)

    @pytest.mark.parametrize(
        "bad",
        ["", "delivery-1", "0192f3a4-5b6c-7d8e-9f01", CID + "\nforged: line", "' OR 1=1 --"],
    )
    def test_bind_correlation_rejects_a_non_uuid(self, bad: str) -> None:
        """A correlation id that is not a UUID is refused and nothing is bound."""
        with pytest.raises(ValueError, match="UUID"):
            bind_correlation(WEBHOOK, bad)
        assert _scope() == (None, None)

    def test_correlation_headers(self) -> None:
        """X-Correlation-ID carries the scope's id; outside a scope there is no header."""
        assert correlation_headers() == {}
        with correlation_scope(WEBHOOK, CID):
            assert correlation_headers() == {"X-Correlation-ID": CID}
        assert correlation_headers() == {}


class TestAsyncio:
    def test_each_of_200_tasks_sees_only_its_own_scope(
        self, logger: AuditLogger, sink: InMemorySink
    ) -> None:
        """200 concurrent tasks, each in its own scope, never see another's id; nor do entries."""
        count = 200

        async def handle(n: int, all_inside: asyncio.Event, inside: list[int]) -> list[Any]:
            actor = Actor("webhook_event", f"delivery-{n}")
            with correlation_scope(actor) as cid:
                inside.append(n)
                if len(inside) == count:
                    all_inside.set()
                await all_inside.wait()  # every task is inside its scope at once
                seen = []
                for step in range(3):
                    await asyncio.sleep(0)
                    seen.append(_scope())
                    logger.emit("test.step", target={"resource_type": "task", "step": step})
                return [cid, actor, seen]

        async def main() -> list[list[Any]]:
            all_inside = asyncio.Event()
            inside: list[int] = []
            results = await asyncio.gather(*(handle(n, all_inside, inside) for n in range(count)))
            assert _scope() == (None, None)
            return list(results)

        results = asyncio.run(main())
        assert [seen for _, _, seen in results] == [[(cid, actor)] * 3 for cid, actor, _ in results]
        assert len({cid for cid, _, _ in results}) == count

        assert logger.flush(5)
        by_actor: dict[str, list[str]] = {}
        for entry in sink.entries():
            by_actor.setdefault(entry["actor"]["id"], []).append(entry["correlation_id"])
        assert by_actor == {actor.id: [cid] * 3 for cid, actor, _ in results}

    def test_to_thread_carries_the_scope(self) -> None:
        """asyncio.to_thread runs the function in the caller's scope."""

        async def main() -> tuple[str | None, Actor | None]:
            with correlation_scope(WEBHOOK, CID):
                return await asyncio.to_thread(_scope)

        assert asyncio.run(main()) == (CID, WEBHOOK)

    def test_run_in_executor_carries_the_scope_with_a_context_executor(self) -> None:
        """run_in_executor keeps the scope with ContextThreadPoolExecutor, given or as default."""

        async def main() -> list[tuple[str | None, Actor | None]]:
            loop = asyncio.get_running_loop()
            with ContextThreadPoolExecutor(max_workers=2) as executor:
                loop.set_default_executor(ContextThreadPoolExecutor(max_workers=2))
                with correlation_scope(WEBHOOK, CID):
                    return [
                        await loop.run_in_executor(executor, _scope),
                        await loop.run_in_executor(None, _scope),
                    ]

        assert asyncio.run(main()) == [(CID, WEBHOOK), (CID, WEBHOOK)]

    def test_run_in_executor_with_a_plain_executor_loses_the_scope(self) -> None:
        """With asyncio's stock default executor, run_in_executor does NOT carry the scope.

        This documents why ContextThreadPoolExecutor exists.
        """

        async def main() -> tuple[str | None, Actor | None]:
            loop = asyncio.get_running_loop()
            with correlation_scope(WEBHOOK, CID):
                return await loop.run_in_executor(None, _scope)

        assert asyncio.run(main()) == (None, None)


class TestThreads:
    def test_copy_context_to_thread_carries_the_scope(self) -> None:
        """A function wrapped by copy_context_to_thread sees the caller's scope in a new thread."""
        seen: list[tuple[str | None, Actor | None]] = []
        with correlation_scope(WEBHOOK, CID):
            wrapped = copy_context_to_thread(lambda: seen.append(_scope()))
        thread = threading.Thread(target=wrapped)
        thread.start()
        thread.join()
        assert seen == [(CID, WEBHOOK)]

    @pytest.mark.skipif(THREADS_INHERIT_CONTEXT, reason="new threads inherit the context here")
    def test_plain_thread_does_not_carry_the_scope(self) -> None:
        """A plain threading.Thread starts with an empty context: the hand-over is needed."""
        seen: list[tuple[str | None, Actor | None]] = []
        with correlation_scope(WEBHOOK, CID):
            thread = threading.Thread(target=lambda: seen.append(_scope()))
            thread.start()
            thread.join()
        assert seen == [(None, None)]

    def test_context_executor_submit_and_map_carry_the_scope(self) -> None:
        """ContextThreadPoolExecutor runs submit() and map() calls in the submitter's scope."""
        poll = Actor("poll_cycle", "poll-1")
        with ContextThreadPoolExecutor(max_workers=4) as executor:
            with correlation_scope(WEBHOOK, CID):
                submitted = executor.submit(_scope)
                mapped = list(executor.map(lambda _: _scope(), range(8)))
            with correlation_scope(poll) as other:
                later = executor.submit(_scope)
            outside = executor.submit(_scope)
            assert submitted.result() == (CID, WEBHOOK)
            assert later.result() == (other, poll)
            assert outside.result() == (None, None)
        assert mapped == [(CID, WEBHOOK)] * 8

    @pytest.mark.skipif(THREADS_INHERIT_CONTEXT, reason="new threads inherit the context here")
    def test_plain_executor_does_not_carry_the_scope(self) -> None:
        """A stock ThreadPoolExecutor runs tasks without the submitter's scope."""
        with ThreadPoolExecutor(max_workers=1) as executor, correlation_scope(WEBHOOK, CID):
            assert executor.submit(_scope).result() == (None, None)

    def test_entries_emitted_in_a_context_executor_carry_the_scope(
        self, logger: AuditLogger, sink: InMemorySink
    ) -> None:
        """Entries emitted from executor threads share the submitting scope's correlation id."""
        with (
            ContextThreadPoolExecutor(max_workers=4) as executor,
            correlation_scope(WEBHOOK) as cid,
        ):
            futures = [
                executor.submit(logger.emit, "test.work", target={"resource_type": "x", "n": n})
                for n in range(20)
            ]
            event_ids = [f.result() for f in futures]
        assert logger.flush(5)
        assert sorted(
            (e["event_id"], e["correlation_id"], e["actor"]["id"]) for e in sink.entries()
        ) == sorted((event_id, cid, "delivery-1") for event_id in event_ids)


class TestChildProcesses:
    def test_subprocess_env_carries_the_scope_to_a_child(self) -> None:
        """A child given subprocess_env() re-opens the same id and actor with scope_from_env."""
        actor = Actor("webhook_event", "delivery-42")
        with correlation_scope(actor, CID):
            env = subprocess_env()
        assert _run_child(env) == {
            "yielded": CID,
            "correlation_id": CID,
            "actor": ["webhook_event", "delivery-42"],
            "after": [None, None],
        }

    def test_child_without_scope_opens_none(self) -> None:
        """A child whose parent had no scope opens none (and stale variables are dropped)."""
        stale = {
            **os.environ,
            "AUDIT_CORRELATION_ID": CID,
            "AUDIT_ACTOR_TYPE": "webhook_event",
            "AUDIT_ACTOR_ID": "stale",
        }
        env = subprocess_env(stale)
        assert [k for k in SCOPE_VARIABLES if k in env] == []
        assert _run_child(env) == {
            "yielded": None,
            "correlation_id": None,
            "actor": None,
            "after": [None, None],
        }

    def test_subprocess_env_extends_the_given_base(self) -> None:
        """subprocess_env(base) keeps the base and adds exactly the scope's variables."""
        with correlation_scope(WEBHOOK, CID):
            env = subprocess_env({"PATH": "/bin", "JOB": "42"})
        assert env == {
            "PATH": "/bin",
            "JOB": "42",
            "AUDIT_CORRELATION_ID": CID,
            "AUDIT_ACTOR_TYPE": "webhook_event",
            "AUDIT_ACTOR_ID": "delivery-1",
        }

    def test_scope_from_env_rejects_an_invalid_id(self) -> None:
        """An AUDIT_CORRELATION_ID that is not a UUID raises ValueError and binds nothing."""
        environ = {"AUDIT_CORRELATION_ID": "not-a-uuid", "AUDIT_ACTOR_ID": "x"}
        with pytest.raises(ValueError, match="UUID"), scope_from_env(environ):
            pytest.fail("the scope must not open")
        assert _scope() == (None, None)

    def test_scope_from_env_without_actor_uses_system(self) -> None:
        """An id passed without an actor re-opens the scope with a system actor."""
        with scope_from_env({"AUDIT_CORRELATION_ID": CID}) as cid:
            assert (cid, *_scope()) == (CID, CID, Actor("system", ""))
        assert _scope() == (None, None)
