"""The raw export streams: exporting 1,000,000 events keeps the server under 300 MB RSS.

Slow by design (about 1-2 minutes on two cores): a million events have to be imported
(500 gzip'd /import requests of 2000 events, bodies precomputed, sent from a few
threads, on a server started with --no-journal-fsync since durability is not under
test here) and loaded into the store before the export is read twice, plain and
gzip'd. The client counts lines and ticks each $insert_id off in a one-byte-per-event
table instead of keeping the export, and a thread samples the server's VmRSS every
50 ms. Only memory is asserted, never time.
"""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from tests.serverproc import Server, basic, cli

SECRET, TOKEN = "memory-secret", "memory-token"
EVENTS = 1_000_000
BATCH = 2000
SENDERS = 3
RSS_LIMIT_MB = 300.0
SAMPLE_S = 0.05
READ_CHUNK = 1 << 16
INSERT_ID = re.compile(rb'"\$insert_id":"m(\d{7})"')


def make_body(batch: int, now: int) -> bytes:
    """2000 events, $insert_ids m0000000..m0999999; ~250 bytes of properties each."""
    first = batch * BATCH
    events = [
        {
            "event": f"memory event {n % 20}",
            "properties": {
                "time": now - n % 3000,
                "distinct_id": f"user-{n % 50_000:05d}",
                "$insert_id": f"m{n:07d}",
                "plan": ("free", "pro", "team")[n % 3],
                "price": (n % 10_000) / 100,
                "$browser": "Chrome",
                "$os": "Linux",
                "$current_url": f"https://example.com/products/{n % 997}?ref=memory-test",
                "tags": ["alpha", "beta", f"t{n % 13}"],
                "nested": {"level": {"n": n, "ok": n % 2 == 0}},
                "note": f"event number {n} of a million, padded to a realistic size",
            },
        }
        for n in range(first, first + BATCH)
    ]
    return gzip.compress(orjson.dumps(events), compresslevel=1)


def import_all(server: Server, bodies: list[bytes]) -> None:
    """POST every body from SENDERS threads on keep-alive connections."""
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Authorization": basic(SECRET),
    }
    lock = threading.Lock()
    pending = list(range(len(bodies)))
    errors: list[str] = []

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            while True:
                with lock:
                    if not pending or errors:
                        return
                    index = pending.pop()
                conn.request("POST", "/import?strict=1", body=bodies[index], headers=headers)
                reply = conn.getresponse()
                body = reply.read()
                if reply.status != 200 or orjson.loads(body)["num_records_imported"] != BATCH:
                    with lock:
                        errors.append(f"batch {index}: {reply.status} {body[:300]!r}")
                    return
        except Exception as exc:  # reported in the main thread
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors[:5]
    assert not pending


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class RssSampler:
    """Samples a process's VmRSS every SAMPLE_S seconds in a thread, keeping the peak."""

    pid: int
    peak_mb: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.peak_mb = rss_mb(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            self.samples += 1
            self._stop.wait(SAMPLE_S)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)
        self.peak_mb = max(self.peak_mb, rss_mb(self.pid))


@dataclass
class Tally:
    """Lines and $insert_ids of an export, without keeping it: seen[n] counts m{n:07d}."""

    lines: int = 0
    wire_bytes: int = 0
    text_bytes: int = 0
    seen: bytearray = field(default_factory=lambda: bytearray(EVENTS))
    duplicates: int = 0
    unknown: int = 0
    _rest: bytes = b""

    def feed(self, text: bytes) -> None:
        """Whole lines only: a line split across chunks waits for its end."""
        self.text_bytes += len(text)
        text = self._rest + text
        end = text.rfind(b"\n") + 1
        self._rest = text[end:]
        block = text[:end]
        self.lines += block.count(b"\n")
        seen = self.seen
        for match in INSERT_ID.findall(block):
            n = int(match)
            if n >= EVENTS:
                self.unknown += 1
            elif seen[n]:
                self.duplicates += 1
            else:
                seen[n] = 1

    def check(self) -> None:
        assert self._rest == b"", f"the export ends in a partial line: {self._rest[:200]!r}"
        assert self.lines == EVENTS
        assert self.duplicates == 0
        assert self.unknown == 0
        assert self.seen.count(0) == 0, f"{self.seen.count(0)} $insert_ids missing"


def stream_export(server: Server, day_from: str, day_to: str, *, use_gzip: bool) -> Tally:
    headers = {"Authorization": basic(SECRET)}
    if use_gzip:
        headers["Accept-Encoding"] = "gzip"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    tally = Tally()
    try:
        conn.request(
            "GET", f"/api/2.0/export?from_date={day_from}&to_date={day_to}", headers=headers
        )
        reply = conn.getresponse()
        assert reply.status == 200, (reply.status, reply.read(500))
        assert (reply.getheader("Content-Encoding") == "gzip") is use_gzip
        decompress: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
        inflater = zlib.decompressobj(31) if use_gzip else None
        if inflater is not None:
            decompress = inflater.decompress
        while chunk := reply.read(READ_CHUNK):
            tally.wire_bytes += len(chunk)
            tally.feed(decompress(chunk))
        if inflater is not None:
            tally.feed(inflater.flush())
            assert inflater.eof, "the gzip stream did not end"
    finally:
        conn.close()
    return tally


def export_days() -> tuple[str, str]:
    today = dt.datetime.now(dt.UTC).date()
    return (today - dt.timedelta(days=1)).isoformat(), today.isoformat()


@dataclass(frozen=True)
class Export:
    tally: Tally
    rss_before_mb: float
    rss_peak_mb: float
    samples: int
    seconds: float


def measure_export(server: Server, label: str, *, use_gzip: bool) -> Export:
    assert server.process is not None
    pid = server.process.pid
    day_from, day_to = export_days()
    before = rss_mb(pid)
    started = time.monotonic()
    with RssSampler(pid) as sampler:
        tally = stream_export(server, day_from, day_to, use_gzip=use_gzip)
    export = Export(tally, before, sampler.peak_mb, sampler.samples, time.monotonic() - started)
    print(
        f"export {label}: {tally.lines} lines, {tally.wire_bytes / 1e6:.1f} MB on the wire, "
        f"{tally.text_bytes / 1e6:.1f} MB of NDJSON, {export.seconds:.1f}s; server RSS "
        f"{before:.0f} MB before, peak {sampler.peak_mb:.0f} MB during ({sampler.samples} samples)"
    )
    return export


FRESH = ["plain", "gzip"]  # from a server started on the store of a million events
IMPORTER = "plain, from the server that imported them"
FLAT_MB = 100.0


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Export]]:
    """Import and load a million events, export them from the server that imported
    them, then restart it and export them twice more, plain and gzip'd.

    A server that has just taken a million events holds their deduplication index in
    memory (DuckDB cannot evict it; about 60 bytes an event) and whatever the import
    left in the allocator, so there the export is only checked to add little on top.
    The 300 MB bound is for a server that starts on the store, as one does in use."""
    data_dir = tmp_path_factory.mktemp("export-memory") / "data"
    cli(data_dir, "projects", "create", "memory", "--token", TOKEN, "--secret", SECRET)
    args = ["--no-journal-fsync"]
    server = Server(data_dir, args=args).start()
    try:
        assert server.process is not None
        idle = rss_mb(server.process.pid)
        now = int(time.time()) - 5
        started = time.monotonic()
        bodies = [make_body(batch, now) for batch in range(EVENTS // BATCH)]
        built = time.monotonic()
        print(
            f"\n{len(bodies)} bodies of {BATCH} events, "
            f"{sum(map(len, bodies)) / 1e6:.1f} MB gzip'd, built in {built - started:.1f}s"
        )
        with RssSampler(server.process.pid) as importing:
            import_all(server, bodies)
            acked = time.monotonic()
            del bodies
            status = server.wait_loaded(timeout=240)
        assert status["events_loaded"] == EVENTS, status
        print(
            f"imported in {acked - built:.1f}s, loaded {time.monotonic() - acked:.1f}s later; "
            f"server RSS {idle:.0f} MB idle, peak {importing.peak_mb:.0f} MB importing"
        )
        results = {IMPORTER: measure_export(server, IMPORTER, use_gzip=False)}
        server.stop()
        server = Server(data_dir, args=args).start()
        for label in FRESH:
            results[label] = measure_export(server, label, use_gzip=label == "gzip")
        yield results
    finally:
        server.kill()


@pytest.mark.parametrize("label", [*FRESH, IMPORTER])
def test_the_export_holds_every_event_once(exports: dict[str, Export], label: str) -> None:
    exports[label].tally.check()
    assert exports[label].samples >= 10


@pytest.mark.parametrize("label", FRESH)
def test_server_rss_stays_under_300_mb_while_exporting(
    exports: dict[str, Export], label: str
) -> None:
    export = exports[label]
    assert export.rss_peak_mb < RSS_LIMIT_MB, (
        f"server RSS peaked at {export.rss_peak_mb:.0f} MB exporting {EVENTS} events "
        f"(limit {RSS_LIMIT_MB:.0f} MB, {export.rss_before_mb:.0f} MB before the export)"
    )


def test_the_export_adds_little_to_the_server_that_imported(
    exports: dict[str, Export],
) -> None:
    export = exports[IMPORTER]
    grew = export.rss_peak_mb - export.rss_before_mb
    assert grew < FLAT_MB, (
        f"exporting {EVENTS} events took the server from {export.rss_before_mb:.0f} MB "
        f"to {export.rss_peak_mb:.0f} MB (+{grew:.0f} MB; at most {FLAT_MB:.0f} MB expected)"
    )
