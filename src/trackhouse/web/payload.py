"""Reading a request's payload bytes: the size cap and Content-Encoding (spec §2.1)."""

from __future__ import annotations

from trackhouse.errors import PayloadError
from trackhouse.ingest.decode import gunzip
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
