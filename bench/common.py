"""Shared by the benchmarks: drive precomputed bodies at a server, read its peak RSS."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.serverproc import Server


def drive(
    server: Server,
    path: str,
    bodies: list[bytes],
    headers: dict[str, str],
    clients: int,
    accepted: Callable[[int, bytes], bool],
) -> tuple[float, list[float]]:
    """POST every body once from ``clients`` keep-alive connections; the wall time and
    each request's latency (sorted), in seconds. A reply ``accepted`` refuses stops it."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(range(len(bodies)))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                index = queue.pop()
            t0 = time.perf_counter()
            conn.request("POST", path, body=bodies[index], headers=headers)
            reply = conn.getresponse()
            body = reply.read()
            if not accepted(reply.status, body):
                raise RuntimeError(f"{path} failed: {reply.status} {body[:200]!r}")
            with lock:
                latencies.append(time.perf_counter() - t0)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, sorted(latencies)


def peak_rss_mb(server: Server) -> float:
    if server.process is None:
        return 0.0
    try:
        status = Path(f"/proc/{server.process.pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
