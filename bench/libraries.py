"""The library choices on the hot path, measured side by side on the benchmark's own bodies:
JSON parsers (orjson, msgspec, the stdlib), gunzip (zlib, isal), and HTTP server stacks
serving the same empty ASGI app (uvicorn with httptools or h11, granian), driven by wrk.

    scripts/bench --libraries        # or: .venv/bin/python -m bench.libraries

msgspec, isal and granian come with the development install (scripts/install). Prints one
table per choice; never fails on a timing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson
from isal import isal_zlib

from bench import bodies
from bench.loadgen import EMPTY_APP, asgi_server, wrk

REPO = Path(__file__).resolve().parents[1]


def _rate(work: Callable[[], int], repeat: int = 3) -> float:
    """Best of ``repeat``: units per second."""
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        units = work()
        best = max(best, units / (time.perf_counter() - started))
    return best


def json_parsers(raw: list[bytes]) -> dict[str, float]:
    decoder = msgspec.json.Decoder()
    return {
        "orjson.loads": _rate(lambda: sum(len(orjson.loads(b)) for b in raw)),
        "msgspec.json.Decoder().decode": _rate(lambda: sum(len(decoder.decode(b)) for b in raw)),
        "json.loads (stdlib)": _rate(lambda: sum(len(json.loads(b)) for b in raw), repeat=1),
    }


def gunzippers(payloads: list[bytes], events: int) -> dict[str, float]:
    return {
        "zlib.decompress(wbits=47)": _rate(
            lambda: len(payloads) * events * bool([zlib.decompress(p, 47) for p in payloads])
        ),
        "isal_zlib.decompress(wbits=47)": _rate(
            lambda: len(payloads) * events * bool([isal_zlib.decompress(p, 47) for p in payloads])
        ),
        "gzip.decompress": _rate(
            lambda: len(payloads) * events * bool([gzip.decompress(p) for p in payloads])
        ),
    }


SERVERS = {
    "uvicorn + httptools + uvloop": EMPTY_APP,
    "uvicorn + h11 + uvloop": [
        "-m", "uvicorn", "bench.empty_app:app", "--loop", "uvloop", "--http", "h11",
        "--no-access-log", "--log-level", "warning",
    ],
    "granian (1 worker, asgi)": [
        "-m", "granian", "--interface", "asgi", "--workers", "1", "bench.empty_app:app",
    ],
}  # fmt: skip


def http_stacks(payloads: list[bytes], seconds: int, workdir: Path) -> dict[str, float]:
    results = {}
    for name, argv in SERVERS.items():
        with asgi_server(argv) as url:
            load = wrk(
                url, "/track/", payloads, {"Content-Type": "application/x-www-form-urlencoded"},
                connections=64, seconds=seconds, workdir=workdir,
            )  # fmt: skip
            results[name] = load.requests / load.seconds
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    payloads = [bodies.import_body(b, 2000) for b in range(40)]
    raw = [zlib.decompress(p, 47) for p in payloads]
    print(f"JSON parse of /import bodies (2000 events, {len(raw[0]) >> 10} KiB each), events/s:")
    for name, rate in json_parsers(raw).items():
        print(f"  {name:<34} {rate:>12,.0f}")
    print("gunzip of the same bodies, events/s:")
    for name, rate in gunzippers(payloads, 2000).items():
        print(f"  {name:<34} {rate:>12,.0f}")
    print("empty ASGI app, one process, wrk 64 connections, 1-event /track bodies, requests/s:")
    single = [bodies.track_body(b, 1, seed=9) for b in range(200_000)]
    with tempfile.TemporaryDirectory(prefix="trackhouse-bench-") as tmp:
        for name, rate in http_stacks(single, args.seconds, Path(tmp)).items():
            print(f"  {name:<34} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
