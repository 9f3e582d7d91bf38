"""What /track, /engage and /groups share: the transport of spec §2 and the reply
modes of spec §3, with every failure mapped to the status a browser SDK handles right."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from trackhouse.errors import (
    BadCallback,
    PayloadError,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    Unavailable,
)
from trackhouse.ingest.decode import RequestParams, params_with_body
from trackhouse.ingest.validate import Rejection
from trackhouse.web import responses
from trackhouse.web.http import Request, Response
from trackhouse.web.payload import read_body
from trackhouse.web.responses import TrackMode
from trackhouse.web.services import Services


@dataclass(frozen=True, slots=True)
class Payload:
    """A request's payload, not decoded yet (the endpoint decodes it, maybe in an ingest
    worker): a JSON body (spec §2.3), or the ``data`` parameter."""

    json_body: bytes | None
    data: str | None

    @property
    def size(self) -> int:
        return len(self.json_body) if self.json_body is not None else len(self.data or "")


Process = Callable[[Request, Services, TrackMode, Payload, dict[str, str]], Awaitable[Response]]


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
        payload = Payload(params.json_body, params.params.get("data"))
        return await process(request, services, mode, payload, params.params)
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


def nothing_sent(mode: TrackMode, noun: str) -> Response:
    return responses.track_reply(mode, ok=False, error=f"data, no {noun} in payload")


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
