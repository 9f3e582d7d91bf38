"""/track (spec §3): events from clients, authenticated by the token inside each event."""

from __future__ import annotations

import time

from trackhouse.ingest.validate import Endpoint, RequestContext
from trackhouse.prepare import TrackJob, prepare_track
from trackhouse.web.client import Payload, client_endpoint, nothing_sent, outcome_reply
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
    payload: Payload,
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
    job = services.job(ctx, payload.size)
    work = TrackJob(job, payload.json_body, payload.data, settings.registry_path)
    prepared = await services.workers.run(
        prepare_track,
        work,
        # A worker resolves tokens but never creates a project: auto-creation stays here.
        weight=0 if settings.auto_create_projects else payload.size,
        here=lambda: prepare_track(work, services.token_resolver()),
    )
    if not prepared.total:
        return nothing_sent(mode, "events")
    await services.keep(prepared)
    return outcome_reply(mode, prepared.accepted, prepared.rejections, prepared.total)
