"""Profiles end to end: /engage and /groups updates (spec §2, §3, §5), read back through
Mixpanel's profile query ``/api/2.0/engage``, over real HTTP against one server process.

Every test names its own profiles (a fresh tag in each distinct_id), so the tests are
independent although they share the server. Expected ``$properties`` are compared
whole; updates carry an explicit ``$time`` so ``$last_seen`` is known to the second.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import (
    Reply,
    Server,
    basic,
    cli,
    dumps,
    profile,
    request,
    send_updates,
    start_with_project,
)

pytestmark = pytest.mark.e2e

TOKEN, SECRET, PROJECT_ID = "tok-profiles-one", "sec-profiles-one", 31
SA_USER, SA_SECRET = "sa-profiles-user", "sa-profiles-secret"
T2, S2 = "tok-profiles-two", "sec-profiles-two"

T_MS = 1_700_000_000_999  # 2023-11-14T22:13:20.999Z: $last_seen keeps the second only
SEEN = "2023-11-14T22:13:20"
LAST_SEEN_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
OK = {"status": 1, "error": None}
FORM = "application/x-www-form-urlencoded"
MAX_UPDATES = 2000
OPERATIONS = "$set, $set_once, $add, $union, $append, $remove, $unset, $delete"
PAGE_KEYS = {"page", "page_size", "session_id", "status", "total", "computed_at", "results"}


@dataclass(frozen=True)
class Env:
    server: Server
    data_dir: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("profiles") / "data"
    server = start_with_project(
        data_dir,
        token=TOKEN,
        secret=SECRET,
        project_id=PROJECT_ID,
        service_account=(SA_USER, SA_SECRET),
    )
    try:
        yield Env(server, data_dir)
    finally:
        server.kill()


@pytest.fixture(scope="module")
def second_project(env: Env) -> int:
    """A second project, created while the server runs (it sees new projects live)."""
    made = cli(env.data_dir, "projects", "create", "two", "--token", T2, "--secret", S2)
    return int(made["id"])


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Server]:
    """A server of its own, for tests that may leave it broken."""
    server = start_with_project(tmp_path / "data", token=TOKEN, secret=SECRET)
    try:
        yield server
    finally:
        server.kill()


# -- helpers -------------------------------------------------------------------------------
def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def seen(time_ms: int) -> str:
    """The $last_seen an update at ``time_ms`` should leave: its UTC second."""
    moment = dt.datetime.fromtimestamp(time_ms // 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def user(
    distinct_id: str,
    operation: str,
    value: Any,
    *,
    time_ms: float | None = T_MS,
    token: str = TOKEN,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A user profile update as the SDKs build it."""
    raw: dict[str, Any] = {"$token": token, "$distinct_id": distinct_id, operation: value}
    if time_ms is not None:
        raw["$time"] = time_ms
    raw.update(extra or {})
    return raw


def group(
    group_key: str,
    group_id: str,
    operation: str,
    value: Any,
    *,
    time_ms: int | None = T_MS,
    token: str = TOKEN,
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "$token": token,
        "$group_key": group_key,
        "$group_id": group_id,
        operation: value,
    }
    if time_ms is not None:
        raw["$time"] = time_ms
    return raw


def apply(env: Env | Server, updates: list[dict[str, Any]], *, groups: bool = False) -> None:
    """Send (form data=JSON, verbose), expect full success, wait until loaded."""
    server = env.server if isinstance(env, Env) else env
    reply = send_updates(server, updates, group=groups)
    assert reply.json() == OK, reply.body
    server.wait_loaded()


def read(env: Env, distinct_id: str, *, group_key: str | None = None) -> dict[str, Any] | None:
    return profile(env.server, SECRET, distinct_id, group_key=group_key)


def form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def post(
    env: Env,
    body: bytes,
    *,
    path: str = "/engage",
    query: str = "",
    content_type: str = FORM,
    headers: dict[str, str] | None = None,
) -> Reply:
    target = path + (f"?{query}" if query else "")
    return request(
        env.server, "POST", target, body, {"Content-Type": content_type, **(headers or {})}
    )


def engage_query(
    env: Env | Server,
    params: dict[str, str],
    *,
    auth: str | None = basic(SECRET),
    method: str = "POST",
) -> Reply:
    """/api/2.0/engage with a form body (POST) or a query string (GET)."""
    server = env.server if isinstance(env, Env) else env
    headers = {"Authorization": auth} if auth is not None else {}
    encoded = urllib.parse.urlencode(params)
    if method == "GET":
        return request(
            server, "GET", "/api/2.0/engage" + (f"?{encoded}" if encoded else ""), None, headers
        )
    headers["Content-Type"] = FORM
    return request(server, "POST", "/api/2.0/engage", encoded.encode(), headers)


def page_of(reply: Reply) -> dict[str, Any]:
    """A successful query reply, its shape checked."""
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith("application/json")
    page: dict[str, Any] = reply.json()
    assert set(page) == PAGE_KEYS, page
    assert page["status"] == "ok"
    assert isinstance(page["session_id"], str)
    assert page["session_id"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", page["computed_at"]), page
    for result in page["results"]:
        assert set(result) == {"$distinct_id", "$properties"}, result
    return page


def ids_of(page: dict[str, Any]) -> list[str]:
    return [r["$distinct_id"] for r in page["results"]]


def by_tag(tag: str, expression: str | None = None) -> str:
    where = f'properties["tag"] == "{tag}"'
    return where if expression is None else f"{where} and ({expression})"


def tagged(env: Env, tag: str, **params: str) -> dict[str, Any]:
    """The page of this project's profiles (users unless data_group_id) tagged ``tag``."""
    page = page_of(engage_query(env, {"where": by_tag(tag), **params}))
    assert page["total"] == len(page["results"]), page
    return page


def query_error(reply: Reply, status: int) -> str:
    """An error reply of the query API: exactly {"error": "...", "status": "error"}."""
    assert reply.status == status, reply.body
    assert reply.content_type.startswith("application/json")
    body = reply.json()
    assert set(body) == {"error", "status"}, body
    assert body["status"] == "error"
    assert isinstance(body["error"], str)
    assert body["error"].strip()
    message: str = body["error"]
    return message


def refused(detail: str, bad: int = 1, total: int = 1) -> str:
    """The verbose error text naming the first refused update (spec §3)."""
    return f"{bad} of {total} updates were not stored; first: {detail}"


# -- each operation ------------------------------------------------------------------------
def test_set_then_set_once(env: Env) -> None:
    did = f"{new_tag()}-set"
    apply(env, [user(did, "$set", {"name": "Ann", "plan": "free", "nested": {"a": [1, {"b": 2}]}})])
    apply(env, [user(did, "$set_once", {"name": "Bob", "city": "Oslo", "plan": None})])
    apply(env, [user(did, "$set", {"plan": "pro", "name": None})])
    assert read(env, did) == {
        "name": None,
        "plan": "pro",
        "nested": {"a": [1, {"b": 2}]},
        "city": "Oslo",
        "$last_seen": SEEN,
    }


def test_set_once_creates_a_missing_profile(env: Env) -> None:
    did = f"{new_tag()}-once"
    apply(env, [user(did, "$set_once", {"first_seen": "2023-11-14"})])
    apply(env, [user(did, "$set_once", {"first_seen": "2024-01-01"})])
    assert read(env, did) == {"first_seen": "2023-11-14", "$last_seen": SEEN}


def test_add_sums_negatives_and_floats_exactly(env: Env) -> None:
    did = f"{new_tag()}-add"
    apply(env, [user(did, "$set", {"label": "x", "n": 1})])
    apply(env, [user(did, "$add", {"n": -2.5, "count": 5, "label": 3})])
    apply(env, [user(did, "$add", {"n": 0.25, "count": -5, "more": -7})])
    assert read(env, did) == {"label": "x", "n": -1.25, "count": 0, "more": -7, "$last_seen": SEEN}


def test_union_adds_only_missing_values(env: Env) -> None:
    did = f"{new_tag()}-union"
    apply(env, [user(did, "$set", {"tags": ["a", "b"], "scalar": "s"})])
    apply(
        env,
        [
            user(did, "$union", {"tags": ["b", "c", "c", {"x": 1, "y": 2}], "fresh": [1, 1, 2]}),
            user(did, "$union", {"tags": [{"y": 2, "x": 1}, 1, True, "a"], "scalar": ["t"]}),
        ],
    )
    assert read(env, did) == {
        "tags": ["a", "b", "c", {"x": 1, "y": 2}, 1, True],
        "fresh": [1, 2],
        "scalar": "s",
        "$last_seen": SEEN,
    }


def test_append_to_missing_list_and_to_scalar(env: Env) -> None:
    did = f"{new_tag()}-append"
    apply(env, [user(did, "$set", {"scalar": 5, "list": ["x"]})])
    apply(
        env,
        [
            user(did, "$append", {"new": "a", "scalar": "ignored", "list": "x"}),
            user(did, "$append", {"new": {"$amount": 9.5}}),
        ],
    )
    assert read(env, did) == {
        "scalar": 5,
        "list": ["x", "x"],
        "new": ["a", {"$amount": 9.5}],
        "$last_seen": SEEN,
    }


def test_remove_takes_equal_values_out_of_a_list(env: Env) -> None:
    did = f"{new_tag()}-remove"
    apply(env, [user(did, "$set", {"l": [1, "1", 2, 1, True], "s": "keep", "o": [{"k": 1}, 3]})])
    apply(env, [user(did, "$remove", {"l": 1, "s": "keep", "o": {"k": 1}, "missing": 1})])
    assert read(env, did) == {"l": ["1", 2, True], "s": "keep", "o": [3], "$last_seen": SEEN}


def test_unset_removes_named_properties(env: Env) -> None:
    did = f"{new_tag()}-unset"
    apply(env, [user(did, "$set", {"a": 1, "b": 2, "c": 3})])
    apply(env, [user(did, "$unset", ["a", "c", "never-there"])])
    assert read(env, did) == {"b": 2, "$last_seen": SEEN}


def test_delete_then_set_recreates_with_only_the_new_properties(env: Env) -> None:
    tag = new_tag()
    across, within, gone = f"{tag}-across", f"{tag}-within", f"{tag}-gone"
    apply(env, [user(d, "$set", {"old": 1, "tag": tag}) for d in (across, within, gone)])
    assert read(env, gone) == {"old": 1, "tag": tag, "$last_seen": SEEN}

    later = T_MS + 60_000
    apply(env, [user(across, "$delete", ""), user(gone, "$delete", None)])
    assert read(env, across) is None
    assert read(env, gone) is None
    apply(env, [user(across, "$set", {"new": 2}, time_ms=later)])
    # In one request: delete, then set again.
    apply(
        env,
        [
            user(within, "$delete", ""),
            user(within, "$set", {"new": 3}, time_ms=later),
            user(within, "$set_once", {"old": "again"}, time_ms=later),
        ],
    )
    assert read(env, across) == {"new": 2, "$last_seen": seen(later)}
    assert read(env, within) == {"new": 3, "old": "again", "$last_seen": seen(later)}
    assert read(env, gone) is None
    assert tagged(env, tag)["results"] == []


def test_last_seen_is_the_utc_second_of_time(env: Env) -> None:
    tag = new_tag()
    ms, secs, nothing = f"{tag}-ms", f"{tag}-seconds", f"{tag}-no-time"
    apply(
        env,
        [
            user(ms, "$set", {"a": 1}, time_ms=T_MS),
            # mixpanel-python sends float seconds.
            user(secs, "$set", {"a": 1}, time_ms=1_700_000_123.999),
        ],
    )
    assert read(env, ms) == {"a": 1, "$last_seen": SEEN}
    assert read(env, secs) == {"a": 1, "$last_seen": "2023-11-14T22:15:23"}

    # Without $time: the arrival second (mixpanel-browser sends none).
    before = seen(int(time.time() * 1000))
    apply(env, [user(nothing, "$set", {"a": 1}, time_ms=None)])
    after = seen(int(time.time() * 1000))
    props = read(env, nothing)
    assert props is not None
    assert LAST_SEEN_FORMAT.fullmatch(props["$last_seen"]), props
    assert before <= props["$last_seen"] <= after, (before, props, after)

    # An update with an older $time still applies, but $last_seen never goes back.
    apply(env, [user(ms, "$set", {"b": 2}, time_ms=T_MS - 86_400_000)])
    assert read(env, ms) == {"a": 1, "b": 2, "$last_seen": SEEN}
    later = T_MS + 3_600_000
    apply(env, [user(ms, "$add", {"a": 1}, time_ms=later)])
    assert read(env, ms) == {"a": 2, "b": 2, "$last_seen": "2023-11-14T23:13:20"}
    assert seen(later) == "2023-11-14T23:13:20"


def test_ignore_time_leaves_last_seen_alone(env: Env) -> None:
    tag = new_tag()
    known, new = f"{tag}-known", f"{tag}-new"
    apply(env, [user(known, "$set", {"v": 1})])
    later = T_MS + 86_400_000
    apply(
        env,
        [
            user(known, "$set", {"v": 2}, time_ms=later, extra={"$ignore_time": True}),
            user(known, "$add", {"n": 1}, time_ms=later, extra={"$ignore_time": True}),
            user(new, "$set", {"v": 1}, time_ms=later, extra={"$ignore_time": True}),
        ],
    )
    assert read(env, known) == {"v": 2, "n": 1, "$last_seen": SEEN}
    assert read(env, new) == {"v": 1}


def test_modifiers_are_not_stored_as_properties(env: Env) -> None:
    did = f"{new_tag()}-modifiers"
    modifiers = {
        "$ip": "203.0.113.9",
        "$ignore_alias": True,
        "$latitude": 59.91,
        "$longitude": 10.75,
        "$device_id": "device-1",  # mixpanel-browser adds these two
        "$user_id": did,
    }
    apply(env, [user(did, "$set", {"plan": "pro"}, extra=modifiers)])
    assert read(env, did) == {"plan": "pro", "$last_seen": SEEN}


def test_updates_in_one_request_apply_in_request_order(env: Env) -> None:
    did = f"{new_tag()}-order"
    apply(
        env,
        [
            user(did, "$set", {"a": 1, "b": "x"}),
            user(did, "$add", {"a": 2}),
            user(did, "$set_once", {"a": 100, "c": "once"}),
            user(did, "$append", {"l": 1}),
            user(did, "$append", {"l": 2}),
            user(did, "$union", {"l": [2, 3]}),
            user(did, "$remove", {"l": 1}),
            user(did, "$unset", ["b"]),
            user(did, "$set", {"b": "again"}),
            user(did, "$add", {"a": -0.5}),
        ],
    )
    assert read(env, did) == {"a": 2.5, "c": "once", "l": [2, 3], "b": "again", "$last_seen": SEEN}


def test_updates_across_requests_apply_in_arrival_order(env: Env) -> None:
    tag = new_tag()
    did, deleted = f"{tag}-arrival", f"{tag}-deleted"
    later = T_MS + 10_000
    # The first request carries the later $time: arrival order still decides.
    apply(env, [user(did, "$set", {"v": "first"}, time_ms=later)])
    apply(env, [user(did, "$set", {"v": "second"}, time_ms=T_MS)])
    apply(env, [user(did, "$append", {"trail": 1})])
    apply(env, [user(did, "$append", {"trail": 2})])
    apply(env, [user(deleted, "$set", {"v": 1})])
    apply(env, [user(deleted, "$delete", "")])
    assert read(env, did) == {"v": "second", "trail": [1, 2], "$last_seen": seen(later)}
    assert read(env, deleted) is None


def test_group_profiles_are_separate_from_user_profiles(env: Env) -> None:
    tag = new_tag()
    same = f"{tag}-acme"
    apply(env, [user(same, "$set", {"kind": "user", "tag": tag})])
    apply(
        env,
        [
            group("company", same, "$set", {"kind": "company", "tag": tag}),
            group("team", same, "$set", {"kind": "team", "tag": tag}),
            group("company", same, "$union", {"plans": ["a", "a", "b"]}),
            group("company", f"{tag}-other", "$set", {"kind": "company", "tag": tag}),
        ],
        groups=True,
    )
    assert read(env, same) == {"kind": "user", "tag": tag, "$last_seen": SEEN}
    assert read(env, same, group_key="company") == {
        "kind": "company",
        "tag": tag,
        "plans": ["a", "b"],
        "$last_seen": SEEN,
    }
    assert read(env, same, group_key="team") == {"kind": "team", "tag": tag, "$last_seen": SEEN}
    assert ids_of(tagged(env, tag)) == [same]
    assert ids_of(tagged(env, tag, data_group_id="company")) == [f"{tag}-acme", f"{tag}-other"]

    # Deleting the group leaves the user and the other group key alone.
    apply(env, [group("company", same, "$delete", "")], groups=True)
    assert read(env, same, group_key="company") is None
    assert read(env, same) == {"kind": "user", "tag": tag, "$last_seen": SEEN}
    assert read(env, same, group_key="team") == {"kind": "team", "tag": tag, "$last_seen": SEEN}


def test_2000_updates_in_one_request_are_all_applied_in_order(env: Env) -> None:
    tag = new_tag()
    names = [f"{tag}-{k}" for k in range(10)]
    updates = [user(name, "$set", {"tag": tag, "k": k}) for k, name in enumerate(names)]
    updates += [user(names[i % 10], "$append", {"seq": i}) for i in range(10, MAX_UPDATES)]
    assert len(updates) == MAX_UPDATES
    apply(env, updates)
    page = tagged(env, tag)
    assert ids_of(page) == names
    for k, result in enumerate(page["results"]):
        assert result["$properties"] == {
            "tag": tag,
            "k": k,
            "seq": list(range(10 + k, MAX_UPDATES, 10)),
            "$last_seen": SEEN,
        }


@pytest.mark.parametrize("shape", ["form", "json-body"])
def test_2001_updates_are_refused_whole(env: Env, shape: str) -> None:
    tag = new_tag()
    updates = [user(f"{tag}-{i}", "$set", {"tag": tag}) for i in range(MAX_UPDATES + 1)]
    message = f"request has {MAX_UPDATES + 1} updates; the limit is {MAX_UPDATES} per request"
    if shape == "form":
        reply = post(env, form(data=json.dumps(updates), verbose="1"))
        # 413 (mixpanel-browser halves its batch on it) with the verbose failure body.
        assert reply.status == 413, reply.body
        assert reply.json() == {"status": 0, "error": message}
    else:
        reply = post(env, dumps(updates), query="verbose=1", content_type="application/json")
        # A raw JSON body gets the /import shape (spec §3).
        assert reply.status == 413, reply.body
        assert reply.json() == {
            "code": 413,
            "error": message,
            "status": "Request Entity Too Large",
        }
    env.server.wait_loaded()
    assert tagged(env, tag)["total"] == 0


# -- transports ----------------------------------------------------------------------------
def b64(value: Any) -> str:
    return base64.b64encode(dumps(value)).decode()


def _form_json(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    # mixpanel-python: data=<JSON> in the form body, verbose=1&ip=0 there too.
    return post(env, form(data=json.dumps(updates), verbose="1", ip="0"), path=path)


def _form_base64(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    # mixpanel-browser's batch flush: POST /engage/?verbose=1&ip=1&_=<ms>, data=<base64>.
    query = f"verbose=1&ip=1&_={int(time.time() * 1000)}"
    return post(env, form(data=b64(updates)), path=path + "/", query=query)


def _form_raw_base64(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    # mixpanel-node's POST: raw base64 in the body, '+', '/' and '=' not escaped.
    data = b64(updates)
    assert "+" in data, data
    return post(env, b"data=" + data.encode(), path=path, query="ip=0&verbose=1")


def _get_base64(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    # mixpanel-node's single calls: GET with the base64 payload in the query string.
    payload: Any = updates[0] if len(updates) == 1 else updates
    query = urllib.parse.urlencode({"ip": "0", "verbose": "1", "data": b64(payload)})
    return request(env.server, "GET", f"{path}?{query}")


def _get_json(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    # mixpanel-browser with api_method 'GET' and api_payload_format 'json'.
    query = urllib.parse.urlencode({"data": json.dumps(updates), "ip": "1", "verbose": "1"})
    return request(env.server, "GET", f"{path}/?{query}")


def _json_body(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    return post(env, dumps(updates), path=path, query="verbose=1", content_type="application/json")


def _json_object_body(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    # One update as a bare JSON object, one request each.
    reply = None
    for update in updates:
        reply = post(
            env, dumps(update), path=path, query="verbose=1", content_type="application/json"
        )
        assert reply.json() == OK, reply.body
    assert reply is not None
    return reply


def _gzip_form(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    body = gzip.compress(form(data=b64(updates), verbose="1"))
    return post(env, body, path=path, headers={"Content-Encoding": "gzip"})


def _gzip_json(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    body = gzip.compress(dumps(updates))
    return post(
        env,
        body,
        path=path,
        query="verbose=1",
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )


def _beacon(env: Env, path: str, updates: list[dict[str, Any]]) -> Reply:
    # navigator.sendBeacon: text/plain body holding data=...
    return post(
        env,
        form(data=b64(updates)),
        path=path + "/",
        query="verbose=1&ip=1",
        content_type="text/plain;charset=UTF-8",
    )


Transport = Callable[[Env, str, list[dict[str, Any]]], Reply]
TRANSPORTS: dict[str, Transport] = {
    "form-json": _form_json,
    "form-base64": _form_base64,
    "form-raw-base64": _form_raw_base64,
    "get-base64": _get_base64,
    "get-json": _get_json,
    "json-body": _json_body,
    "json-object-body": _json_object_body,
    "gzip-form": _gzip_form,
    "gzip-json-body": _gzip_json,
    "beacon-text-plain": _beacon,
}


@pytest.mark.parametrize("path", ["/engage", "/groups"])
@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_every_sdk_transport_applies_the_updates(env: Env, transport: str, path: str) -> None:
    tag = new_tag()
    name = f"{tag}-{transport}"
    groups = path == "/groups"

    def make(operation: str, value: Any) -> dict[str, Any]:
        return group("company", name, operation, value) if groups else user(name, operation, value)

    def build(pad: str) -> list[dict[str, Any]]:
        updates = [make("$set", {"tag": tag, "via": transport, "pad": pad}), make("$add", {"n": 2})]
        # A GET carries one update, as mixpanel-node sends it.
        return updates[:1] if transport == "get-base64" else updates

    # A padding property whose length makes the base64 hold a '+' (mixpanel-node's case).
    pad = ""
    while "+" not in b64(build(pad)):
        pad += "~"
        assert len(pad) < 100
    updates = build(pad)
    reply = TRANSPORTS[transport](env, path, updates)
    assert reply.status == 200, reply.body
    assert reply.json() == OK
    env.server.wait_loaded()
    expected: dict[str, Any] = {"tag": tag, "via": transport, "pad": pad, "$last_seen": SEEN}
    if len(updates) == 2:
        expected["n"] = 2
    assert read(env, name, group_key="company" if groups else None) == expected


# Reply modes (spec §3): query string → (status, content type, body).
_GOOD = "good"
_BAD = "bad"
_NO_OPERATION = refused(
    f"update 0: operation: an update needs exactly one of {OPERATIONS} (found: none)"
)


@pytest.mark.parametrize(
    ("query", "outcome", "content_type", "body"),
    [
        ("", _GOOD, "text/plain", b"1"),
        ("verbose=0", _GOOD, "text/plain", b"1"),
        ("verbose=1", _GOOD, "application/json", dumps(OK)),
        ("callback=mixpanel._jsc.abc", _GOOD, "text/javascript", b"mixpanel._jsc.abc(1)"),
        ("callback=cb&verbose=1", _GOOD, "text/javascript", b"cb(" + dumps(OK) + b")"),
        ("", _BAD, "text/plain", b"0"),
        ("verbose=1", _BAD, "application/json", dumps({"status": 0, "error": _NO_OPERATION})),
        ("callback=cb", _BAD, "text/javascript", b"cb(0)"),
        (
            "callback=mp['x'].cb&verbose=1",
            _BAD,
            "text/javascript",
            b"mp['x'].cb(" + dumps({"status": 0, "error": _NO_OPERATION}) + b")",
        ),
    ],
)
def test_reply_modes(env: Env, query: str, outcome: str, content_type: str, body: bytes) -> None:
    tag = new_tag()
    did = f"{tag}-reply"
    update = user(did, "$set", {"tag": tag})
    if outcome == _BAD:
        del update["$set"]
    reply = post(env, form(data=b64([update])), query=query)
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith(content_type), reply.headers
    assert reply.body == body
    env.server.wait_loaded()
    expected = {"tag": tag, "$last_seen": SEEN} if outcome == _GOOD else None
    assert read(env, did) == expected


def test_bad_callback_is_refused_and_nothing_applied(env: Env) -> None:
    tag = new_tag()
    did = f"{tag}-callback"
    query = urllib.parse.urlencode({"callback": "alert(document.cookie)//", "verbose": "1"})
    reply = post(env, form(data=b64([user(did, "$set", {"tag": tag})])), query=query)
    assert reply.status == 400, reply.body
    assert b"callback" in reply.body
    env.server.wait_loaded()
    assert read(env, did) is None


# -- invalid updates -----------------------------------------------------------------------
Builder = Callable[[str], Any]

INVALID: list[Any] = [
    pytest.param(
        False,
        lambda d: {"$distinct_id": d, "$set": {"bad": 1}},
        "$token: $token, missing or empty",
        id="no-token",
    ),
    pytest.param(
        False,
        lambda d: {"$token": "", "$distinct_id": d, "$set": {"bad": 1}},
        "$token: $token, missing or empty",
        id="empty-token",
    ),
    pytest.param(
        False,
        lambda d: user(d, "$set", {"bad": 1}, token="tok-nobody-has-this"),
        "$token: $token, no project found",
        id="unknown-token",
    ),
    pytest.param(
        False,
        lambda d: {"$token": TOKEN, "$set": {"bad": 1, "id": d}},
        "$distinct_id: $distinct_id, missing or empty",
        id="no-distinct-id",
    ),
    pytest.param(
        False,
        lambda d: user("", "$set", {"bad": 1, "id": d}),
        "$distinct_id: $distinct_id, missing or empty",
        id="empty-distinct-id",
    ),
    pytest.param(
        False,
        lambda d: {"$token": TOKEN, "$distinct_id": None, "$set": {"bad": 1, "id": d}},
        "$distinct_id: $distinct_id, missing or empty",
        id="null-distinct-id",
    ),
    pytest.param(
        False,
        # A group update sent to /engage names no user.
        lambda d: group("company", d, "$set", {"bad": 1}),
        "$distinct_id: $distinct_id, missing or empty",
        id="group-update-on-engage",
    ),
    pytest.param(
        True,
        lambda d: {"$token": TOKEN, "$group_key": "company", "$set": {"bad": 1, "id": d}},
        "$group_id: $group_id, missing or empty",
        id="group-without-group-id",
    ),
    pytest.param(
        True,
        lambda d: {"$token": TOKEN, "$group_id": d, "$set": {"bad": 1}},
        "$group_key: $group_key, missing or empty",
        id="group-without-group-key",
    ),
    pytest.param(
        False,
        lambda d: {**user(d, "$add", {"n": 1}), "$set": {"bad": 1}},
        f"operation: an update needs exactly one of {OPERATIONS} (found: $set, $add)",
        id="two-operations",
    ),
    pytest.param(
        False,
        lambda d: {"$token": TOKEN, "$distinct_id": d, "$time": T_MS, "bad": 1},
        f"operation: an update needs exactly one of {OPERATIONS} (found: none)",
        id="no-operation",
    ),
    pytest.param(
        False,
        lambda d: user(d, "$add", {"n": "5"}),
        "$add.n: $add takes numbers only",
        id="add-string",
    ),
    pytest.param(
        False,
        lambda d: user(d, "$add", {"n": True}),
        "$add.n: $add takes numbers only",
        id="add-bool",
    ),
    pytest.param(
        False,
        lambda d: user(d, "$unset", "n"),
        "$unset: $unset takes a list of property names",
        id="unset-not-a-list",
    ),
    pytest.param(
        False,
        lambda d: user(d, "$union", {"tags": "c"}),
        "$union.tags: $union takes a list for each property",
        id="union-not-a-list",
    ),
    pytest.param(
        False,
        lambda d: user(d, "$set", ["bad"]),
        "$set: $set takes an object of properties",
        id="set-not-an-object",
    ),
    pytest.param(
        False,
        lambda d: user(d, "$set", {"bad": 1}, extra={"$time": "soon"}),
        "$time: $time must be seconds or milliseconds since the epoch",
        id="time-not-a-time",
    ),
    pytest.param(
        False,
        lambda d: f"$set {d}",
        "update: each update must be a JSON object",
        id="not-an-object",
    ),
]


@pytest.mark.parametrize(("groups", "build", "detail"), INVALID)
def test_invalid_update_is_refused_and_changes_nothing(
    env: Env, groups: bool, build: Builder, detail: str
) -> None:
    tag = new_tag()
    did = f"{tag}-target"
    before = {"tag": tag, "n": 1, "tags": ["a"]}
    apply(env, [user(did, "$set", before)])
    apply(env, [group("company", did, "$set", before)], groups=True)

    reply = post(
        env,
        form(data=json.dumps([build(did)]), verbose="1"),
        path="/groups" if groups else "/engage",
    )
    assert reply.status == 200, reply.body
    assert reply.json() == {"status": 0, "error": refused(f"update 0: {detail}")}

    env.server.wait_loaded()
    expected = {**before, "$last_seen": SEEN}
    assert read(env, did) == expected
    assert read(env, did, group_key="company") == expected
    assert ids_of(tagged(env, tag)) == [did]
    assert ids_of(tagged(env, tag, data_group_id="company")) == [did]
    assert page_of(engage_query(env, {"where": 'properties["bad"] == 1'}))["total"] == 0


def test_mixed_batch_applies_the_valid_ones_and_names_the_first_bad_one(env: Env) -> None:
    tag = new_tag()
    did = f"{tag}-mixed"
    batch = [
        user(did, "$set", {"tag": tag, "n": 1}),
        {"$token": TOKEN, "$distinct_id": did, "$time": T_MS},  # no operation
        user(did, "$add", {"n": 2}),
        user(did, "$add", {"n": "three"}),
        user(did, "$set", {"x": "bad"}, token="tok-nobody-has-this"),
        user(did, "$union", {"tags": ["a"]}),
    ]
    reply = post(env, form(data=json.dumps(batch), verbose="1"))
    assert reply.status == 200, reply.body
    detail = f"update 1: operation: an update needs exactly one of {OPERATIONS} (found: none)"
    assert reply.json() == {"status": 1, "error": refused(detail, bad=3, total=6)}
    env.server.wait_loaded()
    assert read(env, did) == {"tag": tag, "n": 3, "tags": ["a"], "$last_seen": SEEN}

    # Plain mode: success if anything was stored.
    reply = post(env, form(data=json.dumps([batch[1], user(did, "$set", {"y": 1})])))
    assert reply.body == b"1"
    env.server.wait_loaded()
    assert read(env, did) == {"tag": tag, "n": 3, "tags": ["a"], "y": 1, "$last_seen": SEEN}


# -- the query API -------------------------------------------------------------------------
def test_query_by_distinct_id(env: Env) -> None:
    tag = new_tag()
    did = f"{tag}-one"
    apply(env, [user(d, "$set", {"tag": tag, "d": d}) for d in (did, f"{tag}-two")])
    page = page_of(engage_query(env, {"distinct_id": did}))
    assert page["page"] == 0
    assert page["page_size"] == 1000
    assert page["total"] == 1
    assert page["results"] == [
        {"$distinct_id": did, "$properties": {"tag": tag, "d": did, "$last_seen": SEEN}}
    ]
    missing = page_of(engage_query(env, {"distinct_id": f"{tag}-missing"}))
    assert missing["total"] == 0
    assert missing["results"] == []


def test_query_by_distinct_ids(env: Env) -> None:
    tag = new_tag()
    names = [f"{tag}-{c}" for c in "abcd"]
    apply(env, [user(d, "$set", {"tag": tag}) for d in names])
    wanted = [names[2], names[0], f"{tag}-missing"]
    page = page_of(engage_query(env, {"distinct_ids": json.dumps(wanted)}))
    assert page["total"] == 2
    assert ids_of(page) == [names[0], names[2]]  # ordered by id
    # With distinct_id as well: both are asked for.
    page = page_of(
        engage_query(env, {"distinct_ids": json.dumps([names[1]]), "distinct_id": names[3]})
    )
    assert ids_of(page) == [names[1], names[3]]
    # With a where: both must hold.
    page = page_of(
        engage_query(
            env, {"distinct_ids": json.dumps(names), "where": f'properties["tag"] != "{tag}"'}
        )
    )
    assert page["results"] == []


def test_query_group_profiles_with_data_group_id(env: Env) -> None:
    tag = new_tag()
    apply(
        env,
        [
            group("company", f"{tag}-c1", "$set", {"tag": tag, "size": 10}),
            group("company", f"{tag}-c2", "$set", {"tag": tag, "size": 200}),
            group("team", f"{tag}-c1", "$set", {"tag": tag, "size": 3}),
        ],
        groups=True,
    )
    page = page_of(
        engage_query(
            env, {"data_group_id": "company", "where": by_tag(tag, 'properties["size"] > 50')}
        )
    )
    assert page["results"] == [
        {"$distinct_id": f"{tag}-c2", "$properties": {"tag": tag, "size": 200, "$last_seen": SEEN}}
    ]
    page = page_of(engage_query(env, {"data_group_id": "team", "distinct_id": f"{tag}-c1"}))
    assert page["results"] == [
        {"$distinct_id": f"{tag}-c1", "$properties": {"tag": tag, "size": 3, "$last_seen": SEEN}}
    ]
    assert tagged(env, tag)["results"] == []  # no user profiles
    assert tagged(env, tag, data_group_id="nope")["results"] == []


@pytest.fixture(scope="module")
def where_tag(env: Env) -> str:
    tag = new_tag()
    apply(
        env,
        [
            user(
                f"{tag}-a",
                "$set",
                {
                    "tag": tag,
                    "plan": "pro",
                    "age": 30,
                    "address": {"city": "Paris", "zip": "75001"},
                    "tags": ["vip", "beta"],
                    "vip": True,
                    "score": -1.25,
                },
            ),
            user(
                f"{tag}-b",
                "$set",
                {
                    "tag": tag,
                    "plan": "free",
                    "age": 45,
                    "address": {"city": "Rome"},
                    "tags": ["beta"],
                    "vip": False,
                },
            ),
            user(
                f"{tag}-c",
                "$set",
                {"tag": tag, "plan": "team", "age": "30", "address": {"city": "Oslo"}},
            ),
            user(f"{tag}-d", "$set", {"tag": tag, "address": None}),
        ],
    )
    return tag


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('properties["plan"] == "pro"', "a"),
        ('properties["plan"] != "pro"', "bcd"),  # a missing property is != too
        ('properties["age"] > 30', "b"),
        ('properties["age"] >= 30 and properties["age"] < 45', "a"),  # "30" is a string
        ('properties["age"] == "30"', "c"),
        ('properties["score"] == -1.25', "a"),
        ('properties["address"]["city"] == "Rome"', "b"),
        ('properties["address"]["city"] in ["Paris", "Oslo", "Lima"]', "ac"),
        ('properties["plan"] not in ["pro", "free"]', "cd"),
        ('"vip" in properties["tags"]', "a"),
        ('"beta" in properties["tags"]', "ab"),
        ('"re" in properties["plan"]', "b"),  # substring of a string property
        ('properties["tags"][0] == "beta"', "b"),
        ('properties["vip"] == true', "a"),
        ('properties["vip"] == false', "b"),
        ('defined(properties["plan"])', "abc"),
        ('properties["address"] == null', "d"),
        ('not (properties["plan"] == "pro" or properties["plan"] == "free")', "cd"),
        ('properties["plan"] > "pro"', "c"),  # "team" sorts after "pro"
    ],
)
def test_query_where(env: Env, where_tag: str, expression: str, expected: str) -> None:
    page = page_of(engage_query(env, {"where": by_tag(where_tag, expression)}))
    assert ids_of(page) == [f"{where_tag}-{c}" for c in expected]
    assert page["total"] == len(expected)


def test_query_output_properties(env: Env, where_tag: str) -> None:
    params = {
        "where": by_tag(where_tag, 'properties["plan"] in ["pro", "team"]'),
        "output_properties": json.dumps(["plan", "address", "not-there"]),
    }
    page = page_of(engage_query(env, params))
    assert page["results"] == [
        {
            "$distinct_id": f"{where_tag}-a",
            "$properties": {"plan": "pro", "address": {"city": "Paris", "zip": "75001"}},
        },
        {
            "$distinct_id": f"{where_tag}-c",
            "$properties": {"plan": "team", "address": {"city": "Oslo"}},
        },
    ]
    empty = page_of(engage_query(env, {**params, "output_properties": "[]"}))
    assert [r["$properties"] for r in empty["results"]] == [{}, {}]


def test_query_get_and_post_give_the_same_answer(env: Env, where_tag: str) -> None:
    params = {
        "where": by_tag(where_tag, '"beta" in properties["tags"]'),
        "output_properties": json.dumps(["plan"]),
    }
    got = page_of(engage_query(env, params, method="GET"))
    posted = page_of(engage_query(env, params, method="POST"))
    assert got["session_id"] != posted["session_id"]
    for key in ("page", "page_size", "total", "results", "status"):
        assert got[key] == posted[key], key
    assert got["results"] == [
        {"$distinct_id": f"{where_tag}-a", "$properties": {"plan": "pro"}},
        {"$distinct_id": f"{where_tag}-b", "$properties": {"plan": "free"}},
    ]
    # A POST body wins over the query string.
    reply = request(
        env.server,
        "POST",
        "/api/2.0/engage?" + urllib.parse.urlencode({"distinct_id": "nobody"}),
        form(distinct_id=f"{where_tag}-c"),
        {"Authorization": basic(SECRET), "Content-Type": FORM},
    )
    assert ids_of(page_of(reply)) == [f"{where_tag}-c"]


@pytest.mark.parametrize("repeat_query", [True, False], ids=["repeat-where", "session-only"])
def test_paging_through_five_profiles(env: Env, repeat_query: bool) -> None:
    tag = new_tag()
    names = [f"{tag}-{i}" for i in range(1, 6)]
    apply(env, [user(d, "$set", {"tag": tag, "d": d}) for d in names])

    first = page_of(engage_query(env, {"where": by_tag(tag), "page_size": "2"}))
    session = first["session_id"]
    pages = [first]
    for number in range(1, 4):
        params = {"session_id": session, "page": str(number)}
        if repeat_query:  # Mixpanel's clients send every parameter again
            params.update(where=by_tag(tag), page_size="2")
        pages.append(page_of(engage_query(env, params)))
    for number, page in enumerate(pages):
        assert page["page"] == number
        assert page["page_size"] == 2
        assert page["total"] == 5
        assert page["session_id"] == session
    assert [len(p["results"]) for p in pages] == [2, 2, 1, 0]
    served = [r for p in pages for r in p["results"]]
    assert [r["$distinct_id"] for r in served] == names  # each exactly once, by id
    for result in served:
        name = result["$distinct_id"]
        assert result["$properties"] == {"tag": tag, "d": name, "$last_seen": SEEN}


def test_paging_is_stable_when_profiles_come_and_go(env: Env) -> None:
    """Pages are cut by id: a profile created before the cursor, or deleted after it was
    served, neither repeats nor skips one (offset paging would do both)."""
    tag = new_tag()
    names = [f"{tag}-{i}" for i in range(1, 6)]
    apply(env, [user(d, "$set", {"tag": tag}) for d in names])

    first = page_of(engage_query(env, {"where": by_tag(tag), "page_size": "2"}))
    session = first["session_id"]
    assert ids_of(first) == names[:2]

    apply(env, [user(f"{tag}-0", "$set", {"tag": tag})])  # sorts before everything served
    second = page_of(engage_query(env, {"session_id": session, "page": "1"}))
    assert ids_of(second) == names[2:4]

    apply(env, [user(names[0], "$delete", ""), user(names[2], "$delete", "")])
    third = page_of(engage_query(env, {"session_id": session, "page": "2"}))
    assert ids_of(third) == names[4:]
    last = page_of(engage_query(env, {"session_id": session, "page": "3"}))
    assert last["results"] == []
    assert {p["total"] for p in (first, second, third, last)} == {5}


@pytest.mark.parametrize(
    "change",
    [
        {"where": 'properties["tag"] == "another"'},
        {"distinct_id": "someone"},
        {"data_group_id": "company"},
    ],
    ids=["where", "distinct_id", "data_group_id"],
)
def test_session_with_a_different_query_is_refused(env: Env, change: dict[str, str]) -> None:
    tag = new_tag()
    apply(env, [user(f"{tag}-{i}", "$set", {"tag": tag}) for i in range(3)])
    first = page_of(engage_query(env, {"where": by_tag(tag), "page_size": "1"}))
    reply = engage_query(env, {"session_id": first["session_id"], "page": "1", **change})
    message = query_error(reply, 400)
    assert "session_id" in message, message
    assert "different query" in message, message
    # The session itself still works.
    again = page_of(engage_query(env, {"session_id": first["session_id"], "page": "1"}))
    assert ids_of(again) == [f"{tag}-1"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"cohort_id": "12345"}, "cohort_id is not supported"),
        ({"filter_by_cohort": '{"id": 12345}'}, "filter_by_cohort is not supported"),
        ({"behaviors": "[]"}, "behaviors is not supported"),
        ({"as_of_timestamp": "1700000000"}, "as_of_timestamp is not supported"),
        ({"distinct_ids": "not-json"}, "distinct_ids must be a JSON array"),
        ({"distinct_ids": "[1, 2]"}, "distinct_ids must be a JSON array of strings"),
        ({"output_properties": '"plan"'}, "output_properties must be a JSON array"),
        ({"page_size": "0"}, "page_size must be between 1 and 1000"),
        ({"page_size": "1001"}, "page_size must be between 1 and 1000"),
        ({"page": "-1"}, "page must be between 0"),
        ({"page": "two"}, "page must be a whole number"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_unsupported_or_malformed_parameters_get_400(
    env: Env, params: dict[str, str], words: str
) -> None:
    for method in ("GET", "POST"):
        message = query_error(engage_query(env, params, method=method), 400)
        assert words in message, message


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ('properties["plan"] ==', "the expression ends too early"),
        ('(properties["plan"] == "pro"', "the expression ends too early"),
        ('properties["plan"]', 'properties["plan"] alone is not a condition'),
        ('properties["plan"] < true', "< needs a number or a string, not true"),
        ("properties[plan] == 1", "a property name must be a quoted string, not 'plan'"),
        ('properties["plan"] === "pro"', "unexpected character '=' at position 21"),
        ('cohort("x")', "unexpected 'cohort' at position 0"),
        ('"pro" == "pro"', "compares a property with a literal value"),
        ("   ", "where is empty"),
    ],
)
def test_bad_where_is_refused_naming_the_problem(env: Env, where: str, words: str) -> None:
    message = query_error(engage_query(env, {"where": where}), 400)
    assert message.startswith("where"), message
    assert words in message, message


# -- auth and isolation --------------------------------------------------------------------
@pytest.mark.parametrize(
    "auth",
    [
        None,
        basic("wrong-secret"),
        basic(TOKEN),  # tokens are public: never read credentials
        basic(SA_USER, "wrong"),
        "Bearer " + SECRET,
    ],
    ids=["none", "wrong-secret", "token", "service-account-wrong-secret", "bearer"],
)
def test_query_without_valid_credentials_gets_401(env: Env, auth: str | None) -> None:
    tag = new_tag()
    apply(env, [user(f"{tag}-private", "$set", {"tag": tag})])
    for method in ("GET", "POST"):
        reply = engage_query(env, {"distinct_id": f"{tag}-private"}, auth=auth, method=method)
        assert "credentials" in query_error(reply, 401).lower()


def test_token_cannot_read_even_where_token_import_is_allowed(env: Env) -> None:
    token, secret = "tok-profiles-three", "sec-profiles-three"
    made = cli(env.data_dir, "projects", "create", "three", "--token", token, "--secret", secret)
    cli(env.data_dir, "projects", "update", str(made["id"]), "--allow-token-import")
    tag = new_tag()
    apply(env, [user(f"{tag}-3", "$set", {"tag": tag}, token=token)])
    assert ids_of(page_of(engage_query(env, {"where": by_tag(tag)}, auth=basic(secret)))) == [
        f"{tag}-3"
    ]
    query_error(engage_query(env, {"where": by_tag(tag)}, auth=basic(token)), 401)


def test_second_project_sees_none_of_the_first_projects_profiles(
    env: Env, second_project: int
) -> None:
    tag = new_tag()
    shared, first_only = f"{tag}-shared", f"{tag}-first-only"
    apply(env, [user(d, "$set", {"tag": tag, "project": 1}) for d in (shared, first_only)])
    apply(env, [group("company", shared, "$set", {"tag": tag, "project": 1})], groups=True)
    apply(env, [user(shared, "$set", {"tag": tag, "project": 2}, token=T2)])
    apply(env, [user(shared, "$add", {"n": 1}, token=T2)])

    two = basic(S2)
    for params, expected in [
        ({"distinct_id": first_only}, []),
        ({"distinct_ids": json.dumps([first_only, shared])}, [shared]),
        ({"where": by_tag(tag)}, [shared]),
        ({"where": 'properties["project"] == 1'}, []),
        ({"data_group_id": "company", "where": by_tag(tag)}, []),
        ({}, [shared]),
    ]:
        page = page_of(engage_query(env, params, auth=two))
        assert ids_of(page) == expected, params
        assert page["total"] == len(expected), params
    assert read(env, shared) == {"tag": tag, "project": 1, "$last_seen": SEEN}
    assert profile(env.server, S2, shared) == {
        "tag": tag,
        "project": 2,
        "n": 1,
        "$last_seen": SEEN,
    }


def test_project_id_of_another_project_gets_401(env: Env, second_project: int) -> None:
    tag = new_tag()
    apply(env, [user(f"{tag}-p1", "$set", {"tag": tag})])
    for auth, project_id in [(basic(S2), PROJECT_ID), (basic(SECRET), second_project)]:
        reply = engage_query(env, {"where": by_tag(tag), "project_id": str(project_id)}, auth=auth)
        query_error(reply, 401)
    # The project's own id is fine.
    reply = engage_query(env, {"where": by_tag(tag), "project_id": str(PROJECT_ID)})
    assert ids_of(page_of(reply)) == [f"{tag}-p1"]


def test_service_account_reads_with_project_id(env: Env, second_project: int) -> None:
    tag = new_tag()
    did = f"{tag}-sa"
    apply(env, [user(did, "$set", {"tag": tag})])
    account = basic(SA_USER, SA_SECRET)
    for method in ("GET", "POST"):
        reply = engage_query(
            env, {"distinct_id": did, "project_id": str(PROJECT_ID)}, auth=account, method=method
        )
        assert page_of(reply)["results"] == [
            {"$distinct_id": did, "$properties": {"tag": tag, "$last_seen": SEEN}}
        ]
    for params in [{"project_id": str(second_project)}, {"project_id": "not-a-number"}]:
        query_error(engage_query(env, {"distinct_id": did, **params}, auth=account), 401)
    wrong = basic(SA_USER, "not-the-secret")
    query_error(
        engage_query(env, {"distinct_id": did, "project_id": str(PROJECT_ID)}, auth=wrong), 401
    )


def test_session_id_does_not_cross_projects(env: Env, second_project: int) -> None:
    tag = new_tag()
    apply(env, [user(f"{tag}-{i}", "$set", {"tag": tag}) for i in range(3)])
    first = page_of(engage_query(env, {"where": by_tag(tag), "page_size": "1"}))
    assert ids_of(first) == [f"{tag}-0"]
    reply = engage_query(env, {"session_id": first["session_id"], "page": "1"}, auth=basic(S2))
    if reply.status == 200:
        leaked = [i for i in ids_of(reply.json()) if i.startswith(tag)]
        assert leaked == [], reply.body
    else:
        query_error(reply, reply.status)
        assert reply.status in (400, 401)


# -- inputs that break the server (each on a server of its own) ----------------------------
def test_add_past_64_bits_does_not_stop_the_loader(fresh: Server) -> None:
    apply(fresh, [user("big", "$set", {"n": 2**64 - 1})])
    reply = send_updates(fresh, [user("big", "$add", {"n": 1})])
    assert reply.status == 200
    apply_reply = send_updates(fresh, [user("after", "$set", {"ok": True})])
    assert apply_reply.json() == OK
    fresh.wait_loaded(timeout=5)
    assert profile(fresh, SECRET, "after") == {"ok": True, "$last_seen": SEEN}
    big = profile(fresh, SECRET, "big")
    assert big is not None
    assert big["n"] >= 2**64 - 1


def test_time_before_year_1_does_not_stop_the_loader(fresh: Server) -> None:
    reply = send_updates(fresh, [user("ancient", "$set", {"a": 1}, time_ms=-1e15)])
    assert reply.status == 200
    assert send_updates(fresh, [user("after", "$set", {"ok": True})]).json() == OK
    fresh.wait_loaded(timeout=5)
    assert profile(fresh, SECRET, "after") == {"ok": True, "$last_seen": SEEN}


def test_time_beyond_int64_milliseconds_is_not_a_500(fresh: Server) -> None:
    batch = [user("huge", "$set", {"a": 1}, time_ms=-1e20), user("after", "$set", {"ok": True})]
    reply = send_updates(fresh, batch)  # asserts the reply is not a 5xx
    assert reply.json()["status"] == 1
    fresh.wait_loaded(timeout=5)
    assert profile(fresh, SECRET, "after") == {"ok": True, "$last_seen": SEEN}
