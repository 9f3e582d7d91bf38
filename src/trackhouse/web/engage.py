"""/engage and /groups (spec §5): profile updates, authenticated by their $token.

Updates are journaled like events (acknowledged only once durable); the loader hands
them to the store in journal order, which folds them into profiles (spec §5).
"""

from __future__ import annotations

import time

from trackhouse.ingest.decode import decode_client_payload
from trackhouse.ingest.profiles import validate_updates
from trackhouse.journal.records import encode_updates
from trackhouse.web.client import Payload, client_endpoint, nothing_sent, outcome_reply
from trackhouse.web.http import Request, Response
from trackhouse.web.responses import TrackMode
from trackhouse.web.services import Services


async def handle_engage(request: Request, services: Services) -> Response:
    return await client_endpoint(request, services, _ingest_users, noun="updates")


async def handle_groups(request: Request, services: Services) -> Response:
    return await client_endpoint(request, services, _ingest_groups, noun="updates")


async def _ingest_users(
    request: Request, services: Services, mode: TrackMode, payload: Payload, params: dict[str, str]
) -> Response:
    return await _ingest(services, mode, payload, group=False)


async def _ingest_groups(
    request: Request, services: Services, mode: TrackMode, payload: Payload, params: dict[str, str]
) -> Response:
    return await _ingest(services, mode, payload, group=True)


async def _ingest(
    services: Services, mode: TrackMode, payload: Payload, *, group: bool
) -> Response:
    raw = decode_client_payload(
        payload.json_body,
        payload.data,
        max_items=services.settings.max_events_per_request,
        noun="updates",
    )
    if not raw:
        return nothing_sent(mode, "updates")
    received_ms = int(time.time() * 1000)
    outcome = validate_updates(
        raw,
        group=group,
        received_ms=received_ms,
        resolve_token=services.token_resolver(),
        max_update_bytes=services.settings.max_event_bytes,
    )
    services.take_rate(outcome.updates)
    if outcome.updates:
        await services.journal.append_and_sync(
            encode_updates(outcome.updates, received_ms=received_ms)
        )
    return outcome_reply(mode, len(outcome.updates), outcome.rejections, len(raw), "updates")
