"""The official `mixpanel` npm package (mixpanel-node 0.24.0), unmodified, run under node
against a real trackhouse server over HTTPS.

The library refuses to send an API secret or service-account credentials over plain
HTTP, so the server here serves TLS with a throwaway CA that node trusts only through
``NODE_EXTRA_CA_CERTS``; the library is pointed at it with its own options
(``host: "127.0.0.1:PORT"``, ``protocol: "https"``), as a user would. Each test drives
tests/sdk/node_driver.js with a plan of library calls and gets every callback's outcome
back, so a call the library reports as failed fails the test.

What is proven, per scenario, against one project per test:

* every event sent through ``track``, ``track_batch`` (chunks of 50 sent concurrently,
  raw base64 bodies with ``+`` and ``/``), ``import`` and ``import_batch`` (API secret or
  service account) and ``alias`` is in the export exactly once, with exactly the
  properties sent (a Date property as its ISO string, a Date time as milliseconds, a
  given ``$insert_id`` kept, strings cut at 255 characters), the library's own
  ``mp_lib``/``$lib_version``, the time it gave (to the millisecond) or its arrival
  time, and a unique server-made ``$insert_id`` where the library sent none (it never
  sends one); nothing else is in the project;
* resending the same batches stores nothing twice;
* an import with a wrong secret or only a legacy ``api_key`` is reported to the callback
  as failed and stores nothing;
* every ``people.*`` and ``groups.*`` call leaves the profile in exactly the state
  Mixpanel's semantics give, including ``$last_seen`` from a ``$time`` modifier and
  kept by ``$ignore_time``;
* the library verifies the server's certificate: without the CA it sends nothing.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sdk_checks import (
    Expected,
    Project,
    Props,
    Window,
    arrival_window,
    assert_events,
    assert_profile,
    create_project,
    export_ms,
    now_ms,
    seen_text,
)
from tests.serverproc import Server, TLSFiles, make_tls, start_with_project

pytestmark = pytest.mark.e2e

SDK = "mixpanel (Node)"
SDK_DIR = Path(__file__).resolve().parents[1] / "sdk"
DRIVER = SDK_DIR / "node_driver.js"
NODE_TIMEOUT = 60.0
LIB = {"mp_lib": "node", "$lib_version": "0.24.0"}  # what track/import/alias add
DAY_MS = 86_400_000


# ---- harness ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("node-tls"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: TLSFiles) -> Iterator[Server]:
    # One server for the module (a start costs seconds); each test gets its own project,
    # so that its export holds only what it sent.
    if shutil.which("node") is None or not (SDK_DIR / "node_modules" / "mixpanel").is_dir():
        pytest.fail("node or tests/sdk/node_modules/mixpanel is missing: run scripts/install")
    data = tmp_path_factory.mktemp("node-server") / "data"
    started = start_with_project(data, token="node-bootstrap", secret="node-bootstrap-s", tls=tls)
    yield started
    started.kill()


@pytest.fixture
def new_project(server: Server) -> Callable[..., Project]:
    return functools.partial(create_project, server, "node")


def client(server: Server, project: Project, **config: Any) -> dict[str, Any]:
    """A Mixpanel.init(token, config) pointed at the server the way the docs say."""
    return {
        "token": project.token,
        "config": {"host": f"127.0.0.1:{server.port}", "protocol": "https", **config},
    }


def run_node(
    tls: TLSFiles | None, clients: dict[str, Any], steps: list[dict[str, Any]]
) -> list[str | None]:
    """Run the plan under node (on stdin); one outcome per step (None: the callback got
    no error)."""
    # The library would send through a proxy named by these.
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("https_proxy", "http_proxy")}
    # The test CA is the only one added to node's own store (None: not even that).
    env.pop("NODE_EXTRA_CA_CERTS", None)
    if tls is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(tls.ca)
    done = subprocess.run(
        ["node", str(DRIVER)],
        input=json.dumps({"clients": clients, "steps": steps}),
        cwd=SDK_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["call"] for r in results] == [s["call"] for s in steps], done.stdout
    return [r["error"] for r in results]


def run_ok(tls: TLSFiles, clients: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    errors = run_node(tls, clients, steps)
    failed = [(s["call"], s["args"][:2], e) for s, e in zip(steps, errors, strict=True) if e]
    assert not failed, f"the library reported failures: {failed}"


def step(call: str, *args: Any, client: str = "mp") -> dict[str, Any]:
    return {"client": client, "call": call, "args": list(args)}


def date(ms: int) -> dict[str, int]:
    """A JS Date for the driver (JSON has none)."""
    return {"$date": ms}


# ---- events -------------------------------------------------------------------------


@pytest.mark.conformance(SDK, "track")
def test_track(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    start = now_ms()
    minute_ago_ms = start - 60_000 + 123
    two_minutes_ago_s = start // 1000 - 120
    when = "2026-01-02T03:04:05.678Z"
    rich: Props = {
        "distinct_id": "user-1",
        "seq": 1,
        "plan": "pro",
        "seats": 3,
        "price": 9.99,
        "paid": True,
        "none": None,
        "tags": ["a", "b"],
        "nested": {"x": {"y": 1}},
        "unicode": "héllo ✓",
    }
    long_text = "x" * 20_000  # the whole event rides in the GET query string (~27 KB)
    clients = {
        "mp": client(server, project),
        "verbose": client(server, project, verbose=True, secret=project.secret),
        "flags": client(server, project, test=True, geolocate=True),
    }
    steps = [
        step("track", "Signed up", {**rich, "when": date(1767323045678)}),
        step("track", "Page", {"distinct_id": "user-1", "seq": 2, "time": date(minute_ago_ms)}),
        step("track", "Page", {"distinct_id": "user-2", "seq": 3, "time": two_minutes_ago_s}),
        step(
            "track",
            "Page",
            {"distinct_id": "user-2", "seq": 4, "time": two_minutes_ago_s, "$insert_id": "n-4"},
            client="verbose",
        ),
        step("track", "Flagged", {"distinct_id": "user-3", "seq": 5}, client="flags"),
        step("track", "Long", {"distinct_id": "user-3", "seq": 6, "text": long_text}),
    ]
    with arrival_window() as window:
        run_ok(tls, clients, steps)

    assert_events(
        server,
        project.secret,
        [
            Expected("Signed up", {**rich, "when": when, **LIB}, window),
            Expected("Page", {"distinct_id": "user-1", "seq": 2, **LIB}, minute_ago_ms),
            Expected("Page", {"distinct_id": "user-2", "seq": 3, **LIB}, two_minutes_ago_s * 1000),
            Expected(
                "Page", {"distinct_id": "user-2", "seq": 4, **LIB}, two_minutes_ago_s * 1000, "n-4"
            ),
            Expected("Flagged", {"distinct_id": "user-3", "seq": 5, **LIB}, window),
            Expected("Long", {"distinct_id": "user-3", "seq": 6, "text": "x" * 255, **LIB}, window),
        ],
        window,
    )


def _batch(
    name: str, count: int, start_ms: int, *, first_seq: int = 0, untimed: bool = True
) -> list[Props]:
    """Events as track_batch/import_batch take them: every third has a Date time, every
    third a time in seconds, the rest none (untimed; import_batch requires a time, so
    they get seconds too); every fifth has an $insert_id; some strings encode to base64
    with '+' and '/'."""
    events = []
    for i in range(first_seq, first_seq + count):
        props: Props = {"distinct_id": f"user-{i % 7}", "seq": i, "s": "~~~>>>???" * (i % 3)}
        if i % 3 == 0:
            props["time"] = date(start_ms - i * 1000 - 7)
        elif i % 3 == 1 or not untimed:
            props["time"] = start_ms // 1000 - i
        if i % 5 == 0:
            props["$insert_id"] = f"{name}-{i}"
        events.append({"event": name, "properties": props})
    return events


def _expected(events: list[Props], window: Window, *, imported: bool) -> list[Expected]:
    out = []
    for event in events:
        props = dict(event["properties"])
        raw_time = props.pop("time", None)
        if isinstance(raw_time, dict):
            time_ms: int | Window = raw_time["$date"]
        elif raw_time is not None:
            time_ms = raw_time * 1000
        else:
            time_ms = window
        insert_id = props.pop("$insert_id", None)
        out.append(Expected(event["event"], props, time_ms, insert_id, imported))
    return out


@pytest.mark.conformance(SDK, "track batch")
def test_track_batch(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    start = now_ms()
    default = _batch("Batched", 120, start)  # 50 + 50 + 20, all three sent at once
    limited = _batch("Limited", 45, start, first_seq=200)  # 20 + 20 + 5, two at a time
    clients = {"mp": client(server, project, secret=project.secret)}
    steps = [
        step("track_batch", default),
        step("track_batch", limited, {"max_batch_size": 20, "max_concurrent_requests": 2}),
    ]
    with arrival_window() as window:
        run_ok(tls, clients, steps)
    # track_batch adds only the token: no mp_lib, no $lib_version.
    assert_events(
        server,
        project.secret,
        _expected(default, window, imported=False) + _expected(limited, window, imported=False),
        window,
    )


@pytest.mark.conformance(SDK, "import (secret)")
def test_import_with_secret(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    project = new_project()
    start = now_ms()
    forty_days_ago_ms = start - 40 * DAY_MS + 5
    three_days_ago_s = start // 1000 - 3 * 86_400
    clients = {
        "mp": client(server, project, secret=project.secret),
        "verbose": client(server, project, secret=project.secret, verbose=True),
    }
    steps = [
        # A Date is sent as milliseconds, a number as is (seconds here).
        step("import", "Old", date(forty_days_ago_ms), {"distinct_id": "user-1", "seq": 1}),
        step("import", "Old", three_days_ago_s, {"distinct_id": "user-2", "seq": 2}),
        step(
            "import",
            "Old",
            three_days_ago_s,
            {"distinct_id": "user-2", "seq": 3, "$insert_id": "imp-3", "k": ["v"]},
            client="verbose",
        ),
    ]
    with arrival_window() as window:
        run_ok(tls, clients, steps)
    assert_events(
        server,
        project.secret,
        [
            Expected(
                "Old", {"distinct_id": "user-1", "seq": 1, **LIB}, forty_days_ago_ms, imported=True
            ),
            Expected(
                "Old",
                {"distinct_id": "user-2", "seq": 2, **LIB},
                three_days_ago_s * 1000,
                imported=True,
            ),
            Expected(
                "Old",
                {"distinct_id": "user-2", "seq": 3, "k": ["v"], **LIB},
                three_days_ago_s * 1000,
                "imp-3",
                imported=True,
            ),
        ],
        window,
    )


@pytest.mark.conformance(SDK, "import (service account)")
def test_import_with_service_account(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    project = new_project(service_account=True)
    assert project.service_account is not None
    start = now_ms()
    events = _batch("Imported", 60, start - 10 * DAY_MS, untimed=False)
    clients = {
        "mp": {
            **client(server, project),
            "service_account": [*project.service_account, str(project.id)],
        }
    }
    steps = [
        step("import", "Single", date(start - 20 * DAY_MS), {"distinct_id": "user-9", "seq": 1}),
        step("import_batch", events),
    ]
    with arrival_window() as window:
        run_ok(tls, clients, steps)
    assert_events(
        server,
        project.secret,
        [
            Expected(
                "Single",
                {"distinct_id": "user-9", "seq": 1, **LIB},
                start - 20 * DAY_MS,
                imported=True,
            ),
            *_expected(events, window, imported=True),
        ],
        window,
    )


@pytest.mark.conformance(SDK, "import batch")
def test_import_batch(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    start = now_ms()
    events = _batch(
        "Backfill", 130, start - 30 * DAY_MS, untimed=False
    )  # 50 + 50 + 30, concurrently
    clients = {"mp": client(server, project, secret=project.secret)}
    with arrival_window() as window:
        run_ok(tls, clients, [step("import_batch", events)])
    assert_events(server, project.secret, _expected(events, window, imported=True), window)


@pytest.mark.conformance(SDK, "dedup")
def test_resent_batches_are_stored_once(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    """The library never retries, but an application resending a batch after an error
    must not double it: events with a time are recognised (by $insert_id, or by content
    where the library sent none); events without a time are new occurrences (spec §7)."""
    project = new_project()
    start = now_ms()
    imports = _batch("Imported", 60, start - 9 * DAY_MS, untimed=False)
    tracked = [e for e in _batch("Tracked", 60, start) if "time" in e["properties"]]
    clients = {"mp": client(server, project, secret=project.secret)}
    steps = [
        step("import_batch", imports),
        step("track_batch", tracked),
        step("import_batch", imports),
        step("track_batch", tracked),
        step("import_batch", imports[:13]),
    ]
    with arrival_window() as window:
        run_ok(tls, clients, steps)
    assert_events(
        server,
        project.secret,
        _expected(imports, window, imported=True) + _expected(tracked, window, imported=False),
        window,
    )


@pytest.mark.conformance(SDK, "import (bad credentials)")
def test_import_with_bad_credentials_is_refused(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    project = new_project()
    start = now_ms()
    clients = {
        "wrong": client(server, project, secret="not-the-secret"),
        # The legacy api_key is sent as ?api_key= and is no credential (spec §4).
        "key": client(server, project, key=project.secret),
    }
    props = {"distinct_id": "user-1", "seq": 1, "time": date(start - DAY_MS)}
    steps = [
        step("import", "Refused", date(start - DAY_MS), props, client="wrong"),
        step("import_batch", [{"event": "Refused", "properties": props}], client="wrong"),
        step("import", "Refused", date(start - DAY_MS), props, client="key"),
    ]
    errors = run_node(tls, clients, steps)
    for error in errors:
        assert error is not None
        assert "Invalid credentials" in error, errors
    assert export_ms(server, project.secret) == []


@pytest.mark.conformance(SDK, "alias")
def test_alias(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    clients = {"mp": client(server, project)}
    with arrival_window() as window:
        run_ok(tls, clients, [step("alias", "user-1", "alias-of-user-1")])
    # alias() is track("$create_alias", {distinct_id, alias}) on the configured host.
    assert_events(
        server,
        project.secret,
        [
            Expected(
                "$create_alias",
                {"distinct_id": "user-1", "alias": "alias-of-user-1", **LIB},
                window,
            )
        ],
        window,
    )


# ---- profiles -----------------------------------------------------------------------


@pytest.mark.conformance(SDK, "people")
def test_people(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    start = now_ms()
    earlier_ms = start - 3_600_000 + 250  # a $time modifier (Date → ms) an hour ago
    clients = {"mp": client(server, project, secret=project.secret)}
    p = "people."
    steps = [
        step(p + "set", "user-1", {"$name": "Ann", "plan": "free", "ip": "10.1.2.3"}),
        step(p + "set", "user-1", "plan", "pro"),  # the (prop, value) form
        step(p + "set_once", "user-1", {"plan": "ignored", "first": "2026-01-02"}),
        step(p + "set_once", "user-1", "source", "ads"),
        step(p + "increment", "user-1", {"logins": 5, "credits": 10, "bad": "x"}),
        step(p + "increment", "user-1", "logins"),  # by 1
        step(p + "increment", "user-1", "credits", -2.5),
        step(p + "append", "user-1", "items", "sword"),
        step(p + "append", "user-1", {"items": "shield", "log": {"k": 1}}),
        step(p + "append", "user-1", "items", "sword"),
        step(p + "union", "user-1", {"tags": ["a", "b"], "roles": "admin"}),
        step(p + "union", "user-1", {"tags": ["b", "c", {"not": "scalar"}]}),
        step(p + "remove", "user-1", {"items": "sword"}),
        step(p + "unset", "user-1", "first"),
        step(p + "unset", "user-1", ["source", "no-such-property"]),
        step(p + "track_charge", "user-1", 9.99, {"sku": "A1"}),
        step(p + "track_charge", "user-1", 20),
        # Kept: the transactions; then user-2's charges cleared ($set [] in this library).
        step(p + "set", "user-2", {"n": 1}),
        step(p + "track_charge", "user-2", 5),
        step(p + "clear_charges", "user-2"),
        # $last_seen from the $time modifier, then kept by $ignore_time.
        step(p + "set", "user-3", {"n": 1}, {"$time": date(earlier_ms)}),
        step(p + "set", "user-3", {"n": 2}, {"$ignore_time": True}),
        step(p + "set", "user-4", {"gone": True}),
        step(p + "delete_user", "user-4"),
        step(p + "delete_user", "user-never-seen"),
        step(p + "set", "user-5", {"gone": True}),
        step(p + "delete_user", "user-5"),
        step(p + "increment", "user-5", "logins"),  # a new profile from nothing
    ]
    with arrival_window() as window:
        run_ok(tls, clients, steps)

    assert_profile(
        server,
        project.secret,
        "user-1",
        {
            "$name": "Ann",
            "plan": "pro",
            "logins": 6,
            "credits": 7.5,
            "items": ["shield"],
            "log": [{"k": 1}],
            "tags": ["a", "b", "c"],
            "roles": ["admin"],
            "$transactions": [{"sku": "A1", "$amount": 9.99}, {"$amount": 20}],
        },
        window,
    )
    assert_profile(server, project.secret, "user-2", {"n": 1, "$transactions": []}, window)
    assert_profile(server, project.secret, "user-3", {"n": 2}, seen_text(earlier_ms))
    assert_profile(server, project.secret, "user-4", None, None)
    assert_profile(server, project.secret, "user-never-seen", None, None)
    assert_profile(server, project.secret, "user-5", {"logins": 1}, window)
    assert export_ms(server, project.secret) == []  # profile updates are not events


@pytest.mark.conformance(SDK, "groups")
def test_groups(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    initech_ms = now_ms() - 7_200_000
    clients = {"mp": client(server, project, secret=project.secret)}
    g = "groups."
    steps = [
        step(g + "set", "company", "Acme", {"$name": "Acme Inc.", "tier": "silver", "size": 10}),
        step(g + "set", "company", "Acme", "tier", "gold"),
        step(g + "set_once", "company", "Acme", {"tier": "ignored", "founded": 1999}),
        step(g + "set_once", "company", "Acme", "region", "eu"),
        step(g + "union", "company", "Acme", {"products": ["anvil", "rocket"], "hq": "Paris"}),
        step(g + "union", "company", "Acme", {"products": ["rocket", "magnet"]}),
        step(g + "remove", "company", "Acme", {"products": "anvil"}),
        step(g + "unset", "company", "Acme", "region"),
        step(g + "unset", "company", "Acme", ["size", "no-such-property"]),
        # The same id under another key is another group.
        step(g + "set", "team", "Acme", {"members": 4}),
        step(g + "set", "company", "Globex", {"tier": "bronze"}),
        step(g + "delete_group", "company", "Globex"),
        step(g + "set", "company", "Initech", {"n": 1}, {"$time": date(initech_ms)}),
        step(g + "set", "company", "Initech", {"n": 2}, {"$ignore_time": True}),
    ]
    with arrival_window() as window:
        run_ok(tls, clients, steps)

    def group(group_id: str, props: Props | None, seen: str | Window | None, key: str) -> None:
        assert_profile(server, project.secret, group_id, props, seen, group_key=key)

    group(
        "Acme",
        {
            "$name": "Acme Inc.",
            "tier": "gold",
            "founded": 1999,
            "products": ["rocket", "magnet"],
            "hq": ["Paris"],
        },
        window,
        "company",
    )
    group("Acme", {"members": 4}, window, "team")
    group("Globex", None, None, "company")
    group("Initech", {"n": 2}, seen_text(initech_ms), "company")
    assert_profile(server, project.secret, "Acme", None, None)  # no such user


# ---- transport ----------------------------------------------------------------------


@pytest.mark.conformance(SDK, "HTTPS")
def test_certificate_is_verified(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    """Without the test CA, node refuses the server's certificate: the callback gets the
    TLS error and nothing is sent. (Every other test proves the trusted path.)"""
    project = new_project()
    clients = {"mp": client(server, project, secret=project.secret)}
    steps = [
        step("track", "Unsent", {"distinct_id": "user-1", "seq": 1}),
        step("import", "Unsent", date(now_ms() - DAY_MS), {"distinct_id": "user-1", "seq": 2}),
        step("people.set", "user-1", {"n": 1}),
    ]
    errors = run_node(None, clients, steps)
    for error in errors:
        assert error is not None
        assert "certificate" in error, errors
    assert export_ms(server, project.secret) == []
    assert_profile(server, project.secret, "user-1", None, None)
