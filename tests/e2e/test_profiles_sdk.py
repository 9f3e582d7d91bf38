"""User and group profiles end to end: updates in, /api/2.0/engage out.

Two sources of updates, against a real server process:

* the official `mixpanel` package from PyPI, unmodified (only its URLs change), one
  people_* / group_* call at a time, each followed by a read-back of the whole profile;
* every /engage and /groups request the official SDKs were seen to send
  (shared/spec/wire/), replayed byte for byte, one client per server, with the profile
  written out by hand after every step.

Each profile is compared whole; only the value of ``$last_seen`` (the time of the
update, to the second, UTC) is not known in advance, so it is checked against the
clock around the request, or exactly where the update carries its own ``$time``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mixpanel
import pytest

from tests.serverproc import Server, profile, query_profiles, request, start_with_project
from tests.wire import PROJECT_ID as WIRE_PROJECT_ID
from tests.wire import SECRET as WIRE_SECRET
from tests.wire import TOKEN as WIRE_TOKEN
from tests.wire import Capture, captures

pytestmark = pytest.mark.e2e

TOKEN, SECRET, PROJECT_ID = "profiles-token-1", "profiles-secret-1", 4343

LAST_SEEN = "$last_seen"
LAST_SEEN_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

Props = dict[str, Any]


# ---- helpers ------------------------------------------------------------------------


def seen_text(seconds: float) -> str:
    """$last_seen's format for a moment: UTC, to the second, no zone suffix."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(seconds)))


@dataclass(frozen=True)
class Window:
    """The wall-clock span around a request: a $last_seen taken from the time the
    server received it (or from the SDK's $time, read from the same clock) lies in it."""

    first: str
    last: str

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.first <= text <= self.last


def timed(action: Callable[[], object]) -> Window:
    before = time.time()
    action()
    return Window(seen_text(before), seen_text(time.time()))


def assert_profile(actual: Props | None, expected: Props | None, seen: str | Window | None) -> str:
    """The profile is `expected` plus $last_seen, which is `seen` (exactly, within the
    window, or absent for None). Returns the $last_seen it had."""
    if expected is None:
        assert actual is None, actual
        return ""
    assert actual is not None, f"no profile; expected {expected}"
    props = dict(actual)
    last_seen = props.pop(LAST_SEEN, None)
    assert props == expected
    if seen is None:
        assert last_seen is None, f"$last_seen {last_seen!r} on a profile never seen"
        return ""
    assert isinstance(last_seen, str), actual
    assert LAST_SEEN_FORMAT.fullmatch(last_seen), last_seen
    if isinstance(seen, Window):
        assert last_seen in seen, (last_seen, seen)
    else:
        assert last_seen == seen
    return last_seen


def urls(server: Server) -> dict[str, str]:
    return {
        "events_url": f"{server.url}/track",
        "people_url": f"{server.url}/engage",
        "groups_url": f"{server.url}/groups",
        "import_url": f"{server.url}/import",
    }


def all_profiles(server: Server, secret: str, group_key: str | None = None) -> dict[str, Props]:
    """Every profile of the project (users, or one group key) in one page."""
    params = {"data_group_id": group_key} if group_key else {}
    reply = query_profiles(server, secret, **params)
    assert reply.status == 200, reply
    answer = reply.json()
    assert answer["status"] == "ok"
    assert answer["total"] == len(answer["results"]), answer
    return {r["$distinct_id"]: r["$properties"] for r in answer["results"]}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = start_with_project(
        tmp_path / "data", project_id=PROJECT_ID, token=TOKEN, secret=SECRET
    )
    yield server
    server.kill()


# ---- the official Python SDK --------------------------------------------------------


@pytest.mark.conformance("mixpanel (Python)", "people")
def test_people_operations_fold_into_the_profile(server: Server) -> None:
    mp = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**urls(server)))

    def user(distinct_id: str = "user-1") -> Props | None:
        server.wait_loaded()
        return profile(server, SECRET, distinct_id)

    assert user() is None
    window = timed(lambda: mp.people_set("user-2", {"bystander": True}))
    bystander_seen = assert_profile(user("user-2"), {"bystander": True}, window)

    window = timed(
        lambda: mp.people_set(
            "user-1",
            {
                "$name": "Ann",
                "$email": "ann@example.com",
                "plan": "free",
                "tags": ["x"],
                "nested": {"a": [1, 2], "b": {"c": None}},
                "unicode": "héllo ✓",
            },
        )
    )
    expected: Props = {
        "$name": "Ann",
        "$email": "ann@example.com",
        "plan": "free",
        "tags": ["x"],
        "nested": {"a": [1, 2], "b": {"c": None}},
        "unicode": "héllo ✓",
    }
    assert_profile(user(), expected, window)

    # $set overwrites and adds.
    window = timed(lambda: mp.people_set("user-1", {"plan": "pro", "seats": 3}))
    expected |= {"plan": "pro", "seats": 3}
    assert_profile(user(), expected, window)

    # $set_once only adds what is missing.
    window = timed(
        lambda: mp.people_set_once("user-1", {"plan": "ignored", "first_seen": "2026-01-02"})
    )
    expected |= {"first_seen": "2026-01-02"}
    assert_profile(user(), expected, window)

    # $add: a missing property counts from 0; negative and float amounts.
    window = timed(lambda: mp.people_increment("user-1", {"logins": 5, "credits": 10}))
    expected |= {"logins": 5, "credits": 10}
    assert_profile(user(), expected, window)
    window = timed(lambda: mp.people_increment("user-1", {"logins": -2, "credits": -2.5}))
    expected |= {"logins": 3, "credits": 7.5}
    assert_profile(user(), expected, window)
    window = timed(lambda: mp.people_increment("user-1", {"credits": 0.25, "ratio": -0.5}))
    expected |= {"credits": 7.75, "ratio": -0.5}
    assert_profile(user(), expected, window)
    # ... and leaves a property that is not a number alone (the update is still accepted).
    window = timed(lambda: mp.people_increment("user-1", {"plan": 1, "logins": 1}))
    expected |= {"logins": 4}
    assert_profile(user(), expected, window)

    # $append: a missing property becomes a one-item list; duplicates are kept.
    mp.people_append("user-1", {"items": "sword"})
    mp.people_append("user-1", {"items": "shield"})
    mp.people_append("user-1", {"items": "sword"})
    window = timed(lambda: mp.people_append("user-1", {"items": {"k": 1}}))
    expected |= {"items": ["sword", "shield", "sword", {"k": 1}]}
    assert_profile(user(), expected, window)
    # ... and a property that is not a list is left alone.
    window = timed(lambda: mp.people_append("user-1", {"plan": "x", "items": 7}))
    expected |= {"items": ["sword", "shield", "sword", {"k": 1}, 7]}
    assert_profile(user(), expected, window)

    # $union: adds what is not there yet, once; a missing property becomes the list.
    window = timed(lambda: mp.people_union("user-1", {"tags": ["y", "x", "y"], "roles": ["a"]}))
    expected |= {"tags": ["x", "y"], "roles": ["a"]}
    assert_profile(user(), expected, window)
    window = timed(lambda: mp.people_union("user-1", {"plan": ["z"], "roles": ["b", "a"]}))
    expected |= {"roles": ["a", "b"]}
    assert_profile(user(), expected, window)

    # $remove: every equal item goes; 7 is not "7"; non-lists and missing names are no-ops.
    window = timed(lambda: mp.people_remove("user-1", {"items": "sword"}))
    expected |= {"items": ["shield", {"k": 1}, 7]}
    assert_profile(user(), expected, window)
    window = timed(
        lambda: mp.people_remove(
            "user-1", {"items": {"k": 1}, "plan": "pro", "missing": "a", "roles": "7"}
        )
    )
    expected |= {"items": ["shield", 7]}
    assert_profile(user(), expected, window)
    window = timed(lambda: mp.people_remove("user-1", {"items": "7"}))
    assert_profile(user(), expected, window)

    # $unset: names that are not there are ignored.
    window = timed(lambda: mp.people_unset("user-1", ["seats", "no-such-property"]))
    del expected["seats"]
    assert_profile(user(), expected, window)

    # Charges are $append to $transactions; clearing them is $unset.
    mp.people_track_charge("user-1", 9.99, {"sku": "A1"})
    window = timed(lambda: mp.people_track_charge("user-1", 20))
    expected |= {"$transactions": [{"sku": "A1", "$amount": 9.99}, {"$amount": 20}]}
    assert_profile(user(), expected, window)
    window = timed(lambda: mp.people_clear_charges("user-1"))
    del expected["$transactions"]
    assert_profile(user(), expected, window)

    # $delete: no profile; a later update starts a new one from nothing.
    mp.people_delete("user-1")
    assert user() is None
    mp.people_delete("user-never-seen")
    assert user("user-never-seen") is None
    window = timed(lambda: mp.people_increment("user-1", {"logins": 1}))
    assert_profile(user(), {"logins": 1}, window)

    # Nothing above touched another profile.
    assert_profile(user("user-2"), {"bystander": True}, bystander_seen)
    assert set(all_profiles(server, SECRET)) == {"user-1", "user-2"}
    assert all_profiles(server, SECRET, "company") == {}


@pytest.mark.conformance("mixpanel (Python)", "people")
def test_last_seen_follows_time_and_ignore_time(server: Server) -> None:
    mp = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**urls(server)))

    def user() -> Props | None:
        server.wait_loaded()
        return profile(server, SECRET, "user-t")

    # $time (seconds) sets $last_seen.
    mp.people_set("user-t", {"a": 1}, meta={"$time": 1577836800})
    assert_profile(user(), {"a": 1}, "2020-01-01T00:00:00")
    # $ignore_time: the SDK's $time (now) does not move it.
    mp.people_set("user-t", {"b": 2}, meta={"$ignore_time": True})
    assert_profile(user(), {"a": 1, "b": 2}, "2020-01-01T00:00:00")
    mp.people_increment("user-t", {"n": 1}, meta={"$ignore_time": True})
    assert_profile(user(), {"a": 1, "b": 2, "n": 1}, "2020-01-01T00:00:00")
    # An older $time applies its change but never moves $last_seen backwards.
    mp.people_set("user-t", {"c": 3}, meta={"$time": 1546300800})
    assert_profile(user(), {"a": 1, "b": 2, "n": 1, "c": 3}, "2020-01-01T00:00:00")
    # $time in milliseconds.
    mp.people_set("user-t", {"d": 4}, meta={"$time": 1577923200500})
    assert_profile(user(), {"a": 1, "b": 2, "n": 1, "c": 3, "d": 4}, "2020-01-02T00:00:00")
    # The SDK's own $time: now.
    window = timed(lambda: mp.people_set("user-t", {"e": 5}))
    expected = {"a": 1, "b": 2, "n": 1, "c": 3, "d": 4, "e": 5}
    assert_profile(user(), expected, window)
    # A $time in the future counts as the time the update arrived.
    window = timed(lambda: mp.people_set("user-t", {"f": 6}, meta={"$time": time.time() + 86400}))
    assert_profile(user(), expected | {"f": 6}, window)

    # A profile created with $ignore_time has never been seen: no $last_seen at all.
    mp.people_set("user-quiet", {"q": 1}, meta={"$ignore_time": True})
    server.wait_loaded()
    assert_profile(profile(server, SECRET, "user-quiet"), {"q": 1}, None)
    mp.group_set("company", "Quiet", {"q": 1}, meta={"$ignore_time": True})
    server.wait_loaded()
    assert_profile(profile(server, SECRET, "Quiet", group_key="company"), {"q": 1}, None)


@pytest.mark.conformance("mixpanel (Python)", "groups")
def test_group_operations_fold_into_the_group_profile(server: Server) -> None:
    mp = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**urls(server)))

    def acme(group_key: str = "company") -> Props | None:
        server.wait_loaded()
        return profile(server, SECRET, "Acme", group_key=group_key)

    window = timed(lambda: mp.group_set("company", "Acme", {"tier": "gold", "size": 10}))
    expected: Props = {"tier": "gold", "size": 10}
    assert_profile(acme(), expected, window)

    window = timed(
        lambda: mp.group_set_once("company", "Acme", {"tier": "silver", "founded": 1999})
    )
    expected |= {"founded": 1999}
    assert_profile(acme(), expected, window)

    window = timed(lambda: mp.group_union("company", "Acme", {"regions": ["eu", "us"]}))
    expected |= {"regions": ["eu", "us"]}
    assert_profile(acme(), expected, window)
    window = timed(lambda: mp.group_union("company", "Acme", {"regions": ["us", "apac"]}))
    expected |= {"regions": ["eu", "us", "apac"]}
    assert_profile(acme(), expected, window)

    window = timed(lambda: mp.group_remove("company", "Acme", {"regions": "eu"}))
    expected |= {"regions": ["us", "apac"]}
    assert_profile(acme(), expected, window)

    window = timed(lambda: mp.group_unset("company", "Acme", ["tier", "no-such-property"]))
    del expected["tier"]
    assert_profile(acme(), expected, window)

    # The same id under another group key, and as a user, are other profiles.
    team_window = timed(lambda: mp.group_set("team", "Acme", {"members": 4}))
    team_seen = assert_profile(acme("team"), {"members": 4}, team_window)
    assert profile(server, SECRET, "Acme") is None
    assert_profile(acme(), expected, window)

    mp.group_delete("company", "Acme")
    assert acme() is None
    assert_profile(acme("team"), {"members": 4}, team_seen)
    assert all_profiles(server, SECRET, "company") == {}
    assert all_profiles(server, SECRET) == {}


@pytest.mark.conformance("mixpanel (Python)", "people")
def test_buffered_consumer_flushes_many_people_set_calls(server: Server) -> None:
    buffered = mixpanel.BufferedConsumer(max_size=50, **urls(server))
    mp = mixpanel.Mixpanel(TOKEN, consumer=buffered)
    before = time.time()
    for i in range(120):  # two full batches of 50 are sent on their own, then 20
        mp.people_set(f"user-{i}", {"n": i})
    for i in range(0, 120, 7):  # later in the buffer: applied after the $set
        mp.people_increment(f"user-{i}", {"n": 1000})
    buffered.flush()
    window = Window(seen_text(before), seen_text(time.time()))

    server.wait_loaded()
    profiles = all_profiles(server, SECRET)
    assert set(profiles) == {f"user-{i}" for i in range(120)}
    for i in range(120):
        n = i + 1000 if i % 7 == 0 else i
        assert_profile(profiles[f"user-{i}"], {"n": n}, window)
    assert_profile(profile(server, SECRET, "user-77"), {"n": 1077}, window)


# ---- wire replay: what each SDK sent, step by step ----------------------------------

PY_SEEN = "2026-11-22T04:45:15"  # every py: capture's $time falls in this second
NOW = "now"  # $last_seen: the time the server received the request
SAME = "same"  # $last_seen: as before the step


@dataclass(frozen=True)
class Step:
    scenario: str
    path: str  # /engage or /groups
    user: Props | None  # user-1 after the step
    group: Props | None  # company/Acme after the step
    seen: str  # the updated profile's $last_seen: NOW, SAME or exact


def _browser_ann(logins: int, swords: int, plan: bool) -> Props:
    props: Props = {
        "$initial_referrer": "$direct",
        "$initial_referring_domain": "$direct",
        "$os": "Linux",
        "$browser": "Chrome",
        "$browser_version": 156,
        "$name": "Ann",
        "$email": "ann@example.com",
        "when": "2026-01-02T03:04:05",
        "first_seen": "2026-01-02T03:04:05",
        "logins": logins,
        "items": ["sword"] * swords,
        "tags": ["a", "b"],
        "company": ["Acme"],
    }
    if plan:
        props["plan"] = "x"
    return props


_GOLD: Props = {"tier": "gold"}
_E, _G = "/engage/", "/groups/"
_BROWSER = [
    # One batch of eight: $set_once, $set (plan "x"), $set_once, $add, $append, $union,
    # $unset plan, $set company.
    Step("browser:default:track_beacon_immediate", _E, _browser_ann(1, 1, False), None, NOW),
    Step("browser:default:track_beacon_immediate", _G, _browser_ann(1, 1, False), _GOLD, NOW),
    Step("browser:no_batch:identify", _E, _browser_ann(1, 1, False), _GOLD, NOW),
    Step("browser:no_batch:people_set_once", _E, _browser_ann(1, 1, True), _GOLD, NOW),
    Step("browser:no_batch:people_set_once", _E, _browser_ann(1, 1, True), _GOLD, NOW),
    Step("browser:no_batch:people_increment", _E, _browser_ann(2, 1, True), _GOLD, NOW),
    Step("browser:no_batch:people_append", _E, _browser_ann(2, 2, True), _GOLD, NOW),
    Step("browser:no_batch:people_union", _E, _browser_ann(2, 2, True), _GOLD, NOW),
    Step("browser:no_batch:people_unset", _E, _browser_ann(2, 2, False), _GOLD, NOW),
    Step("browser:no_batch:group_set", _G, _browser_ann(2, 2, False), _GOLD, NOW),
    Step("browser:no_batch:group_set", _E, _browser_ann(2, 2, False), _GOLD, NOW),
    Step("browser:json_payload:track_beacon_immediate", _G, _browser_ann(2, 2, False), _GOLD, NOW),
    Step("browser:json_payload:track_beacon_immediate", _E, _browser_ann(3, 3, False), _GOLD, NOW),
    Step("browser:no_batch_json:identify", _E, _browser_ann(3, 3, False), _GOLD, NOW),
    Step("browser:no_batch_json:people_set_once", _E, _browser_ann(3, 3, True), _GOLD, NOW),
    Step("browser:no_batch_json:people_set_once", _E, _browser_ann(3, 3, True), _GOLD, NOW),
    Step("browser:no_batch_json:people_increment", _E, _browser_ann(4, 3, True), _GOLD, NOW),
    Step("browser:no_batch_json:people_append", _E, _browser_ann(4, 4, True), _GOLD, NOW),
    Step("browser:no_batch_json:people_union", _E, _browser_ann(4, 4, True), _GOLD, NOW),
    Step("browser:no_batch_json:people_unset", _E, _browser_ann(4, 4, False), _GOLD, NOW),
    Step("browser:no_batch_json:group_set", _E, _browser_ann(4, 4, False), _GOLD, NOW),
    Step("browser:no_batch_json:group_set", _G, _browser_ann(4, 4, False), _GOLD, NOW),
    Step(
        "browser:api_transport_sendbeacon_no_batch:identify",
        _E,
        _browser_ann(4, 4, False),
        _GOLD,
        NOW,
    ),
    Step(
        "browser:api_transport_sendbeacon_no_batch:people_set",
        _E,
        _browser_ann(4, 4, True),
        _GOLD,
        NOW,
    ),
    Step("browser:api_method_get_no_batch:identify", _E, _browser_ann(4, 4, True), _GOLD, NOW),
    Step("browser:api_method_get_no_batch:people_set", _E, _browser_ann(4, 4, True), _GOLD, NOW),
    Step("browser:session_recording:identify", _E, _browser_ann(4, 4, True), _GOLD, NOW),
]

_NODE_ANN: Props = {
    "$name": "Ann",
    "$email": "ann@example.com",
    "plan": "premium",
    "when": "2026-01-02T03:04:05.678Z",
}
_NODE_ANN_2: Props = {
    **_NODE_ANN,
    "k": "v",
    "first_seen": "2026-01-02T03:04:05.678Z",
    "logins": 1,
    "credits": -2.5,
}
_NODE_ANN_3: Props = {
    "$name": "Ann",
    "$email": "ann@example.com",
    "when": "2026-01-02T03:04:05.678Z",
    "first_seen": "2026-01-02T03:04:05.678Z",
    "logins": 1,
    "credits": -2.5,
    "items": [],
    "tags": ["a", "b"],
}
_NODE_ACME: Props = {"tier": "gold", "size": 10, "founded": 1999}
_NODE = [
    Step(
        "node:people_set",
        "/engage",
        {
            "$name": "Ann",
            "$email": "ann@example.com",
            "plan": "x",
            "when": "2026-01-02T03:04:05.678Z",
        },
        None,
        NOW,
    ),
    Step("node:people_set_single_prop", "/engage", _NODE_ANN, None, NOW),
    # $ignore_time (and an older $time): $last_seen stays. (Either alone would keep it
    # here; test_last_seen_follows_time_and_ignore_time tells them apart.)
    Step("node:people_set_with_modifiers", "/engage", {**_NODE_ANN, "k": "v"}, None, SAME),
    Step(
        "node:people_set_once",
        "/engage",
        {**_NODE_ANN, "k": "v", "first_seen": "2026-01-02T03:04:05.678Z"},
        None,
        NOW,
    ),
    Step("node:people_increment", "/engage", _NODE_ANN_2, None, NOW),
    Step("node:people_append", "/engage", {**_NODE_ANN_2, "items": ["sword"]}, None, NOW),
    Step(
        "node:people_union",
        "/engage",
        {**_NODE_ANN_2, "items": ["sword"], "tags": ["a", "b"]},
        None,
        NOW,
    ),
    Step(
        "node:people_remove",
        "/engage",
        {**_NODE_ANN_2, "items": [], "tags": ["a", "b"]},
        None,
        NOW,
    ),
    Step("node:people_unset", "/engage", _NODE_ANN_3, None, NOW),
    Step(
        "node:people_track_charge",
        "/engage",
        {**_NODE_ANN_3, "$transactions": [{"sku": "A1", "$amount": 9.99}]},
        None,
        NOW,
    ),
    Step("node:people_clear_charges", "/engage", {**_NODE_ANN_3, "$transactions": []}, None, NOW),
    Step("node:people_delete_user", "/engage", None, None, NOW),
    Step("node:groups_set", "/groups", None, {"tier": "gold", "size": 10}, NOW),
    Step("node:groups_set_once", "/groups", None, _NODE_ACME, NOW),
    Step("node:groups_union", "/groups", None, {**_NODE_ACME, "regions": ["eu"]}, NOW),
    Step("node:groups_remove", "/groups", None, {**_NODE_ACME, "regions": []}, NOW),
    Step("node:groups_unset", "/groups", None, {"size": 10, "founded": 1999, "regions": []}, NOW),
    Step("node:groups_delete_group", "/groups", None, None, NOW),
]

_PY_ANN: Props = {
    "$name": "Ann",
    "$email": "ann@example.com",
    "plan": "x",
    "when": "2026-01-02T03:04:05",
}
_PY_ANN_2: Props = {
    **_PY_ANN,
    "k": "v",
    "first_seen": "2026-01-02T03:04:05",
    "logins": 1,
    "credits": -2.5,
}
_PY_ANN_3: Props = {
    "$name": "Ann",
    "$email": "ann@example.com",
    "when": "2026-01-02T03:04:05",
    "first_seen": "2026-01-02T03:04:05",
    "logins": 1,
    "credits": -2.5,
    "items": [],
    "tags": ["a", "b"],
}
_PY_ACME: Props = {"tier": "gold", "size": 10, "founded": 1999}
_PYTHON = [
    Step("py:people_set", "/engage", _PY_ANN, None, PY_SEEN),
    Step("py:people_set_meta_ip_ignore_time", "/engage", {**_PY_ANN, "k": "v"}, None, SAME),
    Step(
        "py:people_set_once",
        "/engage",
        {**_PY_ANN, "k": "v", "first_seen": "2026-01-02T03:04:05"},
        None,
        PY_SEEN,
    ),
    Step("py:people_increment", "/engage", _PY_ANN_2, None, PY_SEEN),
    Step("py:people_append", "/engage", {**_PY_ANN_2, "items": ["sword"]}, None, PY_SEEN),
    Step(
        "py:people_union",
        "/engage",
        {**_PY_ANN_2, "items": ["sword"], "tags": ["a", "b"]},
        None,
        PY_SEEN,
    ),
    Step(
        "py:people_remove",
        "/engage",
        {**_PY_ANN_2, "items": [], "tags": ["a", "b"]},
        None,
        PY_SEEN,
    ),
    Step("py:people_unset", "/engage", _PY_ANN_3, None, PY_SEEN),
    Step(
        "py:people_track_charge",
        "/engage",
        {**_PY_ANN_3, "$transactions": [{"sku": "A1", "$amount": 9.99}]},
        None,
        PY_SEEN,
    ),
    Step("py:people_clear_charges", "/engage", _PY_ANN_3, None, PY_SEEN),
    Step("py:people_delete", "/engage", None, None, PY_SEEN),
    Step("py:group_set", "/groups", None, {"tier": "gold", "size": 10}, PY_SEEN),
    Step("py:group_set_once", "/groups", None, _PY_ACME, PY_SEEN),
    Step("py:group_union", "/groups", None, {**_PY_ACME, "regions": ["eu"]}, PY_SEEN),
    Step("py:group_remove", "/groups", None, {**_PY_ACME, "regions": []}, PY_SEEN),
    Step("py:group_unset", "/groups", None, {"size": 10, "founded": 1999, "regions": []}, PY_SEEN),
    Step("py:group_delete", "/groups", None, None, PY_SEEN),
    # BufferedConsumer: one /engage batch setting user-0..user-2 {"n": i}, one /groups.
    Step("py:buffered_120_events", "/engage", {"n": 1}, None, PY_SEEN),
    Step("py:buffered_120_events", "/groups", {"n": 1}, {"buffered": True}, PY_SEEN),
]

# What every profile of the project is once the whole file has been replayed.
_FINAL_USERS: dict[str, dict[str, Props]] = {
    "mixpanel-browser-2.83.0": {"user-1": _browser_ann(4, 4, True)},
    "node-mixpanel-0.24.0": {},
    "python-mixpanel-5.4.1": {"user-0": {"n": 0}, "user-1": {"n": 1}, "user-2": {"n": 2}},
}
_FINAL_GROUPS: dict[str, dict[str, Props]] = {
    "mixpanel-browser-2.83.0": {"Acme": _GOLD},
    "node-mixpanel-0.24.0": {},
    "python-mixpanel-5.4.1": {"Acme": {"buffered": True}},
}
STEPS = {
    "mixpanel-browser-2.83.0": _BROWSER,
    "node-mixpanel-0.24.0": _NODE,
    "python-mixpanel-5.4.1": _PYTHON,
}


def profile_captures(client: str) -> list[Capture]:
    """The client's /engage and /groups requests, in file order, exactly as captured."""
    found = [c for c in captures(client) if c.path.rstrip("/") in ("/engage", "/groups")]
    assert all(c.client == client for c in found)
    return found


def assert_sdk_accepts(capture: Capture, status: int, body: bytes) -> None:
    """The reply the SDK needs: "1" where it sent verbose=0 (or nothing), else
    {"status": 1, "error": null} (SDK_WIRE.md §0)."""
    assert status == 200, (capture.scenario, status, body)
    if capture.reply_body == "1":
        assert body == b"1", (capture.scenario, body)
    else:
        assert json.loads(body) == {"status": 1, "error": None}, (capture.scenario, body)


def _expect_seen(rule: str, window: Window, before: str) -> str | Window:
    if rule == NOW:
        return window
    if rule == SAME:
        return before
    return rule


@pytest.fixture
def wire_server(tmp_path: Path) -> Iterator[Server]:
    server = start_with_project(
        tmp_path / "data", project_id=WIRE_PROJECT_ID, token=WIRE_TOKEN, secret=WIRE_SECRET
    )
    yield server
    server.kill()


@pytest.mark.parametrize("client", sorted(STEPS))
def test_replayed_profile_updates_fold_step_by_step(client: str, wire_server: Server) -> None:
    steps = STEPS[client]
    caught = profile_captures(client)
    assert [(c.scenario, c.target.partition("?")[0]) for c in caught] == [
        (s.scenario, s.path) for s in steps
    ], "the wire captures changed: review the expected steps"

    user_seen = group_seen = ""
    for capture, step in zip(caught, steps, strict=True):
        is_group = step.path.startswith("/groups")
        before = time.time()
        reply = request(
            wire_server, capture.method, capture.target, capture.body or None, capture.headers
        )
        window = Window(seen_text(before), seen_text(time.time()))
        assert_sdk_accepts(capture, reply.status, reply.body)
        wire_server.wait_loaded()

        where = f"{client} {capture.scenario} {step.path}"
        user_rule = SAME if is_group else step.seen
        group_rule = step.seen if is_group else SAME
        user = profile(wire_server, WIRE_SECRET, "user-1")
        acme = profile(wire_server, WIRE_SECRET, "Acme", group_key="company")
        try:
            user_seen = assert_profile(user, step.user, _expect_seen(user_rule, window, user_seen))
            group_seen = assert_profile(
                acme, step.group, _expect_seen(group_rule, window, group_seen)
            )
        except AssertionError as failure:
            raise AssertionError(f"after {where}: user-1 {user}, Acme {acme}") from failure

    users = all_profiles(wire_server, WIRE_SECRET)
    groups = all_profiles(wire_server, WIRE_SECRET, "company")
    assert {k: {p: v for p, v in u.items() if p != LAST_SEEN} for k, u in users.items()} == (
        _FINAL_USERS[client]
    )
    assert {k: {p: v for p, v in g.items() if p != LAST_SEEN} for k, g in groups.items()} == (
        _FINAL_GROUPS[client]
    )
    if client.startswith("python"):
        for props in [*users.values(), *groups.values()]:
            assert props[LAST_SEEN] == PY_SEEN
