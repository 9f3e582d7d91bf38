"""Ingest worker processes (trackhouse.workers): large /import bodies are decoded and
validated in child processes. Against real servers: every reply is byte for byte what
a server without workers gives for the same request, the same events are stored, a
worker killed mid-life is replaced with nothing lost, and no worker outlives its server.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import os
import signal
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Reply, Server, basic, cli, dumps, export, request

pytestmark = pytest.mark.e2e

TOKEN, SECRET = "tok-workers", "sec-workers"
WAIT_S = 30.0
NOW = int(time.time())  # one time for every body: both servers get the same bytes
DAY = time.strftime("%Y-%m-%d", time.gmtime(NOW))


def _events(tag: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "event": f"e{i % 7}",
            "properties": {
                "time": NOW - i,
                "distinct_id": f"u{i % 97}",
                "$insert_id": f"{tag}-{i}",
                "page": f"/p/{i}",
                "n": i,
                "tags": ["a", {"b": i}],
                **extra,
            },
        }
        for i in range(count)
    ]


def _json(events: list[dict[str, Any]]) -> bytes:
    return dumps(events)


@dataclass(frozen=True)
class Case:
    name: str
    query: str
    body: bytes
    headers: dict[str, str]


_HEADERS = {"Content-Type": "application/json", "Authorization": basic(SECRET)}


def _cases() -> list[Case]:
    """Large bodies (past the size that goes to a worker) of every kind /import takes."""
    js = _HEADERS
    mixed = _events("mixed", 1500)
    mixed[3]["properties"]["distinct_id"] = "anon"  # placeholder
    mixed[700]["properties"]["time"] = "soon"
    del mixed[1200]["properties"]["$insert_id"]
    bad_utf8 = _json(_events("utf8", 800)).replace(b'"/p/5"', b'"/p/\xff\xfe"', 1)
    assert b"\xff" in bad_utf8
    form_data = base64.b64encode(_json(_events("form", 600))).decode()
    ndjson = b"\n".join(dumps(e) for e in _events("nd", 900))
    return [
        Case(
            "valid, gzip",
            "strict=1",
            gzip.compress(_json(_events("gz", 2000))),
            {**js, "Content-Encoding": "gzip"},
        ),
        Case("valid, plain", "strict=1", _json(_events("plain", 1000)), js),
        Case("NDJSON", "strict=1", ndjson, {**js, "Content-Type": "application/x-ndjson"}),
        Case("some invalid events", "strict=1", _json(mixed), js),
        Case("some invalid events, not strict", "strict=0", _json(mixed), js),
        Case("invalid UTF-8 in one event", "strict=1", bad_utf8, js),
        Case("not JSON", "strict=1", b"[" + b'{"event":"x"},' * 10_000 + b"oops]", js),
        Case("too many events", "strict=1", _json(_events("many", 2001)), js),
        Case(
            "legacy form, verbose",
            "",
            urllib.parse.urlencode({"data": form_data, "verbose": "1"}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(SECRET)},
        ),
    ]


@dataclass(frozen=True)
class Pair:
    workers: Server
    inline: Server


def _start(data_dir: Path, workers: int) -> Server:
    cli(data_dir, "projects", "create", "w", "--token", TOKEN, "--secret", SECRET)
    return Server(data_dir, args=["--ingest-workers", str(workers)]).start()


def _worker_pids(server: Server, count: int) -> list[int]:
    """Wait until ``count`` workers run (they start with the first large request)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        running: list[int] = server.status()["ingest_workers"]["running"]
        if len(running) == count:
            return running
        assert time.monotonic() < deadline, f"workers did not start: {server.status()}"
        time.sleep(0.05)


def _post(server: Server, case: Case) -> Reply:
    return request(server, "POST", f"/import?{case.query}", case.body, case.headers)


def _large_import(server: Server, tag: str) -> Reply:
    """1000 events (~150 KB): a job for a worker. A 503 is a reply here, not a failure."""
    body = _json(_events(tag, 1000))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
    try:
        conn.request("POST", "/import?strict=1", body, _HEADERS)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("workers")
    workers = _start(base / "workers", 2)
    inline = _start(base / "inline", 0)
    try:
        assert _large_import(workers, "warm").status == 200  # starts the workers
        assert _large_import(inline, "warm").status == 200
        _worker_pids(workers, 2)
        yield Pair(workers, inline)
    finally:
        workers.kill()
        inline.kill()


def _stored(server: Server) -> list[dict[str, Any]]:
    server.wait_loaded(WAIT_S)
    rows = export(server, SECRET, DAY, DAY)
    for row in rows:  # arrival time and Host (its port) differ between the two servers
        row["properties"].pop("mp_processing_time_ms")
        row["properties"].pop("$mp_api_endpoint")
    return sorted(rows, key=lambda row: str(row["properties"]["$insert_id"]))


def test_replies_and_stored_events_are_the_same_with_and_without_workers(pair: Pair) -> None:
    before = pair.workers.status()["ingest_workers"]["jobs_in_workers"]
    for case in _cases():
        assert len(case.body) > 64 * 1024 or case.name == "valid, gzip", case.name
        with_workers, without = _post(pair.workers, case), _post(pair.inline, case)
        assert (with_workers.status, with_workers.body) == (without.status, without.body), case.name
        assert with_workers.content_type == without.content_type, case.name
    status = pair.workers.status()["ingest_workers"]
    assert status["jobs_in_workers"] - before == len(_cases())
    assert pair.inline.status()["ingest_workers"] == {
        "running": [],
        "jobs_in_workers": 0,
        "jobs_here": len(_cases()) + 1,
    }
    stored = _stored(pair.workers)
    assert stored == _stored(pair.inline)
    # Every valid event of the cases (and the warm-up) is there once. The invalid
    # events: 3 in strict mode, 2 when not strict (it derives a missing $insert_id).
    assert len(stored) == 1000 + 2000 + 1000 + 900 + (1500 - 2) + (800 - 1) + 600


def test_a_killed_worker_is_replaced_and_nothing_acknowledged_is_lost(pair: Pair) -> None:
    server = pair.workers
    victim = _worker_pids(server, 2)[0]
    os.kill(victim, signal.SIGKILL)
    acknowledged = 0
    for attempt in range(20):
        reply = _large_import(server, f"after-kill-{attempt}")
        if reply.status == 503:  # the job was on the dead worker: retryable, as SDKs do
            assert reply.header("retry-after")
            assert b"retry" in reply.body
            continue
        assert reply.status == 200, reply
        acknowledged += 1
    assert acknowledged >= 19  # at most the one job on the dead worker was refused
    running = _worker_pids(server, 2)
    assert victim not in running
    server.wait_loaded(WAIT_S)
    ids = {row["properties"]["$insert_id"] for row in export(server, SECRET, DAY, DAY)}
    assert sum(1 for i in ids if str(i).startswith("after-kill-")) == acknowledged * 1000


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie is dead too: its parent (the test's server) has not reaped it
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_no_worker_outlives_its_server(tmp_path: Path, how: str) -> None:
    server = _start(tmp_path / "data", 2)
    try:
        assert _large_import(server, "one").status == 200
        pids = _worker_pids(server, 2)
    finally:
        server.kill() if how == "SIGKILL" else server.stop()
    assert all(_gone(pid) for pid in pids), pids


# -- /track: tokens are resolved in the worker, against the registry file -----------------
def _track_events(tag: str, count: int, token: str = TOKEN) -> list[dict[str, Any]]:
    events = _events(tag, count)
    for event in events:
        event["properties"]["token"] = token
    return events


def _track_cases() -> list[Case]:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    mixed = _track_events("t-mixed", 150)
    mixed[5]["properties"]["token"] = "no-such-token"
    del mixed[9]["properties"]["token"]
    mixed[11]["properties"]["time"] = NOW - 30 * 86400  # too old for /track
    b64 = base64.b64encode(_json(_track_events("t-b64", 150))).decode()
    return [
        Case("form base64", "verbose=1", urllib.parse.urlencode({"data": b64}).encode(), form),
        Case(
            "form JSON, some invalid",
            "verbose=1",
            urllib.parse.urlencode({"data": _json(mixed).decode()}).encode(),
            form,
        ),
        Case("JSON body", "verbose=1", _json(_track_events("t-json", 150)), {}),
        Case("not JSON", "verbose=1", b"[" + b'{"event":"x"},' * 2000 + b"oops]", {}),
        Case("too many", "verbose=1", _json(_track_events("t-many", 2001)), {}),
        Case(
            "JSONP callback",
            "callback=mixpanel._jsc.abc",
            urllib.parse.urlencode({"data": b64}).encode(),
            form,
        ),
    ]


def _tracked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows these /track tests sent (the other tests imported only to one server)."""
    return [row for row in rows if str(row["properties"]["$insert_id"]).startswith("t-")]


def test_track_replies_and_events_are_the_same_with_and_without_workers(pair: Pair) -> None:
    before = pair.workers.status()["ingest_workers"]["jobs_in_workers"]
    for case in _track_cases():
        assert len(case.body) > 16 * 1024, case.name
        with_workers = request(
            pair.workers, "POST", f"/track?{case.query}", case.body, case.headers
        )
        without = request(pair.inline, "POST", f"/track?{case.query}", case.body, case.headers)
        assert (with_workers.status, with_workers.body) == (without.status, without.body), case.name
    assert pair.workers.status()["ingest_workers"]["jobs_in_workers"] - before == len(
        _track_cases()
    )
    tracked = [_tracked(_stored(server)) for server in (pair.workers, pair.inline)]
    assert tracked[0] == tracked[1]
    assert len(tracked[0]) == 150 + 147 + 150  # the base64 form went twice: stored once


def test_a_project_created_after_the_start_is_known_to_the_workers(pair: Pair) -> None:
    cli(
        pair.workers.data_dir,
        "projects",
        "create",
        "late",
        "--token",
        "tok-late",
        "--secret",
        "sec-late",
    )
    body = _json(_track_events("late", 150, token="tok-late"))
    reply = request(pair.workers, "POST", "/track?verbose=1", body)
    assert reply.json() == {"status": 1, "error": None}
    pair.workers.wait_loaded(WAIT_S)
    assert len(export(pair.workers, "sec-late", DAY, DAY)) == 150


def test_auto_created_projects_are_created_by_the_server_not_a_worker(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", args=["--ingest-workers", "2", "--auto-create-projects"])
    server.start()
    try:
        body = _json(_track_events("auto", 150, token="tok-auto"))
        assert request(server, "POST", "/track?verbose=1", body).json()["status"] == 1
        status = server.status()["ingest_workers"]
        assert (status["jobs_in_workers"], status["jobs_here"]) == (0, 1)
        projects = cli(server.data_dir, "projects", "list")
        assert "tok-auto" in [p["token"] for p in projects]
    finally:
        server.kill()


def test_a_sigterm_to_the_group_leaves_the_workers_to_their_server(pair: Pair) -> None:
    """A service manager stopping the whole process group sends SIGTERM to the workers
    too: they go on with the jobs of the requests their server is still finishing, and
    end when the server closes their pipes."""
    server = pair.workers
    pids = _worker_pids(server, 2)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert _large_import(server, "after-sigterm").status == 200
    assert _worker_pids(server, 2) == pids
