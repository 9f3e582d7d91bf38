"""Health, status, and the endpoints mixpanel-browser may call besides /track (spec §9)."""

from __future__ import annotations

from trackhouse import __version__
from trackhouse.web import responses
from trackhouse.web.http import Request, Response
from trackhouse.web.services import Services


async def handle_health(request: Request, services: Services) -> Response:
    return responses.json_reply({"status": "ok", "version": __version__})


async def handle_status(request: Request, services: Services) -> Response:
    """Loader progress, for operators and tests (no event data, no secrets)."""
    stats = services.loader.stats
    return responses.json_reply(
        {
            "version": __version__,
            "journal_durable_end": list(services.journal.durable_end),
            "loaded_position": list(services.loader.position),
            "backlog_bytes": services.journal.backlog_bytes(),
            "events_loaded": stats.events_loaded,
            "duplicates_dropped": stats.duplicates_dropped,
            "loader_batches": stats.batches,
            "loader_errors": stats.errors,
            "loader_last_error": stats.last_error,
            "last_lag_ms": stats.last_lag_ms,
            "ingest_workers": {
                "running": [worker.process.pid for worker in services.workers.workers],
                "jobs_in_workers": services.workers.jobs_in_workers,
                "jobs_here": services.workers.jobs_here,
            },
        }
    )


async def handle_flags(request: Request, services: Services) -> Response:
    return responses.json_reply({"flags": {}})


async def handle_decide(request: Request, services: Services) -> Response:
    return responses.json_reply(
        {"notifications": [], "config": {"enable_collect_everything": False}, "feature_flags": []}
    )


async def handle_settings(request: Request, services: Services) -> Response:
    return responses.json_reply({})


async def handle_record(request: Request, services: Services) -> Response:
    # Session replay is not stored yet (spec §9 allows accepting and discarding it);
    # read and drop the body so keep-alive connections stay usable.
    await request.body(services.settings.max_body_bytes)
    return responses.json_reply({"status": 1})
