"""The state store contract, shared by the Redis and the in-memory store.

Every value is a JSON object that carries the ``correlation_id`` of the
command it belongs to (``put`` refuses one without it), so a value found in
Redis leads back to its trail with ``auditkeep trace``. Keys expire on the
store's clock (Redis ``PX``), never only on the agent's.

Store calls are not audit entries themselves: what they decide is (the
approval requested and stored, the decision consumed, the result stored),
and a store that fails makes the command that needed it fail closed with an
entry that says so (``error: network_error`` / ``timeout``). A Redis
connection is pooled and serves many calls, so an entry per round trip would
say less than the entries of the actions it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from auditkeep.logger import AuditLogger
    from gitlab_copilot_agent.settings import RedisSettings

__all__ = ["StateStore", "StateStoreError", "build_store", "require_correlation"]


class StateStoreError(Exception):
    """The store could not be reached or answered an error; the message is scrubbed.

    ``audit_error_class`` is ``network_error`` or ``timeout`` (auditkeep's
    classifier reads it).
    """

    def __init__(self, message: str, *, error_class: str = "network_error") -> None:
        super().__init__(message)
        self.audit_error_class = error_class


class StateStore(Protocol):
    """Keyed JSON objects with expiry, an atomic take, and token-guarded locks."""

    @property
    def kind(self) -> str:
        """``redis`` or ``memory`` (recorded as ``details.store`` in the trail)."""
        ...

    async def ping(self) -> None:
        """Raise ``StateStoreError`` unless the store answers."""
        ...

    async def put(
        self, key: str, value: Mapping[str, Any], *, ttl_s: float, only_if_absent: bool = False
    ) -> bool:
        """Store ``value`` for ``ttl_s``; False when ``only_if_absent`` and the key exists."""
        ...

    async def get(self, key: str) -> dict[str, Any] | None:
        """The value, or None (missing or expired)."""
        ...

    async def take(self, key: str) -> dict[str, Any] | None:
        """Get and delete in one atomic step: of two concurrent takes, one gets the value."""
        ...

    async def delete(self, key: str) -> None: ...

    async def keys(self, prefix: str) -> list[str]:
        """Every live key starting with ``prefix`` (small sets: pending approvals)."""
        ...

    async def acquire_lock(
        self, key: str, value: Mapping[str, Any], *, ttl_s: float
    ) -> dict[str, Any] | None:
        """Take the lock (``value`` holds its ``token``): None if taken, else the holder's value
        (``{}`` when it expired meanwhile)."""
        ...

    async def update_lock(
        self, key: str, token: str, value: Mapping[str, Any], *, ttl_s: float
    ) -> bool:
        """Replace the value and renew the expiry, only if ``token`` still holds the lock."""
        ...

    async def release_lock(self, key: str, token: str) -> bool:
        """Delete the lock only if ``token`` holds it (compare-and-delete)."""
        ...

    async def aclose(self) -> None: ...


def require_correlation(value: Mapping[str, Any]) -> None:
    """Refuse a value that does not say which command (correlation id) it belongs to."""
    cid = value.get("correlation_id")
    if not isinstance(cid, str) or not cid:
        raise ValueError("every stored value carries its correlation_id")


def build_store(settings: RedisSettings, audit: AuditLogger | None = None) -> StateStore:
    """``RedisStore`` when ``REDIS_URL`` is set, else ``MemoryStore`` (single process only)."""
    if settings.url:
        from gitlab_copilot_agent.state.redis_store import RedisStore

        return RedisStore(settings.url, timeout_s=settings.timeout_s)
    from gitlab_copilot_agent.state.memory import MemoryStore

    return MemoryStore()
