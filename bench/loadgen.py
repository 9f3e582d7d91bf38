"""The load generators: wrk (compiled, Debian's package) for the many small requests,
and Python keep-alive clients for the few big /import batches (at ~50 requests/s, they
cost the machine nothing measurable). Both send precomputed bodies, each once."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.serverproc import free_port

LUA = Path(__file__).with_name("wrk_bodies.lua")
REPO = Path(__file__).resolve().parents[1]

# The floor of the HTTP stack: bench/empty_app.py as trackhouse serves (uvicorn, httptools,
# uvloop, no access log).
EMPTY_APP = [
    "-m", "uvicorn", "bench.empty_app:app", "--loop", "uvloop", "--http", "httptools",
    "--no-access-log", "--log-level", "warning", "--no-server-header",
]  # fmt: skip


@contextmanager
def asgi_server(argv: list[str]) -> Iterator[str]:
    """``python <argv> --port P`` run from the repository; yields its URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *argv, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Load:
    requests: int
    seconds: float
    latencies_ms: list[float]  # sorted; empty when wrk measured (it reports percentiles)
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx replies, connection errors, timeouts
    repeated: int  # bodies sent a second time (wrk ran out of unique bodies)


def write_bodies(directory: Path, bodies: list[bytes]) -> tuple[Path, Path]:
    blob, index = directory / "bodies.bin", directory / "bodies.idx"
    offset = 0
    with blob.open("wb") as data, index.open("w") as lines:
        for body in bodies:
            data.write(body)
            lines.write(f"{offset} {len(body)}\n")
            offset += len(body)
    return blob, index


def wrk(
    url: str,
    path: str,
    bodies: list[bytes],
    headers: dict[str, str],
    *,
    connections: int,
    seconds: int,
    workdir: Path,
) -> Load:
    """One wrk thread (it keeps up with tens of thousands of requests/s and leaves the
    second core to the server) over ``connections`` keep-alive connections."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: run scripts/bench (it apt-get installs wrk)")
    blob, index = write_bodies(workdir, bodies)
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(blob),
        str(index),
        path,
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(
        result[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return Load(
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        latencies_ms=[],
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=errors,
        repeated=result["wrapped"],
    )


def keepalive_clients(
    host: str, port: int, path: str, bodies: list[bytes], headers: dict[str, str], clients: int
) -> Load:
    """POST every body once from ``clients`` keep-alive connections."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    queue = list(reversed(range(len(bodies))))

    def client() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop()
                started = time.perf_counter()
                conn.request("POST", path, body=bodies[index], headers=headers)
                reply = conn.getresponse()
                reply.read()
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took * 1000)
                    errors += reply.status != 200
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    return Load(
        requests=len(latencies),
        seconds=seconds,
        latencies_ms=latencies,
        p50_ms=latencies[len(latencies) // 2],
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        errors=errors,
        repeated=0,
    )
