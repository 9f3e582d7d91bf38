"""``POST /api/data-deletions``: delete users' events and profiles (a trackhouse
addition; authenticated like /import, never with the public token).

The deletion is journaled like any write, so it applies after everything acknowledged
before it, including events still waiting in the journal to be loaded. The reply waits
until the loader has applied it and says what went; if the store is behind (or down),
it answers 202: the deletion is durable and applies when the store catches up.
"""

from __future__ import annotations

import asyncio
import time

from trackhouse.errors import RequestError, Unauthorized, Unavailable
from trackhouse.journal.records import encode_deletion
from trackhouse.query.deletion import deletion_result, parse_distinct_ids
from trackhouse.web import responses
from trackhouse.web.auth import READ_API_REFUSAL, read_api_request
from trackhouse.web.http import Request, Response
from trackhouse.web.services import Services

WAIT_S = 30.0


async def handle_deletion(request: Request, services: Services) -> Response:
    try:
        project, params = await read_api_request(request, services.registry)
        ids = parse_distinct_ids(params)
    except Unauthorized:
        return responses.query_error(401, READ_API_REFUSAL)
    except RequestError as exc:  # bad parameters (400), a body too large (413)
        return responses.query_error(exc.status, exc.message)
    try:
        end = await services.journal.append_and_sync(
            encode_deletion(project.id, ids, received_ms=int(time.time() * 1000))
        )
    except Unavailable as exc:
        return responses.query_error(503, exc.message, retry_after=exc.retry_after)
    loader = services.loader
    if not await asyncio.to_thread(loader.wait_until_loaded, end, WAIT_S):
        return responses.json_reply(
            {
                "status": "pending",
                "users": len(ids),
                "message": "the deletion is recorded and applies when the store catches up",
            },
            202,
        )
    deleted = loader.deleted(end)
    if deleted is None:  # pragma: no cover - only if a thousand deletions overtook it
        return responses.json_reply({"status": "ok", "users": len(ids)})
    return responses.json_reply(deletion_result(len(ids), deleted))
