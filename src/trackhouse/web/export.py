"""GET /api/2.0/export (spec §8): streamed NDJSON, gzip when the client accepts it."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator

from trackhouse.errors import PayloadError, StorageError, Unauthorized
from trackhouse.query.export import export_lines, parse_export_params
from trackhouse.web import responses
from trackhouse.web.auth import READ_API_REFUSAL, authenticate
from trackhouse.web.http import Request, Response, Send
from trackhouse.web.services import Services

_DONE = object()


async def handle_export(request: Request, services: Services, send: Send) -> Response | None:
    """Stream the export itself (returns None), or return an error reply."""
    try:
        project = authenticate(
            services.registry,
            request.headers.get("authorization"),
            request.query.get("project_id"),
            allow_token=False,
        )
        export = parse_export_params(project.id, request.query)
    except Unauthorized:
        return responses.plain_error(401, READ_API_REFUSAL)
    except PayloadError as exc:
        return responses.plain_error(400, exc.message)

    lines = export_lines(services.store, export)
    try:
        first = await asyncio.to_thread(next, lines, _DONE)
    except StorageError as exc:
        return responses.plain_error(500, str(exc))  # already says "export failed: ..."

    gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if gzip:
        headers.append((b"content-encoding", b"gzip"))
        headers.append((b"vary", b"Accept-Encoding"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
    chunk = first
    while isinstance(chunk, bytes):
        data = compressor.compress(chunk) if compressor else chunk
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        chunk = await asyncio.to_thread(_next_or_done, lines)
    tail = compressor.flush() if compressor else b""
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    return None


def _next_or_done(lines: Iterator[bytes]) -> object:
    try:
        return next(lines, _DONE)
    except StorageError:
        # Headers are out: all we can do is end the stream early. The client sees a
        # truncated export (no final newline) rather than a silent success.
        return _DONE
