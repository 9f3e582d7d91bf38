"""Crash safety of profiles: SIGKILL a server while clients send /engage and /groups.

Client threads send batches of ``$add`` updates to a handful of user profiles and one
group profile while the server is killed with SIGKILL at random moments and restarted
on the same data directory. Each request is one journal record: acknowledged, it must
be folded into its profiles exactly once; unacknowledged (no whole reply), its
increments are in every profile it names or in none, and never twice.

The increments make that checkable from ``n`` alone. Each thread adds ``2**bit`` (to
every profile its request names), keeping its bit until a request of its goes
unanswered, then takes a fresh one: every bit is owned by at most one unacknowledged
request. So for each profile, stored ``n`` minus the sum acknowledged is a sum of
distinct powers of two, one per unacknowledged request that landed. (Bits past 39 go
to ``n1``, ``n2``…, so that the sums stay 64-bit integers.) Each request also adds 1 to ``c``
and appends its id to ``log``, which must tell the same story.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Server, cli, profile

pytestmark = pytest.mark.e2e

TOKEN = "profilecrashtoken0123456789"
SECRET = "profilecrashsecret0123456789"
SEED = 20_261_122
KILLS = 6
WORKERS = 4
KILL_GAP_S = (0.2, 1.0)
TAIL_S = 0.5  # traffic after the last restart
HTTP_TIMEOUT = 10.0
LOADED_TIMEOUT = 30.0
# Bits per counter: a thread keeps its bit for every acknowledged request until one goes
# unanswered, so a counter holds up to 2**ERA_BITS times the requests sent (~2**13) and
# must stay within a signed 64-bit integer (past it, the sum becomes a double).
ERA_BITS = 40

USERS = tuple(f"crash-user-{i}" for i in range(5))
GROUP_KEY, GROUP_ID = "company", "crash-co"
Key = tuple[str | None, str]  # (group key, or None for a user; profile id)
ALL_KEYS: tuple[Key, ...] = (*((None, u) for u in USERS), (GROUP_KEY, GROUP_ID))


class Outcome(Enum):
    ACKED = "acked"  # {"status": 1}: folded in exactly once
    UNKNOWN = "unknown"  # no whole reply (the server died): everywhere once, or nowhere
    NOT_SENT = "not sent"  # connection refused: nothing reached the server
    REFUSED = "refused"  # a whole reply that is not a success: nothing may be stored


@dataclass
class Sent:
    request_id: str
    path: str  # /engage or /groups
    bit: int
    keys: tuple[Key, ...]  # the profiles it adds 2**bit to, once each
    outcome: Outcome = Outcome.UNKNOWN

    @property
    def counter(self) -> str:
        return f"n{self.bit // ERA_BITS}"

    @property
    def increment(self) -> int:
        return 1 << (self.bit % ERA_BITS)


class Bits:
    """Hands out each bit once: bit b is 2**(b % ERA_BITS) added to the property
    n<b // ERA_BITS>, so there are as many as unanswered requests need."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            bit = self._next
            self._next += 1
        return bit

    @property
    def used(self) -> int:
        return self._next


def _make(rng: random.Random, worker: int, seq: int, bit: int) -> Sent:
    request_id = f"w{worker}r{seq:05d}"
    if rng.random() < 0.2:
        return Sent(request_id, "/groups", bit, ((GROUP_KEY, GROUP_ID),))
    users = rng.sample(USERS, rng.randint(1, len(USERS)))
    return Sent(request_id, "/engage", bit, tuple((None, u) for u in users))


def _body(sent: Sent) -> bytes:
    updates: list[dict[str, Any]] = []
    for group_key, profile_id in sent.keys:
        who: dict[str, Any] = (
            {"$group_key": group_key, "$group_id": profile_id}
            if group_key is not None
            else {"$distinct_id": profile_id}
        )
        updates.append({"$token": TOKEN, **who, "$add": {sent.counter: sent.increment, "c": 1}})
        updates.append({"$token": TOKEN, **who, "$append": {"log": sent.request_id}})
    return urllib.parse.urlencode({"data": json.dumps(updates), "verbose": "1"}).encode()


def _send(conn: http.client.HTTPConnection, sent: Sent) -> Outcome:
    conn.request(
        "POST", sent.path, _body(sent), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    reply = conn.getresponse()
    body = reply.read()  # a reply cut short raises IncompleteRead: UNKNOWN
    try:
        answer = json.loads(body)
    except ValueError:
        return Outcome.REFUSED
    ok = reply.status == 200 and answer == {"status": 1, "error": None}
    return Outcome.ACKED if ok else Outcome.REFUSED


def _worker(
    server: Server, worker: int, bits: Bits, stop: threading.Event, sent: list[Sent]
) -> None:
    """Requests one after another on a kept-alive connection, to whichever port the
    server listens on now."""
    rng = random.Random(SEED * 10 + worker)
    conn: http.client.HTTPConnection | None = None
    port = 0
    bit = bits.take()
    seq = 0
    while not stop.is_set():
        if conn is None or port != server.port:
            if conn is not None:
                conn.close()
            port = server.port
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        request = _make(rng, worker, seq, bit)
        seq += 1
        sent.append(request)
        try:
            request.outcome = _send(conn, request)
        except ConnectionRefusedError:
            request.outcome = Outcome.NOT_SENT
            conn.close()
            conn = None
            stop.wait(0.02)
        except (OSError, http.client.HTTPException):
            request.outcome = Outcome.UNKNOWN
            conn.close()
            conn = None
            bit = bits.take()  # this bit now has its one unanswered request
    if conn is not None:
        conn.close()


@dataclass
class Figures:
    requests: Counter[Outcome]
    acked_increments: int  # $add updates acknowledged
    unknown_landed: int
    unknown_absent: int


def _read_all(server: Server) -> dict[Key, dict[str, Any] | None]:
    server.wait_loaded(timeout=LOADED_TIMEOUT)
    return {key: profile(server, SECRET, key[1], group_key=key[0]) for key in ALL_KEYS}


def _verify(stored: dict[Key, dict[str, Any] | None], requests: list[Sent]) -> Figures:
    by_id = {r.request_id: r for r in requests}
    landed_on: dict[str, set[Key]] = {}  # unacknowledged request -> profiles it is in
    problems: list[str] = []
    for key in ALL_KEYS:
        mine = [r for r in requests if key in r.keys]
        acked = [r for r in mine if r.outcome is Outcome.ACKED]
        unknown = {r.bit: r for r in mine if r.outcome is Outcome.UNKNOWN}
        assert len(unknown) == sum(r.outcome is Outcome.UNKNOWN for r in mine), "bit reused"
        props = stored[key]
        if props is None:
            assert not acked, f"{key}: no profile, yet {len(acked)} requests were acknowledged"
            continue
        counters = {r.counter for r in mine}
        assert set(props) <= {"c", "log", "$last_seen", *counters}, (key, sorted(props))
        c, log = props["c"], props["log"]

        landed: set[str] = set()
        for counter in sorted(counters):
            era_acked = [r for r in acked if r.counter == counter]
            era_unknown = {r.bit % ERA_BITS: r for r in unknown.values() if r.counter == counter}
            acked_sum = sum(r.increment for r in era_acked)
            unknown_sum = sum(r.increment for r in era_unknown.values())
            n = props.get(counter, 0)  # absent: nothing of this era landed
            assert acked_sum <= n <= acked_sum + unknown_sum, (key, counter, n, acked_sum)
            extra = n - acked_sum
            landed_bits = {bit for bit in range(extra.bit_length()) if extra >> bit & 1}
            strays = landed_bits - set(era_unknown)
            assert not strays, (
                f"{key}: {counter} - acknowledged = {extra}, not a sum of unanswered requests"
            )
            landed |= {era_unknown[bit].request_id for bit in landed_bits}
        for request_id in landed:
            landed_on.setdefault(request_id, set()).add(key)

        # The log and the count tell the same story as n.
        counts = Counter(log)
        twice = sorted(rid for rid, times in counts.items() if times > 1)
        assert not twice, f"{key}: requests folded in more than once: {twice[:10]}"
        strangers = sorted(rid for rid in counts if rid not in by_id or key not in by_id[rid].keys)
        assert not strangers, f"{key}: log names requests never sent here: {strangers[:10]}"
        lost = sorted(r.request_id for r in acked if r.request_id not in counts)
        if lost:
            problems.append(f"{key}: {len(lost)} acknowledged requests missing: {lost[:10]}")
        ghosts = sorted(
            rid for rid in counts if by_id[rid].outcome in (Outcome.REFUSED, Outcome.NOT_SENT)
        )
        if ghosts:
            problems.append(f"{key}: refused or unsent requests stored: {ghosts[:10]}")
        logged_unknown = {rid for rid in counts if by_id[rid].outcome is Outcome.UNKNOWN}
        if logged_unknown != landed:
            problems.append(f"{key}: log says {logged_unknown} landed, n says {landed}")
        if c != len(acked) + len(landed):
            problems.append(f"{key}: c = {c}, expected {len(acked)} + {len(landed)}")
    assert not problems, "\n".join(problems)

    # A request is one journal record: in every profile it names, or in none.
    torn = [
        f"{rid}: in {sorted(map(str, keys))} of {len(by_id[rid].keys)}"
        for rid, keys in landed_on.items()
        if keys != set(by_id[rid].keys)
    ]
    assert not torn, f"unanswered requests applied in part: {torn[:10]}"

    unknown_all = [r for r in requests if r.outcome is Outcome.UNKNOWN]
    return Figures(
        Counter(r.outcome for r in requests),
        sum(len(r.keys) for r in requests if r.outcome is Outcome.ACKED),
        len(landed_on),
        len(unknown_all) - len(landed_on),
    )


@pytest.mark.timeout(120)
def test_acknowledged_profile_updates_survive_repeated_sigkill(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "profile-crash"
    cli(data_dir, "projects", "create", "crash", "--token", TOKEN, "--secret", SECRET)
    rng = random.Random(SEED)
    started = time.monotonic()
    server = start_server(data_dir)

    bits = Bits()
    stop = threading.Event()
    sent: list[list[Sent]] = [[] for _ in range(WORKERS)]
    threads = [
        threading.Thread(
            target=_worker,
            args=(server, worker, bits, stop, sent[worker]),
            name=f"profile-crash-{worker}",
            daemon=True,
        )
        for worker in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(*KILL_GAP_S))
            server.kill()
            server.start()  # same data dir, new port: the clients follow
        time.sleep(TAIL_S)
    finally:
        stop.set()
        for thread in threads:
            thread.join(HTTP_TIMEOUT + 5)
    assert not any(t.is_alive() for t in threads), "a client thread did not stop"
    requests = [r for worker_sent in sent for r in worker_sent]

    try:
        stored = _read_all(server)
        figures = _verify(stored, requests)
        # Restarts without traffic: replaying the journal must not apply anything again.
        server.stop()
        server.start()
        assert _read_all(server) == stored, "a clean restart changed the profiles"
        server.kill()
        server.start()
        assert _read_all(server) == stored, "a restart after SIGKILL changed the profiles"
    except AssertionError:
        print(f"server log (tail):\n{server.log()[-5000:]}")
        raise

    print(
        f"\nprofile crash test: {KILLS} SIGKILLs, {len(requests)} requests ("
        + ", ".join(f"{o.value} {figures.requests[o]}" for o in Outcome)
        + f"), {figures.acked_increments} acknowledged $add increments all applied once, "
        f"{figures.unknown_landed} unanswered requests landed whole, "
        f"{figures.unknown_absent} absent, {bits.used} bits used, "
        f"{time.monotonic() - started:.1f}s"
    )
    assert figures.requests[Outcome.ACKED] > 0, "the server acknowledged nothing"
