"""``/api/sql``: read-only SQL over the caller's own project (a trackhouse addition;
authenticated like /import, never with the public token)."""

from __future__ import annotations

import asyncio
import urllib.parse

import orjson

from trackhouse.errors import PayloadError, StorageError, Unauthorized
from trackhouse.query.sql import result_json
from trackhouse.web import responses
from trackhouse.web.auth import authenticate
from trackhouse.web.http import Request, Response
from trackhouse.web.payload import read_body
from trackhouse.web.services import Services

MAX_SQL_BODY = 1024 * 1024


async def handle_sql(request: Request, services: Services) -> Response:
    settings = services.settings
    try:
        params = dict(request.query)
        if request.method == "POST":
            body = await read_body(request, MAX_SQL_BODY)
            params.update(_body_params(body, request.headers.get("content-type", "")))
        project = authenticate(
            services.registry,
            request.headers.get("authorization"),
            params.get("project_id"),
            allow_token=False,
        )
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
        return responses.query_error(401, "Invalid credentials: use the project's API secret")
    except PayloadError as exc:
        return responses.query_error(400, exc.message)
    except StorageError as exc:
        return responses.query_error(500, str(exc))
    return responses.json_reply(result_json(result))


def _body_params(body: bytes, content_type: str) -> dict[str, str]:
    try:
        if "json" in content_type.lower():
            parsed = orjson.loads(body)
            if not isinstance(parsed, dict):
                raise PayloadError('send a JSON object: {"sql": "SELECT ..."}')
            return {str(k): str(v) for k, v in parsed.items() if v is not None}
        return dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadError("the body is neither a form nor a JSON object") from exc
