"""``AgentIdentity``: the agent's own GitLab user, asked once (``GET /user``), then remembered.

Commands and reviews use it to ignore the agent's own notes (no loops) and to
trust only the agent's own review markers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class CurrentUserAPI(Protocol):
    async def get_current_user(self) -> dict[str, Any]: ...


class AgentIdentity:
    """The token's user id; a failed lookup is not remembered (the next caller asks again)."""

    def __init__(self, gitlab: CurrentUserAPI) -> None:
        self._gitlab = gitlab
        self._user_id: int | None = None
        self._known = False
        self._lock = asyncio.Lock()

    async def user_id(self) -> int | None:
        """The agent's user id (None if GitLab answers without one)."""
        if self._known:
            return self._user_id
        async with self._lock:  # concurrent deliveries ask once
            if not self._known:
                user = await self._gitlab.get_current_user()
                found = user.get("id")
                self._user_id = found if isinstance(found, int) else None
                self._known = True
        return self._user_id
