"""Every benchmark scenario, one after another, and one table.

    scripts/bench                      # installs wrk, then runs this
    .venv/bin/python -m bench.run [--quick] [--only a10,b] [--stored 10000000]

Each scenario starts a real trackhouse server on a fresh data directory (fsync'd
acknowledgements, default settings) and prints: events/s and requests/s acknowledged,
p50/p99 latency, the server's CPU (cores used) and peak RSS, and the p95 lag from
acknowledgement to queryable. Beside them, the raw floors measured in the same run on
the same bodies: gunzip + JSON parse (or form + base64 + JSON parse) in one process,
and an empty ASGI app's request rate on the same server stack. Never fails on a timing.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
from tests.serverproc import Server, cli

from bench import bodies
from bench.loadgen import EMPTY_APP, Load, asgi_server, keepalive_clients, wrk
from bench.prefill import prefilled
from bench.probe import Probe


@dataclass
class Row:
    scenario: str
    events_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_cores: float
    rss_mb: float
    lag_p95_s: float
    floor: str  # the floor this scenario is compared with, and the ratio
    note: str = ""


@dataclass
class Floors:
    import_events_per_s: float = 0.0
    track_events_per_s: float = 0.0
    track_batch_events_per_s: float = 0.0
    http_requests_per_s: float = 0.0


def _timed(work: Callable[[], int]) -> float:
    started = time.perf_counter()
    units = work()
    return units / (time.perf_counter() - started)


def _auth() -> str:
    return "Basic " + base64.b64encode(f"{bodies.SECRET}:".encode()).decode()


IMPORT_HEADERS = {
    "Content-Type": "application/json",
    "Content-Encoding": "gzip",
    "Authorization": _auth(),
}
TRACK_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
# As mixpanel-browser posts to a custom host (spec §9).
TRACK_PATH = "/track/?verbose=1&ip=1"


SERVER_ARGS: list[str] = []  # --server-arg: extra `trackhouse serve` flags for every scenario


def _server(data_dir: Path) -> Server:
    if not (data_dir / "projects.sqlite").exists():
        cli(
            data_dir,
            "projects",
            "create",
            "bench",
            "--token",
            bodies.TOKEN,
            "--secret",
            bodies.SECRET,
        )
    return Server(data_dir, args=SERVER_ARGS).start()


class Readers:
    """Scenario (d): export and SQL queries in a loop beside the import load."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.exports = self.queries = 0
        self.thread = threading.Thread(target=self._run, name="bench-readers", daemon=True)

    def _get(self, path: str, params: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"{self.server.url}{path}?{urllib.parse.urlencode(params)}",
            headers={"Authorization": _auth()},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            while reply.read(1 << 16):
                pass

    def _run(self) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        while not self.stop.is_set():
            self._get("/api/2.0/export", {"from_date": day, "to_date": day, "limit": "20000"})
            self.exports += 1
            self._get(
                "/api/sql",
                {
                    "sql": "SELECT event, count(*), count(DISTINCT distinct_id) FROM events GROUP BY 1"
                },
            )
            self.queries += 1


def import_scenario(
    name: str,
    data_dir: Path,
    payloads: list[bytes],
    events_each: int,
    clients: int,
    *,
    readers: bool = False,
    floor: float,
) -> Row:
    server = _server(data_dir)
    try:
        probe = Probe(server).start()
        reading = Readers(server) if readers else None
        if reading:
            reading.thread.start()
        load = keepalive_clients(
            "127.0.0.1", server.port, "/import?strict=1", payloads, IMPORT_HEADERS, clients
        )
        if reading:
            reading.stop.set()
            reading.thread.join()
        probe.stop()
        note = f"{load.errors} errors" if load.errors else ""
        if reading:
            note += f"{'; ' if note else ''}{reading.exports} exports + {reading.queries} SQL queries meanwhile"
        return _row(name, load, events_each, probe, f"gunzip+parse {floor:,.0f} ev/s", floor, note)
    finally:
        server.stop()


def wrk_scenario(
    name: str,
    data_dir: Path,
    payloads: list[bytes],
    events_each: int,
    connections: int,
    seconds: int,
    floor_label: str,
    floor: float,
    workdir: Path,
    *,
    per_request: bool = False,
) -> Row:
    server = _server(data_dir)
    try:
        probe = Probe(server).start()
        load = wrk(
            server.url,
            TRACK_PATH,
            payloads,
            TRACK_HEADERS,
            connections=connections,
            seconds=seconds,
            workdir=workdir,
        )
        probe.stop()
        note = f"{load.errors} errors" if load.errors else ""
        if load.repeated:
            note += f"{'; ' if note else ''}bodies repeated {load.repeated}x"
        return _row(
            name, load, events_each, probe, floor_label, floor, note, per_request=per_request
        )
    finally:
        server.stop()


def _row(
    name: str,
    load: Load,
    events_each: int,
    probe: Probe,
    floor_label: str,
    floor: float,
    note: str,
    *,
    per_request: bool = False,
) -> Row:
    events_per_s = load.requests * events_each / load.seconds
    requests_per_s = load.requests / load.seconds
    ratio = (requests_per_s if per_request else events_per_s) / floor if floor else 0.0
    return Row(
        name,
        events_per_s,
        requests_per_s,
        load.p50_ms,
        load.p99_ms,
        probe.cpu_cores,
        probe.peak_rss_mb(),
        probe.lag_p95(),
        f"{floor_label} → {ratio:.2f}",
        note,
    )


def http_floor(payloads: list[bytes], connections: int, seconds: int, workdir: Path) -> float:
    """Requests/s of an empty ASGI app on the same server stack, driven the same way."""
    with asgi_server(EMPTY_APP) as url:
        load = wrk(
            url, TRACK_PATH, payloads, TRACK_HEADERS,
            connections=connections, seconds=seconds, workdir=workdir,
        )  # fmt: skip
    return load.requests / load.seconds


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | events/s | requests/s | p50 ms | p99 ms | server CPU (cores) | peak RSS MB | lag p95 s | floor → ratio | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.events_per_s:,.0f} | {r.requests_per_s:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.cpu_cores:.2f} | {r.rss_mb:.0f} | {r.lag_p95_s:.2f} | "
            f"{r.floor} | {r.note} |"
        )
    return "\n".join(lines)


SCENARIOS = ("a10", "a20", "b", "c", "d", "e")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of the runner"
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument(
        "--stored", type=int, default=10_000_000, help="events already stored in (e)"
    )
    parser.add_argument(
        "--import-requests", type=int, default=200, help="2000-event batches per (a) run"
    )
    parser.add_argument("--seconds", type=int, default=10, help="duration of the wrk runs")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="a `trackhouse serve` flag for every scenario, e.g. --server-arg=--no-journal-fsync",
    )
    args = parser.parse_args()
    SERVER_ARGS.extend(args.server_arg)
    only = set(args.only.split(","))
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if args.quick:
        args.import_requests, args.seconds, args.stored = 20, 3, min(args.stored, 200_000)

    print(f"machine: {machine()}", flush=True)
    print("building request bodies...", flush=True)
    # Only what the chosen scenarios send (the /track bodies take a while to build).
    import_payloads = [bodies.import_body(b, 2000) for b in range(args.import_requests)]
    single = (
        [bodies.track_body(b, 1, seed=1) for b in range(20_000 * args.seconds)]
        if "b" in only
        else []
    )
    batches = (
        [bodies.track_body(b, 50, seed=2) for b in range(2_500 * args.seconds)]
        if "c" in only
        else []
    )

    floors = Floors(
        import_events_per_s=_timed(lambda: bodies.import_floor(import_payloads)),
        track_events_per_s=_timed(lambda: bodies.track_floor(single[:50_000])) if single else 0.0,
        track_batch_events_per_s=(
            _timed(lambda: bodies.track_floor(batches[:2_000])) if batches else 0.0
        ),
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="trackhouse-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if single:
            floors.http_requests_per_s = http_floor(single, 64, min(args.seconds, 5), tmp)
        print(
            f"floors: gunzip+parse {floors.import_events_per_s:,.0f} ev/s; form+base64+parse "
            f"{floors.track_events_per_s:,.0f} ev/s single, "
            f"{floors.track_batch_events_per_s:,.0f} ev/s in 50s; empty ASGI app "
            f"{floors.http_requests_per_s:,.0f} req/s (64 connections) (0: not measured, "
            "no scenario needs it)",
            flush=True,
        )

        def fresh(name: str) -> Path:
            return tmp / f"data-{name}"

        for name in SCENARIOS:
            if name not in only:
                continue
            print(f"scenario {name}...", flush=True)
            if name in ("a10", "a20", "d"):
                row = import_scenario(
                    {
                        "a10": "a: /import 2000-event gzip, 10 clients",
                        "a20": "a: /import 2000-event gzip, 20 clients",
                        "d": "d: (a, 10 clients) with export + SQL running",
                    }[name],
                    fresh(name),
                    import_payloads,
                    2000,
                    20 if name == "a20" else 10,
                    readers=name == "d",
                    floor=floors.import_events_per_s,
                )
            elif name == "e":
                data_dir = prefilled(args.stored, fresh(name))
                row = import_scenario(
                    f"e: (a, 10 clients) with {args.stored:,} events stored",
                    data_dir,
                    [bodies.import_body(b, 2000, seed=5) for b in range(args.import_requests)],
                    2000,
                    10,
                    floor=floors.import_events_per_s,
                )
            elif name == "b":
                row = wrk_scenario(
                    "b: /track 1 event per request, 64 connections",
                    fresh(name),
                    single,
                    1,
                    64,
                    args.seconds,
                    f"empty app {floors.http_requests_per_s:,.0f} req/s",
                    floors.http_requests_per_s,
                    tmp,
                    per_request=True,
                )
            else:
                row = wrk_scenario(
                    "c: /track 50-event batches, 64 connections",
                    fresh(name),
                    batches,
                    50,
                    64,
                    args.seconds,
                    f"form+b64+parse {floors.track_batch_events_per_s:,.0f} ev/s",
                    floors.track_batch_events_per_s,
                    tmp,
                )
            rows.append(row)
            print(f"  {row}", flush=True)
            shutil.rmtree(fresh(name), ignore_errors=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
