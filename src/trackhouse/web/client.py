"""What /track, /engage and /groups share: the transport of spec §2 and the reply
modes of spec §3, with every failure mapped to the status a browser SDK handles right."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from trackhouse.errors import (
    BadCallback,
    PayloadError,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    Unavailable,
)
from trackhouse.ingest.decode import RequestParams, as_list, decode_data, loads, params_with_body
from trackhouse.ingest.validate import Rejection
from trackhouse.web import responses
from trackhouse.web.http import Request, Response
from trackhouse.web.payload import read_body
from trackhouse.web.responses import TrackMode
from trackhouse.web.services import Services

Process = Callable[
    [Request, Services, TrackMode, list[object], dict[str, str]], Awaitable[Response]
]


async def client_endpoint(
    request: Request, services: Services, process: Process, *, noun: str
) -> Response:
    settings = services.settings
    try:
        mode = responses.track_mode(request.query)
    except BadCallback as exc:
        return responses.bad_callback(exc.message)
    except PayloadError as exc:
        return responses.track_reply(TrackMode(), ok=False, error=exc.message)
    params: RequestParams | None = None
    try:
        body = (
            await read_body(request, settings.max_body_bytes) if request.method == "POST" else b""
        )
        params = params_with_body(request.query, body, request.headers.get("content-type", ""))
        mode = responses.track_mode(params.params)
        if params.json_body is not None:  # spec §2.3: a JSON body is the payload itself
            raw = as_list(loads(params.json_body))
        else:
            raw = decode_data(params.params.get("data"))
        if len(raw) > settings.max_events_per_request:
            raise PayloadTooLarge(
                f"request has {len(raw)} {noun}; the limit is "
                f"{settings.max_events_per_request} per request"
            )
        if not raw:
            return responses.track_reply(mode, ok=False, error=f"data, no {noun} in payload")
        return await process(request, services, mode, raw, params.params)
    except BadCallback as exc:
        return responses.bad_callback(exc.message)
    except RateLimited as exc:
        return responses.import_error(429, exc.message, retry_after=exc.retry_after)
    except Unavailable as exc:
        reply = responses.track_reply(mode, ok=False, error=exc.message, status=503)
        reply.headers.append(("retry-after", str(exc.retry_after)))
        return reply
    except PayloadTooLarge as exc:
        # 413 (not 200): mixpanel-browser halves its batch on a 413 and retries.
        # A raw JSON body (Go, Swift) gets the /import shape (spec §3).
        if params is not None and params.json_body is not None:
            return responses.import_error(413, exc.message)
        return responses.track_reply(mode, ok=False, error=exc.message, status=413)
    except RequestError as exc:
        # Undecodable payloads are answered 200 + failure, like Mixpanel: a browser
        # would retry a 5xx forever, and the verbose error says what was wrong.
        return responses.track_reply(mode, ok=False, error=exc.message)


def outcome_reply(
    mode: TrackMode,
    accepted: int,
    rejections: Sequence[Rejection],
    total: int,
    noun: str = "events",
) -> Response:
    """Success if anything was accepted; the verbose error names what was not."""
    error = responses.summarize_rejections(rejections, total, noun) if rejections else None
    return responses.track_reply(mode, ok=accepted > 0, error=error)
