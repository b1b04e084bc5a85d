"""Where coding tasks keep their state: pending approvals, decisions, locks, results, dedup keys.

``base.StateStore`` is the contract; ``redis_store.RedisStore`` (``REDIS_URL``) and
``memory.MemoryStore`` (single process, when ``REDIS_URL`` is unset) implement
it; ``keys`` names every key in one place; ``build_store`` picks one.
"""

from gitlab_copilot_agent.state.base import StateStore, StateStoreError, build_store

__all__ = ["StateStore", "StateStoreError", "build_store"]
