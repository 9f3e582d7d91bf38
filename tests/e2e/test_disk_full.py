"""Disk full: refuse with 503 + Retry-After, never lose or invent data, resume alone.

The issue asks: on a full disk the server refuses new data with 503 and Retry-After,
never acknowledges what it could not write, never corrupts the journal or the store,
and resumes by itself once space is freed.

Each test mounts its own small tmpfs as the data directory (the server's log stays
outside it, on the test's tmp_path) and fills it with a ballast file. Every reply is
judged: 200 with the success body (acknowledged), or 503 with a Retry-After header and
the refusal body of its endpoint (web/responses.py); anything else (another status, a
5xx, a hang, a dropped connection) fails the test. After the space is freed, the same
server must take data again and its loader must catch up; then the export must hold
every acknowledged $insert_id exactly once and nothing else, and so must the export
after a restart on the same data directory.

The last test is the store stopping while the journal goes on: the store's disk is full
and the journal's (a symlinked directory elsewhere) is not. The journal acknowledges up
to --journal-max-backlog-bytes, then every endpoint answers 503; once the store can write
again the backlog loads exactly once, both in the same process and after a SIGKILL.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import random
import re
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Server, basic, cli, export
from tests.tmpfs import Disk

pytestmark = pytest.mark.e2e

TOKEN = "diskfulltoken0123456789abcdef"
SECRET = "diskfullsecret0123456789abcdef"
HTTP_TIMEOUT = 10.0
LOADED_TIMEOUT = 30.0
RESUME_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
ENDPOINTS = ("import", "track", "track-verbose")

# What the server may log on a full disk: the journal's and the loader's ENOSPC errors
# (journal/writer.py, loader.py log them without a traceback). Any other ERROR line,
# and any traceback, is a bug.
ALLOWED_ERRORS = (
    re.compile(
        r" ERROR trackhouse\.journal\.writer: journal write failed: "
        r"\[Errno 28\] No space left on device(: '[^']+\.seg')?$"  # the next segment's name
    ),
    re.compile(
        r" ERROR trackhouse\.loader: loader: cannot write to the store: "
        r".*No space left on device.* \(retrying in [\d.]+s\)$"
    ),
)


# -- requests and their outcomes ----------------------------------------------------------
class Outcome(Enum):
    ACKED = "acked"  # 200 with the success body: every event must be stored once
    REFUSED = "refused"  # 503 + Retry-After + the refusal body: nothing may be stored
    BAD = "bad"  # anything else: a bug


@dataclass
class Sent:
    request_id: str
    endpoint: str  # one of ENDPOINTS
    events: list[dict[str, Any]]
    phase: str
    outcome: Outcome | None = None
    detail: str = ""  # the refusal's error text, or what was wrong

    @property
    def insert_ids(self) -> list[str]:
        return [str(e["properties"]["$insert_id"]) for e in self.events]


@dataclass
class Ledger:
    """Every request sent, with its outcome (thread-safe)."""

    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: Sent) -> None:
        with self.lock:
            self.sent.append(sent)

    def snapshot(self) -> list[Sent]:
        with self.lock:
            return list(self.sent)

    def acked_ids(self) -> set[str]:
        return {i for s in self.snapshot() if s.outcome is Outcome.ACKED for i in s.insert_ids}

    def refused_ids(self) -> set[str]:
        """Ids of refused requests never acknowledged by a retry."""
        refused = {i for s in self.snapshot() if s.outcome is Outcome.REFUSED for i in s.insert_ids}
        return refused - self.acked_ids()

    def count(self, phase: str | None = None) -> Counter[Outcome]:
        return Counter(
            s.outcome for s in self.snapshot() if s.outcome is not None and phase in (None, s.phase)
        )

    def figures(self, phase: str) -> str:
        counts = Counter(
            (s.endpoint, s.outcome) for s in self.snapshot() if s.phase == phase and s.outcome
        )
        return ", ".join(
            f"{endpoint} {counts[endpoint, Outcome.ACKED]}x200/"
            f"{counts[endpoint, Outcome.REFUSED]}x503"
            for endpoint in ENDPOINTS
            if counts[endpoint, Outcome.ACKED] or counts[endpoint, Outcome.REFUSED]
        )

    def assert_no_bad(self) -> None:
        bad = [
            f"{s.phase} {s.request_id}: {s.detail}"
            for s in self.snapshot()
            if s.outcome is Outcome.BAD
        ]
        assert not bad, f"{len(bad)} replies were neither 200 nor 503 + Retry-After: {bad[:5]}"


def _utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def _make(
    endpoint: str, request_id: str, count: int, phase: str, pad: str = "", **extra: str
) -> Sent:
    now = int(time.time())
    events = []
    for index in range(count):
        properties: dict[str, Any] = {
            "distinct_id": f"user-{index % 37}",
            "time": now,
            "$insert_id": f"{request_id}-{index}",
            "df_request": request_id,
            "df_index": index,
        }
        if pad:
            properties["pad"] = pad
        properties.update(extra)
        if endpoint != "import":
            properties["token"] = TOKEN
        events.append({"event": f"disk full {endpoint}", "properties": properties})
    return Sent(request_id, endpoint, events, phase)


def _judge(sent: Sent, status: int, retry_after: str | None, body: bytes) -> tuple[Outcome, str]:
    answer: Any = None
    with contextlib.suppress(ValueError):
        answer = json.loads(body)
    n = len(sent.events)
    if sent.endpoint == "import":
        ok = answer == {"code": 200, "num_records_imported": n, "status": "OK"}
        refusal = (
            isinstance(answer, dict)
            and set(answer) == {"code", "error", "status"}
            and answer["code"] == 503
            and answer["status"] == "Service Unavailable"
        )
    elif sent.endpoint == "track-verbose":
        ok = answer == {"status": 1, "error": None}
        refusal = (
            isinstance(answer, dict)
            and set(answer) == {"status", "error"}
            and answer["status"] == 0
        )
    else:
        ok, refusal = body == b"1", body == b"0"
    error = answer.get("error") if isinstance(answer, dict) else None
    described = (
        f"{sent.endpoint} {sent.request_id}: HTTP {status}, Retry-After {retry_after!r}, "
        f"body {body[:300]!r}"
    )
    if status == 200 and ok:
        return Outcome.ACKED, ""
    if status == 503 and refusal:
        if retry_after is None or not retry_after.isdigit() or int(retry_after) < 1:
            return Outcome.BAD, described + " (a 503 without a valid Retry-After)"
        if sent.endpoint != "track" and not (isinstance(error, str) and error):
            return Outcome.BAD, described + " (a 503 without an error text)"
        return Outcome.REFUSED, str(error) if error else "(/track without verbose: 0)"
    return Outcome.BAD, described


def send(port: int, sent: Sent, ledger: Ledger) -> Outcome:
    """POST one request as the SDKs do; judge and record its reply."""
    payload = json.dumps(sent.events, separators=(",", ":")).encode()
    if sent.endpoint == "import":
        path = "/import?strict=1"
        body = payload
        headers = {"Content-Type": "application/json", "Authorization": basic(SECRET)}
    else:
        path = "/track?verbose=1" if sent.endpoint == "track-verbose" else "/track"
        body = urllib.parse.urlencode({"data": base64.b64encode(payload).decode()}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    ledger.add(sent)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        status, retry_after = response.status, response.getheader("retry-after")
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        sent.outcome = Outcome.BAD
        sent.detail = f"{sent.endpoint}: no proper reply (timeout {HTTP_TIMEOUT}s): {exc!r}"
        return sent.outcome
    finally:
        conn.close()
    sent.outcome, sent.detail = _judge(sent, status, retry_after, data)
    return sent.outcome


class Load:
    """Worker threads sending small /import and /track requests until stopped."""

    def __init__(self, port: int, ledger: Ledger, phase: str, *, workers: int = 3) -> None:
        self.port = port
        self.ledger = ledger
        self.phase = phase
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, args=(w,), name=f"disk-{phase}-{w}", daemon=True)
            for w in range(workers)
        ]
        self.limit: int | None = None

    def run(self, requests_per_worker: int) -> None:
        """Send that many requests per worker, then return."""
        self.limit = requests_per_worker
        self.start()
        self.join()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(HTTP_TIMEOUT * 2)
            assert not thread.is_alive(), f"{thread.name} did not stop (a hung request?)"

    def _work(self, worker: int) -> None:
        rng = random.Random(f"{self.phase}-{worker}")
        seq = 0
        while seq < self.limit if self.limit is not None else not self.stop.is_set():
            endpoint = ENDPOINTS[(seq + worker) % len(ENDPOINTS)]
            pad = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=200))
            sent = _make(
                endpoint,
                f"{self.phase}-w{worker}-r{seq:04d}",
                rng.randint(20, 150),
                self.phase,
                pad,
            )
            send(self.port, sent, self.ledger)
            seq += 1


# -- checks ----------------------------------------------------------------------------------
def _poll(what: str, timeout: float, check: Callable[[], bool]) -> float:
    """Call ``check`` until it is true; how long it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(POLL_INTERVAL)
    return time.monotonic() - started


def _wait_loaded(server: Server) -> dict[str, Any]:
    """Everything durable is in the store: backlog_bytes reaches 0."""
    status: dict[str, Any] = {}

    def caught_up() -> bool:
        nonlocal status
        status = server.status()
        return bool(status["backlog_bytes"] == 0)

    try:
        _poll("the loader catching up (backlog_bytes 0)", LOADED_TIMEOUT, caught_up)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {status}") from None
    return status


def _verify_export(server: Server, first_day: str, ledger: Ledger) -> list[dict[str, Any]]:
    """Every acknowledged event exactly once, nothing that was not acknowledged."""
    exported = export(server, SECRET, first_day, _utc_day())
    counts = Counter(str(line["properties"]["$insert_id"]) for line in exported)
    acked = ledger.acked_ids()
    refused = ledger.refused_ids()
    doubled = sorted(i for i, n in counts.items() if n > 1)
    lost = sorted(acked - set(counts))
    ghosts = sorted(refused & set(counts))
    strangers = sorted(set(counts) - acked - refused)
    assert not doubled, f"{len(doubled)} acknowledged events stored twice: {doubled[:10]}"
    assert not lost, f"{len(lost)} acknowledged events are missing: {lost[:10]}"
    assert not ghosts, f"{len(ghosts)} events refused with 503 were stored: {ghosts[:10]}"
    assert not strangers, f"{len(strangers)} exported events were never sent: {strangers[:10]}"
    for line in exported:
        props = line["properties"]
        assert props["$insert_id"].startswith(props["df_request"] + "-"), line
        assert "token" not in props, line
    return sorted(exported, key=lambda line: str(line["properties"]["$insert_id"]))


def _stop_gracefully(server: Server) -> float:
    """SIGTERM; the server must exit by itself (Server.stop kills it after 30 s).
    Returns how long it took."""
    assert server.process is not None
    started = time.monotonic()
    server.stop()
    stopped = time.monotonic() - started
    assert server.process.returncode in (0, -signal.SIGTERM), (
        f"the server did not stop by itself on SIGTERM (exit {server.process.returncode})"
    )
    return stopped


def _restart_and_compare(
    disk: Disk, server: Server, first_day: str, ledger: Ledger, before: list[dict[str, Any]]
) -> float:
    """SIGTERM, start again on the same data dir: the same export. Returns the stop time."""
    stopped = _stop_gracefully(server)
    disk.restart(server)
    _wait_loaded(server)
    after = _verify_export(server, first_day, ledger)
    assert after == before, "the export after a restart differs from the export before it"
    return stopped


def _log_problems(disk: Disk) -> list[str]:
    problems = []
    for path in disk.logs:
        for line in path.read_text(errors="replace").splitlines():
            if "Traceback" in line or (
                re.search(r"\b(ERROR|CRITICAL)\b", line)
                and not any(p.search(line) for p in ALLOWED_ERRORS)
            ):
                problems.append(f"{path.name}: {line}")
    return problems


def _assert_clean_log(disk: Disk) -> None:
    problems = _log_problems(disk)
    if problems:
        tail = disk.logs[-1].read_text(errors="replace")[-4000:] if disk.logs else ""
        raise AssertionError(
            f"unexpected errors in the server log: {problems[:10]}\nlog tail:\n{tail}"
        )


def _start(disk: Disk, *args: str) -> Server:
    cli(disk.data_dir, "projects", "create", "diskfull", "--token", TOKEN, "--secret", SECRET)
    return disk.start_server(*args)


def _show_logs(disk: Disk) -> None:
    for path in disk.logs:
        print(f"server log {path.name} (tail):\n{path.read_text(errors='replace')[-3000:]}")


# -- the tests ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_full_disk_refuses_with_503_and_resumes_by_itself(
    mount_disk: Callable[..., Disk],
) -> None:
    disk = mount_disk()
    # Small segments: they rotate (and loaded ones are deleted) while the disk fills.
    server = _start(disk, "--journal-segment-bytes", str(1024 * 1024))
    first_day = _utc_day()
    ledger = Ledger()
    try:
        _full_disk_scenario(disk, server, first_day, ledger)
    except AssertionError:
        _show_logs(disk)
        raise


def _full_disk_scenario(disk: Disk, server: Server, first_day: str, ledger: Ledger) -> None:
    # With room: everything is acknowledged.
    Load(server.port, ledger, "room").run(requests_per_worker=15)
    ledger.assert_no_bad()
    assert ledger.count("room")[Outcome.REFUSED] == 0, ledger.figures("room")

    # Fill the disk while the load goes on; keep going until every endpoint was refused.
    load = Load(server.port, ledger, "full")
    load.start()
    ballast = disk.fill()
    filled_at = len(ledger.snapshot())

    def refused_everywhere() -> bool:
        late = ledger.snapshot()[filled_at:]
        refused = {s.endpoint for s in late if s.outcome is Outcome.REFUSED}
        return refused == set(ENDPOINTS) and len(late) >= 30

    try:
        _poll("503s on every endpoint once the disk is full", 20.0, refused_everywhere)
    finally:
        load.join()
    ledger.assert_no_bad()
    full_status = server.status()
    refusals = Counter(s.detail for s in ledger.snapshot() if s.outcome is Outcome.REFUSED)

    # Free the space: the same server takes data again, by itself.
    disk.free()
    freed = time.monotonic()
    probes = {"import": 0, "track": 0}
    resumed: dict[str, float] = {}

    def both_resumed() -> bool:
        for endpoint in ("import", "track"):
            if endpoint in resumed:
                continue
            probes[endpoint] += 1
            probe = _make(endpoint, f"probe-{endpoint}-{probes[endpoint]:04d}", 1, "probe")
            if send(server.port, probe, ledger) is Outcome.ACKED:
                resumed[endpoint] = time.monotonic() - freed
        return len(resumed) == 2

    _poll("200s again after the space was freed", RESUME_TIMEOUT, both_resumed)
    ledger.assert_no_bad()

    # A client retries half of its refused requests (same events, same $insert_ids);
    # the other half is never retried and must stay absent.
    refused = sorted(
        (s for s in ledger.snapshot() if s.outcome is Outcome.REFUSED and s.phase == "full"),
        key=lambda s: s.request_id,
    )
    for original in refused[::2]:
        retry = Sent(original.request_id + "-retry", original.endpoint, original.events, "retry")
        assert send(server.port, retry, ledger) is Outcome.ACKED, retry.detail

    Load(server.port, ledger, "after").run(requests_per_worker=5)
    ledger.assert_no_bad()
    assert ledger.count("after")[Outcome.REFUSED] == 0, ledger.figures("after")

    status = _wait_loaded(server)
    # The small segments rotated: the journal went through several files.
    assert status["journal_durable_end"][0] >= 3, status
    assert status["duplicates_dropped"] == 0, (
        f"the store dropped {status['duplicates_dropped']} duplicates: a refused request "
        "was written to the journal after all"
    )
    before = _verify_export(server, first_day, ledger)
    stopped = _restart_and_compare(disk, server, first_day, ledger, before)
    _assert_clean_log(disk)

    print(
        f"\ndisk full: ballast {ballast >> 20} MiB; with room: {ledger.figures('room')}; "
        f"disk full: {ledger.figures('full')}; refusal texts {dict(refusals)}; "
        f"status while full: loader_errors {full_status['loader_errors']}, backlog_bytes "
        f"{full_status['backlog_bytes']}; resumed after the space was freed: "
        + ", ".join(f"{e} in {t:.2f}s ({probes[e]} probes)" for e, t in resumed.items())
        + f"; probes: {ledger.figures('probe')}; retried {len(refused[::2])} of "
        f"{len(refused)} refused requests: {ledger.figures('retry')}; after: "
        f"{ledger.figures('after')}; journal at segment {status['journal_durable_end'][0]}, "
        f"loader_errors {status['loader_errors']}, events_loaded "
        f"{status['events_loaded']}; {len(before)} events exported once "
        f"({len(ledger.refused_ids())} refused ids absent); SIGTERM took {stopped:.2f}s, the "
        "export after the restart is identical"
    )


def _big_import(request_id: str, count: int, rng: random.Random) -> Sent:
    """``count`` events of about 4 KiB of incompressible text each."""
    blob = base64.b64encode(rng.randbytes(count * 30 * 90)).decode()
    sent = _make("import", request_id, count, "big")
    for index, event in enumerate(sent.events):
        for p in range(30):
            start = (index * 30 + p) * 120
            event["properties"][f"blob_{p:02d}"] = blob[start : start + 120]
    return sent


@dataclass
class StoreFailure:
    server: Server
    ledger: Ledger
    first_day: str
    warm_events: int
    big_events: int
    journal_bytes: int
    until_failure: float
    status: dict[str, Any]


def _journal_acks_then_store_fails(disk: Disk) -> StoreFailure:
    """Acknowledge a big batch with just enough room for its journal record: the loader
    then fails to write it to DuckDB (ENOSPC), again and again."""
    server = _start(disk, "--journal-segment-bytes", str(4 * 1024 * 1024))
    first_day = _utc_day()
    ledger = Ledger()
    rng = random.Random(20_240_917)

    warm = _big_import("warm", 200, rng)
    assert send(server.port, warm, ledger) is Outcome.ACKED, warm.detail
    warm_status = _wait_loaded(server)
    # A fresh data dir journals from the start of segment 1: bytes per event, measured.
    per_event = warm_status["journal_durable_end"][1] / len(warm.events)

    big = _big_import("big", 2000, rng)
    journal_bytes = int(per_event * len(big.events) * 1.02) + 65536
    # Room for the journal record, not for DuckDB's write-ahead log of the same rows.
    disk.fill(leave=journal_bytes + 1024 * 1024)
    assert send(server.port, big, ledger) is Outcome.ACKED, (
        f"the journal record ({journal_bytes} bytes estimated) did not fit: {big.detail}"
    )

    status: dict[str, Any] = {}

    def store_failed() -> bool:
        nonlocal status
        status = server.status()
        return status["loader_errors"] > 0 and "No space left" in (
            status["loader_last_error"] or ""
        )

    until_failure = _poll("the loader failing with ENOSPC", 20.0, store_failed)
    assert status["backlog_bytes"] > 0, status
    assert status["events_loaded"] == len(warm.events), (
        f"the failed batch was partly loaded: {status}"
    )
    # The failed transaction left nothing behind: the store still has the warm-up only.
    exported = export(server, SECRET, first_day, _utc_day())
    assert sorted(line["properties"]["$insert_id"] for line in exported) == sorted(
        warm.insert_ids
    ), "a failed store transaction left rows behind"
    return StoreFailure(
        server,
        ledger,
        first_day,
        len(warm.events),
        len(big.events),
        journal_bytes,
        until_failure,
        status,
    )


@pytest.mark.timeout(120)
def test_store_write_fails_on_full_disk_then_catches_up(mount_disk: Callable[..., Disk]) -> None:
    disk = mount_disk()
    try:
        failure = _journal_acks_then_store_fails(disk)
        server, ledger = failure.server, failure.ledger

        # While the store cannot write, /track is answered 200 or 503 (never worse).
        probe = _make("track-verbose", "probe-full", 5, "probe")
        send(server.port, probe, ledger)
        ledger.assert_no_bad()

        disk.free()
        freed = time.monotonic()
        status = _wait_loaded(server)
        caught_up = time.monotonic() - freed
        assert status["events_loaded"] >= failure.warm_events + failure.big_events, status

        before = _verify_export(server, failure.first_day, ledger)
        stopped = _restart_and_compare(disk, server, failure.first_day, ledger, before)
        # And after a crash (SIGKILL) the journal and the store still hold it all, once.
        server.kill()
        disk.restart(server)
        _wait_loaded(server)
        assert _verify_export(server, failure.first_day, ledger) == before
        _assert_clean_log(disk)
    except AssertionError:
        _show_logs(disk)
        raise
    print(
        f"\nstore on a full disk: {failure.big_events} events acknowledged "
        f"(journal record ~{failure.journal_bytes >> 10} KiB); the loader failed after "
        f"{failure.until_failure:.2f}s ({failure.status['loader_last_error']!r}), "
        f"backlog_bytes {failure.status['backlog_bytes']}; /track while full: "
        f"{ledger.figures('probe')}; caught up {caught_up:.2f}s after the space was freed "
        f"(loader_errors {status['loader_errors']}); {len(before)} events exported once; "
        f"SIGTERM took {stopped:.2f}s; identical after SIGTERM and after SIGKILL restarts"
    )


@pytest.mark.timeout(120)
def test_graceful_stop_on_full_disk_loses_nothing(mount_disk: Callable[..., Disk]) -> None:
    disk = mount_disk()
    try:
        failure = _journal_acks_then_store_fails(disk)
        server, ledger = failure.server, failure.ledger
        disk.fill()  # not a byte left: DuckDB's checkpoint at close cannot write either
        stopped = _stop_gracefully(server)
        disk.free()
        disk.restart(server)
        status = _wait_loaded(server)
        exported = _verify_export(server, failure.first_day, ledger)
        assert len(exported) == failure.warm_events + failure.big_events
        _assert_clean_log(disk)
    except AssertionError:
        _show_logs(disk)
        raise
    print(
        f"\nSIGTERM on a full disk with {failure.big_events} acknowledged events not yet "
        f"in the store: stopped in {stopped:.2f}s; after freeing the space and starting "
        f"again, the loader loaded them (events_loaded {status['events_loaded']}); "
        f"{len(exported)} events exported once"
    )


class NotResumed(AssertionError):
    """The server kept refusing data after the space (inodes) came back."""


@pytest.mark.timeout(120)
def test_journal_resumes_after_inode_exhaustion_at_segment_rotation(
    mount_disk: Callable[..., Disk],
) -> None:
    disk = mount_disk(nr_inodes=200)
    server = _start(disk, "--journal-segment-bytes", str(1024 * 1024))
    first_day = _utc_day()
    ledger = Ledger()
    pad = "p" * 200
    # ~0.7 MB of the 1 MiB segment: the next request of this size needs a new segment.
    warm = _make("import", "warm", 2000, "warm", pad)
    assert send(server.port, warm, ledger) is Outcome.ACKED, warm.detail
    _wait_loaded(server)

    inodes = disk.fill_inodes()
    for attempt in range(5):
        sent = _make("import", f"full-{attempt}", 2000, "full", pad)
        if send(server.port, sent, ledger) is not Outcome.ACKED:
            break
    ledger.assert_no_bad()
    refused = ledger.count("full")[Outcome.REFUSED]
    assert refused, "no 503 although no inode was left for the next journal segment"
    first_refusal = next(s.detail for s in ledger.snapshot() if s.outcome is Outcome.REFUSED)

    disk.free()
    probes: list[Sent] = []

    def resumed() -> bool:
        probe = _make("import", f"probe-{len(probes):04d}", 1, "probe")
        probes.append(probe)
        return send(server.port, probe, ledger) is Outcome.ACKED

    try:
        took = _poll("200s again after the inodes were freed", 10.0, resumed)
    except AssertionError as exc:
        kinds = Counter(p.outcome for p in probes)
        garbage = [p.detail for p in probes if p.outcome is Outcome.BAD]
        raise NotResumed(
            f"{exc}: {len(probes)} probes, {kinds[Outcome.REFUSED]} refused with 503 "
            f"({Counter(p.detail for p in probes if p.outcome is Outcome.REFUSED)}), "
            f"{len(garbage)} malformed replies (first: {garbage[:1]}); first refusal "
            f"{first_refusal!r}; log: {sorted({line.split(' ERROR ', 1)[-1] for line in _log_problems(disk)})}"
        ) from None
    ledger.assert_no_bad()
    _wait_loaded(server)
    before = _verify_export(server, first_day, ledger)
    _restart_and_compare(disk, server, first_day, ledger, before)
    _assert_clean_log(disk)
    print(
        f"\ninodes exhausted ({inodes} ballast files) at a segment rotation: "
        f"{ledger.figures('full')}; resumed {took:.2f}s after freeing them"
    )


# -- the store stops writing while the journal goes on -------------------------------------
BACKLOG_BOUND = 4 * 1024 * 1024


def _start_with_journal_elsewhere(disk: Disk, journal_dir: Path) -> Server:
    """A server whose store is on the small disk and whose journal is not (a symlink):
    filling the disk stops the store's writes while the journal still has room."""
    journal_dir.mkdir()
    (disk.data_dir / "journal").symlink_to(journal_dir, target_is_directory=True)
    return _start(
        disk,
        "--journal-max-backlog-bytes",
        str(BACKLOG_BOUND),
        "--journal-segment-bytes",
        str(1024 * 1024),
    )


def _load_until_backlog_full(server: Server, ledger: Ledger, phase: str) -> dict[str, Any]:
    """Send while the store cannot write: the journal acknowledges up to its bound, then
    every endpoint is refused. Returns the status seen once refused everywhere."""
    load = Load(server.port, ledger, phase)
    load.start()
    start = len(ledger.snapshot())

    def refused_everywhere() -> bool:
        late = [s for s in ledger.snapshot()[start:] if s.phase == phase]
        return {s.endpoint for s in late if s.outcome is Outcome.REFUSED} == set(ENDPOINTS)

    try:
        _poll(f"{phase}: 503 on every endpoint once the backlog is full", 60.0, refused_everywhere)
    finally:
        load.join()
    ledger.assert_no_bad()
    status = server.status()
    counts = ledger.count(phase)
    # The journal absorbed the backlog before refusing: acknowledged requests that the
    # store has not taken, up to the bound.
    assert counts[Outcome.ACKED] > 0, ledger.figures(phase)
    assert status["loader_errors"] > 0, status
    assert status["backlog_bytes"] > BACKLOG_BOUND, status
    assert status["backlog_bytes"] < 2 * BACKLOG_BOUND, status  # bounded, not runaway
    refusals = {s.detail for s in ledger.snapshot() if s.phase == phase}
    assert any("backlog" in detail for detail in refusals), refusals
    return status


@pytest.mark.timeout(180)
def test_store_down_journal_absorbs_its_bound_then_503_then_loads_exactly_once(
    mount_disk: Callable[..., Disk], tmp_path: Path
) -> None:
    disk = mount_disk()
    server = _start_with_journal_elsewhere(disk, tmp_path / "journal-elsewhere")
    first_day = _utc_day()
    ledger = Ledger()
    try:
        Load(server.port, ledger, "room").run(requests_per_worker=10)
        assert ledger.count("room")[Outcome.REFUSED] == 0, ledger.figures("room")
        loaded = _wait_loaded(server)["events_loaded"]

        # Round 1: the store stops; the same server recovers once the store can write.
        disk.fill()
        down = _load_until_backlog_full(server, ledger, "down")
        # Reading goes on from what the store holds.
        assert len(export(server, SECRET, first_day, _utc_day())) == loaded
        disk.free()
        freed = time.monotonic()
        recovered = _wait_loaded(server)
        caught_up = time.monotonic() - freed
        probe = _make("import", "probe-after-recovery", 3, "probe")
        assert send(server.port, probe, ledger) is Outcome.ACKED, probe.detail
        _wait_loaded(server)
        _verify_export(server, first_day, ledger)

        # Round 2: the store stops again and the server is killed with its backlog
        # still in the journal; a new process loads it once the store can write.
        disk.fill()
        _load_until_backlog_full(server, ledger, "down-again")
        server.kill()
        disk.free()
        disk.restart(server)
        restarted = _wait_loaded(server)
        before = _verify_export(server, first_day, ledger)
        assert restarted["duplicates_dropped"] == 0, restarted
        _restart_and_compare(disk, server, first_day, ledger, before)
        _assert_clean_log(disk)
    except AssertionError:
        _show_logs(disk)
        raise
    print(
        f"\nstore down (its disk full, the journal's not; bound {BACKLOG_BOUND >> 20} MiB): "
        f"{ledger.figures('down')} (backlog_bytes {down['backlog_bytes']}, loader_errors "
        f"{down['loader_errors']}); the same server caught up {caught_up:.2f}s after the "
        f"store could write (events_loaded {recovered['events_loaded']}); second time "
        f"{ledger.figures('down-again')}, then SIGKILL and a restart loaded the backlog; "
        f"{len(before)} events exported exactly once, {len(ledger.refused_ids())} refused "
        "ids absent"
    )
