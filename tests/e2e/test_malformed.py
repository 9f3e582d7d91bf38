"""Malformed and hostile requests against one real server process (spec §2, §3, §9).

Every bad request gets the reply shape the spec names with a specific message; none
gets a 5xx (a browser SDK would retry it forever) and none hangs (every request runs
on a socket with a timeout). At the end the server is still healthy and still serves
what it accepted before.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import socket
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Reply, Server, cli, dumps, export, request

pytestmark = pytest.mark.e2e

TOKEN, SECRET = "tok-malformed", "sec-malformed"
MAX_BODY = 10 * 1024 * 1024
TIMEOUT = 30.0
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
ORIGIN = "https://shop.example.com:8443"


@dataclass(frozen=True)
class Env:
    server: Server
    marker_insert_id: str


def track(
    server: Server,
    body: bytes | Iterable[bytes] | None = None,
    *,
    query: str = "verbose=1",
    content_type: str | None = FORM,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = "/track",
) -> Reply:
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    target = path + (f"?{query}" if query else "")
    return request(server, method, target, body, all_headers)


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else dumps(value)
    return base64.b64encode(raw).decode()


def form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def event(insert_id: str, **props: Any) -> dict[str, Any]:
    """A valid /track event (token, distinct_id, $insert_id) unless ``props`` overrides."""
    properties: dict[str, Any] = {"token": TOKEN, "distinct_id": "user-1", "$insert_id": insert_id}
    properties.update(props)
    return {"event": "Clicked", "properties": properties}


def day(offset: int = 0) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def stored(server: Server, tag: str, from_date: str | None = None) -> dict[str, dict[str, Any]]:
    """Exported events whose $insert_id starts with ``tag``, by $insert_id (time in ms)."""
    server.wait_loaded()
    events = export(server, SECRET, from_date or day(-1), day(1), time_in_ms="true")
    return {
        e["properties"]["$insert_id"]: e
        for e in events
        if str(e["properties"].get("$insert_id", "")).startswith(tag)
    }


def assert_verbose(reply: Reply, status: int, error: str | None) -> None:
    """``{"status":N,"error":...}``; ``error`` is a substring that must appear (or None)."""
    assert reply.status == 200, reply
    assert reply.content_type.startswith("application/json"), reply
    body = reply.json()
    assert set(body) == {"status", "error"}, body
    assert body["status"] == status, body
    if error is None:
        assert body["error"] is None, body
    else:
        assert isinstance(body["error"], str), body
        assert error.lower() in body["error"].lower(), body


def launch(data_dir: Path, token: str, secret: str, args: list[str]) -> Server:
    cli(data_dir, "projects", "create", "m", "--token", token, "--secret", secret)
    return Server(data_dir, args=args).start()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = launch(tmp_path_factory.mktemp("malformed") / "data", TOKEN, SECRET, [])
    try:
        marker = f"{new_tag()}-marker"
        reply = track(server, form(data=b64([event(marker)])))
        assert_verbose(reply, 1, None)
        yield Env(server, marker)
    finally:
        server.kill()


@pytest.fixture
def server(env: Env) -> Server:
    return env.server


# -- undecodable payloads: 200 + a specific verbose error, "0" when not verbose ---------------
def _truncated_gzip() -> bytes:
    whole = gzip.compress(form(data=b64([event("truncated")])) * 50)
    return whole[: len(whole) // 2]


MALFORMED: list[tuple[str, bytes, str | None, dict[str, str], str]] = [
    ("bad-base64", form(data="!!!not*base64@@"), FORM, {}, "base64"),
    ("base64-with-junk", b"data=eyJldmVudCI6%00%01", FORM, {}, "base64"),
    ("bad-json-in-data", form(data='{"event": "x", '), FORM, {}, "invalid JSON"),
    ("bad-json-body", b'{"event": "x", ', JSON_TYPE, {}, "invalid JSON"),
    ("bad-json-in-base64", form(data=b64(b'[{"event":')), FORM, {}, "invalid JSON"),
    ("raw-invalid-utf8-form", b"data=\xff\xfe" + b"A" * 10, FORM, {}, "UTF-8"),
    ("escaped-invalid-utf8-form", b"data=%FF%FE", FORM, {}, "UTF-8"),
    ("number-payload", form(data=b64(123)), FORM, {}, "JSON object or an array"),
    ("string-payload", form(data=b64("hello")), FORM, {}, "JSON object or an array"),
    ("null-payload", form(data=b64(None)), FORM, {}, "JSON object or an array"),
    ("array-of-non-objects", b'[1, "two", null]', JSON_TYPE, {}, "JSON object"),
    ("empty-array", b"[]", JSON_TYPE, {}, "no events"),
    ("empty-body", b"", FORM, {}, "data, missing or empty"),
    ("missing-data", form(foo="bar"), FORM, {}, "data, missing or empty"),
    ("empty-data", form(data=""), FORM, {}, "data, missing or empty"),
    ("blank-data", form(data="   "), FORM, {}, "data, missing or empty"),
    ("truncated-gzip", _truncated_gzip(), FORM, {"Content-Encoding": "gzip"}, "gzip"),
    ("gzip-header-on-plain-bytes", form(data="abc"), FORM, {"Content-Encoding": "gzip"}, "gzip"),
    (
        "unknown-content-encoding",
        form(data="abc"),
        FORM,
        {"Content-Encoding": "br"},
        "Content-Encoding",
    ),
    ("binary-body", b"\x00\x01\x02binary", "application/octet-stream", {}, "Content-Type"),
    ("deeply-nested-brackets", b"[" * 100_000, JSON_TYPE, {}, "nested"),
    ("deeply-nested-balanced", b"[" * 100_000 + b"]" * 100_000, JSON_TYPE, {}, "nested"),
    ("deeply-nested-objects-in-data", form(data='{"a":' * 100_000), FORM, {}, "nested"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_undecodable_track_payload_gets_a_specific_error(
    server: Server, body: bytes, content_type: str | None, headers: dict[str, str], message: str
) -> None:
    reply = track(server, body, content_type=content_type, headers=headers)
    assert_verbose(reply, 0, message)
    assert reply.json()["error"].strip()

    plain = track(server, body, query="", content_type=content_type, headers=headers)
    assert plain.status == 200, plain
    assert plain.content_type.startswith("text/plain")
    assert plain.body == b"0"


def test_track_event_with_invalid_utf8_fails_only_itself(server: Server) -> None:
    tag = new_tag()
    good = dumps(event(f"{tag}-good"))
    bad = dumps(event(f"{tag}-bad", name="@@BAD@@")).replace(b'"@@BAD@@"', b'"ab\xffcd"')
    reply = track(server, b"[" + good + b",\n" + bad + b"]", content_type=JSON_TYPE)
    assert_verbose(reply, 1, "properties.name")
    assert "1 of 2" in reply.json()["error"]
    assert set(stored(server, tag)) == {f"{tag}-good"}


# -- limits: 413 ----------------------------------------------------------------------------
def test_oversized_body_gets_413(server: Server) -> None:
    body = b"data=" + b"A" * MAX_BODY
    reply = track(server, body)
    assert reply.status == 413, reply
    assert reply.json() == {
        "status": 0,
        "error": f"request exceeds max limit of {MAX_BODY} bytes",
    }
    chunked = track(server, iter([b"data=", *([b"A" * (1 << 20)] * 11)]))
    assert chunked.status == 413, chunked


def test_gzip_bomb_gets_413(server: Server) -> None:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [squeeze.compress(b"data=")]
    parts.extend(squeeze.compress(b"A" * (1 << 20)) for _ in range(3 * MAX_BODY >> 20))
    parts.append(squeeze.flush())
    bomb = b"".join(parts)
    assert len(bomb) < MAX_BODY // 100
    reply = track(server, bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status == 413, reply
    body = reply.json()
    assert body["status"] == 0
    assert str(MAX_BODY) in body["error"], body


def test_more_than_2000_events_get_413(server: Server) -> None:
    tag = new_tag()
    events = [event(f"{tag}-{i}") for i in range(2001)]
    # A form body (what browsers send): the verbose error, with 413 so the SDK halves it.
    reply = track(server, form(data=b64(events)))
    assert reply.status == 413, reply
    assert reply.json()["status"] == 0
    assert "2000" in reply.json()["error"]
    # A JSON body: the import shape (spec §3).
    reply = track(server, dumps(events), content_type=JSON_TYPE)
    assert reply.status == 413, reply
    body = reply.json()
    assert body["code"] == 413, body
    assert body["status"] == "Request Entity Too Large", body
    assert "2000" in body["error"], body
    assert stored(server, tag) == {}


# -- routing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/track", {"GET", "POST", "OPTIONS"}),
        ("DELETE", "/track/", {"GET", "POST", "OPTIONS"}),
        ("PATCH", "/engage", {"GET", "POST", "OPTIONS"}),
        ("PUT", "/import", {"GET", "POST"}),
        ("POST", "/healthz", {"GET"}),
        ("POST", "/api/2.0/export", {"GET"}),
    ],
)
def test_wrong_method_gets_405_with_allow(
    server: Server, method: str, path: str, allowed: set[str]
) -> None:
    reply = request(server, method, path, b"data=x", {"Content-Type": FORM})
    assert reply.status == 405, reply
    got = {m.strip().upper() for m in reply.header("allow").split(",") if m.strip()}
    assert allowed <= got, reply.headers
    assert method not in got
    assert reply.body.strip()


@pytest.mark.parametrize("path", ["/nope", "/track/extra", "/trackx", "/api/2.0/nothing", "/%ff"])
def test_unknown_path_gets_404(server: Server, path: str) -> None:
    reply = request(server, "GET", path)
    assert reply.status == 404, reply
    assert reply.body.strip()


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST /track HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /track HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello
    ],
    ids=["garbage", "bad-content-length", "bad-header", "tls-handshake"],
)
def test_broken_http_gets_a_4xx_and_a_closed_connection(server: Server, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    if received:  # closing without a word is a fine answer to a non-HTTP client
        status_line = received.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 4"), received[:200]


# -- JSONP ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "callback",
    [
        "alert(1)//",
        "a;b",
        "<script>alert(1)</script>",
        "x" * 500,
        "a.b(1)",
        "a b",
        "a\nb",
        "a'];alert(1);//",
        "a[1]()",
        "1abc",
        "a..b",
        "a.",
        "a[]",
        "a\u2028b",
        "constructor.constructor('alert(1)')()",
    ],
    ids=lambda c: repr(c[:24]),
)
def test_hostile_callback_gets_400(server: Server, callback: str) -> None:
    query = urllib.parse.urlencode({"callback": callback, "data": b64([event("cb-hostile")])})
    reply = track(server, None, query=query, method="GET", content_type=None)
    assert reply.status == 400, reply
    assert "javascript" not in reply.content_type
    assert "html" not in reply.content_type
    assert b"<script>" not in reply.body
    assert b"alert" not in reply.body

    # The same callback in a form body is refused the same way.
    body = form(callback=callback, data=b64([event("cb-hostile")]))
    reply = track(server, body, query="")
    assert reply.status == 400, reply
    assert "javascript" not in reply.content_type


@pytest.mark.parametrize(
    "callback", ["mixpanel._jsc.abc123", "cb[0]", "mixpanel._jsc['a1']", "$", "_x.$y"]
)
def test_good_callback_gets_javascript(server: Server, callback: str) -> None:
    tag = new_tag()
    query = urllib.parse.urlencode({"callback": callback, "data": b64([event(f"{tag}-a")])})
    reply = track(server, None, query=query, method="GET", content_type=None)
    assert reply.status == 200, reply
    assert reply.content_type.startswith("text/javascript"), reply
    assert reply.body == f"{callback}(1)".encode()

    query = urllib.parse.urlencode(
        {"callback": callback, "verbose": "1", "data": b64([event(f"{tag}-b")])}
    )
    reply = track(server, None, query=query, method="GET", content_type=None)
    assert reply.body == callback.encode() + b'({"status":1,"error":null})'

    query = urllib.parse.urlencode({"callback": callback, "data": "!!!"})
    reply = track(server, None, query=query, method="GET", content_type=None)
    assert reply.status == 200, reply
    assert reply.body == f"{callback}(0)".encode()
    assert set(stored(server, tag)) == {f"{tag}-a", f"{tag}-b"}


# -- reply modes --------------------------------------------------------------------------------
def _assert_pixel(reply: Reply) -> None:
    assert reply.status == 200, reply
    assert reply.content_type.startswith("image/gif")
    assert reply.body.startswith(b"GIF89a")
    assert reply.body[6:10] == b"\x01\x00\x01\x00"  # 1x1
    directives = {d.strip().lower() for d in reply.header("cache-control").split(",")}
    assert {"no-cache", "no-store"} <= directives, reply.headers


def test_img_1_gets_a_pixel_on_success_and_failure(server: Server) -> None:
    tag = new_tag()
    query = urllib.parse.urlencode({"img": "1", "data": b64(event(f"{tag}-img"))})
    _assert_pixel(track(server, None, query=query, method="GET", content_type=None))
    _assert_pixel(track(server, None, query="img=1&data=!!!", method="GET", content_type=None))
    _assert_pixel(track(server, form(data="!!!"), query="img=1&verbose=1"))
    assert set(stored(server, tag)) == {f"{tag}-img"}


def test_verbose_and_plain_shapes(server: Server) -> None:
    tag = new_tag()
    ok = track(server, form(data=b64([event(f"{tag}-v")])))
    assert_verbose(ok, 1, None)
    plain = track(server, form(data=b64([event(f"{tag}-p")])), query="")
    assert plain.status == 200, plain
    assert plain.content_type.startswith("text/plain")
    assert plain.body == b"1"
    get = track(
        server,
        None,
        query=urllib.parse.urlencode({"data": b64(event(f"{tag}-g")), "verbose": "1"}),
        method="GET",
        content_type=None,
    )
    assert_verbose(get, 1, None)
    # sendBeacon: text/plain body data=...; verbose=0 explicitly.
    beacon = track(
        server, form(data=b64([event(f"{tag}-b")])), query="verbose=0", content_type="text/plain"
    )
    assert beacon.body == b"1"
    # A partly bad batch: success, and the verbose error says what was not stored.
    mixed = track(server, form(data=b64([event(f"{tag}-m"), event(f"{tag}-x", token="nope")])))
    assert_verbose(mixed, 1, "1 of 2")
    assert set(stored(server, tag)) == {f"{tag}-v", f"{tag}-p", f"{tag}-g", f"{tag}-b", f"{tag}-m"}


def test_redirect_and_cache_buster_are_ignored(server: Server) -> None:
    tag = new_tag()
    query = urllib.parse.urlencode(
        {"verbose": "1", "redirect": "https://evil.example/", "_": "1700000000000", "test": "1"}
    )
    reply = track(server, form(data=b64([event(f"{tag}-r")])), query=query, path="/track/")
    assert_verbose(reply, 1, None)
    assert reply.header("location") == ""  # not an open redirect
    assert set(stored(server, tag)) == {f"{tag}-r"}


# -- CORS ---------------------------------------------------------------------------------------
def _assert_cors(reply: Reply, origin: str) -> None:
    assert reply.header("access-control-allow-origin") == origin, reply.headers
    assert reply.header("access-control-allow-credentials") == "true", reply.headers
    vary = {v.strip().lower() for v in reply.header("vary").split(",")}
    assert "origin" in vary, reply.headers


@pytest.mark.parametrize("origin", [ORIGIN, "http://localhost:3000", "null"])
def test_cors_echoes_the_origin(server: Server, origin: str) -> None:
    tag = new_tag()
    ok = track(server, form(data=b64([event(f"{tag}-c")])), headers={"Origin": origin})
    assert_verbose(ok, 1, None)
    _assert_cors(ok, origin)
    bad = track(server, form(data="!!!"), headers={"Origin": origin})
    assert_verbose(bad, 0, "base64")
    _assert_cors(bad, origin)


@pytest.mark.parametrize("path", ["/track", "/track/", "/engage/", "/groups/", "/decide/"])
def test_preflight_allows_the_sdk_headers_and_methods(server: Server, path: str) -> None:
    reply = request(
        server,
        "OPTIONS",
        path + "?verbose=1&ip=1",
        None,
        {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization,traceparent",
        },
    )
    assert reply.status in (200, 204), reply
    _assert_cors(reply, ORIGIN)
    methods = {m.strip().upper() for m in reply.header("access-control-allow-methods").split(",")}
    assert {"GET", "POST", "OPTIONS"} <= methods, reply.headers
    allowed = {h.strip().lower() for h in reply.header("access-control-allow-headers").split(",")}
    assert {"content-type", "authorization", "traceparent"} <= allowed, reply.headers


# -- tokens and times -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token_props", "message"),
    [
        ({"token": "no-such-token"}, "token, no project found"),
        ({"token": SECRET}, "token, no project found"),  # a secret is not a token
        ({"token": ""}, "token, missing or empty"),
        ({"token": None}, "token, missing or empty"),
        ({}, "token, missing or empty"),
    ],
    ids=["unknown", "secret-as-token", "empty", "null", "missing"],
)
def test_token_errors(server: Server, token_props: dict[str, Any], message: str) -> None:
    tag = new_tag()
    bad = event(f"{tag}-bad")
    del bad["properties"]["token"]
    bad["properties"].update(token_props)
    assert_verbose(track(server, form(data=b64([bad]))), 0, message)
    mixed = track(server, form(data=b64([event(f"{tag}-good"), bad])))
    assert_verbose(mixed, 1, message)
    assert set(stored(server, tag)) == {f"{tag}-good"}


def test_event_older_than_5_days_is_refused(server: Server) -> None:
    tag = new_tag()
    now = time.time()
    old = event(f"{tag}-old", time=int(now - 6 * 86_400))
    recent = event(f"{tag}-recent", time=int(now - 4 * 86_400))
    assert_verbose(track(server, form(data=b64([old]))), 0, "days")
    reply = track(server, form(data=b64([recent, old])))
    assert_verbose(reply, 1, "days")
    assert "/import" in reply.json()["error"]
    found = stored(server, tag, from_date=day(-7))
    assert set(found) == {f"{tag}-recent"}
    assert found[f"{tag}-recent"]["properties"]["time"] == int(now - 4 * 86_400) * 1000


@pytest.mark.parametrize("ahead_s", [60, 2 * 3600, 30 * 86_400])
def test_future_time_is_clamped_to_arrival(server: Server, ahead_s: int) -> None:
    tag = new_tag()
    before_ms = int(time.time() * 1000)
    sent = event(f"{tag}-future", time=int(time.time()) + ahead_s)
    assert_verbose(track(server, form(data=b64([sent]))), 1, None)
    after_ms = int(time.time() * 1000)
    found = stored(server, tag)
    assert set(found) == {f"{tag}-future"}
    assert before_ms - 1000 <= found[f"{tag}-future"]["properties"]["time"] <= after_ms


def test_ignore_drops_silently_and_counts_as_valid(server: Server) -> None:
    tag = new_tag()
    ignored = event(f"{tag}-ignored", **{"$ignore": True})
    assert_verbose(track(server, form(data=b64([ignored]))), 1, None)
    plain = track(server, form(data=b64([ignored])), query="")
    assert plain.body == b"1"
    mixed = track(server, form(data=b64([ignored, event(f"{tag}-kept")])))
    assert_verbose(mixed, 1, None)
    assert set(stored(server, tag)) == {f"{tag}-kept"}


def test_strings_over_255_characters_are_truncated(server: Server) -> None:
    tag = new_tag()
    long_key = "k" * 300
    sent = event(
        f"{tag}-long",
        plain="v" * 300,
        accented="é" * 300,
        nested={"list": ["x" * 300], "obj": {"s": "y" * 256}},
        exact="z" * 255,
        **{long_key: "value"},
    )
    sent["event"] = "E" * 300
    assert_verbose(track(server, form(data=b64([sent]))), 1, None)
    found = stored(server, tag)
    assert set(found) == {f"{tag}-long"}
    exported = found[f"{tag}-long"]
    props = exported["properties"]
    assert exported["event"] == "E" * 255
    assert props["plain"] == "v" * 255
    assert props["accented"] == "é" * 255
    assert props["nested"] == {"list": ["x" * 255], "obj": {"s": "y" * 255}}
    assert props["exact"] == "z" * 255
    assert props["k" * 255] == "value"
    assert long_key not in props


# -- ip=1 and proxies ------------------------------------------------------------------------------
def _hashed_ids(
    server: Server, tag: str, sends: list[tuple[str, dict[str, str], dict[str, Any]]]
) -> dict[str, str]:
    """Send one ip=1 event per (label, headers, extra props) with no distinct_id; return
    each label's stored distinct_id, checking that no `ip` property was stored."""
    for label, headers, extra in sends:
        sent = event(f"{tag}-{label}", **extra)
        del sent["properties"]["distinct_id"]
        reply = track(server, form(data=b64([sent])), query="ip=1&verbose=1", headers=headers)
        assert_verbose(reply, 1, None)
    found = stored(server, tag)
    assert set(found) == {f"{tag}-{label}" for label, _, _ in sends}
    ids: dict[str, str] = {}
    for label, _, _ in sends:
        props = found[f"{tag}-{label}"]["properties"]
        assert "ip" not in props, props
        ids[label] = props["distinct_id"]
    return ids


def test_ip_1_derives_a_stable_hashed_distinct_id(server: Server) -> None:
    tag = new_tag()
    ids = _hashed_ids(server, tag, [("a", {}, {}), ("b", {}, {})])
    assert ids["a"], "ip=1 with no distinct_id must derive one"
    assert ids["a"] == ids["b"]
    assert "127.0.0.1" not in ids["a"]
    # An explicit distinct_id is kept as sent; ip=0 derives nothing from the address.
    sent = event(f"{tag}-explicit", distinct_id="user-42", ip="203.0.113.1")
    assert_verbose(track(server, form(data=b64([sent])), query="ip=1&verbose=1"), 1, None)
    found = stored(server, tag)
    assert found[f"{tag}-explicit"]["properties"]["distinct_id"] == "user-42"
    assert "ip" not in found[f"{tag}-explicit"]["properties"]


def test_ip_property_overrides_the_client_address(server: Server) -> None:
    tag = new_tag()
    ids = _hashed_ids(
        server,
        tag,
        [
            ("peer", {}, {}),
            ("prop1", {}, {"ip": "203.0.113.7"}),
            ("prop2", {}, {"ip": "203.0.113.7"}),
            ("prop3", {}, {"ip": "198.51.100.23"}),
        ],
    )
    assert ids["prop1"] == ids["prop2"]
    assert ids["prop1"] != ids["peer"]
    assert ids["prop3"] not in (ids["peer"], ids["prop1"])


def test_forwarded_headers_are_ignored_from_an_untrusted_peer(server: Server) -> None:
    tag = new_tag()
    ids = _hashed_ids(
        server,
        tag,
        [
            ("peer", {}, {}),
            ("xff", {"X-Forwarded-For": "203.0.113.9"}, {}),
            ("real", {"X-Real-IP": "198.51.100.4"}, {}),
        ],
    )
    assert ids["xff"] == ids["peer"]
    assert ids["real"] == ids["peer"]


def test_forwarded_headers_are_used_from_a_trusted_proxy(
    tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    data_dir = tmp_path / "proxied"
    cli(data_dir, "projects", "create", "m", "--token", TOKEN, "--secret", SECRET)
    proxied = start_server(data_dir, args=["--trusted-proxies", "127.0.0.1"])
    tag = new_tag()
    ids = _hashed_ids(
        proxied,
        tag,
        [
            ("peer", {}, {}),
            ("xff1", {"X-Forwarded-For": "203.0.113.9"}, {}),
            ("xff2", {"X-Forwarded-For": "203.0.113.9"}, {}),
            ("chain", {"X-Forwarded-For": "198.51.100.4, 203.0.113.9"}, {}),
            ("via-us", {"X-Forwarded-For": "203.0.113.9, 127.0.0.1"}, {}),
            ("real", {"X-Real-IP": "198.51.100.4"}, {}),
        ],
    )
    assert ids["xff1"] != ids["peer"]
    assert ids["xff1"] == ids["xff2"]
    # The nearest untrusted hop is the client; hops further left may be forged by it.
    assert ids["chain"] == ids["xff1"]
    assert ids["via-us"] == ids["xff1"]
    assert ids["real"] not in (ids["peer"], ids["xff1"])


# -- afterwards ------------------------------------------------------------------------------------
def test_server_is_still_healthy_after_all_that(env: Env) -> None:
    server = env.server
    assert server.process is not None
    assert server.process.poll() is None, server.log()
    reply = request(server, "GET", "/healthz")
    assert reply.status == 200, reply
    assert reply.json()["status"] == "ok"
    assert env.marker_insert_id in stored(server, env.marker_insert_id)
    log = server.log()
    assert "unhandled error" not in log, log
    assert "Traceback" not in log, log
