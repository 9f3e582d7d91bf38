"""/track (spec §3): events from clients, authenticated by the token inside each event."""

from __future__ import annotations

import time

from trackhouse.ingest.validate import Endpoint, RequestContext, validate_events
from trackhouse.journal.records import encode_events
from trackhouse.web.client import client_endpoint, outcome_reply
from trackhouse.web.clientip import client_address
from trackhouse.web.http import Request, Response
from trackhouse.web.responses import TrackMode
from trackhouse.web.services import Services


async def handle_track(request: Request, services: Services) -> Response:
    return await client_endpoint(request, services, _ingest, noun="events")


async def _ingest(
    request: Request,
    services: Services,
    mode: TrackMode,
    raw_events: list[object],
    params: dict[str, str],
) -> Response:
    settings = services.settings
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
    outcome = validate_events(raw_events, ctx, services.token_resolver())
    services.take_rate(outcome.events)
    if outcome.events:
        await services.journal.append_and_sync(
            encode_events(outcome.events, received_ms=ctx.received_ms, endpoint="track")
        )
        services.live.publish(outcome.events, received_ms=ctx.received_ms, endpoint="track")
    return outcome_reply(mode, outcome.accepted, outcome.rejections, len(raw_events))
