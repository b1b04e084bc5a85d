"""Correlation scope on ``contextvars``.

One ``ContextVar`` per key, as structlog's ``contextvars`` module does. A scope
follows asyncio tasks by itself (each task copies the context when created).
Threads, executors and child processes need an explicit hand-over, provided by
``copy_context_to_thread``, ``ContextThreadPoolExecutor``, ``subprocess_env``
and ``scope_from_env``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, ParamSpec, Protocol, TypeVar

from auditkeep._event import Actor
from auditkeep._ids import new_correlation_id

P = ParamSpec("P")
R = TypeVar("R")

ENV_CORRELATION_ID: Final = "AUDIT_CORRELATION_ID"
ENV_ACTOR_TYPE: Final = "AUDIT_ACTOR_TYPE"
ENV_ACTOR_ID: Final = "AUDIT_ACTOR_ID"
CORRELATION_HEADER: Final = "X-Correlation-ID"

# W3C trace context in an environment (the OpenTelemetry convention for
# process carriers: the header names in upper case).
ENV_TRACE_CONTEXT: Final = ("TRACEPARENT", "TRACESTATE", "BAGGAGE")


class Propagation(Protocol):
    """What ``auditkeep.integrations.opentelemetry`` installs to carry a trace across processes.

    .. versionadded:: 0.1.0
    """

    def fields(self) -> dict[str, str]:
        """The current context as lower-case W3C headers (``traceparent``, ``tracestate``,
        ``baggage``); empty when no span is active."""
        ...

    def continued(
        self, carrier: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[str | None]:
        """Continue the trace in ``carrier`` (lower-case keys) for a block; yield the
        correlation id its baggage holds, if any."""
        ...

    def scope_opened(self, correlation_id: str) -> None:
        """A correlation scope opened: note its id on the current span."""
        ...


# None (no integration) costs one global read where it is used, and imports nothing.
_propagation: Propagation | None = None


def set_propagation(propagation: Propagation | None) -> Propagation | None:
    """Install (or, with None, remove) the trace-context hook; return the previous one."""
    global _propagation
    previous, _propagation = _propagation, propagation
    return previous


_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "auditkeep_correlation_id", default=None
)
_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "auditkeep_actor", default=None
)


@dataclass(frozen=True, slots=True)
class ScopeTokens:
    """Reset tokens returned by ``bind_correlation``.

    .. versionadded:: 0.1.0
    """

    correlation_id: contextvars.Token[str | None]
    actor: contextvars.Token[Actor | None]


def _validated(correlation_id: str) -> str:
    # Ids arrive from headers and environments; keep only real UUIDs so an
    # attacker-chosen string can never become a correlation key.
    return str(uuid.UUID(correlation_id))


def bind_correlation(actor: Actor, correlation_id: str | None = None) -> ScopeTokens:
    """Open a scope in the current context; undo it with ``reset_correlation``.

    Args:
        actor: who the following actions run on behalf of.
        correlation_id: an existing UUID to join, or None for a new one.

    Raises:
        ValueError: if ``correlation_id`` is not a UUID.

    .. versionadded:: 0.1.0
    """
    cid = new_correlation_id() if correlation_id is None else _validated(correlation_id)
    tokens = ScopeTokens(_correlation_id.set(cid), _actor.set(actor))
    propagation = _propagation
    if propagation is not None:
        with contextlib.suppress(Exception):  # tracing never stops a scope from opening
            propagation.scope_opened(cid)
    return tokens


def reset_correlation(tokens: ScopeTokens) -> None:
    """Close a scope opened by ``bind_correlation``.

    .. versionadded:: 0.1.0
    """
    _actor.reset(tokens.actor)
    _correlation_id.reset(tokens.correlation_id)


@contextlib.contextmanager
def correlation_scope(actor: Actor, correlation_id: str | None = None) -> Iterator[str]:
    """Run a block inside a correlation scope and yield its id.

    Example::

        with correlation_scope(Actor("webhook_event", delivery_id)) as cid:
            ...

    .. versionadded:: 0.1.0
    """
    tokens = bind_correlation(actor, correlation_id)
    try:
        yield _correlation_id.get() or ""
    finally:
        reset_correlation(tokens)


def get_correlation_id() -> str | None:
    """Return the current scope's correlation id, or None outside any scope.

    .. versionadded:: 0.1.0
    """
    return _correlation_id.get()


def get_actor() -> Actor | None:
    """Return the current scope's actor, or None outside any scope.

    .. versionadded:: 0.1.0
    """
    return _actor.get()


def correlation_headers() -> dict[str, str]:
    """Headers that carry the current scope to another service (empty outside a scope).

    .. versionadded:: 0.1.0
    """
    cid = _correlation_id.get()
    headers = {CORRELATION_HEADER: cid} if cid else {}
    propagation = _propagation
    if propagation is not None:
        headers.update(propagation.fields())
    return headers


def copy_context_to_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` so that, run in another thread, it sees the caller's scope.

    .. versionadded:: 0.1.0
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the submitter's scope.

    Covers ``submit`` and ``map``. ``asyncio.to_thread`` copies the context by
    itself, but ``loop.run_in_executor`` does not: pass it one of these, or
    install one with ``loop.set_default_executor``.

    .. versionadded:: 0.1.0
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        ctx = contextvars.copy_context()
        return super().submit(functools.partial(ctx.run, fn, *args, **kwargs))


def subprocess_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return an environment for a child process that carries the current scope.

    With ``auditkeep.integrations.opentelemetry`` enabled it carries the trace
    too: ``TRACEPARENT``/``TRACESTATE`` of the active span and ``BAGGAGE``
    with the correlation id (stale ones in ``base`` are replaced, or removed
    when no span is active).

    Args:
        base: the environment to extend (default: a copy of ``os.environ``).

    .. versionadded:: 0.1.0
    """
    env = dict(os.environ if base is None else base)
    for key in (ENV_CORRELATION_ID, ENV_ACTOR_TYPE, ENV_ACTOR_ID):
        env.pop(key, None)
    propagation = _propagation
    if propagation is not None:
        for key in ENV_TRACE_CONTEXT:
            env.pop(key, None)
        env.update({key.upper(): value for key, value in propagation.fields().items()})
    cid, actor = _correlation_id.get(), _actor.get()
    if cid is not None:
        env[ENV_CORRELATION_ID] = cid
    if actor is not None:
        env[ENV_ACTOR_TYPE] = actor.type
        env[ENV_ACTOR_ID] = actor.id
    return env


@contextlib.contextmanager
def scope_from_env(environ: MutableMapping[str, str] | None = None) -> Iterator[str | None]:
    """In a child process, re-open the scope its parent passed in the environment.

    Yields the correlation id, or None (and opens no scope) when the parent
    passed none. With ``auditkeep.integrations.opentelemetry`` enabled the
    block also continues the parent's trace (``TRACEPARENT``/``TRACESTATE``),
    and a correlation id that only the W3C ``BAGGAGE`` holds is used too.

    Raises:
        ValueError: if ``AUDIT_CORRELATION_ID`` (or the baggage's
            ``correlation_id``) is set but is not a UUID.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    propagation = _propagation
    with contextlib.ExitStack() as stack:
        cid = env.get(ENV_CORRELATION_ID)
        if propagation is not None:
            carrier = {key.lower(): env[key] for key in ENV_TRACE_CONTEXT if key in env}
            from_baggage = stack.enter_context(propagation.continued(carrier))
            cid = cid or from_baggage
        if not cid:
            yield None
            return
        actor = Actor(env.get(ENV_ACTOR_TYPE, "system"), env.get(ENV_ACTOR_ID, ""))
        with correlation_scope(actor, cid) as bound:
            yield bound
