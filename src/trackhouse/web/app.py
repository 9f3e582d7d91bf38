"""The ASGI application: routing, CORS, error containment and the lifespan.

``create_app(settings)`` does nothing until the server runs the lifespan: only then are
the registry, store, journal and loader opened, and they are closed in reverse order
when it ends (after in-flight requests have been answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trackhouse.errors import PayloadTooLarge, RequestError, TrackhouseError
from trackhouse.settings import Settings
from trackhouse.web import console, responses, system
from trackhouse.web.deletion import handle_deletion
from trackhouse.web.engage import handle_engage, handle_groups
from trackhouse.web.export import handle_export
from trackhouse.web.http import Receive, Request, Response, Scope, Send
from trackhouse.web.imports import handle_import
from trackhouse.web.profiles import handle_profile_query
from trackhouse.web.services import Services
from trackhouse.web.sql import handle_sql
from trackhouse.web.track import handle_track

log = logging.getLogger(__name__)

Handler = Callable[[Request, Services], Awaitable[Response]]
# Sends its own reply as it goes (returns None), or returns an error reply.
Streamer = Callable[[Request, Services, Send], Awaitable[Response | None]]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    handler: Handler | None = None
    streamer: Streamer | None = None  # instead of a handler
    cors: bool = True


_TRACK_METHODS = frozenset({"GET", "POST"})
_GET = frozenset({"GET"})
ROUTES: dict[str, Route] = {
    "/track": Route(_TRACK_METHODS, handle_track),
    "/import": Route(_TRACK_METHODS, handle_import),
    "/engage": Route(_TRACK_METHODS, handle_engage),
    "/groups": Route(_TRACK_METHODS, handle_groups),
    "/api/2.0/export": Route(_GET, streamer=handle_export),
    "/api/2.0/engage": Route(frozenset({"GET", "POST"}), handle_profile_query, cors=False),
    "/api/sql": Route(frozenset({"GET", "POST"}), handle_sql, cors=False),
    "/api/data-deletions": Route(frozenset({"POST"}), handle_deletion, cors=False),
    "/export": Route(_GET, streamer=handle_export),
    "/decide": Route(_TRACK_METHODS, system.handle_decide),
    "/flags": Route(_TRACK_METHODS, system.handle_flags),
    "/settings": Route(_TRACK_METHODS, system.handle_settings),
    "/record": Route(_TRACK_METHODS, system.handle_record),
    "/healthz": Route(_GET, system.handle_health, cors=False),
    "/-/status": Route(_GET, system.handle_status, cors=False),
    # The console (web/console.py): same-origin only, no CORS.
    **{path: Route(_GET, console.handle_asset, cors=False) for path in console.ASSET_PATHS},
    "/console/api/session": Route(
        frozenset({"GET", "POST", "DELETE"}), console.handle_session, cors=False
    ),
    "/console/api/overview": Route(_GET, console.handle_overview, cors=False),
    "/console/api/schema": Route(_GET, console.handle_schema, cors=False),
    console.STREAM_PATH: Route(_GET, streamer=console.handle_stream, cors=False),
}

_CORS_ALLOW_HEADERS = "Content-Type, Authorization, traceparent"


def _cors_headers(origin: str) -> list[tuple[str, str]]:
    # withCredentials XHRs need the exact origin, never "*" (spec §9).
    return [
        ("access-control-allow-origin", origin),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "Retry-After"),
        ("vary", "Origin"),
    ]


class TrackhouseApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan --------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except TrackhouseError as exc:
                    log.error("start-up failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.services is not None:
                    await self.services.workers.close()
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.services = Services.open(self.settings)
        self.services.loader.start()
        self.services.retention.start()
        self._write_server_file()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the app runs on, once started."""
        return self._loop

    def begin_shutdown(self) -> None:
        """The server was told to stop (from its signal handler): end the live streams
        now, or the server would wait for those open-ended replies before stopping."""
        if self._loop is not None and self.services is not None:
            self._loop.call_soon_threadsafe(self.services.live.close)

    def shutdown(self) -> None:
        if self.services is not None:
            self.services.close()
            self.services = None
        with contextlib.suppress(FileNotFoundError):
            self.settings.server_file.unlink()

    def _write_server_file(self) -> None:
        info = {
            "pid": os.getpid(),
            "url": self.settings.url,
            # The CLI trusts this certificate (it may be self-signed) when it calls us.
            "tls_cert": str(self.settings.tls_cert.resolve()) if self.settings.tls_cert else None,
        }
        tmp = self.settings.server_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(self.settings.server_file)

    # -- requests --------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        path = request.path.rstrip("/") or "/"
        route = ROUTES.get(path)
        origin = request.headers.get("origin")
        cors = _cors_headers(origin) if origin and (route is None or route.cors) else []
        if route is None:
            reply = responses.plain_error(404, f"unknown path {request.path!r}")
        elif request.method == "OPTIONS" and route.cors:
            reply = self._preflight(request)
        elif request.method not in route.methods:
            allowed = ", ".join(sorted(route.methods | ({"OPTIONS"} if route.cors else set())))
            reply = responses.plain_error(
                405,
                f"method {request.method} is not allowed on {path}; use {allowed}",
                headers=[("allow", allowed)],
            )
        elif self.services is None:
            reply = responses.plain_error(
                503, "server is starting or stopping", headers=[("retry-after", "1")]
            )
        elif route.streamer is not None:
            streamed = await route.streamer(request, self.services, _with_headers(send, cors))
            if streamed is None:
                return
            reply = streamed
        elif route.handler is not None:
            reply = await self._call(route.handler, request, self.services)
        else:  # pragma: no cover - every route has a handler or a streamer
            reply = responses.plain_error(500, f"no handler for {path}")
        reply.headers.extend(cors)
        await reply.send(send)

    @staticmethod
    async def _call(handler: Handler, request: Request, services: Services) -> Response:
        try:
            return await handler(request, services)
        except PayloadTooLarge as exc:
            return responses.plain_error(413, exc.message)
        except RequestError as exc:
            return responses.plain_error(exc.status, exc.message)
        except Exception:
            # A bug, not the client's fault. Log it; never let it take the server down.
            log.exception("unhandled error on %s %s", request.method, request.path)
            return responses.plain_error(500, "internal error; see the server log")

    @staticmethod
    def _preflight(request: Request) -> Response:
        return Response(
            204,
            b"",
            "text/plain",
            [
                ("access-control-allow-methods", "GET, POST, OPTIONS"),
                ("access-control-allow-headers", _CORS_ALLOW_HEADERS),
                ("access-control-max-age", "86400"),
            ],
        )


def _with_headers(send: Send, extra: list[tuple[str, str]]) -> Send:
    if not extra:
        return send
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]

    async def wrapped(message: dict) -> None:  # type: ignore[type-arg]
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], *encoded]}
        await send(message)

    return wrapped  # type: ignore[return-value]


def create_app(settings: Settings) -> TrackhouseApp:
    return TrackhouseApp(settings)
