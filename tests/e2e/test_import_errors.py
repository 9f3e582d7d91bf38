"""/import error replies (spec §4, §6) against one real server process.

Every failure answers exactly the shape the spec names, and the valid events of a
partly invalid batch are stored all the same (checked through the export API).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Reply, Server, basic, cli, dumps, export, request

pytestmark = pytest.mark.e2e

T1, S1 = "tok-import-errors-one", "sec-import-errors-one"
T2, S2 = "tok-import-errors-two", "sec-import-errors-two"
MAX_BODY = 10 * 1024 * 1024
PARTIAL_ERROR = "some data points in the request failed validation"
RATE_LIMITED = "Project exceeded rate limits. Please retry the request with exponential backoff."
UNAUTHORIZED = {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}
TOO_LARGE = {
    "code": 413,
    "error": f"request exceeds max limit of {MAX_BODY} bytes",
    "status": "Request Entity Too Large",
}
# spec §4: distinct_id placeholders, case-insensitive (strings and the numbers 0, -1).
PLACEHOLDER_IDS: list[Any] = [
    "00000000-0000-0000-0000-000000000000",
    "anon",
    "ANON",
    "anonymous",
    "Anonymous",
    "nil",
    "NIL",
    "none",
    "None",
    "null",
    "NULL",
    "n/a",
    "N/A",
    "na",
    "NA",
    "undefined",
    "Undefined",
    "unknown",
    "UNKNOWN",
    "<nil>",
    "<NIL>",
    "0",
    "-1",
    "true",
    "TRUE",
    "false",
    "False",
    "[]",
    "{}",
    0,
    -1,
]


@dataclass(frozen=True)
class Env:
    server: Server
    data_dir: Path
    p1: int
    p2: int


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("import-errors") / "data"
    p1 = int(cli(data_dir, "projects", "create", "p", "--token", T1, "--secret", S1)["id"])
    p2 = int(cli(data_dir, "projects", "create", "q", "--token", T2, "--secret", S2)["id"])
    server = Server(data_dir)
    try:
        server.start()
        yield Env(server, data_dir, p1, p2)
    finally:
        server.kill()


# -- helpers -------------------------------------------------------------------------------
def post_import(
    env: Env,
    body: bytes | Iterable[bytes],
    *,
    auth: str | None = basic(S1),
    query: str = "",
    content_type: str = "application/json",
    extra_headers: dict[str, str] | None = None,
) -> Reply:
    headers = {"Content-Type": content_type, **(extra_headers or {})}
    if auth is not None:
        headers["Authorization"] = auth
    path = "/import" + (f"?{query}" if query else "")
    return request(env.server, "POST", path, body, headers)


def new_tag() -> str:
    """A prefix for this test's $insert_ids (insert ids allow only [A-Za-z0-9-])."""
    return uuid.uuid4().hex[:12]


def now_s() -> int:
    return int(time.time())


def event(insert_id: str | None, **props: Any) -> dict[str, Any]:
    """An event valid for strict /import unless ``props`` says otherwise."""
    properties: dict[str, Any] = {"time": now_s() - 60, "distinct_id": "user-1"}
    if insert_id is not None:
        properties["$insert_id"] = insert_id
    properties.update(props)
    return {"event": "Imported", "properties": properties}


def day(offset: int = 0) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def stored(
    env: Env,
    tag: str,
    *,
    secret: str = S1,
    from_date: str | None = None,
    to_date: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Exported events whose $insert_id starts with ``tag``, by $insert_id."""
    env.server.wait_loaded()
    events = export(
        env.server,
        secret,
        from_date or day(-1),
        to_date or day(1),
        time_in_ms="true",
    )
    return {
        e["properties"]["$insert_id"]: e
        for e in events
        if str(e["properties"].get("$insert_id", "")).startswith(tag)
    }


def assert_partial(
    reply: Reply, imported: int, failed: list[tuple[int, str | None, str]]
) -> list[dict[str, Any]]:
    """The strict 400 envelope, exactly; ``failed`` is (index, insert_id, field) in order."""
    assert reply.status == 400, reply.body
    assert reply.content_type.startswith("application/json")
    body = reply.json()
    assert set(body) == {"code", "error", "status", "num_records_imported", "failed_records"}
    assert body["code"] == 400
    assert body["error"] == PARTIAL_ERROR
    assert body["status"] == "Bad Request"
    assert body["num_records_imported"] == imported
    records: list[dict[str, Any]] = body["failed_records"]
    for record in records:
        assert set(record) == {"index", "insert_id", "field", "message"}, record
        assert isinstance(record["message"], str)
        assert record["message"].strip(), record
    # A field ending in "*" is matched as a prefix (e.g. "properties.deep*").
    got = [
        (
            r["index"],
            r["insert_id"],
            f if f.endswith("*") and r["field"].startswith(f[:-1]) else r["field"],
        )
        for r, (_, _, f) in zip(records, failed, strict=False)
    ]
    assert len(records) == len(failed), records
    assert got == failed, records
    return records


def assert_ok(reply: Reply, imported: int) -> None:
    assert reply.status == 200, reply.body
    assert reply.json() == {"code": 200, "num_records_imported": imported, "status": "OK"}


def assert_error(reply: Reply, status: int, expected: dict[str, Any]) -> None:
    assert reply.status == status, reply.body
    assert reply.content_type.startswith("application/json")
    assert reply.json() == expected


# -- properties.time -----------------------------------------------------------------------
def test_time_before_1971_is_refused(env: Env) -> None:
    tag = new_tag()
    batch = [
        event(f"{tag}-good"),
        event(f"{tag}-zero", time=0),
        event(f"{tag}-1970", time=31_535_999),  # 1970-12-31T23:59:59Z
        event(f"{tag}-negative", time=-86_400),
        event(f"{tag}-1971", time=31_536_000),  # 1971-01-01T00:00:00Z: the first valid second
    ]
    reply = post_import(env, dumps(batch))
    records = assert_partial(
        reply,
        2,
        [
            (1, f"{tag}-zero", "properties.time"),
            (2, f"{tag}-1970", "properties.time"),
            (3, f"{tag}-negative", "properties.time"),
        ],
    )
    assert all("1971" in r["message"] for r in records), records
    assert set(stored(env, tag)) == {f"{tag}-good"}
    old = stored(env, tag, from_date="1971-01-01", to_date="1971-01-01")
    assert set(old) == {f"{tag}-1971"}
    assert old[f"{tag}-1971"]["properties"]["time"] == 31_536_000_000


def test_time_more_than_an_hour_ahead_is_refused_and_within_the_hour_clamped(env: Env) -> None:
    tag = new_tag()
    now = now_s()
    batch = [
        event(f"{tag}-soon", time=now + 30 * 60),
        event(f"{tag}-late", time=now + 2 * 3600),
        event(f"{tag}-late-ms", time=(now + 2 * 3600) * 1000),
        event(f"{tag}-far", time=now + 365 * 86_400),
    ]
    before_ms = int(time.time() * 1000)
    reply = post_import(env, dumps(batch))
    after_ms = int(time.time() * 1000)
    assert_partial(
        reply,
        1,
        [
            (1, f"{tag}-late", "properties.time"),
            (2, f"{tag}-late-ms", "properties.time"),
            (3, f"{tag}-far", "properties.time"),
        ],
    )
    found = stored(env, tag)
    assert set(found) == {f"{tag}-soon"}
    clamped = found[f"{tag}-soon"]["properties"]["time"]
    assert before_ms - 1000 <= clamped <= after_ms, (before_ms, clamped, after_ms)


# -- properties.distinct_id ----------------------------------------------------------------
def test_missing_distinct_id_is_refused(env: Env) -> None:
    tag = new_tag()
    missing = event(f"{tag}-missing")
    del missing["properties"]["distinct_id"]
    batch = [
        event(f"{tag}-good"),
        missing,
        event(f"{tag}-null", distinct_id=None),
        event(f"{tag}-empty", distinct_id=""),  # present, may be ""
    ]
    reply = post_import(env, dumps(batch))
    assert_partial(
        reply,
        2,
        [
            (1, f"{tag}-missing", "properties.distinct_id"),
            (2, f"{tag}-null", "properties.distinct_id"),
        ],
    )
    found = stored(env, tag)
    assert set(found) == {f"{tag}-good", f"{tag}-empty"}
    assert found[f"{tag}-empty"]["properties"]["distinct_id"] == ""


@pytest.mark.parametrize("placeholder", PLACEHOLDER_IDS, ids=repr)
def test_placeholder_distinct_id_is_refused(env: Env, placeholder: Any) -> None:
    tag = new_tag()
    batch = [event(f"{tag}-good"), event(f"{tag}-bad", distinct_id=placeholder)]
    reply = post_import(env, dumps(batch))
    assert_partial(reply, 1, [(1, f"{tag}-bad", "properties.distinct_id")])
    assert set(stored(env, tag)) == {f"{tag}-good"}


def test_distinct_ids_that_only_resemble_placeholders_are_accepted(env: Env) -> None:
    tag = new_tag()
    lookalikes = [
        "anonymous-user",
        "nullable",
        "none1",
        "00000000-0000-0000-0000-000000000001",
        "01",
        "-2",
        "[1]",
        "user null",
    ]
    batch = [event(f"{tag}-{i}", distinct_id=v) for i, v in enumerate(lookalikes)]
    assert_ok(post_import(env, dumps(batch)), len(lookalikes))
    found = stored(env, tag)
    assert {
        found[f"{tag}-{i}"]["properties"]["distinct_id"] for i in range(len(lookalikes))
    } == set(lookalikes)


# -- properties.$insert_id -----------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        "a" * 37,  # one byte too long
        "é" * 19,  # 38 bytes of UTF-8, and not [A-Za-z0-9-]
        "abc_def",
        "abc def",
        "abc.def",
        "abc/def",
        "abc+def=",
        "null",
        "UNDEFINED",
        "00000000-0000-0000-0000-000000000000",
        "",
        12345,
    ],
    ids=repr,
)
def test_bad_insert_id_is_refused(env: Env, bad: Any) -> None:
    tag = new_tag()
    good_id = (tag + "-" + "x" * 36)[:36]  # exactly 36 bytes: the longest allowed
    batch = [event(good_id), event(None, **{"$insert_id": bad})]
    reply = post_import(env, dumps(batch))
    echoed = bad if isinstance(bad, str) else None
    [record] = assert_partial(reply, 1, [(1, echoed, "properties.$insert_id")])
    assert "insert_id" in record["message"], record
    assert set(stored(env, tag)) == {good_id}


def test_missing_insert_id_is_refused_in_strict_mode_only(env: Env) -> None:
    tag = new_tag()
    missing = event(None, distinct_id=f"{tag}-missing-strict")
    reply = post_import(env, dumps([event(f"{tag}-good"), missing]))
    assert_partial(reply, 1, [(1, None, "properties.$insert_id")])
    assert set(stored(env, tag)) == {f"{tag}-good"}

    # strict=0 (legacy validation): an event without $insert_id gets a generated one.
    legacy = event(None, distinct_id=f"{tag}-missing-legacy")
    reply = post_import(env, dumps([legacy]), query="strict=0&verbose=1")
    assert reply.status == 200, reply.body
    assert reply.json() == {"status": 1, "error": None}
    env.server.wait_loaded()
    exported = export(env.server, S1, day(-1), day(1))
    ids = {e["properties"]["distinct_id"]: e["properties"]["$insert_id"] for e in exported}
    assert f"{tag}-missing-strict" not in ids
    assert ids.get(f"{tag}-missing-legacy"), "legacy event without $insert_id was not stored"


# -- §6 per-event limits -------------------------------------------------------------------
def test_255_properties_are_refused_and_254_accepted(env: Env) -> None:
    tag = new_tag()
    batch = [event(f"{tag}-254"), event(f"{tag}-255")]
    batch[0]["properties"].update({f"p{i}": i for i in range(254)})
    batch[1]["properties"].update({f"p{i}": i for i in range(255)})
    reply = post_import(env, dumps(batch))
    assert_partial(reply, 1, [(1, f"{tag}-255", "properties")])
    found = stored(env, tag)
    assert set(found) == {f"{tag}-254"}
    props = found[f"{tag}-254"]["properties"]
    assert all(props[f"p{i}"] == i for i in range(254))


def test_nesting_deeper_than_3_is_refused_and_3_accepted(env: Env) -> None:
    """Levels are object levels below the property (spec §6: nested objects at most 3
    levels deep); arrays of objects, as mixpanel-browser sends, do not add a level."""
    tag = new_tag()
    three = {"a": {"b": {"c": 1}}}
    browser_shape = {"a": {"b": [1, {"c": "d"}]}}
    shallow_lists = [[[1]]]
    batch = [
        event(f"{tag}-ok", deep=three, browser=browser_shape, lists=shallow_lists),
        event(f"{tag}-obj4", deep={"a": {"b": {"c": {"d": 1}}}}),
        event(f"{tag}-mixed4", deep={"a": [{"b": [{"c": {"d": 1}}]}]}),
        event(f"{tag}-lists", deep=[[[[[[[[[[1]]]]]]]]]]),  # unbounded lists are refused too
    ]
    reply = post_import(env, dumps(batch))
    records = assert_partial(
        reply,
        1,
        [
            (1, f"{tag}-obj4", "properties.deep*"),
            (2, f"{tag}-mixed4", "properties.deep*"),
            (3, f"{tag}-lists", "properties.deep*"),
        ],
    )
    assert all("nested" in r["message"] for r in records), records
    found = stored(env, tag)
    assert set(found) == {f"{tag}-ok"}
    props = found[f"{tag}-ok"]["properties"]
    assert props["deep"] == three
    assert props["browser"] == browser_shape
    assert props["lists"] == shallow_lists


def test_255_array_elements_are_refused_and_254_accepted(env: Env) -> None:
    tag = new_tag()
    batch = [
        event(f"{tag}-254", items=list(range(254))),
        event(f"{tag}-255", items=list(range(255))),
        event(f"{tag}-nested", deep={"items": list(range(300))}),
    ]
    reply = post_import(env, dumps(batch))
    records = assert_partial(
        reply,
        1,
        [(1, f"{tag}-255", "properties.items"), (2, f"{tag}-nested", "properties.deep.items")],
    )
    assert all("255" in r["message"] for r in records), records
    found = stored(env, tag)
    assert set(found) == {f"{tag}-254"}
    assert found[f"{tag}-254"]["properties"]["items"] == list(range(254))


def test_nested_object_with_255_keys_is_refused_and_254_accepted(env: Env) -> None:
    tag = new_tag()
    batch = [
        event(f"{tag}-254", obj={f"k{i}": i for i in range(254)}),
        event(f"{tag}-255", obj={f"k{i}": i for i in range(255)}),
    ]
    reply = post_import(env, dumps(batch))
    assert_partial(reply, 1, [(1, f"{tag}-255", "properties.obj")])
    found = stored(env, tag)
    assert set(found) == {f"{tag}-254"}
    assert len(found[f"{tag}-254"]["properties"]["obj"]) == 254


@pytest.mark.parametrize("layout", ["one-line", "pretty-printed", "ndjson"])
@pytest.mark.parametrize("bad_bytes", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\\ud800"])
def test_invalid_utf8_in_a_property_value_fails_only_its_event(
    env: Env, layout: str, bad_bytes: bytes
) -> None:
    tag = new_tag()
    good1 = dumps(event(f"{tag}-good1"))
    good2 = dumps(event(f"{tag}-good2"))
    marker = b'"@@BAD@@"'
    bad = dumps(event(f"{tag}-bad", name="@@BAD@@")).replace(marker, b'"abc' + bad_bytes + b'def"')
    if layout == "one-line":
        body = b"[" + b",".join([good1, bad, good2]) + b"]"
        content_type = "application/json"
    elif layout == "pretty-printed":
        body = b"[\n  " + b",\n  ".join([good1, bad, good2]) + b"\n]\n"
        content_type = "application/json"
    else:
        body = b"\n".join([good1, bad, good2]) + b"\n"
        content_type = "application/x-ndjson"
    reply = post_import(env, body, content_type=content_type)
    [record] = assert_partial(reply, 2, [(1, f"{tag}-bad", "properties.name")])
    assert "UTF-8" in record["message"], record
    assert set(stored(env, tag)) == {f"{tag}-good1", f"{tag}-good2"}


# -- bodies that are not events ------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b'[{"event":"x",', "JSON"),
        (b'"just a string"', "JSON"),
        (b"event=x", "JSON"),
        (b"[" * 100_000, "nested"),
    ],
    ids=["empty", "blank", "truncated-json", "json-string", "not-json", "deeply-nested"],
)
def test_unparseable_body_gets_the_envelope_with_a_clear_error(
    env: Env, body: bytes, words: str
) -> None:
    reply = post_import(env, body)
    assert reply.status == 400, reply.body
    answer = reply.json()
    assert answer["code"] == 400
    assert answer["status"] == "Bad Request"
    assert answer["num_records_imported"] == 0
    assert answer["failed_records"] == []
    assert words.lower() in answer["error"].lower(), answer


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (dumps([{"event": "x"}]), "gzip"),  # Content-Encoding: gzip on plain bytes
        (gzip.compress(dumps([{"event": "x"}] * 100))[:40], "gzip"),  # truncated
    ],
    ids=["not-gzip", "truncated-gzip"],
)
def test_bad_gzip_gets_the_envelope(env: Env, body: bytes, words: str) -> None:
    reply = post_import(env, body, extra_headers={"Content-Encoding": "gzip"})
    assert reply.status == 400, reply.body
    answer = reply.json()
    assert answer["code"] == 400
    assert answer["status"] == "Bad Request"
    assert answer["num_records_imported"] == 0
    assert words in answer["error"], answer


def test_query_string_that_is_not_utf8_gets_the_envelope(env: Env) -> None:
    tag = new_tag()
    reply = post_import(env, dumps([event(f"{tag}-x")]), query="strict=1&x=%FF")
    assert reply.status == 400, reply.body
    assert reply.content_type.startswith("application/json"), reply
    answer = reply.json()
    assert answer["code"] == 400
    assert answer["status"] == "Bad Request"
    assert "UTF-8" in answer["error"], answer
    assert stored(env, tag) == {}


def test_empty_array_and_non_objects_are_refused(env: Env) -> None:
    reply = post_import(env, b"[]")
    assert reply.status == 400, reply.body
    assert reply.json()["num_records_imported"] == 0

    tag = new_tag()
    reply = post_import(env, dumps([1, event(f"{tag}-good"), "x", None]))
    assert_partial(reply, 1, [(0, None, "event"), (2, None, "event"), (3, None, "event")])
    assert set(stored(env, tag)) == {f"{tag}-good"}


# -- 401 -----------------------------------------------------------------------------------
def _auth_cases() -> list[tuple[str, str | None, str]]:
    return [
        ("no-auth", None, ""),
        ("wrong-secret", basic("not-the-secret"), ""),
        ("empty-user", basic(""), ""),
        ("other-projects-secret", basic(S2), "project_id={p1}"),
        ("token-as-username", basic(T1), ""),
        ("token-as-username-with-project", basic(T1), "project_id={p1}"),
        ("secret-as-password", basic("", S1), ""),
        ("bearer", f"Bearer {S1}", ""),
        ("basic-garbage", "Basic !!!", ""),
        ("bad-project-id", basic(S1), "project_id=abc"),
    ]


@pytest.mark.parametrize(
    ("auth", "query"), [c[1:] for c in _auth_cases()], ids=[c[0] for c in _auth_cases()]
)
def test_bad_credentials_get_401(env: Env, auth: str | None, query: str) -> None:
    tag = new_tag()
    reply = post_import(env, dumps([event(f"{tag}-x")]), auth=auth, query=query.format(p1=env.p1))
    assert_error(reply, 401, UNAUTHORIZED)
    assert stored(env, tag) == {}


def test_plain_user_colon_pass_after_basic_is_accepted(env: Env) -> None:
    tag = new_tag()
    assert_ok(post_import(env, dumps([event(f"{tag}-x")]), auth=f"Basic {S1}:"), 1)
    assert set(stored(env, tag)) == {f"{tag}-x"}


def test_other_projects_secret_reaches_only_its_own_project(env: Env) -> None:
    tag = new_tag()
    assert_ok(post_import(env, dumps([event(f"{tag}-p2")]), auth=basic(S2)), 1)
    assert set(stored(env, tag, secret=S2)) == {f"{tag}-p2"}
    assert stored(env, tag) == {}


def test_service_account_with_project_id(env: Env) -> None:
    user, secret = "sa-import-errors", "sa-secret-import-errors"
    made = cli(
        env.data_dir,
        "service-accounts",
        "create",
        "--project",
        str(env.p1),
        "--username",
        user,
        "--secret",
        secret,
    )
    assert made["username"] == user
    tag = new_tag()
    auth = basic(user, secret)
    assert_ok(
        post_import(env, dumps([event(f"{tag}-sa")]), auth=auth, query=f"project_id={env.p1}"), 1
    )
    assert set(stored(env, tag)) == {f"{tag}-sa"}

    for bad_auth, query in [
        (auth, f"project_id={env.p2}"),  # the account does not belong to that project
        (basic(user, "wrong"), f"project_id={env.p1}"),
        (basic("no-such-account", secret), f"project_id={env.p1}"),
    ]:
        reply = post_import(env, dumps([event(f"{tag}-refused")]), auth=bad_auth, query=query)
        assert_error(reply, 401, UNAUTHORIZED)
    assert set(stored(env, tag)) == {f"{tag}-sa"}
    assert stored(env, tag, secret=S2) == {}


def test_token_as_username_works_only_where_the_project_allows_it(env: Env) -> None:
    token, secret = "tok-token-import", "sec-token-import"
    project = cli(env.data_dir, "projects", "create", "ti", "--token", token, "--secret", secret)
    tag = new_tag()
    assert_error(
        post_import(env, dumps([event(f"{tag}-no")]), auth=basic(token)), 401, UNAUTHORIZED
    )
    cli(env.data_dir, "projects", "update", str(project["id"]), "--allow-token-import")
    assert_ok(post_import(env, dumps([event(f"{tag}-yes")]), auth=basic(token)), 1)
    assert set(stored(env, tag, secret=secret)) == {f"{tag}-yes"}


def test_rotated_secret_is_refused_at_once(env: Env) -> None:
    old, new = "sec-rotate-old", "sec-rotate-new"
    project = cli(
        env.data_dir, "projects", "create", "rot", "--token", "tok-rotate", "--secret", old
    )
    tag = new_tag()
    assert_ok(post_import(env, dumps([event(f"{tag}-before")]), auth=basic(old)), 1)
    cli(env.data_dir, "projects", "rotate-secret", str(project["id"]), "--secret", new)
    reply = post_import(env, dumps([event(f"{tag}-old")]), auth=basic(old))
    assert_error(reply, 401, UNAUTHORIZED)
    assert_ok(post_import(env, dumps([event(f"{tag}-new")]), auth=basic(new)), 1)
    assert set(stored(env, tag, secret=new)) == {f"{tag}-before", f"{tag}-new"}


# -- 413 -----------------------------------------------------------------------------------
def test_body_over_10mb_gets_413(env: Env) -> None:
    body = b"[" + b" " * MAX_BODY + b"]"
    assert_error(post_import(env, body), 413, TOO_LARGE)


def test_chunked_body_over_10mb_gets_413(env: Env) -> None:
    chunk = b" " * (1024 * 1024)
    chunks = [b"[", *([chunk] * 11), b"]"]
    assert_error(post_import(env, iter(chunks)), 413, TOO_LARGE)


def _gzip_bomb(inflated: int) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1024 * 1024)
    out = [squeeze.compress(b"[")]
    for _ in range(inflated // len(block)):
        out.append(squeeze.compress(block))
    out.append(squeeze.compress(b"]"))
    out.append(squeeze.flush())
    return b"".join(out)


def test_gzip_bomb_gets_413(env: Env) -> None:
    bomb = _gzip_bomb(3 * MAX_BODY)
    assert len(bomb) < MAX_BODY // 100
    reply = post_import(env, bomb, extra_headers={"Content-Encoding": "gzip"})
    assert_error(reply, 413, TOO_LARGE)


def test_2001_events_get_413_and_2000_are_accepted(env: Env) -> None:
    tag = new_tag()
    too_many = [event(f"{tag}-over-{i}") for i in range(2001)]
    reply = post_import(env, dumps(too_many))
    assert reply.status == 413, reply.body
    answer = reply.json()
    assert answer["code"] == 413
    assert answer["status"] == "Request Entity Too Large"
    assert "2000" in answer["error"], answer

    enough = [event(f"{tag}-ok-{i}") for i in range(2000)]
    assert_ok(post_import(env, dumps(enough)), 2000)
    found = stored(env, tag)
    assert len(found) == 2000
    assert not any("-over-" in k for k in found)


# -- 429 -----------------------------------------------------------------------------------
def test_rate_limit_set_while_running_gives_429_with_retry_after(env: Env) -> None:
    token, secret = "tok-rate-limit", "sec-rate-limit"
    project = cli(env.data_dir, "projects", "create", "rl", "--token", token, "--secret", secret)
    tag = new_tag()
    auth = basic(secret)
    # No limit yet: a large batch, then another, both pass.
    assert_ok(post_import(env, dumps([event(f"{tag}-a{i}") for i in range(50)]), auth=auth), 50)
    assert_ok(post_import(env, dumps([event(f"{tag}-b{i}") for i in range(50)]), auth=auth), 50)

    updated = cli(
        env.data_dir, "projects", "update", str(project["id"]), "--events-per-second", "5"
    )
    assert updated["events_per_second"] == 5
    # The running server reads the new limit: one batch may overdraw the budget (by
    # ~100 s of it), the next is refused until the debt is paid.
    batches = {
        "big": [event(f"{tag}-big{i}") for i in range(500)],
        "one": [event(f"{tag}-one")],
    }
    replies = {name: post_import(env, dumps(batch), auth=auth) for name, batch in batches.items()}
    limited = {name for name, reply in replies.items() if reply.status == 429}
    assert limited, {name: (r.status, r.body) for name, r in replies.items()}
    for name in limited:
        reply = replies[name]
        assert_error(
            reply, 429, {"code": 429, "error": RATE_LIMITED, "status": "Too Many Requests"}
        )
        retry_after = reply.headers.get("retry-after")
        assert retry_after is not None
        assert retry_after.isdigit()
        assert int(retry_after) >= 1
    found = stored(env, tag, secret=secret)
    # Nothing of a refused request was stored; everything accepted was.
    for name, batch in batches.items():
        ids = {e["properties"]["$insert_id"] for e in batch}
        if name in limited:
            assert not ids & set(found), name
        else:
            assert ids <= set(found), name
    assert {f"{tag}-a0", f"{tag}-b49"} <= set(found)


# -- accepted bodies and reply dialects ----------------------------------------------------
@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/json", "text/plain"])
def test_ndjson_body_is_accepted(env: Env, content_type: str) -> None:
    tag = new_tag()
    lines = [dumps(event(f"{tag}-{i}")) for i in range(3)]
    body = b"\n".join(lines) + b"\n"
    assert_ok(post_import(env, body, content_type=content_type), 3)
    assert set(stored(env, tag)) == {f"{tag}-{i}" for i in range(3)}


def test_ndjson_with_crlf_and_blank_lines_is_accepted(env: Env) -> None:
    tag = new_tag()
    lines = [dumps(event(f"{tag}-{i}")) for i in range(3)]
    body = b"\r\n\r\n".join(lines) + b"\r\n"
    assert_ok(post_import(env, body, content_type="application/x-ndjson"), 3)
    assert set(stored(env, tag)) == {f"{tag}-{i}" for i in range(3)}


def test_gzip_json_body_is_accepted(env: Env) -> None:
    tag = new_tag()
    body = gzip.compress(dumps([event(f"{tag}-{i}") for i in range(5)]))
    reply = post_import(env, body, extra_headers={"Content-Encoding": "gzip"})
    assert_ok(reply, 5)
    assert set(stored(env, tag)) == {f"{tag}-{i}" for i in range(5)}


def test_gzip_ndjson_body_is_accepted(env: Env) -> None:
    tag = new_tag()
    body = gzip.compress(b"\n".join(dumps(event(f"{tag}-{i}")) for i in range(4)))
    reply = post_import(
        env, body, content_type="application/x-ndjson", extra_headers={"Content-Encoding": "gzip"}
    )
    assert_ok(reply, 4)
    assert set(stored(env, tag)) == {f"{tag}-{i}" for i in range(4)}


def _form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def test_legacy_form_body_gets_the_legacy_reply(env: Env) -> None:
    tag = new_tag()
    json_data = dumps([event(f"{tag}-json")]).decode()
    b64_data = base64.b64encode(dumps([event(f"{tag}-b64")])).decode()
    form = "application/x-www-form-urlencoded"

    # mixpanel-python: data=<json>&verbose=1 (plus an api_key field that is ignored).
    reply = post_import(
        env, _form(data=json_data, verbose="1", ip="0", api_key="ignored"), content_type=form
    )
    assert reply.status == 200, reply.body
    assert reply.json() == {"status": 1, "error": None}

    # mixpanel-node: raw base64, '+' not escaped (so it arrives as ' '), no padding.
    node_b64 = base64.b64encode(dumps([event(f"{tag}-node")])).decode().rstrip("=")
    raw = f"data={node_b64}&verbose=1".encode()
    reply = post_import(env, raw, content_type=form)
    assert reply.status == 200, reply.body
    assert reply.json() == {"status": 1, "error": None}

    reply = post_import(env, _form(data=b64_data), content_type=form)
    assert reply.status == 200, reply.body
    assert reply.body.strip() == b"1"

    # mixpanel-node's GET /import?data=<base64>.
    get_data = base64.b64encode(dumps(event(f"{tag}-get"))).decode()
    query = urllib.parse.urlencode({"ip": "0", "verbose": "0", "data": get_data})
    reply = request(env.server, "GET", f"/import?{query}", None, {"Authorization": basic(S1)})
    assert reply.status == 200, reply.body
    assert reply.body.strip() == b"1"

    assert set(stored(env, tag)) == {f"{tag}-json", f"{tag}-node", f"{tag}-b64", f"{tag}-get"}


def test_legacy_form_with_an_invalid_event_reports_it_in_the_error(env: Env) -> None:
    tag = new_tag()
    batch = [event(f"{tag}-good"), event(f"{tag}-bad", distinct_id="undefined")]
    reply = post_import(
        env,
        _form(data=dumps(batch).decode(), verbose="1"),
        content_type="application/x-www-form-urlencoded",
    )
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert set(answer) == {"status", "error"}
    assert isinstance(answer["error"], str)
    assert "distinct_id" in answer["error"], answer
    assert set(stored(env, tag)) == {f"{tag}-good"}


def test_strict_0_with_a_json_body_gets_the_legacy_reply(env: Env) -> None:
    tag = new_tag()
    reply = post_import(env, dumps([event(f"{tag}-v")]), query="strict=0&verbose=1")
    assert reply.status == 200, reply.body
    assert reply.json() == {"status": 1, "error": None}
    reply = post_import(env, dumps([event(f"{tag}-plain")]), query="strict=0")
    assert reply.status == 200, reply.body
    assert reply.body.strip() == b"1"
    assert set(stored(env, tag)) == {f"{tag}-v", f"{tag}-plain"}


def test_strict_1_with_a_form_body_gets_the_strict_reply(env: Env) -> None:
    tag = new_tag()
    batch = [event(f"{tag}-good"), event(f"{tag}-bad", distinct_id="null")]
    reply = post_import(
        env,
        _form(data=dumps(batch).decode(), verbose="1"),
        query="strict=1",
        content_type="application/x-www-form-urlencoded",
    )
    assert_partial(reply, 1, [(1, f"{tag}-bad", "properties.distinct_id")])
    assert set(stored(env, tag)) == {f"{tag}-good"}


def test_imported_events_are_marked_import_true(env: Env) -> None:
    tag = new_tag()
    assert_ok(post_import(env, dumps([event(f"{tag}-strict")])), 1)
    reply = post_import(
        env,
        _form(data=dumps([event(f"{tag}-legacy")]).decode()),
        content_type="application/x-www-form-urlencoded",
    )
    assert reply.status == 200, reply.body
    found = stored(env, tag)
    assert set(found) == {f"{tag}-strict", f"{tag}-legacy"}
    for exported in found.values():
        assert exported["properties"]["$import"] is True, exported
