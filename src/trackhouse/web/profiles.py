"""``/api/2.0/engage``: Mixpanel's profile query, authenticated like /import."""

from __future__ import annotations

import asyncio

from trackhouse.errors import RequestError, StorageError, Unauthorized
from trackhouse.query.profiles import parse_profile_params
from trackhouse.web import responses
from trackhouse.web.auth import authenticate
from trackhouse.web.http import Request, Response
from trackhouse.web.payload import query_params
from trackhouse.web.services import Services


async def handle_profile_query(request: Request, services: Services) -> Response:
    try:
        params = await query_params(request)
        project = authenticate(
            services.registry,
            request.headers.get("authorization"),
            params.get("project_id"),
            allow_token=False,
        )
        query = parse_profile_params(project.id, params)
        page = await asyncio.to_thread(services.profile_sessions.page, services.store, query)
    except Unauthorized:
        return responses.query_error(401, "Invalid credentials: use the project's API secret")
    except RequestError as exc:  # bad parameters (400), a body too large (413)
        return responses.query_error(exc.status, exc.message)
    except StorageError as exc:
        return responses.query_error(500, f"profile query failed: {exc}")
    return responses.json_reply(page)
