"""``/api/2.0/engage``: Mixpanel's profile query, authenticated like /import."""

from __future__ import annotations

import asyncio

from trackhouse.errors import RequestError, StorageError, Unauthorized
from trackhouse.query.profiles import parse_profile_params
from trackhouse.web import responses
from trackhouse.web.auth import READ_API_REFUSAL, read_api_request
from trackhouse.web.http import Request, Response
from trackhouse.web.services import Services


async def handle_profile_query(request: Request, services: Services) -> Response:
    try:
        project, params = await read_api_request(request, services.registry)
        query = parse_profile_params(project.id, params)
        page = await asyncio.to_thread(services.profile_sessions.page, services.store, query)
    except Unauthorized:
        return responses.query_error(401, READ_API_REFUSAL)
    except RequestError as exc:  # bad parameters (400), a body too large (413)
        return responses.query_error(exc.status, exc.message)
    except StorageError as exc:
        return responses.query_error(500, f"profile query failed: {exc}")
    return responses.json_reply(page)
