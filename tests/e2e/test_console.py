"""The console (/console and /console/api/...) end to end, over real HTTP against one
server process: its page and headers, signing in and out, the live event stream, the
overview chart and the exact event schema.

The server is shared by the whole module; every test works in projects of its own,
signs in itself (sessions live in the server's memory, and some tests restart it) and
reads the event stream with a raw socket reader whose every read has a deadline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.serverproc import Reply, Server, basic, cli, dumps, export, import_events, request
from trackhouse.live import EVENTS_PER_MESSAGE, QUEUE_MESSAGES
from trackhouse.projects import Project, Registry
from trackhouse.web.sessions import SESSION_S

pytestmark = pytest.mark.e2e

STREAM = "/console/api/stream"
SESSION = "/console/api/session"
OVERVIEW = "/console/api/overview"
SCHEMA = "/console/api/schema"
API_GETS = (SESSION, OVERVIEW, SCHEMA, STREAM)
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
READ_TIMEOUT = 15.0  # one stream read; a healthy server answers in milliseconds
LOAD_TIMEOUT = 30.0
COOKIE_RE = re.compile(
    r"trackhouse_session=([A-Za-z0-9_-]{32,}); Max-Age=(\d+); Path=/console; HttpOnly; "
    r"SameSite=Strict"
)
ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00")
MINUTE_MS = 60_000
# The projects of the module, one per test or concern, made before the server starts.
PROJECT_NAMES = (
    "signin",
    "signin-other",
    "signout",
    "service",
    "rotate",
    "rotate-now",
    "rotate-stream",
    "basic",
    "stream",
    "cap",
    "rejects",
    "iso-a",
    "iso-b",
    "overview",
    "overview-other",
    "typed",
    "dups",
    "restart",
    "hostile",
    "shutdown",
    "stalled",
    "slow",
    "many",
)

T = TypeVar("T")


# -- the shared server -------------------------------------------------------------------------
@dataclass
class Env:
    data_dir: Path
    server: Server
    projects: dict[str, Project] = field(default_factory=dict)

    def start(self) -> None:
        # No fsync: these tests stop and kill the process, never the machine, and the
        # page cache keeps what a killed process wrote.
        self.server = Server(
            self.data_dir,
            env={"TRACKHOUSE_JOURNAL_FSYNC": "0"},
        ).start()

    def restart(self, *, crash: bool = False) -> None:
        """SIGTERM (or SIGKILL) the server, then start it again on the same data."""
        if crash:
            self.server.kill()
        else:
            self.server.stop()
        self.start()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("console") / "data"
    data_dir.mkdir(parents=True)
    registry = Registry(data_dir / "projects.sqlite")
    projects = {}
    try:
        for name in PROJECT_NAMES:
            tag = uuid.uuid4().hex[:10]
            made = registry.create_project(
                name, token=f"tok-{name}-{tag}", secret=f"sec-{name}-{tag}"
            )
            projects[name] = made
    finally:
        registry.close()
    environment = Env(data_dir, Server(data_dir), projects)
    environment.start()
    try:
        yield environment
    finally:
        environment.server.kill()


# -- helpers -------------------------------------------------------------------------------------
def poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float = LOAD_TIMEOUT) -> T:
    """``read()`` until ``done`` says yes; the last value on time, else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not there after {timeout}s: {value!r}")
        time.sleep(0.05)


def now_ms() -> int:
    return int(time.time() * 1000)


def day(offset: int = 0) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def event(
    name: str,
    insert_id: str,
    time_ms: int,
    distinct_id: str = "user-1",
    props: dict[str, Any] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "distinct_id": distinct_id,
        "$insert_id": insert_id,
        "time": time_ms,
        **(props or {}),
    }
    if token is not None:
        properties["token"] = token
    return {"event": name, "properties": properties}


def send_import(env: Env, project: Project, events: list[dict[str, Any]]) -> Reply:
    """Strict /import with the project secret; expects every event stored."""
    return import_events(env.server, project.secret, events)


def send_track(env: Env, events: list[dict[str, Any]]) -> Reply:
    """/track as mixpanel-browser sends it: a form with data=JSON, verbose reply."""
    body = urllib.parse.urlencode({"data": json.dumps(events), "verbose": "1"}).encode()
    return request(env.server, "POST", "/track", body, {"Content-Type": FORM})


def sign_in(env: Env, secret: str, **extra: str) -> tuple[Reply, str | None]:
    """POST the JSON sign-in; the reply and the session cookie (None if refused)."""
    body = dumps({"secret": secret, **extra})
    reply = request(env.server, "POST", SESSION, body, {"Content-Type": JSON_TYPE})
    return reply, session_cookie(reply)


def session_cookie(reply: Reply) -> str | None:
    set_cookie = reply.header("set-cookie")
    match = COOKIE_RE.fullmatch(set_cookie)
    return f"trackhouse_session={match.group(1)}" if match else None


def signed_in(env: Env, project: Project) -> str:
    reply, cookie = sign_in(env, project.secret)
    assert reply.status == 200, reply
    assert cookie is not None, reply.headers
    return cookie


def get(env: Env, path: str, *, cookie: str | None = None, secret: str | None = None) -> Reply:
    headers = {}
    if cookie is not None:
        headers["Cookie"] = cookie
    if secret is not None:
        headers["Authorization"] = basic(secret)
    return request(env.server, "GET", path, None, headers)


def get_json(env: Env, path: str, **auth: str) -> dict[str, Any]:
    reply = get(env, path, **auth)
    assert reply.status == 200, reply
    assert reply.content_type == JSON_TYPE
    body: dict[str, Any] = reply.json()
    return body


def assert_json_error(reply: Reply, status: int) -> str:
    assert reply.status == status, reply
    assert reply.content_type == JSON_TYPE, reply
    body = reply.json()
    assert set(body) == {"error", "status"}, body
    assert body["status"] == "error"
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "set-cookie" not in reply.headers
    message: str = body["error"]
    return message


def schema_of(env: Env, project: Project) -> dict[str, dict[str, Any]]:
    """The project's schema (Basic auth), by event name."""
    body = get_json(env, SCHEMA, secret=project.secret)
    assert body["project"] == {"id": project.id, "name": project.name}
    return {entry["event"]: entry for entry in body["events"]}


def exported(env: Env, project: Project, days_back: int = 1) -> list[dict[str, Any]]:
    return export(env.server, project.secret, day(-days_back), day(1), time_in_ms="1")


# -- the event stream, read raw ---------------------------------------------------------------
@dataclass(frozen=True)
class Sse:
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class Stream:
    """A client of /console/api/stream on a raw socket: HTTP/1.1 chunked decoding and
    server-sent-event parsing by hand, every read bounded by a deadline."""

    def __init__(
        self, server: Server, headers: dict[str, str], *, rcvbuf: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect(): it sets the window the peer may fill
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.connect(("127.0.0.1", server.port))
        lines = [f"GET {STREAM} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
        lines += ["Accept: text/event-stream", *(f"{k}: {v}" for k, v in headers.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._raw = b""  # bytes from the socket, not yet de-chunked
        self._body = b""  # the stream's text, not yet parsed
        self.ended = False  # the last chunk came, or the socket closed
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\r\n\r\n" not in self._raw:
            if not self._recv(deadline):
                raise AssertionError(f"stream closed before its headers: {self._raw!r}")
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        assert self.status == 200, (self.status, self.headers, self._raw)
        assert self.headers.get("transfer-encoding") == "chunked", self.headers

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _recv(self, deadline: float) -> bool:
        """More bytes; False at end of stream, TimeoutError past the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no message from the stream before the deadline")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            self.ended = True
            return False
        self._raw += data
        return True

    def _dechunk(self) -> None:
        while not self.ended:
            size_line, sep, rest = self._raw.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self._body += rest[:size]
            self._raw = rest[size + 2 :]
            if size == 0:
                self.ended = True

    def next(self, timeout: float = READ_TIMEOUT) -> Sse | None:
        """The next message (comments skipped); None once the stream has ended."""
        deadline = time.monotonic() + timeout
        while True:
            self._dechunk()
            while b"\n\n" in self._body:
                block, self._body = self._body.split(b"\n\n", 1)
                name, data = "message", []
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        continue
                    key, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if key == "event":
                        name = value
                    elif key == "data":
                        data.append(value)
                if data:
                    return Sse(name, "\n".join(data))
            if self.ended or not self._recv(deadline):
                self._dechunk()
                if b"\n\n" not in self._body:
                    return None

    def hello(self) -> dict[str, Any]:
        message = self.next()
        assert message is not None
        assert message.event == "hello", message
        body: dict[str, Any] = message.json()
        return body

    def until(self, insert_ids: set[str], timeout: float = READ_TIMEOUT) -> list[dict[str, Any]]:
        """`events` messages until every one of ``insert_ids`` has come."""
        messages = []
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while not insert_ids <= seen:
            left = deadline - time.monotonic()
            message = self.next(max(left, 0.001))
            assert message is not None, f"the stream ended; missing {insert_ids - seen}"
            assert message.event == "events", message
            body = message.json()
            messages.append(body)
            seen.update(e["properties"]["$insert_id"] for e in body["events"])
        return messages


def open_stream(env: Env, **auth: str) -> Stream:
    headers = {}
    if "cookie" in auth:
        headers["Cookie"] = auth["cookie"]
    if "secret" in auth:
        headers["Authorization"] = basic(auth["secret"])
    return Stream(env.server, headers)


# == 1. the page ===================================================================================
PAGE_TYPES = {
    "/console": "text/html; charset=utf-8",
    "/console/": "text/html; charset=utf-8",
    "/console/console.js": "text/javascript; charset=utf-8",
    "/console/console.css": "text/css; charset=utf-8",
}


def test_the_page_and_its_assets_are_served_with_security_headers(env: Env) -> None:
    bodies = {}
    for path, content_type in PAGE_TYPES.items():
        reply = request(env.server, "GET", path, None, {"Origin": "https://evil.example"})
        assert reply.status == 200, (path, reply)
        assert reply.content_type == content_type, path
        csp = {
            d.split()[0]: d.split()[1:] for d in reply.header("content-security-policy").split("; ")
        }
        assert csp["default-src"] == ["'none'"]
        assert csp["script-src"] == ["'self'"]
        assert csp["style-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert "unsafe" not in reply.header("content-security-policy")
        assert reply.header("x-content-type-options") == "nosniff"
        assert reply.header("referrer-policy") == "no-referrer"
        assert "access-control-allow-origin" not in reply.headers  # same origin only
        bodies[path] = reply.body.decode()
    page = bodies["/console"]
    assert bodies["/console/"] == page
    assert '<script src="/console/console.js"' in page
    assert '<link rel="stylesheet" href="/console/console.css">' in page
    # Nothing inline, which the CSP would block anyway: no script text, no style
    # element or attribute, no event handler attribute.
    for attributes, text in re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S):
        assert 'src="/console/' in attributes
        assert not text.strip()
    assert "<style" not in page
    assert not re.search(r"\s(on[a-z]+|style)\s*=", page)
    # Event data is anyone's to send: the page may only ever set it as text.
    script = bodies["/console/console.js"]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


@pytest.mark.parametrize(
    "path",
    [
        "/console/x",
        "/console/console.html",
        "/console/static/console.js",
        "/console/api",
        "/console/api/nope",
        "/console/..%2fprojects.sqlite",
        "/consolex",
    ],
)
def test_unknown_console_paths_are_404(env: Env, path: str) -> None:
    assert request(env.server, "GET", path).status == 404


def test_wrong_methods_are_405(env: Env) -> None:
    cases = {
        ("POST", "/console"): "GET",
        ("PUT", "/console/console.js"): "GET",
        ("DELETE", "/console/console.css"): "GET",
        ("POST", OVERVIEW): "GET",
        ("DELETE", SCHEMA): "GET",
        ("POST", STREAM): "GET",
        ("PUT", SESSION): "DELETE, GET, POST",
        ("PATCH", SESSION): "DELETE, GET, POST",
        ("OPTIONS", SESSION): "DELETE, GET, POST",  # no CORS: no preflight either
    }
    for (method, path), allowed in cases.items():
        reply = request(env.server, method, path, b"", {"Origin": "https://evil.example"})
        assert reply.status == 405, (method, path, reply)
        assert reply.header("allow") == allowed, (method, path)
        assert "access-control-allow-origin" not in reply.headers


# == 2. signing in ================================================================================
def test_sign_in_with_json_or_a_form_gives_a_strict_cookie(env: Env) -> None:
    project = env.projects["signin"]
    expected = {"project": {"id": project.id, "name": project.name}}
    as_json, cookie_a = sign_in(env, project.secret)
    assert as_json.status == 200, as_json
    assert as_json.json() == expected
    match = COOKIE_RE.fullmatch(as_json.header("set-cookie"))
    assert match is not None, as_json.header("set-cookie")
    assert int(match.group(2)) == SESSION_S
    assert "secure" not in as_json.header("set-cookie").lower()  # plain http here

    form = urllib.parse.urlencode({"secret": project.secret}).encode()
    as_form = request(env.server, "POST", SESSION, form, {"Content-Type": FORM})
    assert as_form.status == 200, as_form
    assert as_form.json() == expected
    cookie_b = session_cookie(as_form)
    assert cookie_a is not None
    assert cookie_b is not None
    assert cookie_a != cookie_b

    for cookie in (cookie_a, cookie_b, f"theme=dark; {cookie_a}; lang=fr"):
        assert get_json(env, SESSION, cookie=cookie) == expected
        assert get_json(env, OVERVIEW, cookie=cookie)["project"] == expected["project"]
        assert get_json(env, SCHEMA, cookie=cookie)["project"] == expected["project"]
        with open_stream(env, cookie=cookie) as stream:
            assert stream.hello() == {"project": {"id": project.id}}


def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    cli(data_dir, "projects", "create", "tls", "--token", "tok-tls", "--secret", "sec-tls")
    body = dumps({"secret": "sec-tls"})
    https = {"Content-Type": JSON_TYPE, "X-Forwarded-Proto": "https"}
    untrusting = start_server(data_dir)
    # Anyone can send the header: believed only from a proxy we were told to trust.
    reply = request(untrusting, "POST", SESSION, body, https)
    assert "secure" not in reply.header("set-cookie").lower()
    untrusting.stop()
    proxied = start_server(data_dir, args=["--trusted-proxies", "127.0.0.1"])
    reply = request(proxied, "POST", SESSION, body, https)
    assert reply.status == 200, reply
    assert reply.header("set-cookie").endswith("; HttpOnly; SameSite=Strict; Secure")
    plain = request(proxied, "POST", SESSION, body, {"Content-Type": JSON_TYPE})
    assert "secure" not in plain.header("set-cookie").lower()


def test_sign_out_clears_the_cookie_and_ends_only_that_session(env: Env) -> None:
    project = env.projects["signout"]
    leaving, staying = signed_in(env, project), signed_in(env, project)
    reply = request(env.server, "DELETE", SESSION, None, {"Cookie": leaving})
    assert reply.status == 200, reply
    assert reply.json() == {"status": "ok"}
    assert reply.header("set-cookie") == (
        "trackhouse_session=; Max-Age=0; Path=/console; HttpOnly; SameSite=Strict"
    )
    for path in API_GETS:
        assert_json_error(get(env, path, cookie=leaving), 401)
    assert get_json(env, SESSION, cookie=staying)["project"]["id"] == project.id
    # Signing out twice, or without a session, is harmless.
    assert request(env.server, "DELETE", SESSION, None, {"Cookie": leaving}).status == 200
    assert request(env.server, "DELETE", SESSION).status == 200
    assert get_json(env, SESSION, cookie=staying)["project"]["id"] == project.id


def test_sign_in_refusals(env: Env) -> None:
    project, other = env.projects["signin"], env.projects["signin-other"]

    def post(body: bytes, content_type: str) -> Reply:
        return request(env.server, "POST", SESSION, body, {"Content-Type": content_type})

    # Malformed: 400, the JSON error shape, no cookie.
    assert "secret is required" in assert_json_error(post(b"{}", JSON_TYPE), 400)
    assert "secret is required" in assert_json_error(post(b"", FORM), 400)
    assert "secret is required" in assert_json_error(post(b"username=x", FORM), 400)
    # An empty secret is a missing one (400, not 401: nothing was tried).
    assert "secret is required" in assert_json_error(post(b'{"secret": ""}', JSON_TYPE), 400)
    assert_json_error(post(b"{not json", JSON_TYPE), 400)
    assert_json_error(post(b'["a", "list"]', JSON_TYPE), 400)

    # A body past the read APIs' 1 MB cap is refused before it is parsed.
    too_big = dumps({"secret": "x" * (1024 * 1024)})
    assert "exceeds max limit" in assert_json_error(post(too_big, JSON_TYPE), 413)

    # Wrong credentials: 401.
    refused: list[dict[str, str]] = [
        {"secret": "not-a-secret"},
        {"secret": project.secret + "x"},
        {"secret": project.secret.upper()},
        {"secret": project.token},  # the token is public: it never signs in
        {"secret": other.secret, "project_id": str(project.id)},
        {"secret": project.secret, "project_id": str(other.id)},
        {"secret": project.secret, "project_id": "one"},
        {"secret": project.secret, "username": "nobody"},
    ]
    for body in refused:
        reply = post(dumps(body), JSON_TYPE)
        assert assert_json_error(reply, 401) == "Invalid credentials: use the project's API secret"
    # Even a project that accepts its token on /import does not let it sign in.
    cli(env.data_dir, "projects", "update", str(other.id), "--allow-token-import")
    assert_json_error(sign_in(env, other.token)[0], 401)
    # The right secret with its own project id is fine.
    reply, cookie = sign_in(env, project.secret, project_id=str(project.id))
    assert reply.status == 200, reply
    assert cookie is not None


def test_a_service_account_signs_in_with_its_project_id(env: Env) -> None:
    project, other = env.projects["service"], env.projects["signin-other"]
    username, account_secret = f"sa-console-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    cli(
        env.data_dir,
        "service-accounts",
        "create",
        "--project",
        str(project.id),
        "--username",
        username,
        "--secret",
        account_secret,
    )
    reply, cookie = sign_in(env, account_secret, username=username, project_id=str(project.id))
    assert reply.status == 200, reply
    assert reply.json() == {"project": {"id": project.id, "name": project.name}}
    assert cookie is not None
    assert get_json(env, SESSION, cookie=cookie)["project"]["id"] == project.id
    # As a form too, the way a plain HTML form would send it.
    form = urllib.parse.urlencode(
        {"username": username, "secret": account_secret, "project_id": project.id}
    ).encode()
    assert request(env.server, "POST", SESSION, form, {"Content-Type": FORM}).status == 200
    for wrong in (
        {"project_id": str(other.id)},
        {"secret": account_secret + "x", "project_id": str(project.id)},
        {"username": username + "x", "project_id": str(project.id)},
    ):
        body = {"username": username, "secret": account_secret, **wrong}
        reply = request(env.server, "POST", SESSION, dumps(body), {"Content-Type": JSON_TYPE})
        assert_json_error(reply, 401)
    # Basic auth with the account works on the API as well.
    headers = {"Authorization": basic(username, account_secret)}
    reply = request(env.server, "GET", OVERVIEW, None, headers)
    assert reply.status == 200, reply
    assert reply.json()["project"]["id"] == project.id


@pytest.mark.parametrize(
    "cookie",
    [
        "trackhouse_session=" + secrets.token_urlsafe(32),
        "trackhouse_session=",
        "trackhouse_session",
        "trackhouse_session=../../etc/passwd",
        "trackhouse_session=" + "A" * 5000,
    ],
)
def test_a_forged_cookie_is_refused(env: Env, cookie: str) -> None:
    for path in API_GETS:
        assert_json_error(get(env, path, cookie=cookie), 401)


def test_a_stolen_cookie_value_under_another_name_is_refused(env: Env) -> None:
    cookie = signed_in(env, env.projects["signin"])
    value = cookie.partition("=")[2]
    for forged in (f"session={value}", f"Trackhouse_Session={value}", f"x{cookie}"):
        assert_json_error(get(env, SESSION, cookie=forged), 401)


def test_rotating_the_secret_signs_out_its_sessions(env: Env) -> None:
    project = env.projects["rotate"]
    cookie = signed_in(env, project)
    assert get_json(env, SESSION, cookie=cookie)["project"]["id"] == project.id
    new_secret = f"rotated-{uuid.uuid4().hex}"
    rotated = cli(
        env.data_dir, "projects", "rotate-secret", str(project.id), "--secret", new_secret
    )
    assert rotated["secret"] == new_secret
    # The running server sees the new secret (its registry reloads on a sign-in) ...
    reply, new_cookie = sign_in(env, new_secret)
    assert reply.status == 200, reply
    assert new_cookie is not None
    # ... and from then on the old secret and every session made with it are refused.
    assert_json_error(sign_in(env, project.secret)[0], 401)
    for path in API_GETS:
        assert_json_error(get(env, path, cookie=cookie), 401)
        assert_json_error(get(env, path, secret=project.secret), 401)
    assert get_json(env, SESSION, cookie=new_cookie)["project"]["id"] == project.id
    assert get_json(env, OVERVIEW, secret=new_secret)["project"]["id"] == project.id


def test_rotating_the_secret_refuses_the_old_session_on_the_very_next_request(env: Env) -> None:
    project = env.projects["rotate-now"]
    cookie = signed_in(env, project)
    cli(env.data_dir, "projects", "rotate-secret", str(project.id))
    # No other request in between: the session check alone must notice the rotation.
    assert get(env, SESSION, cookie=cookie).status == 401


def test_rotating_the_secret_ends_an_open_stream(env: Env) -> None:
    project = env.projects["rotate-stream"]
    cookie = signed_in(env, project)
    with open_stream(env, cookie=cookie) as stream:
        stream.hello()
        new_secret = f"rotated-{uuid.uuid4().hex}"
        cli(env.data_dir, "projects", "rotate-secret", str(project.id), "--secret", new_secret)
        assert sign_in(env, new_secret)[0].status == 200  # the server has seen the rotation
        assert_json_error(get(env, SESSION, cookie=cookie), 401)
        secret_event = event("after rotation", "rot-1", now_ms() - 1000)
        send_import(env, dataclasses.replace(project, secret=new_secret), [secret_event])
        try:
            message = stream.next(timeout=5)
        except TimeoutError:
            message = None  # not delivered: fine too
        assert message is None, f"the old session still receives events: {message}"


def test_basic_auth_with_the_secret_needs_no_cookie(env: Env) -> None:
    project = env.projects["basic"]
    for path in (SESSION, OVERVIEW, SCHEMA):
        assert get_json(env, path, secret=project.secret)["project"]["id"] == project.id
    with open_stream(env, secret=project.secret) as stream:
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.hello() == {"project": {"id": project.id}}
    # A bare "secret:" or just the secret, as scripts send it, is the same credential.
    raw = {"Authorization": f"Basic {project.secret}"}
    assert request(env.server, "GET", OVERVIEW, None, raw).status == 200
    for wrong in (project.token, "", "nobody", f"{project.secret}x"):
        assert_json_error(get(env, OVERVIEW, secret=wrong), 401)
    assert_json_error(
        request(env.server, "GET", OVERVIEW, None, {"Authorization": "Bearer x"}), 401
    )


# == 3. nothing without credentials =================================================================
def test_every_api_endpoint_wants_credentials(env: Env) -> None:
    for path in API_GETS:
        assert "secret" in assert_json_error(get(env, path), 401)
        assert_json_error(
            request(env.server, "GET", path, None, {"Authorization": "Basic !!!"}), 401
        )
        reply = request(env.server, "GET", path, None, {"Origin": "https://evil.example"})
        assert_json_error(reply, 401)
        assert "access-control-allow-origin" not in reply.headers


# == 4. the live stream ==============================================================================
def test_the_stream_shows_tracked_and_imported_events_as_export_prints_them(env: Env) -> None:
    project = env.projects["stream"]
    cookie = signed_in(env, project)
    with open_stream(env, cookie=cookie) as stream:
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.hello() == {"project": {"id": project.id}}

        # /track: a form with data=JSON, the token inside each event, time in seconds.
        sent_s = round(time.time() - 2, 3)
        tracked = [
            {
                "event": "Page viewed",
                "properties": {
                    "token": project.token,
                    "distinct_id": "visitor-7",
                    "$insert_id": f"trk-{i}",
                    "time": sent_s,
                    "page": f"/p/{i}",
                    "nested": {"a": [1, 2]},
                },
            }
            for i in range(3)
        ]
        before = now_ms()
        reply = send_track(env, tracked)
        replied = time.monotonic()
        assert reply.json() == {"status": 1, "error": None}, reply
        [message] = stream.until({"trk-0", "trk-1", "trk-2"})
        print(f"/track reply → stream message: {(time.monotonic() - replied) * 1000:.1f} ms")
        assert set(message) == {"received_ms", "endpoint", "more", "events"}
        assert message["endpoint"] == "track"
        assert message["more"] == 0
        assert before <= message["received_ms"] <= now_ms()
        assert [e["event"] for e in message["events"]] == ["Page viewed"] * 3
        for i, shown in enumerate(message["events"]):
            props = shown["properties"]
            assert props["distinct_id"] == "visitor-7"
            assert props["$insert_id"] == f"trk-{i}"
            assert props["time"] == round(sent_s * 1000)  # in ms, not seconds
            assert props["page"] == f"/p/{i}"
            assert props["nested"] == {"a": [1, 2]}
            assert props["mp_processing_time_ms"] == message["received_ms"]
            assert "token" not in props

        # /import: Basic auth with the secret, a JSON body.
        time_ms = now_ms() - 60_000
        imported = [
            event("Order", f"imp-{i}", time_ms + i, "buyer-1", {"amount": 9.5 + i})
            for i in range(2)
        ]
        send_import(env, project, imported)
        replied = time.monotonic()
        [message] = stream.until({"imp-0", "imp-1"})
        print(f"/import reply → stream message: {(time.monotonic() - replied) * 1000:.1f} ms")
        assert message["endpoint"] == "import"
        assert [e["properties"]["time"] for e in message["events"]] == [time_ms, time_ms + 1]
        assert [e["properties"]["amount"] for e in message["events"]] == [9.5, 10.5]
        assert all(e["properties"]["$import"] is True for e in message["events"])
        streamed = message["events"]

    # What the stream showed is exactly what export (time_in_ms=1) prints.
    env.server.wait_loaded()
    lines = {e["properties"]["$insert_id"]: e for e in exported(env, project)}
    for shown in streamed:
        assert lines[shown["properties"]["$insert_id"]] == shown


def test_a_big_request_shows_its_first_100_events_and_counts_the_rest(env: Env) -> None:
    project = env.projects["cap"]
    with open_stream(env, secret=project.secret) as stream:
        stream.hello()
        time_ms = now_ms() - 5000
        events = [event("bulk", f"cap-{i:04d}", time_ms) for i in range(EVENTS_PER_MESSAGE + 150)]
        send_import(env, project, events)
        message = stream.next()
        assert message is not None
        assert message.event == "events"
        body = message.json()
        assert body["more"] == 150
        assert [e["properties"]["$insert_id"] for e in body["events"]] == [
            f"cap-{i:04d}" for i in range(EVENTS_PER_MESSAGE)
        ]


def test_rejected_events_never_reach_the_stream(env: Env) -> None:
    project = env.projects["rejects"]
    with open_stream(env, secret=project.secret) as stream:
        stream.hello()
        time_ms = now_ms() - 5000
        mixed = [
            event("good", "rej-ok-1", time_ms),
            {"event": "no time", "properties": {"distinct_id": "u", "$insert_id": "rej-bad-1"}},
            event("", "rej-bad-2", time_ms),
            event("placeholder id", "rej-bad-3", time_ms, distinct_id="undefined"),
            event("good", "rej-ok-2", time_ms),
        ]
        reply = request(
            env.server,
            "POST",
            "/import",
            dumps(mixed),
            {"Content-Type": JSON_TYPE, "Authorization": basic(project.secret)},
        )
        assert reply.status == 400, reply
        assert reply.json()["num_records_imported"] == 2
        tracked = [
            event("good", "rej-ok-3", time_ms, token=project.token),
            event("unknown token", "rej-bad-4", time_ms, token="no-such-token"),
            event("no token", "rej-bad-5", time_ms),
        ]
        assert send_track(env, tracked).json()["status"] == 1
        # A request with nothing valid publishes nothing at all.
        all_bad = [event("too old", "rej-bad-6", 1000, token=project.token)]
        assert send_track(env, all_bad).json()["status"] == 0
        send_import(env, project, [event("marker", "rej-marker", time_ms)])
        messages = stream.until({"rej-marker"})
    shown = [e["properties"]["$insert_id"] for m in messages for e in m["events"]]
    assert shown == ["rej-ok-1", "rej-ok-2", "rej-ok-3", "rej-marker"]
    assert [m["more"] for m in messages] == [0, 0, 0]


def test_each_stream_sees_only_its_own_project(env: Env) -> None:
    a, b = env.projects["iso-a"], env.projects["iso-b"]
    cookie_a = signed_in(env, a)
    time_ms = now_ms() - 5000
    with (
        open_stream(env, cookie=cookie_a) as stream_a,
        open_stream(env, secret=b.secret) as stream_b,
    ):
        assert stream_a.hello() == {"project": {"id": a.id}}
        assert stream_b.hello() == {"project": {"id": b.id}}
        mixed = [
            event("a-event", "iso-a1", time_ms, token=a.token),
            event("b-secret-event", "iso-b1", time_ms, token=b.token),
            event("a-event", "iso-a2", time_ms, token=a.token),
            event("b-secret-event", "iso-b2", time_ms, token=b.token),
        ]
        assert send_track(env, mixed).json() == {"status": 1, "error": None}
        [message_a] = stream_a.until({"iso-a1", "iso-a2"})
        [message_b] = stream_b.until({"iso-b1", "iso-b2"})
        assert [e["properties"]["$insert_id"] for e in message_a["events"]] == ["iso-a1", "iso-a2"]
        assert [e["properties"]["$insert_id"] for e in message_b["events"]] == ["iso-b1", "iso-b2"]
        assert message_a["more"] == message_b["more"] == 0
        # B's own requests never reach A: A's next message is A's marker.
        send_import(env, b, [event("b-secret-event", "iso-b3", time_ms)])
        send_import(env, a, [event("a-marker", "iso-a-marker", time_ms)])
        stream_b.until({"iso-b3"})
        [marker] = stream_a.until({"iso-a-marker"})
        assert [e["event"] for e in marker["events"]] == ["a-marker"]

    # Overview and schema of A's session know nothing of B, whatever the query says.
    env.server.wait_loaded()
    for path in (OVERVIEW, SCHEMA, f"{OVERVIEW}?project_id={b.id}", f"{SCHEMA}?project_id={b.id}"):
        body = get_json(env, path, cookie=cookie_a)
        assert body["project"]["id"] == a.id
        assert "b-secret-event" not in json.dumps(body)
    names = {e["event"] for e in get_json(env, SCHEMA, cookie=cookie_a)["events"]}
    assert names == {"a-event", "a-marker"}
    top = get_json(env, OVERVIEW, cookie=cookie_a)["top_events"]
    assert top == [{"event": "a-event", "count": 2}, {"event": "a-marker", "count": 1}]


# == 5. overview =====================================================================================
def test_overview_counts_the_last_hour_by_arrival(env: Env) -> None:
    project, other = env.projects["overview"], env.projects["overview-other"]
    time_ms = now_ms() - 10_000
    send_import(env, project, [event("alpha", f"ov-a{i}", time_ms) for i in range(3)])
    send_import(env, project, [event("alpha", f"ov-a{i}", time_ms) for i in range(3, 5)])
    tracked = [event("beta", f"ov-b{i}", time_ms, token=project.token) for i in range(3)]
    assert send_track(env, tracked).json()["status"] == 1
    send_import(env, project, [event("aardvark", f"ov-k{i}", time_ms) for i in range(3)])
    # Sent today, dated three days ago: counted when it arrived.
    send_import(env, project, [event("gamma", "ov-g0", time_ms - 3 * 86_400_000)])
    send_import(env, other, [event("alpha", f"ov-o{i}", time_ms) for i in range(4)])
    send_import(env, other, [event("zeta", f"ov-z{i}", time_ms) for i in range(2)])
    env.server.wait_loaded()

    before = now_ms()
    body = poll(lambda: get_json(env, OVERVIEW, secret=project.secret), lambda b: b["total"] >= 12)
    after = now_ms()
    assert set(body) == {"project", "from", "to", "minutes", "total", "top_events"}
    assert body["project"] == {"id": project.id, "name": project.name}
    start, end = body["from"], body["to"]
    assert start % MINUTE_MS == 0
    assert end - start == 60 * MINUTE_MS
    # The current minute is the last one of the chart.
    assert before // MINUTE_MS * MINUTE_MS <= end - MINUTE_MS <= after // MINUTE_MS * MINUTE_MS
    assert [m["t"] for m in body["minutes"]] == list(range(start, end, MINUTE_MS))
    assert body["total"] == 12
    assert body["top_events"] == [
        {"event": "alpha", "count": 5},
        {"event": "aardvark", "count": 3},  # ties: by name
        {"event": "beta", "count": 3},
        {"event": "gamma", "count": 1},
    ]
    # Each minute holds the events that arrived in it (as their processing time says).
    arrivals = Counter(
        e["properties"]["mp_processing_time_ms"] // MINUTE_MS * MINUTE_MS
        for e in exported(env, project, days_back=4)
    )
    assert sum(arrivals.values()) == 12
    assert {m["t"]: m["count"] for m in body["minutes"] if m["count"]} == dict(arrivals)

    theirs = get_json(env, OVERVIEW, secret=other.secret)
    assert theirs["total"] == 6
    assert theirs["top_events"] == [{"event": "alpha", "count": 4}, {"event": "zeta", "count": 2}]


# == 6. schema =======================================================================================
def seen_order(entry: dict[str, Any]) -> None:
    for key in ("first_seen", "last_seen"):
        assert ISO_RE.fullmatch(entry[key]), entry
    assert dt.datetime.fromisoformat(entry["first_seen"]) <= dt.datetime.fromisoformat(
        entry["last_seen"]
    )


BUILT_IN = ["distinct_id", "time", "$insert_id"]


def test_schema_counts_every_property_by_type(env: Env) -> None:
    project = env.projects["typed"]
    time_ms = now_ms() - 10_000
    values: list[Any] = ["a", "b", "", 1, -2, 2.5, True, False, [1, "x"], {"k": 1}, None]
    events = [
        event("typed", f"ty-{i}", time_ms, f"u{i}", {"v": v, "w": "always"})
        for i, v in enumerate(values)
    ]
    for i in range(4):
        events[i]["properties"]["only_some"] = i
    send_import(env, project, events[:6])
    send_import(env, project, events[6:])
    tracked = [event("other", f"ty-o{i}", time_ms, token=project.token) for i in range(2)]
    assert send_track(env, tracked).json()["status"] == 1
    env.server.wait_loaded()

    body = get_json(env, SCHEMA, secret=project.secret)
    assert [(e["event"], e["count"]) for e in body["events"]] == [("typed", 11), ("other", 2)]
    typed = body["events"][0]
    seen_order(typed)
    props = {p["name"]: p for p in typed["properties"]}
    assert [p["name"] for p in typed["properties"]] == [
        *BUILT_IN,
        "$import",
        "$mp_api_endpoint",
        "mp_processing_time_ms",
        "v",
        "w",
        "only_some",
    ]
    for name, kind in zip(BUILT_IN, ["string", "number", "string"], strict=True):
        assert props[name]["built_in"] is True
        assert props[name]["count"] == 11
        assert props[name]["types"] == {kind: 11}
        assert (props[name]["first_seen"], props[name]["last_seen"]) == (
            typed["first_seen"],
            typed["last_seen"],
        )
    assert props["v"]["types"] == {
        "string": 3,
        "number": 3,
        "boolean": 2,
        "list": 1,
        "object": 1,
        "null": 1,
    }
    assert props["v"]["count"] == 11
    assert props["v"]["built_in"] is False
    assert props["w"]["types"] == {"string": 11}
    assert props["only_some"] == {**props["only_some"], "count": 4, "types": {"number": 4}}
    assert props["$import"]["types"] == {"boolean": 11}
    for prop in typed["properties"]:
        seen_order(prop)
    other = {p["name"]: p for p in body["events"][1]["properties"]}
    assert "$import" not in other  # /track events are not imports
    assert other["distinct_id"]["count"] == 2
    assert Counter(e["event"] for e in exported(env, project)) == {"typed": 11, "other": 2}


def test_schema_never_counts_a_duplicate(env: Env) -> None:
    project = env.projects["dups"]
    second = (now_ms() - 30_000) // 1000 * 1000
    dup = event("dup", "dup-1", second + 100, "same-user", {"n": 1})
    same_second = event("dup", "dup-1", second + 900, "same-user", {"n": 2})
    other_user = event("dup", "dup-1", second + 100, "other-user", {"n": 3})
    send_import(env, project, [dup])
    send_import(env, project, [dup])  # again, likely in the same load batch
    send_import(env, project, [same_second, dup, dup])  # copies in one request
    env.server.wait_loaded()
    # A batch mixing a stored copy with new events counts only the new ones.
    send_import(env, project, [dup, event("fresh", "fresh-1", second), other_user])
    env.server.wait_loaded()
    send_import(env, project, [dup, event("fresh", "fresh-2", second)])
    tracked = {**dup, "properties": {**dup["properties"], "token": project.token}}
    assert send_track(env, [tracked]).json() == {"status": 1, "error": None}
    env.server.wait_loaded()

    lines = Counter(e["event"] for e in exported(env, project))
    assert lines == {"dup": 2, "fresh": 2}  # same-user once, other-user once
    schema = schema_of(env, project)
    assert {name: entry["count"] for name, entry in schema.items()} == dict(lines)
    props = {p["name"]: p for p in schema["dup"]["properties"]}
    assert all(p["count"] == 2 for p in props.values()), props
    assert props["n"]["types"] == {"number": 2}
    assert env.server.status()["duplicates_dropped"] >= 7


def test_schema_is_unchanged_by_a_restart_or_a_crash(env: Env) -> None:
    project = env.projects["restart"]
    cookie = signed_in(env, project)
    time_ms = now_ms() - 10_000
    for batch in range(3):
        events = [
            event("kept", f"rs-{batch}-{i}", time_ms, props={"i": i, "s": "x"}) for i in range(50)
        ]
        send_import(env, project, events)
    env.server.wait_loaded()
    before = schema_of(env, project)
    assert before["kept"]["count"] == 150

    env.restart()  # SIGTERM: the journal is replayed past the store's checkpoint only
    env.server.wait_loaded()
    assert schema_of(env, project) == before
    assert_json_error(get(env, SESSION, cookie=cookie), 401)  # sessions do not survive

    # Killed right after acknowledging: whatever was not loaded yet is loaded once.
    send_import(env, project, [event("late", f"rs-late-{i}", time_ms) for i in range(40)])
    send_import(env, project, [event("kept", f"rs-0-{i}", time_ms) for i in range(50)])  # copies
    env.restart(crash=True)
    env.server.wait_loaded()
    after = schema_of(env, project)
    assert after["kept"] == before["kept"]
    assert after["late"]["count"] == 40
    assert Counter(e["event"] for e in exported(env, project)) == {"kept": 150, "late": 40}


HOSTILE = [
    "'; DROP TABLE events; --",
    "Robert'); DELETE FROM event_names WHERE ('1'='1",
    '"quoted" \\ back\\slash \' single',
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "événement 🚀 日本語 עברית",
    "tab\tnew\nline\r\n\n\nevent: dropped\ndata: {}",
    "nul\u0000byte",
    "${jndi:ldap://x}",
    "a.b[0].*",
    "$.*",
    "%s%n%x",
    "x" * 255,
    "é" * 255,
]
TOO_LONG = "y" * 300  # names are cut at 255 characters, as Mixpanel does


def test_hostile_names_come_back_verbatim(env: Env) -> None:
    project = env.projects["hostile"]
    time_ms = now_ms() - 10_000
    property_names = [*HOSTILE, "", " ", TOO_LONG]
    events = [
        event(name, f"h-{i}", time_ms, props={"p": i})
        for i, name in enumerate([*HOSTILE, TOO_LONG])
    ]
    events.append(event("props", "h-props", time_ms, props={n: n for n in property_names}))
    with open_stream(env, secret=project.secret) as stream:
        stream.hello()
        send_import(env, project, events)
        messages = stream.until({e["properties"]["$insert_id"] for e in events})
    names = [*HOSTILE, TOO_LONG[:255], "props"]
    streamed = [e for m in messages for e in m["events"]]
    assert [e["event"] for e in streamed] == names
    props = streamed[-1]["properties"]
    for name in property_names:
        assert props[name[:255]] == name[:255]
    env.server.wait_loaded()

    schema = schema_of(env, project)
    assert set(schema) == set(names)
    assert all(entry["count"] == 1 for entry in schema.values())
    listed = {p["name"]: p for p in schema["props"]["properties"]}
    for name in property_names:
        assert listed[name[:255]]["types"] == {"string": 1}, name
    assert len(listed) == len(BUILT_IN) + 3 + len(property_names)
    top = get_json(env, OVERVIEW, secret=project.secret)["top_events"]
    assert {t["event"] for t in top} <= set(names)
    assert {e["event"] for e in exported(env, project)} == set(names)
    # The store is intact: another project's schema still answers.
    assert schema_of(env, env.projects["typed"])["typed"]["count"] == 11


def test_schema_lists_the_500_most_frequent_names(env: Env) -> None:
    project = env.projects["many"]
    time_ms = now_ms() - 10_000
    events = [event(f"name-{i:03d}", f"many-{i}", time_ms) for i in range(501)]
    events += [event("name-500", "many-x", time_ms)]  # the last name, but the most frequent
    send_import(env, project, events)
    env.server.wait_loaded()
    listed = [e["event"] for e in get_json(env, SCHEMA, secret=project.secret)["events"]]
    assert listed == ["name-500"] + [f"name-{i:03d}" for i in range(499)]


def test_a_big_load_batch_is_counted_in_the_schema(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    cli(data_dir, "projects", "create", "wide", "--token", "tok-wide", "--secret", "sec-wide")
    server = start_server(data_dir)  # default settings
    wide = {f"p{k}": chr(ord("a") + k) * 250 for k in range(10)}
    time_ms = now_ms() - 10_000
    events = [event("wide", f"wide-{i}", time_ms, props=wide) for i in range(2000)]
    reply = request(
        server,
        "POST",
        "/import",
        dumps(events),
        {"Content-Type": JSON_TYPE, "Authorization": basic("sec-wide")},
    )
    assert reply.status == 200, reply
    status = poll(server.status, lambda s: s["loader_errors"] > 0 or s["backlog_bytes"] == 0)
    assert status["loader_errors"] == 0, status["loader_last_error"]
    assert len(export(server, "sec-wide", day(-1), day(1))) == 2000
    body = request(server, "GET", SCHEMA, None, {"Authorization": basic("sec-wide")}).json()
    assert [(e["event"], e["count"]) for e in body["events"]] == [("wide", 2000)]


# == 7. shutdown ======================================================================================
class Ingest(threading.Thread):
    """Sends /import batches until the server stops answering; keeps the acknowledged."""

    def __init__(self, env: Env, project: Project) -> None:
        super().__init__(daemon=True)
        self.port, self.project = env.server.port, project
        self.acked: list[str] = []
        self.requests = 0
        self.stop_at = time.monotonic() + 60

    def run(self) -> None:
        batch = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while time.monotonic() < self.stop_at:
            ids = [f"sd-{batch}-{i}" for i in range(20)]
            body = dumps([event("during shutdown", x, now_ms() - 1000) for x in ids])
            headers = {"Content-Type": JSON_TYPE, "Authorization": basic(self.project.secret)}
            try:
                conn.request("POST", "/import", body, headers)
                reply = conn.getresponse()
                reply.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                try:  # the server may have closed an idle keep-alive: one retry anew
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    conn.request("POST", "/import", body, headers)
                    reply = conn.getresponse()
                    reply.read()
                except (OSError, http.client.HTTPException):
                    return
            self.requests += 1
            if reply.status != 200:
                return
            self.acked += ids
            batch += 1


def test_sigterm_ends_open_streams_and_loses_nothing_acknowledged(env: Env) -> None:
    project = env.projects["shutdown"]
    server = env.server
    assert server.process is not None
    cookie = signed_in(env, project)
    by_cookie = open_stream(env, cookie=cookie)
    by_secret = open_stream(env, secret=project.secret)
    ingest = Ingest(env, project)
    try:
        by_cookie.hello()
        by_secret.hello()
        ingest.start()
        poll(lambda: len(ingest.acked), lambda n: n >= 60, timeout=30)
        stopped = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        streamed: set[str] = set()
        for stream in (by_cookie, by_secret):
            deadline = time.monotonic() + 30
            while (message := stream.next(max(deadline - time.monotonic(), 0.001))) is not None:
                assert message.event in {"events", "dropped"}, message
                if message.event == "events":
                    streamed |= {e["properties"]["$insert_id"] for e in message.json()["events"]}
            assert stream.ended
        print(f"SIGTERM → both streams ended: {time.monotonic() - stopped:.2f} s")
        code = server.process.wait(timeout=30)
        print(f"SIGTERM → exit ({code}): {time.monotonic() - stopped:.2f} s")
        ingest.join(timeout=30)
        assert not ingest.is_alive()
    finally:
        by_cookie.close()
        by_secret.close()
        if server.process.poll() is None:
            server.kill()
        env.start()
    env.server.wait_loaded()
    stored = [e["properties"]["$insert_id"] for e in exported(env, project)]
    print(f"{ingest.requests} requests, {len(ingest.acked)} events acknowledged")
    assert len(stored) == len(set(stored))
    assert set(ingest.acked) <= set(stored)
    assert streamed <= set(stored)  # shown live means journaled


STALLED_EXIT_BOUND = 20.0  # a server that ends its streams at once exits in well under 1 s


def test_sigterm_does_not_wait_for_a_stalled_stream_reader(env: Env) -> None:
    project = env.projects["stalled"]
    server = env.server
    assert server.process is not None
    padding = {f"pad{k}": chr(ord("a") + k) * 250 for k in range(4)}
    time_ms = now_ms() - 10_000
    try:
        with Stream(server, {"Authorization": basic(project.secret)}, rcvbuf=4096) as stream:
            stream.hello()
            # ~11 MB of messages for a reader that reads nothing: far more than its
            # socket buffers hold (4 KB here, at most tcp_wmem's 4 MB on the server).
            for r in range(100):
                events = [event("stall", f"st-{r}-{i}", time_ms, props=padding) for i in range(100)]
                send_import(env, project, events)
            stopped = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            try:
                code = server.process.wait(timeout=STALLED_EXIT_BOUND)
            except subprocess.TimeoutExpired:
                code = None
            print(
                f"SIGTERM with a stalled reader → exit {code}: {time.monotonic() - stopped:.1f} s"
            )
            assert code is not None, f"still running {STALLED_EXIT_BOUND} s after SIGTERM"
    finally:
        server.kill()
        env.start()


# == 8. a slow reader ==================================================================================
SLOW_REQUESTS = 800
SLOW_EVENTS = 10  # per request: one message each, ~22 KB


def test_a_slow_reader_loses_messages_not_the_server(env: Env) -> None:
    """A stream nobody reads: the server's queue for it (QUEUE_MESSAGES) and the socket
    buffers fill, then its messages are dropped and counted, and ingestion goes on.

    800 messages of ~22 KB: the client's receive buffer is 4 KB and the server's send
    buffer at most tcp_wmem's maximum (4 MB by default), so at most ~200 messages can
    sit in sockets, 256 in the queue: drops are certain."""
    project = env.projects["slow"]
    time_ms = now_ms() - 10_000
    padding = {f"pad{k}": chr(ord("a") + k) * 250 for k in range(8)}
    bodies = [
        dumps([event("flood", f"fl-{r}-{i}", time_ms, props=padding) for i in range(SLOW_EVENTS)])
        for r in range(SLOW_REQUESTS)
    ]
    headers = {"Content-Type": JSON_TYPE, "Authorization": basic(project.secret)}
    with Stream(env.server, {"Authorization": basic(project.secret)}, rcvbuf=4096) as stream:
        stream.hello()  # the server watches for it from here on
        conn = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
        health_ms = []
        sent = time.monotonic()
        try:
            for r, body in enumerate(bodies):
                conn.request("POST", "/import", body, headers)
                reply = conn.getresponse()
                assert reply.status == 200, reply.read()
                reply.read()
                if r % 100 == 99:
                    asked = time.monotonic()
                    assert request(env.server, "GET", "/healthz").status == 200
                    health_ms.append((time.monotonic() - asked) * 1000)
        finally:
            conn.close()
        print(
            f"{SLOW_REQUESTS} imports in {time.monotonic() - sent:.2f} s with a stuck reader; "
            f"/healthz meanwhile: {', '.join(f'{ms:.1f}' for ms in health_ms)} ms"
        )

        # Now read everything. When the stream goes quiet, a marker shows whether
        # everything before it has been accounted for (drops are reported with the next
        # message, so one must come after them).
        delivered, dropped, markers_sent, markers_seen = 0, 0, 0, 0
        last_request = -1
        deadline = time.monotonic() + 90
        while markers_seen == 0:
            assert time.monotonic() < deadline, (delivered, dropped)
            try:
                message = stream.next(timeout=2)
            except TimeoutError:
                send_import(env, project, [event("marker", f"mk-{markers_sent}", time_ms)])
                markers_sent += 1
                continue
            assert message is not None, "the stream ended"
            if message.event == "dropped":
                assert set(message.json()) == {"events"}
                dropped += message.json()["events"]
                continue
            body = message.json()
            names = {e["event"] for e in body["events"]}
            if names == {"marker"}:
                markers_seen += 1
                continue
            assert names == {"flood"}
            request_no = int(body["events"][0]["properties"]["$insert_id"].split("-")[1])
            assert request_no > last_request  # in order, never repeated
            last_request = request_no
            delivered += len(body["events"]) + body["more"]
        print(f"delivered {delivered} events, dropped {dropped}, markers {markers_sent}")
        assert delivered + dropped == SLOW_REQUESTS * SLOW_EVENTS + (markers_sent - markers_seen)
        assert dropped > 0
        assert delivered >= QUEUE_MESSAGES * SLOW_EVENTS
        # Still alive and current.
        send_import(env, project, [event("after", "after-1", time_ms)])
        [after] = stream.until({"after-1"})
        assert [e["event"] for e in after["events"]] == ["after"]
    env.server.wait_loaded(timeout=60)
    assert schema_of(env, project)["flood"]["count"] == SLOW_REQUESTS * SLOW_EVENTS


def test_the_server_survives_streams_that_hang_up(env: Env) -> None:
    """Clients that vanish mid-stream leave nothing behind that breaks the next one."""
    project = env.projects["basic"]
    for _ in range(20):
        stream = open_stream(env, secret=project.secret)
        stream.hello()
        stream.sock.shutdown(socket.SHUT_RDWR)
        stream.close()
    raw = socket.create_connection(("127.0.0.1", env.server.port), timeout=READ_TIMEOUT)
    raw.sendall(
        f"GET {STREAM} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(project.secret)}\r\n".encode()
    )
    raw.close()  # before the request was even complete
    with open_stream(env, secret=project.secret) as stream:
        stream.hello()
        send_import(env, project, [event("still", "still-1", now_ms() - 1000)])
        [message] = stream.until({"still-1"})
        assert message["events"][0]["event"] == "still"
