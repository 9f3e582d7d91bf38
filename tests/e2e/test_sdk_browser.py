"""The official mixpanel-browser 2.83.0, unmodified, in headless Debian chromium, against a
real trackhouse server: every event the page tracked is stored exactly once, and every
profile update it made landed.

The page is served from its own origin (another port), so CORS is real. It loads the
library the way most sites do: Mixpanel's own snippet (dist/mixpanel-jslib-snippet.min.js)
pulling the minified build it is made for (dist/mixpanel.min.js) from
``MIXPANEL_CUSTOM_LIB_URL``. After ``loaded`` fires the test runs one scenario script
(SCENARIO_JS) in the page: register, people.set before identify (held by the SDK and
released by identify), identify, people.set / set_once / increment / append / union /
unset, set_group, get_group(...).set / set_once / union / unset, a run of tracked events,
and alias (which tracks $create_alias and then identifies as the alias).

What each test proves, whatever the transport or the failure the server answers with:

* events: the export holds exactly the tracked events (the page knows each one's
  $insert_id, distinct_id and time from track()'s return value), plus exactly the
  $identify events identify and alias send, each once: no duplicate, nothing missing,
  nothing else, the time to the millisecond;
* profiles: the user's profile (keyed by the identified id, including the update made
  before identify) and the group's profile are exactly what the updates make of profiles
  seeded beforehand through /engage and /groups; the seeds make set_once and unset
  checkable whatever order concurrent requests arrive in.

The test waits until the SDK is done (its localStorage queues ``__mpq_<token>_ev/_pp/_gr``
are empty and no request to the API is in flight), waits for the server's loader, and
only then compares. Chromium's own view of the traffic (Playwright's network events, not
a hook in the page) shows which transport was used and which statuses the SDK saw; it
proves the scenario happened (a 413, a 429, a 503, a beacon, a re-send), never what was
stored: that is read from the server only.

What mixpanel-browser 2.83.0 does with each configuration (read from src/mixpanel-core.js
and src/request-batcher.js, and seen here):

* batch mode (default): one POST per endpoint per flush, ``verbose=1``; retries 429, 5xx
  and timeouts after twice the flush interval, doubling, ignoring Retry-After (it reads
  ``req.responseHeaders``, which XHR does not have); halves the batch on 413; drops the
  batch on any other status;
* ``api_method: 'GET'`` only changes single requests: batches are always POSTed, so the
  GET scenario turns batching off. In a browser with CORS XHR (chromium), GET is an XHR
  with ``data`` in the query; only without it does the SDK fall back to <script> tags
  (JSONP, ``callback=mixpanel._jsc[N]``): the JSONP scenario hides XMLHttpRequest before
  the SDK loads, as an old browser would;
* ``img: true`` puts ``data`` in an <img> URL only with ``api_method: 'GET'`` (with POST
  the data goes into a body the <img> never sends) and never calls back, so it only works
  unbatched and alias never gets to its $identify;
* ``api_transport: 'sendBeacon'`` sends the batches themselves with sendBeacon;
* on page hide the events queue is sent with sendBeacon and kept, to be re-sent by the
  next page load once orphaned: the server's deduplication (spec §7) makes it harmless.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import math
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Response

from tests.browser import REPO, launch_chromium, new_page, serve_pages
from tests.serverproc import Server, cli, export, profile, send_updates
from tests.tmpfs import Disk
from trackhouse.projects import Project

pytestmark = pytest.mark.e2e

SDK = "mixpanel-browser"
DIST = REPO / "tests" / "sdk" / "node_modules" / "mixpanel-browser" / "dist"
SNIPPET = DIST / "mixpanel-jslib-snippet.min.js"
LIBRARY = DIST / "mixpanel.min.js"

# Small enough that batches, retries and 413 halving go by quickly; the SDK retries
# after twice this, doubling on each failure.
FLUSH_MS = 100
SETTLE_TIMEOUT = 45.0
POLL_S = 0.05
EVENTS = 30  # tracked "page event"s per scenario, besides the identity events

PAGE_HTML = b"""<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>trackhouse x mixpanel-browser</title>
<script>
  // An old browser without CORS XHR: the SDK falls back to <script> tags (JSONP).
  if (window.TH.noXHR) { window.XMLHttpRequest = undefined; }
  var MIXPANEL_CUSTOM_LIB_URL = "/mixpanel.min.js";
</script>
<script src="/snippet.js"></script>
<script>
  mixpanel.init(TH.token, Object.assign({}, TH.config, {
    loaded: function () { window.mpLoaded = true; }
  }));
</script>
<script src="/scenario.js"></script>
</head>
<body><h1>trackhouse x mixpanel-browser</h1></body>
</html>
"""

AWAY_HTML = b"""<!doctype html><html><head><meta charset="utf-8"><title>away</title></head>
<body>another page</body></html>
"""

SCENARIO_JS = b"""
window.runScenario = async function (s) {
  var mp = window.mixpanel;
  var replies = [];
  // Wait for each call's callback where the transport has one, so that calls go out in
  // order; <img> tracking never calls back.
  function call(label, fn) {
    if (!s.callbacks) { fn(undefined); return Promise.resolve(); }
    return new Promise(function (resolve) {
      fn(function (reply) { replies.push([label, reply]); resolve(); });
    });
  }
  var tracked = [];
  function remember(payload) {
    var p = payload.properties;
    tracked.push({event: payload.event, insert_id: p.$insert_id, distinct_id: p.distinct_id,
                  time: p.time, alias: p.alias === undefined ? null : p.alias});
  }
  async function track(name, props) {
    var payload;
    await call(name, function (cb) { payload = mp.track(name, props, cb); });
    remember(payload);
  }
  var anon = mp.get_distinct_id();
  mp.register({scenario: s.name, plan: "pro"});
  await call("set before identify", function (cb) { mp.people.set({pre_identify: "yes"}, cb); });
  await track("before identify", {n: -1});
  mp.identify(s.user);
  await call("set", function (cb) { mp.people.set({name: "Ann", plan: "pro"}, cb); });
  await call("set_once", function (cb) {
    mp.people.set_once({first_seen: "page", once_new: "page"}, cb);
  });
  await call("increment", function (cb) { mp.people.increment("logins", 1, cb); });
  await call("increment many", function (cb) { mp.people.increment({logins: 2, credits: 5}, cb); });
  await call("append", function (cb) { mp.people.append("visits", "home", cb); });
  await call("union", function (cb) { mp.people.union("tags", ["a", "b"], cb); });
  await call("union again", function (cb) { mp.people.union("tags", ["b", "c"], cb); });
  await call("unset", function (cb) { mp.people.unset("temp", cb); });
  await call("set_group", function (cb) { mp.set_group("company", "Acme", cb); });
  var group = mp.get_group("company", "Acme");
  await call("group set", function (cb) { group.set({industry: "tools"}, cb); });
  await call("group set_once", function (cb) { group.set_once({founded: 2001, hq: "Berlin"}, cb); });
  await call("group union", function (cb) { group.union("regions", ["eu", "us"], cb); });
  await call("group unset", function (cb) { group.unset("obsolete", cb); });
  for (var i = 0; i < s.events; i++) {
    await track("page event", {n: i});
  }
  // alias tracks $create_alias and, in its callback, identifies as the alias.
  remember(mp.alias(s.alias));
  return {anon: anon, tracked: tracked, replies: replies};
};

window.queuedItems = function (token, queues) {
  var total = 0;
  queues.forEach(function (suffix) {
    var stored = window.localStorage.getItem("__mpq_" + token + suffix);
    if (stored) { total += JSON.parse(stored).length; }
  });
  return total;
};
"""


# -- the page's origin ------------------------------------------------------------------
class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        files: dict[str, tuple[Callable[[], bytes], str]] = {
            "/page.html": (lambda: PAGE_HTML, "text/html; charset=utf-8"),
            "/away.html": (lambda: AWAY_HTML, "text/html; charset=utf-8"),
            "/snippet.js": (SNIPPET.read_bytes, "application/javascript"),
            "/mixpanel.min.js": (LIBRARY.read_bytes, "application/javascript"),
            "/scenario.js": (lambda: SCENARIO_JS, "application/javascript"),
        }
        if route not in files:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        read, content_type = files[route]
        body = read()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    for path in (SNIPPET, LIBRARY):
        assert path.is_file(), f"{path} is missing: run scripts/install (npm ci in tests/sdk)"
    with serve_pages(_PageHandler) as origin:
        yield origin


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as launched:
        yield launched


# -- what chromium sent to the API, and what it got back ------------------------------------
@dataclass
class Exchange:
    method: str
    path: str  # "/track/", "/engage/", "/groups/"
    resource_type: str  # "xhr", "ping" (sendBeacon), "image", "script"
    content_type: str
    payload: list[dict[str, Any]]  # the decoded ``data``
    encoding: str  # of ``data``: "json" or "base64"
    status: int | None = None
    retry_after: str | None = None
    failure: str | None = None
    done: bool = False


def _is_json(data: str) -> bool:
    return data.lstrip()[:1] in ("[", "{")


def _decode(data: str) -> list[dict[str, Any]]:
    decoded = json.loads(data if _is_json(data) else base64.b64decode(data).decode())
    return decoded if isinstance(decoded, list) else [decoded]


@dataclass
class Wire:
    """Requests from the browser to the API server, as chromium saw them."""

    api: str
    exchanges: list[Exchange] = field(default_factory=list)
    _by_request: dict[Request, Exchange] = field(default_factory=dict)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._request)
        context.on("response", self._response)
        context.on("requestfinished", self._finished)
        context.on("requestfailed", self._failed)

    def _request(self, request: Request) -> None:
        if not request.url.startswith(self.api + "/"):
            return
        url = urllib.parse.urlsplit(request.url)
        params = dict(urllib.parse.parse_qsl(url.query))
        body = request.post_data
        if body:
            params.update(urllib.parse.parse_qsl(body))
        data = params.get("data", "")
        exchange = Exchange(
            request.method,
            url.path,
            request.resource_type,
            request.headers.get("content-type", ""),
            _decode(data) if data else [],
            "json" if _is_json(data) else "base64",
        )
        self.exchanges.append(exchange)
        self._by_request[request] = exchange

    def _response(self, response: Response) -> None:
        exchange = self._by_request.get(response.request)
        if exchange is not None:
            exchange.status = response.status
            exchange.retry_after = response.headers.get("retry-after")

    def _finished(self, request: Request) -> None:
        exchange = self._by_request.get(request)
        if exchange is not None:
            exchange.done = True

    def _failed(self, request: Request) -> None:
        exchange = self._by_request.get(request)
        if exchange is not None:
            exchange.failure = request.failure or "failed"
            exchange.done = True

    def in_flight(self) -> int:
        return sum(not e.done for e in self.exchanges)

    def to(self, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.path == path]

    def statuses(self, path: str) -> Counter[int | None]:
        return Counter(e.status for e in self.to(path))

    def summary(self) -> str:
        counts = Counter(
            (e.path, e.method, e.resource_type, e.status, e.failure) for e in self.exchanges
        )
        return ", ".join(
            f"{n}x {m} {p} {t} -> {s if f is None else f}"
            for (p, m, t, s, f), n in sorted(counts.items(), key=str)
        )


def expect_transport(wire: Wire, exchanges: list[Exchange], **fields: object) -> None:
    """Every request shows these Exchange fields and carries data."""
    assert exchanges, f"no such request: {wire.summary()}"
    wrong = [
        e
        for e in exchanges
        if not e.payload or any(getattr(e, name) != value for name, value in fields.items())
    ]
    assert not wrong, f"{len(wrong)} requests are not {fields}: {wire.summary()}"


# -- one page running the SDK against one server ----------------------------------------
@dataclass(frozen=True)
class Tracked:
    event: str
    insert_id: str
    distinct_id: str
    time_ms: int
    alias: str | None


@dataclass
class Result:
    anon: str  # the distinct_id before identify: "$device:<uuid>"
    tracked: list[Tracked]
    replies: list[tuple[str, Any]]  # (call, what its callback got)


@dataclass
class Run:
    name: str
    server: Server
    token: str
    secret: str
    first_day: str
    page: Page
    wire: Wire
    console: list[str]
    user: str
    alias: str
    callbacks: bool = True

    def scenario(self, events: int = EVENTS) -> Result:
        raw = self.page.evaluate(
            "s => window.runScenario(s)",
            {
                "name": self.name,
                "user": self.user,
                "alias": self.alias,
                "events": events,
                "callbacks": self.callbacks,
            },
        )
        tracked = [
            Tracked(
                t["event"],
                t["insert_id"],
                t["distinct_id"],
                round(t["time"] * 1000),
                t["alias"],
            )
            for t in raw["tracked"]
        ]
        return Result(raw["anon"], tracked, [(label, reply) for label, reply in raw["replies"]])

    def queued(self, queues: tuple[str, ...] = ("_ev", "_pp", "_gr")) -> int:
        """Items in the SDK's persisted queues: events, people, groups."""
        queued: int = self.page.evaluate(
            "([t, q]) => window.queuedItems(t, q)", [self.token, list(queues)]
        )
        return queued

    def export(self) -> list[dict[str, Any]]:
        return export(self.server, self.secret, self.first_day, _utc_day(), time_in_ms="true")

    def pump(self) -> None:
        """Let Playwright deliver chromium's network events, for POLL_S."""
        self.page.wait_for_timeout(POLL_S * 1000)

    def wait(self, what: str, check: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s; {self.diagnostics()}")
            self.pump()

    def settle(self, expected_events: int) -> list[dict[str, Any]]:
        """Wait until the SDK has nothing left to send and the server has loaded it all;
        return the export."""
        self.wait(
            f"the SDK's queues empty, no request in flight, {expected_events} events exported",
            lambda: (
                self.queued() == 0
                and self.wire.in_flight() == 0
                and len(self.export()) >= expected_events
            ),
        )
        self.server.wait_loaded()
        return self.export()

    def diagnostics(self) -> str:
        return (
            f"wire: {self.wire.summary()}; queued in the SDK: {_or_error(self.queued)}; "
            f"exported: {_or_error(lambda: len(self.export()))}; "
            f"console: {self.console[-15:]}"
        )


def _or_error(read: Callable[[], object]) -> str:
    try:
        return str(read())
    except Exception as exc:  # a diagnostic must not hide the failure it describes
        return repr(exc)


def _utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


OpenRun = Callable[..., Run]


@pytest.fixture
def open_run(browser: Browser, page_origin: str, today: str) -> Iterator[OpenRun]:
    """Open the test page on a fresh browser context, with the SDK pointed at a server."""
    contexts: list[BrowserContext] = []

    def open_(
        name: str,
        server: Server,
        token: str,
        secret: str,
        config: dict[str, Any],
        *,
        no_xhr: bool = False,
        callbacks: bool = True,
    ) -> Run:
        page = new_page(browser)
        contexts.append(page.context)
        settings = {"token": token, "noXHR": no_xhr, "config": {"api_host": server.url, **config}}
        page.context.add_init_script(script=f"window.TH = {json.dumps(settings)};")
        wire = Wire(server.url)
        wire.attach(page.context)
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.goto(f"{page_origin}/page.html")
        page.wait_for_function("window.mpLoaded === true")
        slug = _slug(name)
        return Run(
            name,
            server,
            token,
            secret,
            today,
            page,
            wire,
            console,
            user=f"user-{slug}",
            alias=f"alias-{slug}",
            callbacks=callbacks,
        )

    yield open_
    for context in contexts:
        context.close()


# -- servers, projects and seeded profiles ------------------------------------------------
def create_project(data_dir: Path, name: str) -> Project:
    slug = _slug(name)
    token, secret = f"sdkb-{slug}-token", f"sdkb-{slug}-secret"
    created = cli(data_dir, "projects", "create", slug, "--token", token, "--secret", secret)
    return Project(**created)


def seed_profiles(server: Server, token: str, user: str) -> None:
    """What set_once must keep and unset must remove, there before the page starts."""
    send_updates(
        server,
        [
            {
                "$token": token,
                "$distinct_id": user,
                "$set": {"first_seen": "seeded", "temp": "remove me", "kept": "seeded"},
            }
        ],
    )
    send_updates(
        server,
        [
            {
                "$token": token,
                "$group_key": "company",
                "$group_id": "Acme",
                "$set": {"founded": 1999, "obsolete": "remove me", "kept": "seeded"},
            }
        ],
        group=True,
    )


# -- the checks ---------------------------------------------------------------------------
def expected_event_count(result: Result, *, alias_identifies: bool = True) -> int:
    # identify sends one $identify; alias's callback another.
    return len(result.tracked) + 1 + int(alias_identifies)


def check_events(
    run: Run, result: Result, exported: list[dict[str, Any]], *, alias_identifies: bool = True
) -> None:
    """The export is exactly the tracked events plus the $identify events, each once."""
    counts = Counter(str(e["properties"]["$insert_id"]) for e in exported)
    doubled = sorted(i for i, n in counts.items() if n > 1)
    assert not doubled, f"{len(doubled)} events stored more than once: {doubled[:10]}"

    by_id = {str(e["properties"]["$insert_id"]): e for e in exported}
    missing = [t for t in result.tracked if t.insert_id not in by_id]
    assert not missing, f"{len(missing)} tracked events are not stored: {missing[:5]}"
    for sent in result.tracked:
        row = by_id[sent.insert_id]
        props = row["properties"]
        stored = Tracked(
            row["event"],
            str(props["$insert_id"]),
            str(props["distinct_id"]),
            int(props["time"]),
            props.get("alias"),
        )
        assert stored == sent, f"stored {stored} for the tracked {sent}"
        assert (props.get("scenario"), props.get("plan")) == (run.name, "pro"), row

    tracked_ids = {t.insert_id for t in result.tracked}
    identities = Counter(
        (
            str(e["event"]),
            str(e["properties"]["distinct_id"]),
            e["properties"].get("$anon_distinct_id"),
        )
        for e in exported
        if str(e["properties"]["$insert_id"]) not in tracked_ids
    )
    wanted = Counter({("$identify", run.user, result.anon): 1})
    if alias_identifies:
        wanted[("$identify", run.alias, run.user)] = 1
    assert identities == wanted, f"besides the tracked events the export has {identities}"
    assert len(exported) == expected_event_count(result, alias_identifies=alias_identifies)

    page_events = [t for t in result.tracked if t.event == "page event"]
    assert page_events, result.tracked
    for sent in page_events:
        props = by_id[sent.insert_id]["properties"]
        assert props.get("company") == ["Acme"], props  # set_group registers it
    create_alias = [t for t in result.tracked if t.event == "$create_alias"]
    assert [(t.distinct_id, t.alias) for t in create_alias] == [(run.user, run.alias)]


# Properties the SDK adds on its own: people.set adds the browser's, and identify releases
# a set_once of the first referrer. $last_seen is the server's.
SDK_PROFILE_KEYS = {
    "$os",
    "$browser",
    "$browser_version",
    "$initial_referrer",
    "$initial_referring_domain",
    "$last_seen",
}

USER_PROFILE: dict[str, Any] = {
    "pre_identify": "yes",  # set before identify, sent by identify
    "name": "Ann",
    "plan": "pro",
    "first_seen": "seeded",  # set_once keeps the seed
    "once_new": "page",
    "logins": 3,
    "credits": 5,
    "visits": ["home"],
    "tags": ["a", "b", "c"],  # compared sorted: concurrent unions may land in any order
    "company": ["Acme"],  # set_group
    "kept": "seeded",
}
GROUP_PROFILE: dict[str, Any] = {
    "industry": "tools",
    "founded": 1999,  # set_once keeps the seed
    "hq": "Berlin",
    "regions": ["eu", "us"],
    "kept": "seeded",
}


def _comparable(props: dict[str, Any] | None, keys: set[str]) -> dict[str, Any] | None:
    if props is None:
        return None
    out = {k: v for k, v in props.items() if k not in keys}
    for name in ("tags", "regions"):
        if isinstance(out.get(name), list):
            out[name] = sorted(out[name])
    return out


def check_profiles(run: Run, result: Result) -> None:
    """Poll (updates may still be on their way when the events are in), then compare."""
    user: dict[str, Any] | None = None
    group: dict[str, Any] | None = None

    def landed() -> bool:
        nonlocal user, group
        user = profile(run.server, run.secret, run.user)
        group = profile(run.server, run.secret, "Acme", group_key="company")
        return (
            _comparable(user, SDK_PROFILE_KEYS) == USER_PROFILE
            and _comparable(group, {"$last_seen"}) == GROUP_PROFILE
        )

    with contextlib.suppress(AssertionError):  # compared below, with the difference
        run.wait("the profile updates landing", landed, timeout=15.0)
    assert _comparable(user, SDK_PROFILE_KEYS) == USER_PROFILE, user
    assert user is not None
    assert (user["$os"], user["$browser"]) == ("Linux", "Chrome"), user
    assert _comparable(group, {"$last_seen"}) == GROUP_PROFILE, group
    # Nothing went to the anonymous id (updates before identify wait for it) nor to the
    # alias (alias does not change the distinct_id updates use).
    assert profile(run.server, run.secret, result.anon) is None
    assert profile(run.server, run.secret, run.alias) is None


def check_replies(result: Result) -> None:
    """Single requests call back with the server's answer: 1 for every stored update and
    event (-1: held until identify)."""
    bad = [(label, reply) for label, reply in result.replies if reply != 1]
    assert bad == [("set before identify", -1)], bad


def start(
    start_server: Callable[..., Server], tmp_path: Path, name: str, *args: str
) -> tuple[Server, Project]:
    data_dir = tmp_path / "data"
    project = create_project(data_dir, name)
    server = start_server(data_dir, args=list(args))
    return server, project


def full_scenario(
    open_run: OpenRun,
    start_server: Callable[..., Server],
    tmp_path: Path,
    name: str,
    config: dict[str, Any],
    *,
    no_xhr: bool = False,
    callbacks: bool = True,
    alias_identifies: bool = True,
) -> tuple[Run, Result, list[dict[str, Any]]]:
    server, project = start(start_server, tmp_path, name)
    seed_profiles(server, project.token, f"user-{_slug(name)}")
    run = open_run(
        name, server, project.token, project.secret, config, no_xhr=no_xhr, callbacks=callbacks
    )
    result = run.scenario()
    exported = run.settle(expected_event_count(result, alias_identifies=alias_identifies))
    check_events(run, result, exported, alias_identifies=alias_identifies)
    check_profiles(run, result)
    return run, result, exported


# -- the scenarios ------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "batch (default)")
def test_batch_default(
    open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    run, _, _ = full_scenario(
        open_run, start_server, tmp_path, "batch", {"batch_flush_interval_ms": FLUSH_MS}
    )
    expect_transport(run.wire, run.wire.exchanges, method="POST", resource_type="xhr", status=200)
    assert max(len(e.payload) for e in run.wire.to("/track/")) > 1, "no batch of events"
    assert run.wire.to("/engage/"), run.wire.summary()
    assert run.wire.to("/groups/"), run.wire.summary()
    print(f"\nbatch: {run.wire.summary()}")


@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "batch_requests: false")
def test_single_requests(
    open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    run, result, _ = full_scenario(
        open_run, start_server, tmp_path, "no batch", {"batch_requests": False}
    )
    check_replies(result)
    expect_transport(run.wire, run.wire.exchanges, method="POST", resource_type="xhr", status=200)
    track = run.wire.to("/track/")
    assert all(len(e.payload) == 1 for e in track), run.wire.summary()
    assert len(track) == expected_event_count(result), run.wire.summary()


@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "api_payload_format: json")
def test_json_payload(
    open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    run, _, _ = full_scenario(
        open_run,
        start_server,
        tmp_path,
        "json",
        {"batch_flush_interval_ms": FLUSH_MS, "api_payload_format": "json"},
    )
    expect_transport(run.wire, run.wire.exchanges, method="POST", encoding="json", status=200)


@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "api_transport: sendBeacon")
def test_send_beacon(
    open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    # Batches themselves go by sendBeacon: the SDK never learns the answer and drops
    # each batch from its queue as soon as the beacon is queued.
    run, _, _ = full_scenario(
        open_run,
        start_server,
        tmp_path,
        "beacon",
        {"batch_flush_interval_ms": FLUSH_MS, "api_transport": "sendBeacon"},
    )
    expect_transport(
        run.wire,
        run.wire.exchanges,
        method="POST",
        resource_type="ping",
        content_type="text/plain;charset=UTF-8",
    )


@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "api_method: GET (XHR)")
def test_get(open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path) -> None:
    # Batches are always POSTed: api_method only applies to single requests.
    run, result, _ = full_scenario(
        open_run,
        start_server,
        tmp_path,
        "get",
        {"batch_requests": False, "api_method": "GET"},
    )
    check_replies(result)
    expect_transport(run.wire, run.wire.exchanges, method="GET", resource_type="xhr", status=200)


@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "JSONP (no CORS XHR)")
def test_jsonp(open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path) -> None:
    # Without XMLHttpRequest the SDK turns batching off and loads each request as a
    # <script>: GET, data in the query, callback=mixpanel._jsc[N], answered N(1).
    run, result, _ = full_scenario(open_run, start_server, tmp_path, "jsonp", {}, no_xhr=True)
    check_replies(result)  # every callback came through the server's JSONP answer
    expect_transport(run.wire, run.wire.exchanges, method="GET", resource_type="script", status=200)


@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "img")
def test_img(open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path) -> None:
    # img: true needs api_method GET (with POST the data would go into a body an <img>
    # never sends) and single requests (a batch waits for a callback an <img> never
    # gives). Without callbacks, alias never identifies as the alias.
    run, _, _ = full_scenario(
        open_run,
        start_server,
        tmp_path,
        "img",
        {"img": True, "api_method": "GET", "batch_requests": False},
        callbacks=False,
        alias_identifies=False,
    )
    expect_transport(run.wire, run.wire.exchanges, method="GET", resource_type="image", status=200)


def _track_ids(exchanges: list[Exchange]) -> set[str]:
    return {str(e["properties"]["$insert_id"]) for x in exchanges for e in x.payload}


@pytest.mark.timeout(60)
@pytest.mark.conformance(SDK, "unload + reload (dedup)")
def test_unload_beacon_then_reload_resends(
    open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    # A flush interval long enough that the page is reloaded before the first flush: the
    # events leave by the unload beacon, and the reloaded page re-sends them by XHR once
    # they are orphaned (enqueued more than two flush intervals ago).
    flush_ms = 3000
    name = "unload"
    server, project = start(start_server, tmp_path, name)
    seed_profiles(server, project.token, f"user-{_slug(name)}")
    run = open_run(
        name, server, project.token, project.secret, {"batch_flush_interval_ms": flush_ms}
    )
    result = run.scenario()
    events = expected_event_count(result)
    # alias's $identify is enqueued in its callback, just after the scenario returns.
    run.wait(
        "every event in the SDK's persisted queue",
        lambda: run.queued(("_ev",)) == events,
        timeout=10.0,
    )
    assert not run.wire.to("/track/"), (
        f"the SDK flushed before the reload (flush interval {flush_ms} ms too short on this "
        f"machine?): {run.wire.summary()}"
    )
    run.page.reload()  # visibilitychange -> hidden: the events queue goes by sendBeacon
    run.page.wait_for_function("window.mpLoaded === true")
    exported = run.settle(events)
    check_events(run, result, exported)
    check_profiles(run, result)

    # Chromium does not report a beacon sent while its page unloads; the server counted
    # it: every event arrived twice (beacon, then the reloaded page's XHR) and its second
    # copy was dropped.
    resent = run.wire.to("/track/")
    assert all((e.resource_type, e.status) == ("xhr", 200) for e in resent), run.wire.summary()
    assert _track_ids(resent) == {str(e["properties"]["$insert_id"]) for e in exported}
    status = server.status()
    assert status["duplicates_dropped"] == events, (
        f"the server dropped {status['duplicates_dropped']} duplicates; {events} events were "
        f"sent twice (by the unload beacon and again after the reload): {status}"
    )
    print(f"\nunload: {events} events queued at the reload; after it: {run.wire.summary()}")


@pytest.mark.timeout(90)
@pytest.mark.conformance(SDK, "413 halves batches")
def test_413_halves_batches(
    open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    cap = 5
    name = "413"
    server, project = start(start_server, tmp_path, name, "--max-events-per-request", str(cap))
    seed_profiles(server, project.token, f"user-{_slug(name)}")
    # Batching starts only once everything is queued, so the first batches are full:
    # 34 events, 11 user updates, 4 group updates against a cap of 5.
    run = open_run(
        name,
        server,
        project.token,
        project.secret,
        {"batch_flush_interval_ms": FLUSH_MS, "batch_autostart": False},
    )
    result = run.scenario()
    run.page.evaluate("() => window.mixpanel.start_batch_senders()")
    exported = run.settle(expected_event_count(result))
    check_events(run, result, exported)
    check_profiles(run, result)

    for path in ("/track/", "/engage/"):
        refused = [len(e.payload) for e in run.wire.to(path) if e.status == 413]
        stored = [len(e.payload) for e in run.wire.to(path) if e.status == 200]
        assert refused, (path, run.wire.summary())
        # Each 413 halves the next batch: the refused sizes shrink, all over the cap.
        assert refused == sorted(refused, reverse=True), (path, refused)
        assert min(refused) > cap, (path, refused)
        assert len(stored) > 1, (path, stored)
        assert max(stored) <= cap, (path, stored)
    assert set(run.wire.statuses("/groups/")) == {200}, run.wire.summary()
    # The server's side of the same story: it stored the events from requests of at most
    # the cap (one arrival time per request; the SDK sends one batch at a time).
    arrivals = Counter(e["properties"]["mp_processing_time_ms"] for e in exported)
    assert max(arrivals.values()) <= cap, arrivals
    assert len(arrivals) >= math.ceil(len(exported) / cap), arrivals
    print(f"\n413: {run.wire.summary()}")


@pytest.mark.timeout(90)
@pytest.mark.conformance(SDK, "429 + 503 retried")
def test_429_retried(
    open_run: OpenRun, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    name = "429"
    rate = 10
    data_dir = tmp_path / "data"
    project = create_project(data_dir, name)
    # Set before the start: a running server sees `projects update` only on a later
    # registry refresh, and the first batches must already meet the limit.
    updated = cli(data_dir, "projects", "update", str(project.id), "--events-per-second", str(rate))
    assert updated["events_per_second"] == rate
    server = start_server(data_dir)
    seed_profiles(server, project.token, f"user-{_slug(name)}")  # 2 of the 10 a second
    # Batches of 10 against 10 events a second: the first batch empties the bucket and the
    # others are refused until it refills, on every endpoint.
    run = open_run(
        name,
        server,
        project.token,
        project.secret,
        {"batch_flush_interval_ms": FLUSH_MS, "batch_autostart": False, "batch_size": 10},
    )
    result = run.scenario()
    run.page.evaluate("() => window.mixpanel.start_batch_senders()")
    exported = run.settle(expected_event_count(result))
    check_events(run, result, exported)
    check_profiles(run, result)

    assert run.wire.statuses("/track/")[429], f"no 429 on /track/: {run.wire.summary()}"
    limited = [e for e in run.wire.exchanges if e.status == 429]
    assert len(limited) >= 2, run.wire.summary()
    assert all(e.retry_after and int(e.retry_after) >= 1 for e in limited), limited
    print(f"\n429: {run.wire.summary()}")


def _post_track(server: Server, token: str, insert_id: str) -> int:
    """One /track request with a 2 KiB event; its HTTP status (a 503 is expected here)."""
    event = {
        "event": "filler",
        "properties": {
            "token": token,
            "distinct_id": "filler",
            "$insert_id": insert_id,
            "pad": "p" * 2048,
        },
    }
    body = urllib.parse.urlencode({"data": json.dumps([event])}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/track", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.timeout(90)
@pytest.mark.conformance(SDK, "429 + 503 retried")
def test_503_disk_full_retried(open_run: OpenRun, mount_disk: Callable[..., Disk]) -> None:
    name = "503"
    disk = mount_disk()
    project = create_project(disk.data_dir, name)
    filler = create_project(disk.data_dir, "filler")
    server = disk.start_server()
    seed_profiles(server, project.token, f"user-{_slug(name)}")
    run = open_run(
        name,
        server,
        project.token,
        project.secret,
        {"batch_flush_interval_ms": FLUSH_MS, "batch_autostart": False},
    )
    result = run.scenario()
    disk.fill()
    # A full tmpfs still takes writes into the free tail of the journal's last page:
    # another project's events use it up, so the SDK's first batches are refused too.
    for attempt in range(100):
        if _post_track(server, filler.token, f"filler-{attempt}") == 503:
            break
    else:
        raise AssertionError("the server kept storing events on a full disk")
    run.page.evaluate("() => window.mixpanel.start_batch_senders()")

    def refused_everywhere() -> bool:
        return all(
            run.wire.statuses(path)[503] >= 2 for path in ("/track/", "/engage/", "/groups/")
        )

    run.wait("two 503s on each of /track/, /engage/, /groups/", refused_everywhere, timeout=20.0)
    disk.free()
    exported = run.settle(expected_event_count(result))
    check_events(run, result, exported)
    check_profiles(run, result)
    refused = [e for e in run.wire.exchanges if e.status == 503]
    assert all(e.retry_after and int(e.retry_after) >= 1 for e in refused), refused
    print(f"\n503: {run.wire.summary()}")
