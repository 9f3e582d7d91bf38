"""/engage throughput: 2000-update batches ($set, $add, $union mixed over 20,000
profiles) from concurrent clients, fsync'd acks, and how fast the loader folds them.

Prints updates/s acknowledged, p50/p99 latency, the time from the last ack until every
update is folded into its profile (and that rate), and the raw floor measured in the
same run on the same bodies (form-decode + JSON parse in one process). Never fails on a
timing.

    .venv/bin/python -m bench.profile_load [--clients 8] [--requests 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.serverproc import Server, cli, query_profiles

from bench.loadgen import keepalive_clients
from bench.probe import peak_rss_mb

TOKEN, SECRET = "bench-token", "bench-secret"
PROFILES = 20_000


def make_body(batch: int, updates: int) -> bytes:
    rows = []
    for i in range(updates):
        n = batch * updates + i
        base: dict[str, object] = {"$token": TOKEN, "$distinct_id": f"user-{n % PROFILES}"}
        kind = n % 3
        if kind == 0:
            base["$set"] = {"plan": "pro" if n % 2 else "free", "seen": n, "$city": "Berlin"}
        elif kind == 1:
            base["$add"] = {"logins": 1, "spent": 0.5}
        else:
            base["$union"] = {"tags": [f"t{n % 7}", f"t{n % 5}"]}
        rows.append(base)
    return urllib.parse.urlencode({"data": orjson.dumps(rows).decode()}).encode()


def floor_updates_per_second(bodies: list[bytes], updates: int) -> float:
    start = time.perf_counter()
    for body in bodies:
        orjson.loads(urllib.parse.parse_qs(body.decode())["data"][0])
    return len(bodies) * updates / (time.perf_counter() - start)


def run(clients: int, requests: int, updates: int) -> dict[str, float]:
    bodies = [make_body(b, updates) for b in range(requests)]
    floor = floor_updates_per_second(bodies, updates)
    with tempfile.TemporaryDirectory(prefix="trackhouse-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        cli(data_dir, "projects", "create", "bench", "--token", TOKEN, "--secret", SECRET)
        server = Server(data_dir).start()
        try:
            load = keepalive_clients(
                "127.0.0.1",
                server.port,
                "/engage",
                bodies,
                {"Content-Type": "application/x-www-form-urlencoded"},
                clients,
            )
            if load.errors:
                raise RuntimeError(f"{load.errors} requests failed")
            elapsed = load.seconds
            acked = time.perf_counter()
            server.wait_loaded(timeout=600)
            fold_s = time.perf_counter() - acked
            total_profiles = query_profiles(server, SECRET, page_size="1").json()["total"]
            assert server.process is not None
            rss = peak_rss_mb(server.process.pid)
        finally:
            server.stop()
    total = requests * updates
    return {
        "updates_per_s_acked": total / elapsed,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "fold_after_last_ack_s": fold_s,
        "updates_per_s_folded": total / (elapsed + fold_s),
        "profiles": total_profiles,
        "server_peak_rss_mb": rss,
        "raw_floor_updates_per_s": floor,
        "ratio_to_floor": (total / elapsed) / floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--updates", type=int, default=2000)
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores; {args.clients} clients x {args.requests} requests "
        f"x {args.updates} updates over {PROFILES:,} profiles, fsync on"
    )
    for key, value in run(args.clients, args.requests, args.updates).items():
        print(f"  {key:<26} {value:,.2f}")


if __name__ == "__main__":
    main()
