"""The official `mixpanel` package from PyPI (5.4.1), unmodified, against a real trackhouse
server over HTTPS.

The library is pointed at the server with its documented option
``Consumer(api_host="127.0.0.1:PORT")`` / ``BufferedConsumer(api_host=...)``, which
builds ``https://`` URLs only (its retries are mounted on https only, too), and trusts
the test CA through ``verify_cert=<CA file>``: the value goes straight to requests'
``verify=``, which takes a CA bundle path as well as a bool. Verification stays on.

Every consumer is wrapped in ``Recording``, a consumer (the library documents the
consumer interface as its extension point) that notes each message the library hands
it and passes it on unchanged to the real Consumer/BufferedConsumer, which sends it. So
the expected events are exactly what the library sent, down to its random $insert_id
and its float ``time``.

What is proven, per scenario, against one project per test:

* events from ``track`` (Consumer and BufferedConsumer, 120 events → batches of 50, 50,
  20), ``import_data`` (API secret, or service-account credentials; one at a time and
  buffered) and ``merge`` are in the export exactly once, with exactly the properties
  sent (datetime → ISO text, strings cut at 255 characters), the library's ``time`` to
  the millisecond and its ``$insert_id``; nothing else is in the project; an event sent
  twice is stored once;
* a wrong secret, a wrong service-account secret or no credentials make the library
  raise MixpanelException and store nothing;
* every ``people_*`` and ``group_*`` call leaves the profile exactly as Mixpanel's
  semantics say, ``$last_seen`` being the ``$time`` of the last update that did not ask
  for ``$ignore_time``;
* with verification on and without the test CA, nothing is sent.

``merge(api_key, id1, id2, api_secret=)`` posts a ``$merge`` event (``$distinct_ids``,
no distinct_id, no time, no $insert_id) to the consumer's *imports* endpoint, /import,
with the secret as HTTP Basic user (or the consumer's service account): the export
shows it once, with distinct_id = id1 and an arrival time. (trackhouse stores merges
as events; it does not merge profiles: README "Known limits".)

``alias()`` ignores the instance's consumer: the library sends it through a fresh
``Consumer()`` with default arguments, i.e. to ``https://api.mixpanel.com/track``,
with certificate verification by requests' defaults; there is no argument, attribute
or library setting that changes this host. What does reach it is the network: requests
honours ``HTTPS_PROXY`` (and ``REQUESTS_CA_BUNDLE`` for the CA). test_alias runs the
call with ``HTTPS_PROXY`` naming a CONNECT proxy that tunnels only
``api.mixpanel.com:443`` to this server, whose certificate also names api.mixpanel.com:
it proves that alias went to api.mixpanel.com and not to the consumer's host, and that
the ``$create_alias`` event arrives intact once that name leads to trackhouse (in
production: DNS, or an egress proxy, pointing api.mixpanel.com at trackhouse). No part
of the library is patched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import mixpanel
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

SDK = "mixpanel (Python)"
LIB = {"mp_lib": "python", "$lib_version": "5.4.1"}
DAY_S = 86_400
MIXPANEL_HOST = "api.mixpanel.com"  # where alias() always sends
REQUEST_TIMEOUT = 30  # the library's default is no timeout at all


# ---- harness ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    # api.mixpanel.com among the names: alias() always sends there (test_alias).
    return make_tls(tmp_path_factory.mktemp("py-tls"), MIXPANEL_HOST)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: TLSFiles) -> Iterator[Server]:
    # One server for the module (a start costs seconds); each test gets its own project.
    data = tmp_path_factory.mktemp("py-server") / "data"
    started = start_with_project(data, token="py-bootstrap", secret="py-bootstrap-s", tls=tls)
    yield started
    started.kill()


@pytest.fixture
def new_project(server: Server) -> Callable[..., Project]:
    return functools.partial(create_project, server, "py")


class Recording:
    """A consumer that notes every message the library hands it, then passes it on
    unchanged to the real consumer (which sends it, or buffers it until flush)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: list[tuple[str, Props]] = []

    def send(self, endpoint: str, json_message: str, *args: Any, **kwargs: Any) -> None:
        self.sent.append((endpoint, json.loads(json_message)))
        self.inner.send(endpoint, json_message, *args, **kwargs)

    def flush(self) -> None:
        self.inner.flush()

    def messages(self, endpoint: str) -> list[Props]:
        return [message for sent_to, message in self.sent if sent_to == endpoint]


def consumer_options(server: Server, tls: TLSFiles, **options: Any) -> dict[str, Any]:
    return {
        "api_host": f"127.0.0.1:{server.port}",  # https:// is built in
        "verify_cert": str(tls.ca),
        "request_timeout": REQUEST_TIMEOUT,
        **options,
    }


def sdk(
    server: Server, tls: TLSFiles, project: Project, *, buffered: bool = False, **options: Any
) -> tuple[mixpanel.Mixpanel, Recording]:
    """A Mixpanel instance on a recorded Consumer (or BufferedConsumer)."""
    kind = mixpanel.BufferedConsumer if buffered else mixpanel.Consumer
    recording = Recording(kind(**consumer_options(server, tls, **options)))
    return mixpanel.Mixpanel(project.token, consumer=recording), recording


def service_account(project: Project) -> Any:
    assert project.service_account is not None
    username, secret = project.service_account
    return mixpanel.ServiceAccountCredentials(username, secret, str(project.id))


def expected_events(recording: Recording, window: Window) -> list[Expected]:
    """Every event and import the library handed the consumer, as the export must give it
    back: its float seconds (or int) `time` to the millisecond as the server rounds it,
    its $insert_id, the token left out."""
    out = []
    for endpoint in ("events", "imports"):
        for message in recording.messages(endpoint):
            props = dict(message["properties"])
            assert props.pop("token")
            sent_time = props.pop("time", None)
            time_ms: int | Window = window if sent_time is None else round(sent_time * 1000)
            insert_id = props.pop("$insert_id", None)
            out.append(Expected(message["event"], props, time_ms, insert_id, endpoint == "imports"))
    return out


def last_seen(recording: Recording, endpoint: str, **identity: str) -> str:
    """$last_seen after the recorded updates of one profile: from the $time of the last
    update that did not carry $ignore_time (each update carries the library's $time)."""
    updates = [
        m
        for m in recording.messages(endpoint)
        if all(m.get(k) == v for k, v in identity.items()) and not m.get("$ignore_time")
    ]
    return seen_text(round(updates[-1]["$time"] * 1000))


# ---- events -------------------------------------------------------------------------


@pytest.mark.conformance(SDK, "track")
def test_track(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    mp, recording = sdk(server, tls, project)
    two_minutes_ago = int(now_ms() / 1000) - 120
    rich: Props = {
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
    with arrival_window() as window:
        mp.track(
            "user-1",
            "Signed up",
            {**rich, "when": dt.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)},
        )
        mp.track("user-2", "Page", {"seq": 2, "time": two_minutes_ago})  # overrides time
        mp.track("user-2", "Page", {"seq": 3, "$insert_id": "py-track-3"})
        mp.track("user-3", "Long", {"seq": 4, "text": "x" * 20_000})

    expected = expected_events(recording, window)
    assert expected[0].properties == {
        "distinct_id": "user-1",
        **rich,
        "when": "2026-01-02T03:04:05",  # the library's DatetimeSerializer drops µs and zone
        **LIB,
    }
    assert expected[1].time_ms == two_minutes_ago * 1000
    assert expected[2].insert_id == "py-track-3"
    expected[3].properties["text"] = "x" * 255  # spec §6: truncated, not refused
    assert_events(server, project.secret, expected, window)


@pytest.mark.conformance(SDK, "track batch")
def test_track_buffered(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    mp, recording = sdk(server, tls, project, buffered=True, max_size=50)
    with arrival_window() as window:
        for i in range(120):  # two batches of 50 go on their own, flush() sends 20
            mp.track(f"user-{i % 7}", "Buffered", {"seq": i, "s": "~~~>>>???" * (i % 3)})
        recording.flush()
    assert len(recording.messages("events")) == 120
    assert_events(server, project.secret, expected_events(recording, window), window)


@pytest.mark.conformance(SDK, "import (secret)")
def test_import_with_secret(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    project = new_project()
    mp, recording = sdk(server, tls, project)
    now = now_ms() / 1000
    with arrival_window() as window:
        mp.import_data(
            None, "user-1", "Old", int(now) - 40 * DAY_S, {"seq": 1}, api_secret=project.secret
        )
        # A float time keeps its milliseconds; the legacy api_key goes along, ignored.
        mp.import_data(
            project.token,
            "user-2",
            "Old",
            now - 3 * DAY_S,
            {"seq": 2, "k": ["v"]},
            api_secret=project.secret,
        )
    assert_events(server, project.secret, expected_events(recording, window), window)


@pytest.mark.conformance(SDK, "import batch")
def test_import_buffered(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    project = new_project()
    mp, recording = sdk(server, tls, project, buffered=True, max_size=50)
    start = int(now_ms() / 1000) - 30 * DAY_S
    with arrival_window() as window:
        for i in range(75):  # one batch of 50 on its own, 25 at flush()
            mp.import_data(
                None, f"user-{i % 5}", "Backfill", start - i, {"seq": i}, api_secret=project.secret
            )
        recording.flush()
    assert len(recording.messages("imports")) == 75
    assert_events(server, project.secret, expected_events(recording, window), window)


@pytest.mark.conformance(SDK, "import (service account)")
def test_import_with_service_account(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    project = new_project(service_account=True)
    credentials = service_account(project)
    mp, single = sdk(server, tls, project, credentials=credentials)
    mp_buffered, buffered = sdk(server, tls, project, buffered=True, credentials=credentials)
    start = int(now_ms() / 1000) - 10 * DAY_S
    with arrival_window() as window:
        mp.import_data(None, "user-1", "Single", start, {"seq": 1})
        for i in range(60):
            mp_buffered.import_data(None, f"user-{i % 3}", "Buffered", start - i, {"seq": i})
        buffered.flush()
    expected = expected_events(single, window) + expected_events(buffered, window)
    assert_events(server, project.secret, expected, window)


@pytest.mark.conformance(SDK, "dedup")
def test_resent_events_are_stored_once(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    """The same event (same $insert_id and time) sent again, through /track and /import,
    one at a time and in a batch, is stored once (spec §7)."""
    project = new_project()
    mp, recording = sdk(server, tls, project)
    mp_buffered, buffered = sdk(server, tls, project, buffered=True)
    now = now_ms() / 1000
    tracked = {"seq": 1, "$insert_id": "py-dup-1", "time": now - 60}
    imported = {"seq": 2, "$insert_id": "py-dup-2"}
    with arrival_window() as window:
        for client in (mp, mp, mp_buffered):
            client.track("user-1", "Tracked", tracked)
            client.import_data(
                None,
                "user-1",
                "Imported",
                int(now) - 9 * DAY_S,
                imported,
                api_secret=project.secret,
            )
        buffered.flush()
    sent = expected_events(recording, window)
    assert len(sent) == 4
    assert len(expected_events(buffered, window)) == 2
    assert_events(server, project.secret, [sent[0], sent[2]], window)


@pytest.mark.conformance(SDK, "import (bad credentials)")
def test_import_with_bad_credentials_is_refused(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    project = new_project(service_account=True)
    mp, _ = sdk(server, tls, project)
    moment = int(now_ms() / 1000) - DAY_S
    with pytest.raises(mixpanel.MixpanelException, match="Invalid credentials"):
        mp.import_data(None, "user-1", "Refused", moment, api_secret="not-the-secret")
    with pytest.raises(mixpanel.MixpanelException, match="Invalid credentials"):
        # An api_key alone is sent as no credentials at all (SDK_WIRE.md §1).
        mp.import_data(project.token, "user-1", "Refused", moment)
    with pytest.raises(mixpanel.MixpanelException, match="Invalid credentials"):
        mp.merge(None, "user-1", "user-2", api_secret="not-the-secret")
    assert project.service_account is not None
    wrong = mixpanel.ServiceAccountCredentials(
        project.service_account[0], "not-the-secret", str(project.id)
    )
    mp_wrong, _ = sdk(server, tls, project, credentials=wrong)
    with pytest.raises(mixpanel.MixpanelException, match="Invalid credentials"):
        mp_wrong.import_data(None, "user-1", "Refused", moment)
    assert export_ms(server, project.secret) == []


# ---- identity -----------------------------------------------------------------------


@pytest.mark.conformance(SDK, "merge")
def test_merge(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    """merge() posts $merge to /import, with the API secret or the consumer's service
    account; each project holds the one $merge event."""
    with_secret = new_project()
    with_account = new_project(service_account=True)
    mp, recording = sdk(server, tls, with_secret)
    mp_sa, recording_sa = sdk(server, tls, with_account, credentials=service_account(with_account))
    with arrival_window() as window:
        mp.merge(None, "user-a", "user-b", api_secret=with_secret.secret)
        mp_sa.merge(None, "user-c", "user-d")
    for project, sent, (first, second) in (
        (with_secret, recording, ("user-a", "user-b")),
        (with_account, recording_sa, ("user-c", "user-d")),
    ):
        assert sent.sent == [
            (
                "imports",
                {
                    "event": "$merge",
                    "properties": {"$distinct_ids": [first, second], "token": project.token},
                },
            )
        ]
        expected = Expected(
            "$merge",
            {"distinct_id": first, "$distinct_ids": [first, second]},
            window,
            imported=True,
        )
        assert_events(server, project.secret, [expected], window)


class TunnelProxy:
    """An HTTP CONNECT proxy, what HTTPS_PROXY names: it tunnels connections to
    api.mixpanel.com:443 to the test server (TLS stays end to end; it sees ciphertext
    only) and refuses every other destination. `asked` lists every request line."""

    IDLE_TIMEOUT = 10.0

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.asked: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        # requests keeps its connection alive in a pool: close() must end the tunnels.
        self._open: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._open.append(conn)
            worker = threading.Thread(target=self._tunnel, args=(conn,), daemon=True)
            worker.start()
            self._threads.append(worker)

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.IDLE_TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk or len(head) > 65_536:
                    return
                head += chunk
            header, _, rest = head.partition(b"\r\n\r\n")
            request_line = header.split(b"\r\n", 1)[0].decode("latin-1")
            self.asked.append(request_line)
            method, target, _ = [*request_line.split(" ", 2), "", ""][:3]
            if method != "CONNECT" or target != f"{MIXPANEL_HOST}:443":
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(
                ("127.0.0.1", self.upstream_port), timeout=self.IDLE_TIMEOUT
            ) as upstream:
                self._open.append(upstream)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                self._pump(conn, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(a, selectors.EVENT_READ, b)
            selector.register(b, selectors.EVENT_READ, a)
            while True:
                ready = selector.select(self.IDLE_TIMEOUT)
                if not ready:
                    return
                for key, _ in ready:
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65_536)
                    if not data:
                        return
                    key.data.sendall(data)

    def close(self) -> None:
        # shutdown() wakes the threads blocked in accept() and select(); close() does not.
        for sock in [self._listener, *self._open]:
            with contextlib.suppress(OSError):  # already closed by its tunnel
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=self.IDLE_TIMEOUT + 1)


@pytest.mark.conformance(SDK, "alias")
def test_alias(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    mp, recording = sdk(server, tls, project)
    proxy = TunnelProxy(server.port)
    try:
        with pytest.MonkeyPatch.context() as env, arrival_window() as window:
            # Only for this call: requests (inside alias's own Consumer) reads these.
            for name in ("HTTPS_PROXY", "https_proxy"):
                env.setenv(name, f"http://127.0.0.1:{proxy.port}")
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
                env.delenv(name, raising=False)
            env.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
            mp.alias("alias-of-user-1", "user-1")
    finally:
        proxy.close()

    # It went to api.mixpanel.com, not to the instance's consumer (127.0.0.1:PORT).
    assert [line.split(" ")[:2] for line in proxy.asked] == [["CONNECT", f"{MIXPANEL_HOST}:443"]]
    assert recording.sent == []
    assert_events(
        server,
        project.secret,
        [
            Expected(
                "$create_alias",
                {"distinct_id": "user-1", "alias": "alias-of-user-1"},  # no mp_lib, no time
                window,
                host=MIXPANEL_HOST,
            )
        ],
        window,
    )


# ---- profiles -----------------------------------------------------------------------


@pytest.mark.conformance(SDK, "people")
def test_people(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    mp, recording = sdk(server, tls, project)

    def check(distinct_id: str, expected: Props | None) -> None:
        seen = (
            None
            if expected is None
            else last_seen(recording, "people", **{"$distinct_id": distinct_id})
        )
        assert_profile(server, project.secret, distinct_id, expected, seen)

    mp.people_set(
        "user-1",
        {
            "$name": "Ann",
            "plan": "free",
            "tags": ["x"],
            "nested": {"a": [1, 2], "b": {"c": None}},
            "unicode": "héllo ✓",
            "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        },
    )
    expected: Props = {
        "$name": "Ann",
        "plan": "free",
        "tags": ["x"],
        "nested": {"a": [1, 2], "b": {"c": None}},
        "unicode": "héllo ✓",
        "when": "2026-01-02T03:04:05",
    }
    check("user-1", expected)

    mp.people_set("user-1", {"plan": "pro", "seats": 3})
    mp.people_set_once("user-1", {"plan": "ignored", "first_seen": "2026-01-02"})
    mp.people_increment("user-1", {"logins": 5, "credits": 10})
    mp.people_increment("user-1", {"logins": -2, "credits": -2.5})
    mp.people_append("user-1", {"items": "sword"})
    mp.people_append("user-1", {"items": "shield", "log": {"k": 1}})
    mp.people_append("user-1", {"items": "sword"})
    mp.people_union("user-1", {"tags": ["y", "x", "y"], "roles": ["admin"]})
    mp.people_remove("user-1", {"items": "sword"})
    mp.people_unset("user-1", ["seats", "no-such-property"])
    expected |= {
        "plan": "pro",
        "first_seen": "2026-01-02",
        "logins": 3,
        "credits": 7.5,
        "items": ["shield"],
        "log": [{"k": 1}],
        "tags": ["x", "y"],
        "roles": ["admin"],
    }
    check("user-1", expected)

    mp.people_track_charge("user-1", 9.99, {"sku": "A1"})
    mp.people_track_charge("user-1", 20)
    check("user-1", expected | {"$transactions": [{"sku": "A1", "$amount": 9.99}, {"$amount": 20}]})
    mp.people_clear_charges("user-1")  # $unset of $transactions in this library
    check("user-1", expected)

    # meta goes on the update: $ignore_time keeps $last_seen where it was.
    mp.people_set("user-1", {"quiet": True}, meta={"$ignore_time": True})
    expected |= {"quiet": True}
    check("user-1", expected)

    mp.people_delete("user-1")
    check("user-1", None)
    mp.people_delete("user-never-seen")
    check("user-never-seen", None)
    mp.people_increment("user-1", {"logins": 1})  # a new profile from nothing
    check("user-1", {"logins": 1})

    # Buffered: one /engage batch, applied in order.
    mp_buffered, buffered = sdk(server, tls, project, buffered=True)
    for i in range(3):
        mp_buffered.people_set(f"batch-{i}", {"n": i})
        mp_buffered.people_increment(f"batch-{i}", {"n": 100})
    buffered.flush()
    for i in range(3):
        seen = last_seen(buffered, "people", **{"$distinct_id": f"batch-{i}"})
        assert_profile(server, project.secret, f"batch-{i}", {"n": i + 100}, seen)
    assert export_ms(server, project.secret) == []  # profile updates are not events


@pytest.mark.conformance(SDK, "groups")
def test_groups(server: Server, tls: TLSFiles, new_project: Callable[..., Project]) -> None:
    project = new_project()
    mp, recording = sdk(server, tls, project)

    def check(key: str, group_id: str, expected: Props | None) -> None:
        seen = None
        if expected is not None:
            seen = last_seen(recording, "groups", **{"$group_key": key, "$group_id": group_id})
        assert_profile(server, project.secret, group_id, expected, seen, group_key=key)

    mp.group_set("company", "Acme", {"$name": "Acme Inc.", "tier": "silver", "size": 10})
    mp.group_set("company", "Acme", {"tier": "gold"})
    mp.group_set_once("company", "Acme", {"tier": "ignored", "founded": 1999})
    mp.group_union("company", "Acme", {"products": ["anvil", "rocket"]})
    mp.group_union("company", "Acme", {"products": ["rocket", "magnet"]})
    mp.group_remove("company", "Acme", {"products": "anvil"})
    mp.group_unset("company", "Acme", ["size", "no-such-property"])
    expected = {
        "$name": "Acme Inc.",
        "tier": "gold",
        "founded": 1999,
        "products": ["rocket", "magnet"],
    }
    check("company", "Acme", expected)

    mp.group_set("company", "Acme", {"quiet": True}, meta={"$ignore_time": True})
    expected |= {"quiet": True}
    check("company", "Acme", expected)

    mp.group_set("team", "Acme", {"members": 4})  # the same id under another key
    check("team", "Acme", {"members": 4})
    mp.group_delete("company", "Acme")
    check("company", "Acme", None)
    check("team", "Acme", {"members": 4})
    assert_profile(server, project.secret, "Acme", None, None)  # no such user


# ---- transport ----------------------------------------------------------------------


@pytest.mark.conformance(SDK, "HTTPS")
def test_certificate_is_verified(
    server: Server, tls: TLSFiles, new_project: Callable[..., Project]
) -> None:
    """With verify_cert=True (the default) and only the usual CAs, the library refuses
    the server's certificate, sends nothing and raises. (Every other test proves the
    path with the CA given.)"""
    project = new_project()
    consumer = mixpanel.Consumer(**consumer_options(server, tls, verify_cert=True, retry_limit=0))
    mp = mixpanel.Mixpanel(project.token, consumer=consumer)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("REQUESTS_CA_BUNDLE", raising=False)  # requests falls back to certifi
        env.delenv("CURL_CA_BUNDLE", raising=False)
        with pytest.raises(mixpanel.MixpanelException, match="CERTIFICATE_VERIFY_FAILED"):
            mp.track("user-1", "Unsent", {"seq": 1})
        with pytest.raises(mixpanel.MixpanelException, match="CERTIFICATE_VERIFY_FAILED"):
            mp.import_data(None, "user-1", "Unsent", 1_700_000_000, api_secret=project.secret)
        with pytest.raises(mixpanel.MixpanelException, match="CERTIFICATE_VERIFY_FAILED"):
            mp.people_set("user-1", {"n": 1})
    assert export_ms(server, project.secret) == []
    assert_profile(server, project.secret, "user-1", None, None)
