"""/engage and /groups (spec §5): profile updates, authenticated by their $token.

Updates are journaled like events (acknowledged only once durable); the loader hands
them to the store in journal order, which folds them into profiles (spec §5).
"""

from __future__ import annotations

import time

from trackhouse.ingest.profiles import validate_updates
from trackhouse.journal.records import encode_updates
from trackhouse.web.client import client_endpoint, outcome_reply
from trackhouse.web.http import Request, Response
from trackhouse.web.responses import TrackMode
from trackhouse.web.services import Services


async def handle_engage(request: Request, services: Services) -> Response:
    return await client_endpoint(request, services, _ingest_users, noun="updates")


async def handle_groups(request: Request, services: Services) -> Response:
    return await client_endpoint(request, services, _ingest_groups, noun="updates")


async def _ingest_users(
    request: Request, services: Services, mode: TrackMode, raw: list[object], params: dict[str, str]
) -> Response:
    return await _ingest(services, mode, raw, group=False)


async def _ingest_groups(
    request: Request, services: Services, mode: TrackMode, raw: list[object], params: dict[str, str]
) -> Response:
    return await _ingest(services, mode, raw, group=True)


async def _ingest(
    services: Services, mode: TrackMode, raw: list[object], *, group: bool
) -> Response:
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
