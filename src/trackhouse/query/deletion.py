"""Deleting users' data (a trackhouse addition): which users, and what the reply says."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from trackhouse.errors import PayloadError
from trackhouse.storage.base import Deleted

MAX_USERS = 2000
MAX_ID_CHARS = 255  # longer distinct_ids are cut to this when stored (spec §6)


def parse_distinct_ids(params: Mapping[str, str]) -> list[str]:
    """``distinct_ids`` (a JSON array of strings) or ``distinct_id`` (one)."""
    if "distinct_ids" in params:
        try:
            ids = orjson.loads(params["distinct_ids"])
        except orjson.JSONDecodeError as exc:
            raise PayloadError('distinct_ids must be a JSON array, e.g. ["user-1"]') from exc
        if not isinstance(ids, list):
            raise PayloadError('distinct_ids must be a JSON array, e.g. ["user-1"]')
    elif "distinct_id" in params:
        ids = [params["distinct_id"]]
    else:
        raise PayloadError("distinct_ids is required: the users whose data to delete")
    if not ids:
        raise PayloadError("distinct_ids is empty: name at least one user")
    if len(ids) > MAX_USERS:
        raise PayloadError(f"at most {MAX_USERS} distinct_ids per request (got {len(ids)})")
    for index, value in enumerate(ids):
        if not isinstance(value, str) or not value:
            raise PayloadError(f"distinct_ids[{index}] must be a non-empty string")
        if len(value) > MAX_ID_CHARS:
            raise PayloadError(
                f"distinct_ids[{index}] is longer than {MAX_ID_CHARS} characters, "
                "so no stored event can have it"
            )
    return list(dict.fromkeys(ids))


def deletion_result(users: int, deleted: Deleted) -> dict[str, Any]:
    return {
        "status": "ok",
        "users": users,
        "deleted": {
            "events": deleted.events,
            "profiles": deleted.profiles,
            "profile_updates": deleted.profile_updates,
        },
    }
