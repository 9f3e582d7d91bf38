"""The console: a web page to watch a project (a trackhouse addition).

``/console`` serves the page (static files shipped in the package); its API under
``/console/api/`` answers only for a signed-in project. Signing in takes the project's
API secret once and gives the browser an HttpOnly, SameSite=Strict session cookie
(web/sessions.py); scripts may send the secret as Basic auth instead, as to the other
read APIs. Nothing here can reach another project's data: every query is keyed by the
project the session or the secret belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import time
from functools import cache

from trackhouse.errors import PayloadError, RequestError, StorageError, Unauthorized
from trackhouse.projects import Project
from trackhouse.query import console
from trackhouse.web import responses
from trackhouse.web.auth import READ_API_REFUSAL, authenticate, check_credentials
from trackhouse.web.clientip import client_used_https
from trackhouse.web.http import Request, Response, Send
from trackhouse.web.payload import query_params
from trackhouse.web.services import Services
from trackhouse.web.sessions import COOKIE, SESSION_S, cookie_value

HEARTBEAT_S = 15.0  # keeps proxies from closing an idle stream
SEND_TIMEOUT_S = 30.0  # a reader that takes nothing for this long is let go

# The page loads nothing from elsewhere and may not be framed.
_PAGE_HEADERS = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
]
_ASSETS = {
    "/console": ("console.html", "text/html; charset=utf-8"),
    "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console/console.css": ("console.css", "text/css; charset=utf-8"),
}
ASSET_PATHS = tuple(_ASSETS)
STREAM_PATH = "/console/api/stream"
_SIGNED_OUT = "sign in with the project's API secret"


@cache
def _asset(name: str) -> bytes:
    return importlib.resources.files("trackhouse.web.static").joinpath(name).read_bytes()


async def handle_asset(request: Request, services: Services) -> Response:
    name, content_type = _ASSETS[request.path.rstrip("/")]
    return Response(200, _asset(name), content_type, list(_PAGE_HEADERS))


# -- who is asking ---------------------------------------------------------------------
def _signed_in(request: Request, services: Services) -> Project:
    """The project of the session cookie, or of Basic credentials; else Unauthorized."""
    services.registry.refresh()  # a secret rotated a moment ago must already count
    session = cookie_value(request.headers.get("cookie"))
    project = services.console_sessions.project(session, services.registry)
    if project is not None:
        return project
    if request.headers.get("authorization"):
        return authenticate(
            services.registry, request.headers["authorization"], None, allow_token=False
        )
    raise Unauthorized(_SIGNED_OUT)


def _project_json(project: Project) -> dict[str, object]:
    return {"project": {"id": project.id, "name": project.name}}


def _cookie(request: Request, services: Services, value: str, max_age: int) -> tuple[str, str]:
    https = client_used_https(
        request.scope.get("scheme"),
        request.client_host,
        request.headers,
        services.settings.trusted_proxies,
    )
    secure = "; Secure" if https else ""
    return (
        "set-cookie",
        f"{COOKIE}={value}; Max-Age={max_age}; Path=/console; HttpOnly; SameSite=Strict{secure}",
    )


# -- /console/api/session ----------------------------------------------------------------
async def handle_session(request: Request, services: Services) -> Response:
    """POST signs in (``secret``, or a service account's ``username`` + ``secret`` +
    ``project_id``), GET says who is signed in, DELETE signs out."""
    if request.method == "DELETE":
        services.console_sessions.end(cookie_value(request.headers.get("cookie")))
        return responses.json_reply({"status": "ok"}, headers=[_cookie(request, services, "", 0)])
    try:
        if request.method == "GET":
            return responses.json_reply(_project_json(_signed_in(request, services)))
        params = await query_params(request)
        secret = params.get("secret", "")
        if not secret:
            raise PayloadError("secret is required: the project's API secret")
        username = params.get("username")
        project = check_credentials(
            services.registry,
            username or secret,
            secret if username else "",
            params.get("project_id"),
            allow_token=False,
        )
    except Unauthorized:
        return responses.query_error(401, READ_API_REFUSAL)
    except RequestError as exc:  # bad parameters (400), a body too large (413)
        return responses.query_error(exc.status, exc.message)
    session = services.console_sessions.start(project)
    return responses.json_reply(
        _project_json(project), headers=[_cookie(request, services, session, SESSION_S)]
    )


# -- /console/api/overview and /console/api/schema ------------------------------------------
async def handle_overview(request: Request, services: Services) -> Response:
    try:
        project = _signed_in(request, services)
        window = console.chart_window(int(time.time() * 1000))
        activity = await asyncio.to_thread(
            services.store.activity, project.id, *window, top=console.TOP_EVENTS
        )
    except Unauthorized as exc:
        return responses.query_error(401, exc.message)
    except StorageError as exc:
        return responses.query_error(500, str(exc))
    return responses.json_reply({**_project_json(project), **console.overview(activity, window)})


async def handle_schema(request: Request, services: Services) -> Response:
    try:
        project = _signed_in(request, services)
        shapes = await asyncio.to_thread(
            services.store.schema, project.id, limit=console.SCHEMA_EVENTS
        )
    except Unauthorized as exc:
        return responses.query_error(401, exc.message)
    except StorageError as exc:
        return responses.query_error(500, str(exc))
    return responses.json_reply({**_project_json(project), **console.schema(shapes)})


# -- /console/api/stream ----------------------------------------------------------------------
async def handle_stream(request: Request, services: Services, send: Send) -> Response | None:
    """Server-sent events: one ``events`` message per acknowledged request, as soon as
    it is acknowledged; ``dropped`` when this reader fell behind and missed some."""
    try:
        project = _signed_in(request, services)
    except Unauthorized as exc:
        return responses.query_error(401, exc.message)
    await _Stream(request, services, send, project).run()
    return None


class _Abandoned(Exception):
    """The reader stopped reading (or the server is stopping while it does)."""


class _Stream:
    def __init__(self, request: Request, services: Services, send: Send, project: Project) -> None:
        self.request = request
        self.services = services
        self._send = send
        self.project = project
        self.feed = services.live

    def allowed(self) -> bool:
        """Whether the credentials still hold: a sign-out or a rotated secret ends an
        open stream at its next message, not only the next request."""
        try:
            return _signed_in(self.request, self.services).id == self.project.id
        except Unauthorized:
            return False

    async def run(self) -> None:
        watcher = self.feed.watch(self.project.id)
        disconnected = asyncio.create_task(_disconnect(self.request))
        try:
            await self._send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),  # nginx: pass each message at once
                    ],
                }
            )
            await self.write(b"retry: 2000\nevent: hello\ndata: " + _hello(self.project) + b"\n\n")
            while not disconnected.done():
                getter = asyncio.ensure_future(watcher.queue.get())
                done, _ = await asyncio.wait(
                    {getter, disconnected}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()  # a cancelled get() leaves its message in the queue
                    if disconnected not in done:
                        if not self.allowed():
                            break
                        await self.write(b": keep-alive\n\n")
                    continue
                message = getter.result()
                if message is None or not self.allowed():  # stopping, or signed out
                    break
                if watcher.dropped:
                    dropped, watcher.dropped = watcher.dropped, 0
                    await self.write(b'event: dropped\ndata: {"events":%d}\n\n' % dropped)
                await self.write(b"event: events\ndata: " + message.data + b"\n\n")
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        except (_Abandoned, OSError):
            pass  # the reader is gone or stuck; the server closes the connection
        finally:
            self.feed.unwatch(watcher)
            disconnected.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await disconnected

    async def write(self, data: bytes) -> None:
        """Send, unless the reader has not taken anything for SEND_TIMEOUT_S or the
        server starts stopping meanwhile: a stalled reader must hold up neither."""
        sending = asyncio.ensure_future(
            self._send({"type": "http.response.body", "body": data, "more_body": True})
        )
        closing = asyncio.ensure_future(self.feed.closing.wait())
        try:
            await asyncio.wait(
                {sending, closing}, timeout=SEND_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closing.cancel()
        if not sending.done():
            sending.cancel()
            raise _Abandoned
        sending.result()


def _hello(project: Project) -> bytes:
    return b'{"project":{"id":%d}}' % project.id


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
