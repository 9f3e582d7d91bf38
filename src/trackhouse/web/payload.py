"""Reading a request's payload bytes: the size cap and Content-Encoding (spec §2.1)."""

from __future__ import annotations

import urllib.parse

import orjson

from trackhouse.errors import PayloadError
from trackhouse.ingest.decode import gunzip, json_error
from trackhouse.web.http import Request


async def read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed when the client said gzip; never more than ``limit``."""
    body = await request.body(limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return gunzip(body, limit)
    raise PayloadError(f"unsupported Content-Encoding {encoding!r}: send gzip or nothing")


MAX_QUERY_BODY = 1024 * 1024


async def query_params(request: Request) -> dict[str, str]:
    """The parameters of a read API (/api/2.0/engage, /api/sql): the query string, and
    for POST a form or JSON-object body, whose values win."""
    params = dict(request.query)
    if request.method != "POST":
        return params
    body = await read_body(request, MAX_QUERY_BODY)
    try:
        if "json" in request.headers.get("content-type", "").lower():
            parsed = orjson.loads(body)
            if not isinstance(parsed, dict):
                raise PayloadError('send a JSON object, e.g. {"sql": "SELECT ..."}')
            # Values as a form would carry them: a list or object as its JSON text
            # (distinct_ids=["a","b"]), not Python's repr of it.
            params.update(
                {
                    str(k): v if isinstance(v, str) else orjson.dumps(v).decode()
                    for k, v in parsed.items()
                    if v is not None
                }
            )
        else:
            params.update(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"the body is not a JSON object: {json_error(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise PayloadError("the body is neither a UTF-8 form nor a JSON object") from exc
    return params
