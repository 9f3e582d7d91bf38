"""Mixpanel's profile query (``/api/2.0/engage``): parameters, paging, and pages.

Paging follows Mixpanel: the first call (no ``session_id``) fixes the query and its
``total`` and returns a ``session_id``; later calls pass it with ``page=1, 2, ...``.
Pages are cut by profile id, and a session remembers the last id of every page it
served, so the next page starts after that id (keyset paging): profiles created or
deleted while a client pages through do not shift later pages, and no profile is
served twice. A session that is unknown (expired, or the server restarted) still
pages, by offset.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from trackhouse.errors import PayloadError
from trackhouse.query.where import parse_where
from trackhouse.storage.base import USERS, ProfileQuery, ProfileRow, Store

PAGE_SIZE = 1000
MAX_IDS = 2000
SESSION_TTL_S = 3600
MAX_SESSIONS = 1000

# Mixpanel parameters that select by behaviour or cohort: trackhouse does not compute
# those, and ignoring them would return the wrong profiles.
_UNSUPPORTED = ("behaviors", "cohort_id", "filter_by_cohort", "as_of_timestamp")


@dataclass(frozen=True, slots=True)
class ProfileRequest:
    query: ProfileQuery
    output_properties: tuple[str, ...] | None
    page: int
    page_size: int
    session_id: str | None


def _json_names(params: Mapping[str, str], name: str) -> list[str] | None:
    text = params.get(name)
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PayloadError(f'{name} must be a JSON array of strings, e.g. ["a", "b"]')
    return value


def _whole(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise PayloadError(f"{name} must be a whole number") from exc
    if not low <= value <= high:
        raise PayloadError(f"{name} must be between {low} and {high}")
    return value


def parse_profile_params(project_id: int, params: Mapping[str, str]) -> ProfileRequest:
    for name in _UNSUPPORTED:
        if params.get(name):
            raise PayloadError(f"{name} is not supported by trackhouse; filter with where")
    ids = _json_names(params, "distinct_ids")
    if "distinct_id" in params:
        if not params["distinct_id"]:
            raise PayloadError("distinct_id is empty; leave it out to query every profile")
        ids = [*(ids or []), params["distinct_id"]]
    if ids is not None and len(ids) > MAX_IDS:
        raise PayloadError(f"at most {MAX_IDS} distinct_ids per query")
    where = parse_where(params["where"]) if params.get("where") else None
    output = _json_names(params, "output_properties")
    query = ProfileQuery(
        project_id,
        group_key=params.get("data_group_id") or USERS,
        ids=ids,
        where=where,
    )
    return ProfileRequest(
        query,
        tuple(output) if output is not None else None,
        page=_whole(params, "page", 0, 0, 10_000_000),
        page_size=_whole(params, "page_size", PAGE_SIZE, 1, PAGE_SIZE),
        session_id=params.get("session_id") or None,
    )


@dataclass(slots=True)
class _Session:
    query: ProfileQuery
    page_size: int
    total: int
    created: float
    last_ids: dict[int, str] = field(default_factory=dict)  # page -> its last profile id


class ProfileSessions:
    """Paging sessions, in memory, bounded in number and age."""

    def __init__(self) -> None:
        # Keyed by project too: a session id never pages through another project.
        self._sessions: OrderedDict[tuple[int, str], _Session] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, key: tuple[int, str]) -> _Session | None:
        with self._lock:
            now = time.monotonic()
            while self._sessions:
                oldest = next(iter(self._sessions.values()))
                if now - oldest.created < SESSION_TTL_S:
                    break
                self._sessions.popitem(last=False)
            return self._sessions.get(key)

    def _put(self, key: tuple[int, str], session: _Session) -> None:
        with self._lock:
            self._sessions[key] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)

    def page(self, store: Store, request: ProfileRequest) -> dict[str, Any]:
        """One page of the reply Mixpanel gives (runs queries: call off the event loop)."""
        project_id = request.query.project_id
        session_id = request.session_id
        session = self._get((project_id, session_id)) if session_id else None
        # Later pages may repeat the query's parameters or leave them out; a different
        # query under the same session would page through neither, so it is refused.
        if session is not None and _names_a_query(request) and session.query != request.query:
            raise PayloadError("session_id belongs to a different query; start a new session")
        if session is None:
            session = _Session(
                request.query, request.page_size, store.count_profiles(request.query), time.time()
            )
            session_id = session_id or secrets.token_hex(16)
            self._put((project_id, session_id), session)
        rows = _fetch(store, session, request.page)
        if len(rows) == session.page_size:
            session.last_ids[request.page] = rows[-1].profile_id
        return {
            "page": request.page,
            "page_size": session.page_size,
            "session_id": session_id,
            "status": "ok",
            "total": session.total,
            "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(session.created)),
            "results": [profile_result(row, request.output_properties) for row in rows],
        }


def _names_a_query(request: ProfileRequest) -> bool:
    query = request.query
    return query.ids is not None or query.where is not None or query.group_key != USERS


def _fetch(store: Store, session: _Session, page: int) -> list[ProfileRow]:
    # Start after the last id of the nearest page already served, else by offset.
    known = [p for p in session.last_ids if p < page]
    after = session.last_ids[max(known)] if known else None
    skipped_pages = page - (max(known) + 1) if known else page
    rows: list[ProfileRow] = []
    for chunk in store.profiles(
        session.query,
        after=after,
        offset=skipped_pages * session.page_size,
        limit=session.page_size,
    ):
        rows.extend(chunk)
    return rows


def profile_result(row: ProfileRow, output_properties: tuple[str, ...] | None) -> dict[str, Any]:
    properties = orjson.loads(row.properties)
    if output_properties is not None:
        properties = {k: properties[k] for k in output_properties if k in properties}
    return {"$distinct_id": row.profile_id, "$properties": properties}
