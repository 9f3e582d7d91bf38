"""Crash safety (issue #2): SIGKILL a server under load, again and again.

A real server process takes concurrent /track and /import requests and is killed with
SIGKILL at a random moment, then restarted on the same data directory. After every
restart, the export must hold every event whose request was acknowledged exactly once,
and each request that was in flight when the server died must be there whole or not at
all: the journal holds one record per request, and an unacknowledged record is either
fully synced or the torn tail that start-up cuts off.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Server, basic, cli, export

pytestmark = pytest.mark.e2e

TOKEN = "crashtoken0123456789abcdef"
SECRET = "crashsecret0123456789abcdef"
SEED = 20_240_602
KILLS = 12
WORKERS = 4
MAX_EVENTS_PER_REQUEST = 50
LOAD_SECONDS = (0.2, 1.0)
HTTP_TIMEOUT = 10.0
LOADED_TIMEOUT = 30.0
# Properties only the test sets: they must come back exactly as sent.
MARKERS = ("crash_request", "crash_index", "crash_count", "crash_digest", "crash_nested")


class Outcome(Enum):
    ACKED = "acked"  # a whole success reply: every event must be exported exactly once
    UNKNOWN = "unknown"  # no whole reply (the server died): all events or none
    NOT_SENT = "not sent"  # the connection was refused: nothing reached the server
    REFUSED = "refused"  # a whole reply that is not a success: nothing may be stored


@dataclass
class SentRequest:
    request_id: str
    endpoint: str  # "track" or "import"
    events: dict[str, dict[str, Any]]  # $insert_id -> the event as sent
    outcome: Outcome = Outcome.UNKNOWN


@dataclass
class Figures:
    checks: int = 0
    requests: Counter[Outcome] = field(default_factory=Counter)
    acked_events: int = 0
    unknown_landed: int = 0
    unknown_absent: int = 0
    exported: int = 0


def _utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def _make_request(
    rng: random.Random, kill_round: int, worker: int, seq: int, now: int
) -> SentRequest:
    request_id = f"k{kill_round:02d}w{worker}r{seq:05d}"
    endpoint = rng.choice(("track", "import"))
    count = rng.randint(1, MAX_EVENTS_PER_REQUEST)
    events: dict[str, dict[str, Any]] = {}
    for index in range(count):
        insert_id = f"{request_id}-{index}"
        properties: dict[str, Any] = {
            "distinct_id": f"user-{rng.randrange(100)}",
            "time": now,
            "$insert_id": insert_id,
            "crash_request": request_id,
            "crash_index": index,
            "crash_count": count,
            "crash_digest": hashlib.sha256(insert_id.encode()).hexdigest(),
            "crash_nested": {"worker": worker, "path": [kill_round, seq, index]},
        }
        if endpoint == "track":
            properties["token"] = TOKEN
        events[insert_id] = {"event": f"crash {endpoint}", "properties": properties}
    return SentRequest(request_id, endpoint, events)


def _send(conn: http.client.HTTPConnection, request: SentRequest) -> Outcome:
    payload = json.dumps(list(request.events.values())).encode()
    if request.endpoint == "track":
        form = urllib.parse.urlencode({"data": base64.b64encode(payload).decode()})
        conn.request(
            "POST",
            "/track?verbose=1",
            form.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        conn.request(
            "POST",
            "/import?strict=1",
            payload,
            {"Content-Type": "application/json", "Authorization": basic(SECRET)},
        )
    reply = conn.getresponse()
    body = reply.read()  # a reply cut short raises IncompleteRead: UNKNOWN
    try:
        answer = json.loads(body)
    except ValueError:
        return Outcome.REFUSED
    if request.endpoint == "track":
        ok = reply.status == 200 and answer == {"status": 1, "error": None}
    else:
        ok = (
            reply.status == 200
            and isinstance(answer, dict)
            and answer.get("num_records_imported") == len(request.events)
        )
    return Outcome.ACKED if ok else Outcome.REFUSED


def _worker(
    port: int,
    kill_round: int,
    worker: int,
    stop: threading.Event,
    sent: list[SentRequest],
) -> None:
    rng = random.Random(SEED * 100 + kill_round * 10 + worker)
    conn: http.client.HTTPConnection | None = None
    seq = 0
    while not stop.is_set():
        request = _make_request(rng, kill_round, worker, seq, int(time.time()))
        seq += 1
        sent.append(request)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        try:
            request.outcome = _send(conn, request)
        except ConnectionRefusedError:
            request.outcome = Outcome.NOT_SENT
            conn.close()
            conn = None
            stop.wait(0.01)
        except (OSError, http.client.HTTPException):
            request.outcome = Outcome.UNKNOWN
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def _load_then_kill(
    server: Server, kill_round: int, load_seconds: float, workers: int = WORKERS
) -> list[SentRequest]:
    """Concurrent /track and /import load, a SIGKILL in the middle of it."""
    stop = threading.Event()
    sent: list[list[SentRequest]] = [[] for _ in range(workers)]
    threads = [
        threading.Thread(
            target=_worker,
            args=(server.port, kill_round, worker, stop, sent[worker]),
            name=f"crash-load-{worker}",
            daemon=True,
        )
        for worker in range(workers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(load_seconds)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(HTTP_TIMEOUT + 5)
        assert not thread.is_alive(), f"{thread.name} did not stop"
    return [request for worker_sent in sent for request in worker_sent]


def _mismatches(line: dict[str, Any], request: SentRequest) -> list[str]:
    """How an exported event differs from the event that was sent."""
    props: dict[str, Any] = line["properties"]
    insert_id = props["$insert_id"]
    sent = request.events[insert_id]
    sent_props: dict[str, Any] = sent["properties"]
    wrong = []
    if line["event"] != sent["event"]:
        wrong.append(f"event {line['event']!r} != {sent['event']!r}")
    for key in ("time", "distinct_id", *MARKERS):
        if props.get(key) != sent_props[key]:
            wrong.append(f"{key} {props.get(key)!r} != {sent_props[key]!r}")
    if "token" in props:
        wrong.append("token was exported")
    if props.get("$import") is not (True if request.endpoint == "import" else None):
        wrong.append(f"$import is {props.get('$import')!r} for a {request.endpoint} event")
    return [f"{insert_id}: {w}" for w in wrong]


def _verify(server: Server, first_day: str, requests: list[SentRequest], figures: Figures) -> None:
    server.wait_loaded(timeout=LOADED_TIMEOUT)
    exported = export(server, SECRET, first_day, _utc_day())
    by_insert_id = {insert_id: r for r in requests for insert_id in r.events}

    counts = Counter(line["properties"]["$insert_id"] for line in exported)
    doubled = sorted(insert_id for insert_id, n in counts.items() if n > 1)
    assert not doubled, f"{len(doubled)} events exported more than once: {doubled[:10]}"
    strangers = sorted(insert_id for insert_id in counts if insert_id not in by_insert_id)
    assert not strangers, f"{len(strangers)} exported events were never sent: {strangers[:10]}"

    landed: defaultdict[str, set[str]] = defaultdict(set)
    wrong: list[str] = []
    for line in exported:
        request = by_insert_id[line["properties"]["$insert_id"]]
        landed[request.request_id].add(line["properties"]["$insert_id"])
        wrong.extend(_mismatches(line, request))
    assert not wrong, f"{len(wrong)} exported properties differ from those sent: {wrong[:10]}"

    lost: list[str] = []
    torn: list[str] = []
    ghosts: list[str] = []
    figures.acked_events = figures.unknown_landed = figures.unknown_absent = 0
    for request in requests:
        got = landed.get(request.request_id, set())
        if request.outcome is Outcome.ACKED:
            figures.acked_events += len(request.events)
            if got != set(request.events):
                lost.append(f"{request.request_id}: {len(got)} of {len(request.events)}")
        elif request.outcome is Outcome.UNKNOWN:
            if got and got != set(request.events):
                torn.append(f"{request.request_id}: {len(got)} of {len(request.events)}")
            elif got:
                figures.unknown_landed += 1
            else:
                figures.unknown_absent += 1
        elif got:
            ghosts.append(f"{request.request_id} ({request.outcome.value}): {len(got)} events")
    assert not lost, f"{len(lost)} acknowledged requests lost events: {lost[:10]}"
    assert not torn, f"{len(torn)} unacknowledged requests were half-written: {torn[:10]}"
    assert not ghosts, f"{len(ghosts)} refused or unsent requests were stored: {ghosts[:10]}"
    figures.checks += 1
    figures.exported = len(exported)


@pytest.mark.timeout(240)
def test_acknowledged_events_survive_repeated_sigkill(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "crash"
    cli(data_dir, "projects", "create", "crash", "--token", TOKEN, "--secret", SECRET)
    first_day = _utc_day()
    rng = random.Random(SEED)
    requests: list[SentRequest] = []
    figures = Figures()
    started = time.monotonic()

    server = start_server(data_dir)
    for kill_round in range(KILLS):
        if kill_round:
            server.start()  # the same data dir, after a SIGKILL: recovery, then more load
            _verify_or_show_log(server, first_day, requests, figures)
        requests.extend(_load_then_kill(server, kill_round, rng.uniform(*LOAD_SECONDS)))
    server.start()
    _verify_or_show_log(server, first_day, requests, figures)

    figures.requests = Counter(r.outcome for r in requests)
    print(
        f"\ncrash test: {KILLS} SIGKILLs, {figures.checks} verified restarts, "
        f"{len(requests)} requests ("
        + ", ".join(f"{o.value} {figures.requests[o]}" for o in Outcome)
        + f"), {figures.acked_events} acknowledged events all exported once, "
        f"{figures.unknown_landed} unacknowledged requests landed whole, "
        f"{figures.unknown_absent} absent, {figures.exported} events exported, "
        f"{time.monotonic() - started:.1f}s"
    )
    assert figures.requests[Outcome.ACKED] > 0, "the server acknowledged nothing"


def _verify_or_show_log(
    server: Server, first_day: str, requests: list[SentRequest], figures: Figures
) -> None:
    try:
        _verify(server, first_day, requests, figures)
    except AssertionError:
        print(f"server log (tail):\n{server.log()[-5000:]}")
        raise
