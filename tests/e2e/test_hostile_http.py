"""Hostile HTTP against one real trackhouse process (THREAT_MODEL.md, "Open": the explicit
HTTP cases). Raw sockets wherever HTTP itself is broken, slow or idle.

What passing proves, for every case below: the reply is the endpoint's shape from the
spec with a specific reason (or, where HTTP itself is broken, a 4xx and a closed
connection); never a 5xx; /healthz answers after every attack; and what was accepted
before (events from /track and /import, a profile from /engage) exports exactly as it
did, together with everything accepted during the attacks.

- 100 MB bodies to /track, /import and /engage, Content-Length and chunked, fast and
  slow: 413 in the endpoint's shape after reading at most about the 10 MB cap, with the
  server's peak RSS growing by well under 100 MB, and the server answering others meanwhile.
- JSON nested 100,000 deep on every endpoint that parses JSON (form data=, base64,
  JSON and NDJSON bodies, gzip, inside an event, the read APIs' parameters and bodies,
  `where` expressions): a specific 400 (or the /track shape), never a RecursionError 500.
- A million-element array in one /import body, in /track data and /engage data: 413
  quickly, peak memory bounded.
- NUL bytes in event names, property names, values, distinct_ids and profiles are
  stored and exported intact; a NUL where HTTP forbids it (request line, headers)
  gets a 400 and a closed connection; %00 in parameters gets specific errors.
- Invalid UTF-8 and lone surrogates in JSON, form fields, query strings and headers:
  a specific error naming the field; only the bad event fails; surrogate pairs are kept.
- A 1 MB query string: a 4xx and a closed connection.
- 5,000 idle connections, and 5,000 with a partial request line: the server keeps
  answering /healthz and /track, and its RSS stays bounded.

- Request heads past --max-header-bytes or 100 headers: 431 and the connection closed.
- Stalled clients (nothing sent, half a request line, trickled headers, headers and no
  body, a body at 1 byte/s): cut off after --request-timeout-s (408, or a silent close
  of a connection that sent nothing), while everyone else is served.
- The server raises its open-file soft limit, so 5,000 connections fit under a
  default 1024 inherited one.
- /api/sql returning JSON too deep or too large for the reply encoder: no 500.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import gzip
import http.client
import os
import resource
import select
import selectors
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Reply, Server, basic, cli, dumps, export, profile, request

pytestmark = pytest.mark.e2e

TOKEN, SECRET = "tok-hostile", "sec-hostile"
MAX_BODY = 10 * 1024 * 1024  # the server's default --max-body-bytes
MAX_EVENTS = 2000
TIMEOUT = 30.0
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
AUTH = {"Authorization": basic(SECRET)}
MiB = 1024 * 1024

HUGE_BODY = 100 * MiB
# Growth of the server's peak RSS that still proves a 100 MB body was not held whole.
HUGE_BODY_RSS_BOUND_MIB = 50
IDLE_CONNECTIONS = 5000
IDLE_RSS_BOUND_MIB = 300
MILLION = 1_000_000
MILLION_RSS_BOUND_MIB = 200
# The module's server cuts stalled clients off after REQUEST_TIMEOUT_S (the default is
# 60 s; a short one keeps the module quick); the bound leaves room for a busy machine.
REQUEST_TIMEOUT_S = 8
SLOW_BOUND_S = REQUEST_TIMEOUT_S + 30.0
SLOW_PER_KIND = 20


# -- helpers ---------------------------------------------------------------------------
def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def day(offset: int = 0) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def form(**fields: str | bytes) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def event(insert_id: str, name: str = "Hostile", **props: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {"token": TOKEN, "distinct_id": "user-1", "$insert_id": insert_id}
    properties.update(props)
    return {"event": name, "properties": properties}


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return found


def reset_peak(pid: int) -> None:
    """Restart VmHWM from the current RSS, so a peak belongs to the case just run. If
    the kernel refuses, VmHWM keeps older peaks: growth figures then only overstate."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def soft_fd_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def pid_of(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def has_input(sock: socket.socket) -> bool:
    """Whether the server said something (or closed). poll, not select: fds may be > 1024."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def read_reply(sock: socket.socket, timeout: float = TIMEOUT) -> Reply | None:
    """One HTTP/1.1 reply, or None if the server closed (or reset) without one."""
    sock.settimeout(timeout)
    buffer = b""
    try:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except (ConnectionResetError, BrokenPipeError):
        if b"\r\n\r\n" not in buffer:
            return None
        raise
    return Reply(int(lines[0].split()[1]), headers, rest[:length])


def raw_exchange(port: int, raw: bytes) -> tuple[Reply | None, bool]:
    """Send raw bytes (stopping if the server cuts us off); the reply, and whether the
    server then closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(raw), MiB):
                if has_input(sock):
                    break  # answered early: what it says matters, not the rest
                sock.sendall(raw[start : start + MiB])
        reply = read_reply(sock)
        if reply is not None and reply.status < 400:
            return reply, False  # served as if nothing were wrong: no need to wait
        sock.settimeout(5)
        try:
            closed = sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        except TimeoutError:
            closed = False
    return reply, closed


def quick_get(port: int, path: str, timeout: float) -> int | None:
    """GET on a fresh connection; the status, or None if the server cannot be reached."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def open_connections(
    port: int, count: int, first_bytes: bytes, timeout: float
) -> tuple[list[socket.socket], int]:
    """``count`` TCP connections at once (non-blocking connects, epoll), each sending
    ``first_bytes``; the connected sockets (the caller closes them) and the failures."""
    selector = selectors.DefaultSelector()
    pending: set[socket.socket] = set()
    connected: list[socket.socket] = []
    failed = 0
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                failed += 1
                continue
            selector.register(sock, selectors.EVENT_WRITE)
            pending.add(sock)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                selector.unregister(ready)
                pending.discard(ready)
                if ready.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    ready.close()
                    failed += 1
                    continue
                connected.append(ready)
                if first_bytes:
                    try:
                        ready.send(first_bytes)
                    except OSError:
                        failed += 1
    except BaseException:
        for sock in connected:
            sock.close()
        raise
    finally:
        for sock in pending:
            sock.close()
            failed += 1
        selector.close()
    return connected, failed


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- reply shapes (spec §3, §4, §8 and the read APIs) -----------------------------------------
def assert_shape(reply: Reply, shape: str, status: int, words: tuple[str, ...]) -> None:
    """``words`` must all appear (case-insensitive) in the reason the reply gives."""
    assert reply.status < 500, reply
    assert reply.status == status, reply
    if shape == "plain":  # /track without verbose: a bare 0
        assert reply.content_type.startswith("text/plain"), reply
        assert reply.body == b"0", reply
        return
    if shape == "text":  # export and unknown-path errors: a plain-text reason
        assert reply.content_type.startswith("text/plain"), reply
        reason = reply.body.decode()
    else:
        assert reply.content_type.startswith(JSON_TYPE), reply
        body = reply.json()
        if shape == "verbose":
            assert set(body) == {"status", "error"}, body
            assert body["status"] == 0, body
            reason = body["error"]
        elif shape == "import":
            phrase = {400: "Bad Request", 401: "Unauthorized", 413: "Request Entity Too Large"}
            assert body["code"] == status, body
            assert body["status"] == phrase[status], body
            if status == 400:
                assert body["num_records_imported"] == 0, body
                assert body["failed_records"] == [], body
            reason = body["error"]
        elif shape == "import-failed":  # strict /import: events refused one by one
            assert body["code"] == 400, body
            assert body["num_records_imported"] == 0, body
            first = body["failed_records"][0]
            reason = f"{first['field']}: {first['message']}"
        elif shape == "query":
            assert set(body) == {"error", "status"}, body
            assert body["status"] == "error", body
            reason = body["error"]
        else:  # pragma: no cover - a typo in a case table
            raise AssertionError(f"unknown shape {shape}")
    assert isinstance(reason, str), reply
    assert reason.strip(), reply
    for word in words:
        assert word.lower() in reason.lower(), (word, reason)


# -- the shared server ----------------------------------------------------------------------
@dataclass
class Env:
    server: Server
    tag: str
    seeded: dict[str, dict[str, Any]]  # exported events by $insert_id, right after seeding
    profile_id: str
    profile_props: dict[str, Any]
    # Events accepted during the attacks: $insert_id -> event name, checked at the end.
    accepted: dict[str, str] = field(default_factory=dict)


def exported(server: Server, prefix: str) -> dict[str, dict[str, Any]]:
    server.wait_loaded()
    events = export(server, SECRET, day(-1), day(1), time_in_ms="true")
    return {
        e["properties"]["$insert_id"]: e
        for e in events
        if str(e["properties"].get("$insert_id", "")).startswith(prefix)
    }


def track_one(env: Env, label: str) -> None:
    """An ordinary client, served in the middle of an attack."""
    insert_id = f"{env.tag}-ok-{label}-{new_tag()}"[:36]
    reply = request(
        env.server,
        "POST",
        "/track?verbose=1",
        form(data=b64(dumps([event(insert_id, "During attack")]))),
        {"Content-Type": FORM},
    )
    assert reply.status == 200, reply
    assert reply.json() == {"status": 1, "error": None}, reply
    env.accepted[insert_id] = "During attack"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # 5,000 connections need as many fds here and in the server. The server inherits
    # this process's limit, so raising it first keeps the memory and serving cases
    # independent of the machine's default; test_the_server_raises_its_open_file_limit
    # asks separately whether the server copes with a low inherited limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    cli(data_dir, "projects", "create", "hostile", "--token", TOKEN, "--secret", SECRET)
    server = Server(data_dir, args=["--request-timeout-s", str(REQUEST_TIMEOUT_S)]).start()
    try:
        tag = new_tag()
        now = int(time.time())
        tracked = [event(f"{tag}-t{i}", "Seeded track", n=i, s="é✓") for i in range(3)]
        reply = request(
            server,
            "POST",
            "/track?verbose=1",
            form(data=b64(dumps(tracked))),
            {"Content-Type": FORM},
        )
        assert reply.json() == {"status": 1, "error": None}, reply
        imported = [event(f"{tag}-i{i}", "Seeded import", time=now - 60, n=i) for i in range(3)]
        reply = request(
            server,
            "POST",
            "/import?strict=1",
            dumps(imported),
            {**AUTH, "Content-Type": JSON_TYPE},
        )
        assert reply.json()["num_records_imported"] == 3, reply
        profile_id = f"{tag}-profile"
        update = {"$token": TOKEN, "$distinct_id": profile_id, "$set": {"plan": "pro", "n": 1}}
        reply = request(
            server, "POST", "/engage?verbose=1", dumps([update]), {"Content-Type": JSON_TYPE}
        )
        assert reply.json() == {"status": 1, "error": None}, reply
        seeded = exported(server, tag)
        assert len(seeded) == 6, seeded
        props = profile(server, SECRET, profile_id)
        assert props is not None
        assert props["plan"] == "pro", props
        yield Env(server, tag, seeded, profile_id, props)
    finally:
        server.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def server(env: Env) -> Server:
    return env.server


@pytest.fixture(autouse=True)
def still_healthy(env: Env) -> Iterator[None]:
    """After every attack: the process lives and /healthz answers."""
    yield
    server = env.server
    assert server.process is not None
    assert server.process.poll() is None, server.log()[-5000:]
    reply = request(server, "GET", "/healthz")
    assert reply.status == 200, reply


# -- stalled clients, held open while every other case runs -----------------------------
HEAD = (
    b"POST /track?verbose=1 HTTP/1.1\r\nHost: x\r\nContent-Type: "
    + FORM.encode()
    + b"\r\nContent-Length: 1048576\r\n\r\n"
)
# kind -> (bytes sent on connecting, one byte sent every second or None)
SLOW_KINDS: dict[str, tuple[bytes, bytes | None]] = {
    "keep-alive-after-a-reply": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", None),
    "nothing-sent": (b"", None),
    "partial-request-line": (b"POST /tra", None),
    "headers-trickled-1-byte-per-s": (b"POST /track HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a"),
    "headers-then-nothing": (HEAD, None),
    "body-1-byte-per-s-of-1MB": (HEAD + b"data=", b"A"),
}


@dataclass
class SlowConnection:
    kind: str
    sock: socket.socket
    opened: float
    trickle: bytes | None
    received: bytes = b""
    closed_at: float | None = None

    def status(self) -> int | None:
        if not self.received.startswith(b"HTTP/1."):
            return None
        return int(self.received.split(b" ", 2)[1])


class SlowClients:
    """Connections that stall in every way a slowloris does, opened once at the start
    of the module and fed (one byte a second where they trickle) by a thread, so the
    long wait for a timeout overlaps every other case, and every other case runs
    while they are open."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections: list[SlowConnection] = []
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def start(self) -> None:
        for kind, (opening, trickle) in SLOW_KINDS.items():
            for _ in range(SLOW_PER_KIND):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
                connection = SlowConnection(kind, sock, time.monotonic(), trickle)
                self.connections.append(connection)
                if opening:
                    sock.sendall(opening)
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, connection)
        self.started = time.monotonic()
        self._thread.start()

    def _closed(self, connection: SlowConnection) -> None:
        with self._lock:
            if connection.closed_at is None:
                connection.closed_at = time.monotonic()
                self._selector.unregister(connection.sock)

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                for connection in self.connections:
                    if connection.trickle and connection.closed_at is None:
                        try:
                            connection.sock.send(connection.trickle)
                        except BlockingIOError:
                            pass
                        except OSError:
                            self._closed(connection)
            for key, _ in self._selector.select(timeout=0.2):
                connection = key.data
                assert isinstance(connection, SlowConnection)
                try:
                    data = connection.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    connection.received = (connection.received + data)[:4096]
                else:
                    self._closed(connection)

    def of_kind(self, kind: str) -> list[SlowConnection]:
        with self._lock:
            return [c for c in self.connections if c.kind == kind]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for connection in self.connections:
            connection.sock.close()
        self._selector.close()


@pytest.fixture(scope="module", autouse=True)
def slow_clients(env: Env) -> Iterator[SlowClients]:
    clients = SlowClients(env.server.port)
    try:
        clients.start()
        yield clients
    finally:
        clients.close()


# -- 1. 100 MB bodies -------------------------------------------------------------------------
@dataclass(frozen=True)
class Sink:
    path: str
    headers: dict[str, str]
    prefix: bytes  # how the body starts: a form field or a JSON array
    shape: str


SINKS = {
    "track": Sink("/track?verbose=1", {"Content-Type": FORM}, b"data=", "verbose"),
    "import": Sink("/import", {**AUTH, "Content-Type": JSON_TYPE}, b'[{"event":"', "import"),
    "engage": Sink("/engage?verbose=1", {"Content-Type": FORM}, b"data=", "verbose"),
}
# name -> (chunked?, bytes per send, pause after each send)
SENDS = {
    "content-length-fast": (False, MiB, 0.0),
    "content-length-slow": (False, 64 * 1024, 0.01),
    "chunked-fast": (True, MiB, 0.0),
    "chunked-slow": (True, 64 * 1024, 0.01),
}


def send_huge_body(
    port: int,
    sink: Sink,
    *,
    chunked: bool,
    piece: int,
    pause: float,
    midway: Callable[[], None],
) -> tuple[Reply | None, int, float]:
    """Stream a 100 MB body until the server answers; the reply, the bytes sent before
    it came, and how long it took. ``midway`` runs once, 4 MiB into the body."""
    head = f"POST {sink.path} HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in sink.headers.items()
    )
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {HUGE_BODY}\r\n"
    filler = b"A" * piece
    sent = 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode() + b"\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < HUGE_BODY and not has_input(sock):
                data = sink.prefix + filler[len(sink.prefix) :] if sent == 0 else filler
                sock.sendall(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
                before, sent = sent, sent + len(data)
                if before < 4 * MiB <= sent:
                    midway()
                if pause:
                    time.sleep(pause)
        reply = read_reply(sock)
    return reply, sent, time.monotonic() - started


@pytest.mark.parametrize("send", list(SENDS))
@pytest.mark.parametrize("endpoint", list(SINKS))
def test_100mb_body_gets_413_without_being_buffered(env: Env, endpoint: str, send: str) -> None:
    sink = SINKS[endpoint]
    chunked, piece, pause = SENDS[send]
    pid = pid_of(env.server)
    reset_peak(pid)
    before = memory_mib(pid)["VmRSS"]
    reply, sent, took = send_huge_body(
        env.server.port,
        sink,
        chunked=chunked,
        piece=piece,
        pause=pause,
        midway=lambda: track_one(env, f"huge-{endpoint}"),
    )
    growth = memory_mib(pid)["VmHWM"] - before
    print(
        f"\n100 MB {endpoint} {send}: {sent / MiB:.1f} MiB sent before the reply, "
        f"{took:.2f} s, peak RSS growth {growth:.1f} MiB"
    )
    assert reply is not None, "closed without a reply"
    assert_shape(reply, sink.shape, 413, (f"max limit of {MAX_BODY} bytes",))
    # Chunked: read up to the cap, then refused. Content-Length: refused from the header.
    # Beyond that only what the socket buffers swallowed before the reply was read.
    assert sent < (MAX_BODY if chunked else 0) + 24 * MiB, sent
    assert growth < HUGE_BODY_RSS_BOUND_MIB, growth


# -- 2. JSON nested 100,000 deep ----------------------------------------------------------------
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
DEEP_WHERE = "(" * 4000 + 'properties["plan"] == "pro"' + ")" * 4000  # under 10,000 chars


def in_event(deep: bytes) -> bytes:
    return (
        b'[{"event":"Deep","properties":{"token":"' + TOKEN.encode() + b'","deep":' + deep + b"}}]"
    )


# id, method, path, body, headers, shape, status, words
Case = tuple[str, str, str, bytes | None, dict[str, str], str, int, tuple[str, ...]]
DEEP: list[Case] = [
    ("track-form-json", "POST", "/track?verbose=1", form(data=DEEP_ARRAY), {"Content-Type": FORM}, "verbose", 200, ("nested",)),
    ("track-form-base64", "POST", "/track?verbose=1", form(data=b64(DEEP_OBJECT)), {"Content-Type": FORM}, "verbose", 200, ("nested",)),
    ("track-base64-plain-reply", "POST", "/track", form(data=b64(DEEP_ARRAY)), {"Content-Type": FORM}, "plain", 200, ()),
    ("track-json-inside-an-event", "POST", "/track?verbose=1", in_event(DEEP_ARRAY), {"Content-Type": JSON_TYPE}, "verbose", 200, ("nested",)),
    ("import-array", "POST", "/import", DEEP_ARRAY, {**AUTH, "Content-Type": JSON_TYPE}, "import", 400, ("nested",)),
    ("import-object", "POST", "/import", DEEP_OBJECT, {**AUTH, "Content-Type": JSON_TYPE}, "import", 400, ("nested",)),
    ("import-inside-an-event", "POST", "/import", in_event(DEEP_OBJECT), {**AUTH, "Content-Type": JSON_TYPE}, "import", 400, ("nested",)),
    ("import-ndjson-line-2", "POST", "/import", dumps(event("nd-1")) + b"\n" + DEEP_OBJECT, {**AUTH, "Content-Type": "application/x-ndjson"}, "import", 400, ("line 2", "nested")),
    ("import-gzip", "POST", "/import", gzip.compress(DEEP_ARRAY), {**AUTH, "Content-Type": JSON_TYPE, "Content-Encoding": "gzip"}, "import", 400, ("nested",)),
    ("import-legacy-form", "POST", "/import?verbose=1", form(data=b64(DEEP_ARRAY)), {**AUTH, "Content-Type": FORM}, "verbose", 200, ("nested",)),
    ("engage-form-json", "POST", "/engage?verbose=1", form(data=DEEP_OBJECT), {"Content-Type": FORM}, "verbose", 200, ("nested",)),
    ("engage-form-base64", "POST", "/engage?verbose=1", form(data=b64(DEEP_ARRAY)), {"Content-Type": FORM}, "verbose", 200, ("nested",)),
    ("engage-json-inside-set", "POST", "/engage?verbose=1", b'[{"$token":"' + TOKEN.encode() + b'","$distinct_id":"d","$set":{"a":' + DEEP_ARRAY + b"}}]", {"Content-Type": JSON_TYPE}, "verbose", 200, ("nested",)),
    ("groups-form-base64", "POST", "/groups?verbose=1", form(data=b64(DEEP_OBJECT)), {"Content-Type": FORM}, "verbose", 200, ("nested",)),
    ("groups-json-body", "POST", "/groups?verbose=1", DEEP_ARRAY, {"Content-Type": JSON_TYPE}, "verbose", 200, ("nested",)),
    ("api-engage-where-100000-parens", "POST", "/api/2.0/engage", form(where="(" * 100_000 + "1" + ")" * 100_000), {**AUTH, "Content-Type": FORM}, "query", 400, ("where", "limit")),
    ("api-engage-where-4000-parens", "POST", "/api/2.0/engage", form(where=DEEP_WHERE), {**AUTH, "Content-Type": FORM}, "query", 400, ("where", "nested")),
    ("api-engage-where-not-chain", "POST", "/api/2.0/engage", form(where="not " * 2400 + "true"), {**AUTH, "Content-Type": FORM}, "query", 400, ("where", "nested")),
    ("api-engage-distinct_ids", "POST", "/api/2.0/engage", form(distinct_ids=DEEP_ARRAY), {**AUTH, "Content-Type": FORM}, "query", 400, ("distinct_ids",)),
    ("api-engage-output_properties", "POST", "/api/2.0/engage", form(output_properties=DEEP_ARRAY), {**AUTH, "Content-Type": FORM}, "query", 400, ("output_properties",)),
    ("api-engage-json-body", "POST", "/api/2.0/engage", b'{"where":' + DEEP_ARRAY + b"}", {**AUTH, "Content-Type": JSON_TYPE}, "query", 400, ("nest",)),
    ("export-where-4000-parens", "GET", "/api/2.0/export?" + urllib.parse.urlencode({"from_date": day(-1), "to_date": day(1), "where": DEEP_WHERE}), None, AUTH, "text", 400, ("where", "nested")),
    ("export-event-5000-deep", "GET", "/api/2.0/export?" + urllib.parse.urlencode({"from_date": day(-1), "to_date": day(1), "event": "[" * 5000 + "]" * 5000}), None, AUTH, "text", 400, ("event",)),
    ("sql-100000-parens", "POST", "/api/sql", form(sql="SELECT " + "(" * 100_000 + "1" + ")" * 100_000), {**AUTH, "Content-Type": FORM}, "query", 400, ("depth",)),
    ("sql-json-body", "POST", "/api/sql", b'{"sql":' + DEEP_ARRAY + b"}", {**AUTH, "Content-Type": JSON_TYPE}, "query", 400, ("nest",)),
    ("deletions-json-body", "POST", "/api/data-deletions", b'{"distinct_ids":' + DEEP_ARRAY + b"}", {**AUTH, "Content-Type": JSON_TYPE}, "query", 400, ("nest",)),
    ("console-sign-in-json-body", "POST", "/console/api/session", b'{"secret":' + DEEP_ARRAY + b"}", {"Content-Type": JSON_TYPE}, "query", 400, ("nest",)),
    ("deletions-form-distinct_ids", "POST", "/api/data-deletions", form(distinct_ids=DEEP_ARRAY), {**AUTH, "Content-Type": FORM}, "query", 400, ("distinct_ids",)),
]  # fmt: skip


def _params(cases: list[Case], kind: str) -> list[Any]:
    return [pytest.param(*case[1:], id=f"{kind}-{case[0]}") for case in cases]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '" + "[" * 100_000 + "]" * 100_000 + "'::JSON AS j",
        "SELECT json('" + '{"a":' * 2000 + "1" + "}" * 2000 + "') AS j",
        "SELECT '1e400'::JSON AS j",
    ],
    ids=["json-literal-100000-deep", "json-object-2000-deep", "json-number-beyond-double"],
)
def test_sql_returning_hostile_json_is_not_a_500(server: Server, sql: str) -> None:
    reply = request(
        server, "POST", "/api/sql", dumps({"sql": sql}), {**AUTH, "Content-Type": JSON_TYPE}
    )
    if reply.status == 400:
        assert_shape(reply, "query", 400, ())
    else:
        assert reply.status == 200, reply
        assert reply.json()["row_count"] == 1, reply


# -- 3. a million elements ----------------------------------------------------------------------
MILLION_ARRAY = b"[" + b",".join([b"{}"] * MILLION) + b"]"
MILLION_CASES = {
    "import-json-body": (
        "/import",
        MILLION_ARRAY,
        {**AUTH, "Content-Type": JSON_TYPE},
        "import",
        f"{MAX_EVENTS} events",
    ),
    "track-form-base64": (
        "/track?verbose=1",
        form(data=b64(MILLION_ARRAY)),
        {"Content-Type": FORM},
        "verbose",
        f"{MILLION} events; the limit is {MAX_EVENTS}",
    ),
    # A raw JSON body gets the /import shape (spec §3).
    "track-json-body": (
        "/track?verbose=1",
        MILLION_ARRAY,
        {"Content-Type": JSON_TYPE},
        "import",
        f"{MILLION} events; the limit is {MAX_EVENTS}",
    ),
    "engage-form-base64": (
        "/engage?verbose=1",
        form(data=b64(MILLION_ARRAY)),
        {"Content-Type": FORM},
        "verbose",
        f"{MILLION} updates; the limit is {MAX_EVENTS}",
    ),
}


@pytest.mark.parametrize("case", list(MILLION_CASES))
def test_a_million_element_array_gets_413_quickly(server: Server, case: str) -> None:
    path, body, headers, shape, words = MILLION_CASES[case]
    pid = pid_of(server)
    reset_peak(pid)
    before = memory_mib(pid)["VmRSS"]
    started = time.monotonic()
    reply = request(server, "POST", path, body, headers)
    took = time.monotonic() - started
    growth = memory_mib(pid)["VmHWM"] - before
    print(
        f"\nmillion {case}: {len(body) / MiB:.1f} MiB body, {took:.2f} s, "
        f"peak RSS growth {growth:.1f} MiB"
    )
    assert_shape(reply, shape, 413, (words,))
    assert took < 10, took
    assert growth < MILLION_RSS_BOUND_MIB, growth


# -- 4. NUL bytes -------------------------------------------------------------------------------
def test_nul_bytes_in_names_values_and_ids_are_stored_intact(env: Env) -> None:
    server, tag = env.server, new_tag()
    props = {"distinct_id": "user\x00nul", "k\x00ey": "v\x00alue", "nested": {"x\x00": ["\x00"]}}
    name = "nul\x00name"
    sends = {
        f"{tag}-json": ("POST", "/track?verbose=1", "json"),
        f"{tag}-b64": ("POST", "/track?verbose=1", "base64"),
        f"{tag}-query": ("GET", "", "query"),
    }
    for insert_id, (method, path, how) in sends.items():
        payload = dumps([event(insert_id, name, **props)])
        if how == "json":
            reply = request(server, method, path, payload, {"Content-Type": JSON_TYPE})
        elif how == "base64":
            reply = request(server, method, path, form(data=b64(payload)), {"Content-Type": FORM})
        else:  # %00 in the query string, inside the JSON of data=
            query = urllib.parse.urlencode({"data": payload.decode(), "verbose": "1"})
            reply = request(server, "GET", f"/track?{query}")
        assert reply.json() == {"status": 1, "error": None}, (how, reply)
    imported = event(f"{tag}-import", name, time=int(time.time()) - 60, **props)
    reply = request(
        server, "POST", "/import?strict=1", dumps([imported]), {**AUTH, "Content-Type": JSON_TYPE}
    )
    assert reply.json()["num_records_imported"] == 1, reply
    profile_id = f"{tag}\x00profile"
    update = {"$token": TOKEN, "$distinct_id": profile_id, "$set": {"n\x00": "v\x00"}}
    reply = request(
        server, "POST", "/engage?verbose=1", dumps([update]), {"Content-Type": JSON_TYPE}
    )
    assert reply.json() == {"status": 1, "error": None}, reply

    found = exported(server, tag)
    assert set(found) == {*sends, f"{tag}-import"}, found
    for insert_id, stored in found.items():
        assert stored["event"] == name, stored
        for key, value in props.items():
            assert stored["properties"][key] == value, (key, stored)
        env.accepted[insert_id] = name
    stored_profile = profile(server, SECRET, profile_id)
    assert stored_profile is not None
    assert stored_profile["n\x00"] == "v\x00", stored_profile


def test_nul_in_insert_id_or_token_fails_only_its_event(env: Env) -> None:
    tag = new_tag()
    batch = [
        event(f"{tag}-good"),
        event(f"{tag}-bad\x00"),
        event(f"{tag}-tok", token=TOKEN + "\x00"),
    ]
    reply = request(
        env.server, "POST", "/track?verbose=1", dumps(batch), {"Content-Type": JSON_TYPE}
    )
    body = reply.json()
    assert body["status"] == 1, body
    assert "2 of 3 events were not stored" in body["error"], body
    assert "$insert_id may contain only" in body["error"], body
    assert set(exported(env.server, tag)) == {f"{tag}-good"}
    env.accepted[f"{tag}-good"] = "Hostile"


QUERY_NUL: list[Case] = [
    ("track-callback", "GET", "/track?callback=cb%00&data=e30", None, {}, "text", 400, ("callback",)),
    ("import-project_id", "POST", "/import?project_id=1%00", b"[]", {**AUTH, "Content-Type": JSON_TYPE}, "import", 401, ("Invalid credentials",)),
    ("export-from_date", "GET", f"/api/2.0/export?from_date={day()}%00&to_date={day()}", None, AUTH, "text", 400, ("from_date",)),
    ("api-engage-page", "GET", "/api/2.0/engage?page=1%00", None, AUTH, "query", 400, ("page",)),
    ("sql-limit", "GET", "/api/sql?sql=SELECT%201&limit=5%00", None, AUTH, "query", 400, ("limit",)),
]  # fmt: skip


def test_escaped_nul_in_read_parameters_is_just_a_value(server: Server) -> None:
    reply = request(server, "GET", "/api/sql?sql=SELECT%20%27a%00b%27%20AS%20v", None, AUTH)
    assert reply.status == 200, reply
    assert reply.json()["rows"] == [["a\x00b"]], reply
    reply = request(server, "GET", "/api/2.0/engage?distinct_id=%00", None, AUTH)
    assert reply.status == 200, reply
    assert reply.json()["results"] == [], reply


BROKEN_BYTES = {
    "nul-in-query": b"GET /track?verbose=1&data=a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-path": b"GET /tr\x00ack HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-header-value": b"POST /track HTTP/1.1\r\nHost: x\r\nX-Tag: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "nul-in-header-name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-\x00Tag: b\r\n\r\n",
    "nul-in-authorization": b"POST /import HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \x00\r\nContent-Length: 2\r\n\r\n[]",
    "raw-invalid-utf8-in-query": b"GET /track?data=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "raw-surrogate-utf8-in-query": b"GET /api/sql?sql=\xed\xa0\x80 HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(BROKEN_BYTES.values()), ids=list(BROKEN_BYTES))
def test_bytes_http_forbids_get_400_and_a_closed_connection(server: Server, raw: bytes) -> None:
    reply, closed = raw_exchange(server.port, raw)
    if reply is not None:
        assert reply.status == 400, reply
    assert closed


# -- 5. invalid UTF-8 and lone surrogates --------------------------------------------------------
def _ev(name: str = "E", distinct_id: str = "u", extra: str = "") -> bytes:
    """An event as JSON text, so escapes like \\ud800 reach the server as written."""
    return (
        f'[{{"event":"{name}","properties":{{"token":"{TOKEN}",'
        f'"distinct_id":"{distinct_id}"{extra}}}}}]'
    ).encode()


def _strict(name: str = "E", distinct_id: str = "u") -> bytes:
    now = int(time.time()) - 60
    extra = f',"time":{now},"$insert_id":"utf-{new_tag()}"'
    return _ev(name, distinct_id, extra)


_J = {"Content-Type": JSON_TYPE}
_F = {"Content-Type": FORM}
TEXT: list[Case] = [
    ("track-lone-high-surrogate-in-name", "POST", "/track?verbose=1", _ev(name="a\\ud800"), _J, "verbose", 200, ("event name is not valid UTF-8",)),
    ("track-lone-low-surrogate-in-distinct_id", "POST", "/track?verbose=1", _ev(distinct_id="u\\udc00"), _J, "verbose", 200, ("distinct_id is not valid UTF-8",)),
    ("track-surrogate-in-property-name", "POST", "/track?verbose=1", _ev(extra=',"\\ud800k":1'), _J, "verbose", 200, ("not valid UTF-8",)),
    ("track-reversed-pair-in-value", "POST", "/track?verbose=1", _ev(extra=',"v":"\\ude00\\ud83d"'), _J, "verbose", 200, ("properties.v", "not valid UTF-8")),
    ("track-raw-cesu-surrogate", "POST", "/track?verbose=1", _ev(name="aXX").replace(b"aXX", b"a\xed\xa0\x80"), _J, "verbose", 200, ("not valid UTF-8",)),
    ("track-overlong-utf8-in-value", "POST", "/track?verbose=1", _ev().replace(b'"u"', b'"u","v":"\xc0\xaf"'), _J, "verbose", 200, ("properties.v", "not valid UTF-8")),
    ("track-form-data-surrogate", "POST", "/track?verbose=1", form(data=_ev(name="a\\ud800")), _F, "verbose", 200, ("event name is not valid UTF-8",)),
    ("track-base64-invalid-utf8", "POST", "/track?verbose=1", form(data=b64(_ev().replace(b'"E"', b'"E\xff"'))), _F, "verbose", 200, ("event name is not valid UTF-8",)),
    ("track-query-data-surrogate", "GET", "/track?verbose=1&" + urllib.parse.urlencode({"data": _ev(distinct_id="\\udfff")}), None, {}, "verbose", 200, ("distinct_id is not valid UTF-8",)),
    ("track-query-escaped-ff", "GET", "/track?verbose=1&data=%FF%FE", None, {}, "plain", 200, ()),
    ("track-query-escaped-surrogate", "GET", "/track?verbose=1&data=%ED%A0%80", None, {}, "plain", 200, ()),
    ("engage-distinct_id-surrogate", "POST", "/engage?verbose=1", b'[{"$token":"' + TOKEN.encode() + b'","$distinct_id":"p\\ud800","$set":{"a":1}}]', _J, "verbose", 200, ("$distinct_id is not valid UTF-8",)),
    ("engage-set-key-surrogate", "POST", "/engage?verbose=1", b'[{"$token":"' + TOKEN.encode() + b'","$distinct_id":"p","$set":{"\\udc00":1}}]', _J, "verbose", 200, ("$set", "not valid UTF-8")),
    ("engage-form-raw-ff", "POST", "/engage?verbose=1", b"data=\xff\xfe", _F, "verbose", 200, ("UTF-8",)),
    ("engage-form-escaped-ff", "POST", "/engage?verbose=1", b"data=%FF", _F, "verbose", 200, ("UTF-8",)),
    ("engage-query-escaped-ff", "GET", "/engage?verbose=1&data=%FF", None, {}, "plain", 200, ()),
    ("groups-group_key-surrogate", "POST", "/groups?verbose=1", b'[{"$token":"' + TOKEN.encode() + b'","$group_key":"c\\ud800","$group_id":"g","$set":{"a":1}}]', _J, "verbose", 200, ("$group_key is not valid UTF-8",)),
    ("import-legacy-form-surrogate", "POST", "/import?verbose=1", form(data=_strict(name="a\\ud800")), {**AUTH, **_F}, "verbose", 200, ("event name is not valid UTF-8",)),
    ("import-strict-surrogate-name", "POST", "/import?strict=1", _strict(name="a\\ud800"), {**AUTH, **_J}, "import-failed", 400, ("event", "not valid UTF-8")),
    ("import-strict-raw-ff-distinct_id", "POST", "/import?strict=1", _strict().replace(b'"u"', b'"u\xff"'), {**AUTH, **_J}, "import-failed", 400, ("distinct_id", "not valid UTF-8")),
    ("sql-form-raw-ff", "POST", "/api/sql", b"sql=SELECT \xff", {**AUTH, **_F}, "query", 400, ("UTF-8",)),
    ("sql-json-surrogate", "POST", "/api/sql", b'{"sql":"SELECT \\ud800"}', {**AUTH, **_J}, "query", 400, ("UTF-8",)),
    ("sql-query-escaped-ff", "GET", "/api/sql?sql=%FF", None, AUTH, "query", 400, ("UTF-8",)),
    ("api-engage-json-surrogate-ids", "POST", "/api/2.0/engage", b'{"distinct_ids":["\\ud800"]}', {**AUTH, **_J}, "query", 400, ("UTF-8",)),
    ("api-engage-query-escaped-ff", "GET", "/api/2.0/engage?where=%FF", None, AUTH, "query", 400, ("UTF-8",)),
    ("export-query-escaped-surrogate", "GET", f"/api/2.0/export?from_date={day()}&to_date={day()}&where=%ED%A0%80", None, AUTH, "text", 400, ("UTF-8",)),
    ("deletions-json-surrogate", "POST", "/api/data-deletions", b'{"distinct_ids":["\\ud800"]}', {**AUTH, **_J}, "query", 400, ("UTF-8",)),
    ("deletions-form-raw-ff", "POST", "/api/data-deletions", b"distinct_ids=\xff", {**AUTH, **_F}, "query", 400, ("UTF-8",)),
    ("import-authorization-latin1", "POST", "/import", b"[]", {"Authorization": "Basic \xff\xfe", **_J}, "import", 401, ("Invalid credentials",)),
    ("sql-authorization-latin1", "GET", "/api/sql?sql=SELECT%201", None, {"Authorization": "Basic \xff"}, "query", 401, ("Invalid credentials",)),
]  # fmt: skip


# Every table above: (id, method, path, body, headers, reply shape, status, words the
# error must contain), each answered by the endpoint's own error shape.
@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "shape", "status", "words"),
    [*_params(DEEP, "deep"), *_params(QUERY_NUL, "nul"), *_params(TEXT, "text")],
)
def test_hostile_payload_gets_a_specific_error(
    server: Server,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    shape: str,
    status: int,
    words: tuple[str, ...],
) -> None:
    assert_shape(request(server, method, path, body, headers), shape, status, words)


def test_a_lone_surrogate_spoils_only_its_event_and_pairs_are_kept(env: Env) -> None:
    tag = new_tag()
    good = f'{{"event":"smile \\ud83d\\ude00","properties":{{"token":"{TOKEN}","distinct_id":"u","$insert_id":"{tag}-pair"}}}}'
    bad = f'{{"event":"E","properties":{{"token":"{TOKEN}","distinct_id":"u\\ud800","$insert_id":"{tag}-lone"}}}}'
    reply = request(
        env.server,
        "POST",
        "/track?verbose=1",
        form(data=b64(f"[{good},{bad}]".encode())),
        {"Content-Type": FORM, "Origin": "https://\xff\xfe.example"},
    )
    body = reply.json()
    assert body["status"] == 1, body
    assert "1 of 2 events were not stored" in body["error"], body
    assert f"{tag}-lone" in body["error"], body
    # A latin-1 Origin is echoed byte for byte, not mangled into another origin.
    assert reply.header("access-control-allow-origin") == "https://\xff\xfe.example", reply
    found = exported(env.server, tag)
    assert set(found) == {f"{tag}-pair"}, found
    assert found[f"{tag}-pair"]["event"] == "smile 😀", found
    env.accepted[f"{tag}-pair"] = "smile 😀"


# -- 6. huge headers and URLs --------------------------------------------------------------------
HEADERS = {
    "one-1MB-header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MiB + b"\r\n\r\n",
    "10000-headers": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
        + b"\r\n"
    ),
    "1MB-query-string": (
        b"GET /track?verbose=1&" + b"a=b&" * (MiB // 4) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "1MB-path": b"GET /track/" + b"a" * MiB + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("raw", [pytest.param(raw, id=name) for name, raw in HEADERS.items()])
def test_huge_headers_get_a_4xx_or_a_closed_connection(server: Server, raw: bytes) -> None:
    pid = pid_of(server)
    reset_peak(pid)
    before = memory_mib(pid)["VmRSS"]
    reply, closed = raw_exchange(server.port, raw)
    print(
        f"\n{len(raw) / MiB:.1f} MiB head: {reply.status if reply else 'no reply'}, "
        f"closed={closed}, peak RSS growth {memory_mib(pid)['VmHWM'] - before:.1f} MiB"
    )
    if reply is not None:
        assert 400 <= reply.status < 500, reply
    assert reply is not None or closed


# -- 8. thousands of idle connections --------------------------------------------------------------
@pytest.fixture(scope="module")
def fd_room(env: Env) -> None:
    """Room for 5,000 sockets here (env raised the soft limit to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CONNECTIONS + 1000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {IDLE_CONNECTIONS} sockets")


@pytest.mark.usefixtures("fd_room")
@pytest.mark.parametrize(
    "first_bytes", [b"", b"GET /healthz HT"], ids=["nothing-sent", "partial-request-line"]
)
def test_5000_idle_connections_do_not_stop_others(env: Env, first_bytes: bytes) -> None:
    server = env.server
    pid = pid_of(server)
    base_fds = fd_count(pid)
    idle = memory_mib(pid)["VmRSS"]
    sockets: list[socket.socket] = []
    try:
        sockets, failed = open_connections(server.port, IDLE_CONNECTIONS, first_bytes, 30)
        assert failed == 0, f"{failed} of {IDLE_CONNECTIONS} connections failed"
        # Accepted by the server, not just queued in the kernel's backlog. (Less a few:
        # keep-alive connections of earlier cases may time out meanwhile.)
        accepted = base_fds + IDLE_CONNECTIONS - 50
        assert wait_for(lambda: fd_count(pid) >= accepted, 30), (base_fds, fd_count(pid))
        started = time.monotonic()
        health = request(server, "GET", "/healthz")
        track_one(env, "idle")
        served_in = time.monotonic() - started
        loaded = memory_mib(pid)["VmRSS"]
        print(
            f"\n{IDLE_CONNECTIONS} idle ({first_bytes!r}): RSS {idle:.0f} MiB idle, "
            f"{loaded:.0f} MiB with them open (+{loaded - idle:.0f}); server fds "
            f"{base_fds} -> {fd_count(pid)}; /healthz + /track answered in {served_in:.2f} s"
        )
        assert health.status == 200, health
        assert loaded - idle < IDLE_RSS_BOUND_MIB, (idle, loaded)
    finally:
        for sock in sockets:
            sock.close()
    # And it lets go of them.
    assert wait_for(lambda: fd_count(pid) < base_fds + 50, 30), fd_count(pid)


@pytest.mark.usefixtures("fd_room")
def test_the_server_raises_its_open_file_limit(tmp_path_factory: pytest.TempPathFactory) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    data_dir = tmp_path_factory.mktemp("fd-limit") / "data"
    cli(data_dir, "projects", "create", "fd", "--token", "tok-fd", "--secret", "sec-fd")
    server = Server(data_dir)
    sockets: list[socket.socket] = []
    # The child inherits the limit in force when it starts: the common default.
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        pid = pid_of(server)
        limit = soft_fd_limit(pid)
        sockets, failed = open_connections(server.port, IDLE_CONNECTIONS, b"", 15)
        wait_for(lambda: fd_count(pid) >= IDLE_CONNECTIONS, 5)
        status = quick_get(server.port, "/healthz", 10)
        print(
            f"\nserver soft fd limit {limit}; {len(sockets)} connected, {failed} failed, "
            f"server fds {fd_count(pid)}; /healthz: {status}"
        )
        assert status == 200, "the server stopped answering"
        assert limit >= IDLE_CONNECTIONS, limit
    finally:
        for sock in sockets:
            sock.close()
        server.kill()


# -- 7. stalled clients (opened at the start of the module) ---------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            kind,
            marks=[],
        )
        for kind in SLOW_KINDS
    ],
)
def test_a_stalled_client_is_cut_off_in_bounded_time(
    env: Env, slow_clients: SlowClients, kind: str
) -> None:
    deadline = slow_clients.started + SLOW_BOUND_S
    next_check = 0.0
    while time.monotonic() < deadline:
        connections = slow_clients.of_kind(kind)
        if all(c.closed_at is not None or (c.status() or 0) >= 400 for c in connections):
            break
        if time.monotonic() >= next_check:  # and everyone else is served meanwhile
            next_check = time.monotonic() + 10
            assert request(env.server, "GET", "/healthz").status == 200
            track_one(env, "slow")
        time.sleep(0.5)
    now = time.monotonic()
    connections = slow_clients.of_kind(kind)
    held = [(c.closed_at or now) - c.opened for c in connections]
    still_open = sum(c.closed_at is None for c in connections)
    statuses = sorted({c.status() for c in connections}, key=str)
    print(
        f"\n{kind}: {len(connections)} connections held {min(held):.1f}-{max(held):.1f} s; "
        f"{still_open} still open; replies {statuses}"
    )
    for connection in connections:
        status = connection.status()
        assert status is None or status < 500, connection.received[:200]
        answered = status is not None and status >= 400
        closed_in_time = (
            connection.closed_at is not None
            and connection.closed_at - connection.opened <= SLOW_BOUND_S
        )
        assert answered or closed_in_time, f"{kind}: held {max(held):.0f} s and still open"


# -- afterwards: nothing accepted was lost or changed -------------------------------------------
def test_everything_accepted_is_intact_afterwards(env: Env) -> None:
    server = env.server
    found = exported(server, env.tag)
    for insert_id, seeded in env.seeded.items():
        assert found[insert_id] == seeded, insert_id
    everything = {
        e["properties"]["$insert_id"]: e["event"]
        for e in export(server, SECRET, day(-1), day(1))
        if e["properties"].get("$insert_id") in env.accepted
    }
    assert everything == env.accepted
    assert profile(server, SECRET, env.profile_id) == env.profile_props
    status = server.status()
    assert status["loader_errors"] == 0, status
    # Nothing failed inside the server: every hostile request was answered on purpose.
    unhandled = [line for line in server.log().splitlines() if "unhandled error on" in line]
    assert not unhandled, unhandled
