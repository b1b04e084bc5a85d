"""Reading GitLab webhook payloads: untrusted JSON, so each field is checked before use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def integer(value: Any) -> int | None:
    """``value`` if it is a JSON integer (``true`` is not one), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def text(value: Any) -> str | None:
    """``value`` if it is a JSON string, else None."""
    return value if isinstance(value, str) else None


def project_id(payload: Any) -> int | None:
    """The project a delivery is about, wherever its event type puts it.

    ``project.id`` (merge request, note, push, pipeline hooks), then
    ``project_id`` (note and system hooks), then the merge request's
    ``target_project_id`` (in ``object_attributes`` for merge request hooks, in
    ``merge_request`` for notes on one). The one place the agent reads it: the
    ingress's audit entry and the workflows agree.
    """
    body = mapping(payload)
    for candidate in (
        mapping(body.get("project")).get("id"),
        body.get("project_id"),
        mapping(body.get("object_attributes")).get("target_project_id"),
        mapping(body.get("merge_request")).get("target_project_id"),
    ):
        found = integer(candidate)
        if found is not None:
            return found
    return None
