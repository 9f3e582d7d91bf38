"""/track (spec §3): events from clients, authenticated by the token inside each event."""

from __future__ import annotations

import time
from collections import Counter

from trackhouse.errors import (
    BadCallback,
    PayloadError,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    Unavailable,
)
from trackhouse.ingest.decode import as_list, decode_data, loads, parse_params
from trackhouse.ingest.validate import Endpoint, RequestContext, validate_events
from trackhouse.journal.records import encode_events
from trackhouse.web import responses
from trackhouse.web.clientip import client_address
from trackhouse.web.http import Request, Response
from trackhouse.web.payload import read_body
from trackhouse.web.responses import TrackMode
from trackhouse.web.services import Services


async def handle_track(request: Request, services: Services) -> Response:
    settings = services.settings
    try:
        mode = responses.track_mode(request.query)
    except BadCallback as exc:
        return responses.bad_callback(exc.message)
    except PayloadError as exc:
        return responses.track_reply(TrackMode(), ok=False, error=exc.message)
    try:
        body = await read_body(request, settings.max_body_bytes) if request.method == "POST" else b""
        params = parse_params(request.query_string, body, request.headers.get("content-type", ""))
        mode = responses.track_mode(params.params)
        raw_events = _raw_events(params.json_body, params.params.get("data"))
        if len(raw_events) > settings.max_events_per_request:
            raise PayloadTooLarge(
                f"request has {len(raw_events)} events; the limit is "
                f"{settings.max_events_per_request} per request"
            )
        return await _ingest(request, services, mode, raw_events, params.params)
    except BadCallback as exc:
        return responses.bad_callback(exc.message)
    except RateLimited as exc:
        return responses.import_error(429, exc.message, retry_after=exc.retry_after)
    except Unavailable as exc:
        reply = responses.track_reply(mode, ok=False, error=exc.message, status=503)
        reply.headers.append(("retry-after", str(exc.retry_after)))
        return reply
    except PayloadTooLarge as exc:
        return responses.track_reply(mode, ok=False, error=exc.message, status=413)
    except RequestError as exc:
        # Undecodable payloads are answered 200 + failure, like Mixpanel: a browser
        # would retry a 5xx forever, and the verbose error says what was wrong.
        return responses.track_reply(mode, ok=False, error=exc.message)


def _raw_events(json_body: bytes | None, data: str | None) -> list[object]:
    if json_body is not None:  # spec §2.3: a JSON body is the payload itself
        return as_list(loads(json_body))
    return decode_data(data)


async def _ingest(
    request: Request,
    services: Services,
    mode: TrackMode,
    raw_events: list[object],
    params: dict[str, str],
) -> Response:
    settings = services.settings
    registry = services.registry
    registry.refresh()
    client_ip = None
    if params.get("ip") == "1":
        client_ip = client_address(request.client_host, request.headers, settings.trusted_proxies)
    ctx = RequestContext(
        endpoint=Endpoint.TRACK,
        received_ms=int(time.time() * 1000),
        api_host=request.headers.get("host", ""),
        client_ip=client_ip,
        track_max_age_ms=settings.track_max_age_days * 86_400_000,
        max_event_bytes=settings.max_event_bytes,
    )

    def resolve(token: str) -> int | None:
        project = registry.by_token(token)
        if project is None and settings.auto_create_projects:
            project = registry.create_project(f"auto {token[:40]}", token=token)
        return None if project is None else project.id

    outcome = validate_events(raw_events, ctx, resolve)
    per_project = Counter(event.project_id for event in outcome.events)
    for project_id, count in per_project.items():
        project = registry.get(project_id)
        limit = (project.events_per_second if project else None) or settings.default_events_per_second
        services.limiter.take(project_id, limit, count)
    if outcome.events:
        await services.journal.append_and_sync(
            encode_events(outcome.events, received_ms=ctx.received_ms, endpoint="track")
        )
    if not raw_events:
        return responses.track_reply(mode, ok=False, error="data, no events in payload")
    if outcome.accepted == 0:
        error = responses.summarize_rejections(outcome.rejections, len(raw_events))
        return responses.track_reply(mode, ok=False, error=error)
    if outcome.rejections:
        error = responses.summarize_rejections(outcome.rejections, len(raw_events))
        return responses.track_reply(mode, ok=True, error=error)
    return responses.track_reply(mode, ok=True)
