"""/import (spec §4): server-side and historical events, authenticated by a secret.

Two reply dialects: *strict* (the JSON envelope with ``failed_records``) for JSON and
NDJSON bodies, and *legacy* (``1``/``0`` or ``{"status":..,"error":..}``) for the form
bodies the official Python and Node libraries send, which break on a strict reply.
"""

from __future__ import annotations

import time

from trackhouse.errors import PayloadTooLarge, RateLimited, RequestError, Unauthorized, Unavailable
from trackhouse.ingest.decode import first_significant_byte, params_with_body
from trackhouse.ingest.validate import Endpoint, RequestContext
from trackhouse.prepare import ImportJob, Prepared, prepare_import
from trackhouse.web import responses
from trackhouse.web.auth import authenticate
from trackhouse.web.http import Request, Response
from trackhouse.web.payload import read_body
from trackhouse.web.responses import TrackMode
from trackhouse.web.services import Services


async def handle_import(request: Request, services: Services) -> Response:
    settings = services.settings
    strict = True  # until the request says otherwise: errors get the envelope
    legacy = TrackMode()
    try:
        strict_param = request.query.get("strict")
        legacy = TrackMode(verbose=request.query.get("verbose") == "1")
        strict = strict_param == "1" or (
            strict_param is None and not _looks_like_form(request, b"")
        )
        project = authenticate(
            services.registry,
            request.headers.get("authorization"),
            request.query.get("project_id"),
            allow_token=True,
        )
        body = (
            await read_body(request, settings.max_body_bytes) if request.method == "POST" else b""
        )
        form = _looks_like_form(request, body)
        if strict_param is None:
            strict = not form
        data = None
        if form:
            params = params_with_body(request.query, body, request.headers.get("content-type", ""))
            legacy = TrackMode(verbose=params.params.get("verbose") == "1")
            if params.params.get("strict") in ("0", "1"):
                strict = params.params["strict"] == "1"
            data = params.params.get("data")
        ctx = RequestContext(
            endpoint=Endpoint.IMPORT_STRICT if strict else Endpoint.IMPORT_LEGACY,
            received_ms=int(time.time() * 1000),
            api_host=request.headers.get("host", ""),
            project_id=project.id,
            future_tolerance_ms=settings.import_future_tolerance_s * 1000,
            max_event_bytes=settings.max_event_bytes,
        )
        job = services.job(ctx, len(body))
        work = ImportJob(job, b"" if form else body, data, form)
        prepared = await services.workers.run(
            prepare_import, work, weight=len(body), here=lambda: prepare_import(work)
        )
        return await _reply(services, prepared, strict, legacy)
    except Unauthorized:
        return responses.unauthorized()
    except RateLimited as exc:
        return responses.import_error(429, exc.message, retry_after=exc.retry_after)
    except Unavailable as exc:
        return responses.import_error(503, exc.message, retry_after=exc.retry_after)
    except PayloadTooLarge as exc:
        return responses.import_error(413, exc.message)
    except RequestError as exc:
        if strict:
            return responses.import_error(400, exc.message)
        return responses.track_reply(legacy, ok=False, error=exc.message)


def _looks_like_form(request: Request, body: bytes) -> bool:
    """Legacy clients: a form body (data=...), or the whole payload in the query (GET)."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return True
    if ctype in ("application/json", "application/x-ndjson"):
        return False
    if body.strip():
        return first_significant_byte(body) not in "[{"
    return "data" in request.query


async def _reply(
    services: Services, prepared: Prepared, strict: bool, legacy: TrackMode
) -> Response:
    await services.keep(prepared)
    if strict:
        if not prepared.total:
            return responses.import_error(400, "request contains no events")
        if prepared.rejections:
            return responses.import_partial(prepared.accepted, prepared.rejections)
        return responses.import_ok(prepared.accepted)
    if not prepared.total:
        return responses.track_reply(legacy, ok=False, error="data, no events in payload")
    if prepared.rejections:
        error = responses.summarize_rejections(prepared.rejections, prepared.total)
        return responses.track_reply(legacy, ok=prepared.accepted > 0, error=error)
    return responses.track_reply(legacy, ok=True)
