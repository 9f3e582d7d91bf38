"""What the server does during a scenario: CPU and peak RSS of its process and its
ingest workers, and the lag from acknowledgement to queryable, sampled from outside
(/proc and /-/status) so the measurement costs the server almost nothing."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.serverproc import Server

SAMPLE_S = 0.1
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """The process's child processes (the server's ingest workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


Position = tuple[int, int]  # (journal segment, offset), as /-/status reports it


def _positions(server: Server) -> tuple[Position, Position]:
    """(durable end of the journal, the loader's committed position)."""
    with urllib.request.urlopen(server.url + "/-/status", timeout=10) as reply:
        status = json.loads(reply.read())
    durable, loaded = status["journal_durable_end"], status["loaded_position"]
    return (int(durable[0]), int(durable[1])), (int(loaded[0]), int(loaded[1]))


@dataclass
class Probe:
    """Started before the load, stopped after it: every SAMPLE_S it notes how far the
    journal is durable (everything acknowledged by then is inside); the lag of a sample
    is the time until the loader's committed position passes it (the loader commits
    rows and position in one transaction: that is when they become queryable)."""

    server: Server
    lags: list[float] = field(default_factory=list)
    _pending: list[tuple[float, Position]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cpu_start: dict[int, float] = field(default_factory=dict)  # by pid
    _cpu_last: dict[int, float] = field(default_factory=dict)
    _wall_start: float = 0.0
    cpu_cores: float = 0.0
    _peak_rss: dict[int, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def _processes(self) -> list[int]:
        return [self.pid, *children(self.pid)]

    def _note_processes(self) -> None:
        """CPU and peak RSS of the server and its workers (which start mid-run, and
        whose figures must be read before they exit)."""
        for pid in self._processes():
            try:
                self._cpu_last[pid] = cpu_seconds(pid)
                self._peak_rss[pid] = peak_rss_mb(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue

    def start(self) -> Probe:
        for pid in self._processes():
            self._cpu_start[pid] = cpu_seconds(pid)
        self._wall_start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="bench-probe", daemon=True)
        self._thread.start()
        return self

    def _sample(self, *, note: bool) -> None:
        durable, loaded = _positions(self.server)
        now = time.perf_counter()
        if note and (not self._pending or self._pending[-1][1] != durable):
            self._pending.append((now, durable))
        while self._pending and loaded >= self._pending[0][1]:
            self.lags.append(now - self._pending.pop(0)[0])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample(note=True)
            self._note_processes()
            self._stop.wait(SAMPLE_S)

    def stop(self, settle_timeout: float = 300.0) -> None:
        """End of the load: CPU is measured to here; then wait for the loader to pass
        every sampled position."""
        self._note_processes()
        used = sum(cpu - self._cpu_start.get(pid, 0.0) for pid, cpu in self._cpu_last.items())
        self.cpu_cores = used / (time.perf_counter() - self._wall_start)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(note=True)
        deadline = time.perf_counter() + settle_timeout
        while self._pending and time.perf_counter() < deadline:
            time.sleep(SAMPLE_S / 2)
            self._sample(note=False)
        if self._pending:
            raise RuntimeError(f"the loader did not catch up within {settle_timeout}s")

    def lag_p95(self) -> float:
        if not self.lags:
            return 0.0
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]

    def peak_rss_mb(self) -> float:
        """The server's peak plus each worker's: an upper bound of their peak together."""
        self._note_processes()
        return sum(self._peak_rss.values())
