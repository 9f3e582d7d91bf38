"""/import throughput: 2000-event gzip batches from concurrent clients, fsync'd acks.

Starts a real server on a fresh data directory, precomputes every body (unique
$insert_ids) so the load generator does almost nothing per request, and prints:
events/s, requests/s, latency p50/p99, the ack→queryable lag, and beside them the
machine's raw floor measured in the same run on the same bodies (gunzip + JSON parse
in one process). Never fails on a timing.

    .venv/bin/python bench/import_load.py [--clients 10] [--requests 150]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.serverproc import Server, cli

from bench.common import drive, peak_rss_mb

SECRET = "bench-secret"  # noqa: S105 - a throwaway project on a temp dir


def make_body(batch: int, events: int) -> bytes:
    now = int(time.time())
    rows = [
        {
            "event": f"event {i % 20}",
            "properties": {
                "time": now - (i % 3600),
                "distinct_id": f"user-{(batch * events + i) % 50_000}",
                "$insert_id": uuid.uuid4().hex,
                "plan": "pro" if i % 3 else "free",
                "price": i * 0.5,
                "$browser": "Chrome",
                "$os": "Linux",
                "$current_url": f"https://example.com/page/{i % 100}",
                "tags": ["a", "b"],
            },
        }
        for i in range(events)
    ]
    return gzip.compress(orjson.dumps(rows), compresslevel=6)


def floor_events_per_second(bodies: list[bytes], events: int) -> float:
    start = time.perf_counter()
    for body in bodies:
        orjson.loads(zlib.decompress(body, 47))
    return len(bodies) * events / (time.perf_counter() - start)


def run(clients: int, requests: int, events: int, fsync: bool) -> dict[str, float]:
    bodies = [make_body(b, events) for b in range(requests)]
    raw_floor = floor_events_per_second(bodies, events)
    with tempfile.TemporaryDirectory(prefix="trackhouse-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        cli(data_dir, "projects", "create", "bench", "--secret", SECRET)
        server = Server(data_dir, args=[] if fsync else ["--no-journal-fsync"]).start()
        try:
            auth = "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()
            elapsed, latencies = drive(
                server,
                "/import?strict=1",
                bodies,
                {
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                    "Authorization": auth,
                },
                clients,
                lambda status, body: status == 200,
            )
            acked = time.perf_counter()
            server.wait_loaded(timeout=120)
            lag = time.perf_counter() - acked
            status = json.loads(urllib.request.urlopen(server.url + "/-/status").read())
            rss_mb = peak_rss_mb(server)
        finally:
            server.stop()
    total = requests * events
    return {
        "events_per_s": total / elapsed,
        "requests_per_s": requests / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "lag_after_last_ack_s": lag,
        "events_loaded": status["events_loaded"],
        "server_rss_mb": rss_mb,
        "raw_floor_events_per_s": raw_floor,
        "ratio_to_floor": (total / elapsed) / raw_floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores; {args.clients} clients x {args.requests} requests x {args.events} events, fsync={'off' if args.no_fsync else 'on'}"
    )
    result = run(args.clients, args.requests, args.events, not args.no_fsync)
    for key, value in result.items():
        print(f"  {key:<26} {value:,.2f}")


if __name__ == "__main__":
    main()
