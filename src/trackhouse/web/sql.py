"""``/api/sql``: read-only SQL over the caller's own project (a trackhouse addition;
authenticated like /import, never with the public token)."""

from __future__ import annotations

import asyncio

from trackhouse.errors import PayloadError, RequestError, StorageError, Unauthorized
from trackhouse.query.sql import result_json
from trackhouse.web import responses
from trackhouse.web.auth import READ_API_REFUSAL, read_api_request
from trackhouse.web.http import Request, Response
from trackhouse.web.services import Services


async def handle_sql(request: Request, services: Services) -> Response:
    settings = services.settings
    try:
        project, params = await read_api_request(request, services.registry)
        sql = params.get("sql", "").strip()
        if not sql:
            raise PayloadError("sql is required: one SELECT statement")
        max_rows = settings.sql_max_rows
        if params.get("limit"):
            try:
                max_rows = min(int(params["limit"]), max_rows)
            except ValueError as exc:
                raise PayloadError("limit must be a whole number") from exc
            if max_rows <= 0:
                raise PayloadError("limit must be positive")
        result = await asyncio.to_thread(
            services.store.run_sql,
            project.id,
            sql,
            max_rows=max_rows,
            timeout_s=settings.sql_timeout_ms / 1000,
        )
    except Unauthorized:
        return responses.query_error(401, READ_API_REFUSAL)
    except RequestError as exc:  # bad parameters (400), a body too large (413)
        return responses.query_error(exc.status, exc.message)
    except StorageError as exc:
        return responses.query_error(500, str(exc))
    return responses.json_reply(result_json(result))
