"""Ingest worker processes: the per-event work of large requests, beside the event loop.

One Python process runs its request handling on one thread: decoding and validating a
2000-event /import body holds the event loop (and the interpreter lock the loader and
journal threads also need) for tens of milliseconds. A :class:`WorkerPool` hands such
work (a picklable function and its arguments, e.g. :func:`trackhouse.prepare.prepare_import`)
to child processes and awaits their answer without blocking the loop, so that the
machine's other cores do it.

A worker is ``python -m trackhouse.workers``, talking over its stdin and stdout: each
message is an 8-byte length and a pickle (the pipe joins two processes of the same
server, nothing else can write to it). It exits when its stdin closes, which is also
what happens when the server dies, however it dies: no worker outlives its server.

Small jobs run in the calling process (a round trip costs more than they do), as do all
jobs until the workers have started, which happens at the first large job: a server
that never receives one never starts a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

from trackhouse.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_LENGTH = struct.Struct("<Q")
STOP_TIMEOUT_S = 10.0


class WorkerDied(Exception):
    pass


class Worker:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
    ) -> None:
        self.process = process
        self.stdin = stdin
        self.stdout = stdout
        # Between sending a job and reading its whole answer: a call cut short there
        # (cancelled) leaves an answer in the pipe that the next call would read.
        self.mid_call = False

    async def call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        self.mid_call = True
        try:
            self.stdin.write(_LENGTH.pack(len(payload)))
            self.stdin.write(payload)
            await self.stdin.drain()
            (length,) = _LENGTH.unpack(await self.stdout.readexactly(_LENGTH.size))
            answer = await self.stdout.readexactly(length)
        except (ConnectionError, asyncio.IncompleteReadError, RuntimeError) as exc:
            # RuntimeError: uvloop's answer to a write on a pipe it has seen close.
            raise WorkerDied(f"ingest worker {self.process.pid} stopped: {exc}") from exc
        self.mid_call = False
        ok, value = pickle.loads(answer)  # noqa: S301 - our own child wrote it
        if not ok:
            raise value
        return cast(T, value)

    async def stop(self) -> None:
        self.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class WorkerPool:
    """``size`` worker processes (0: every job runs in the calling process). Jobs whose
    ``weight`` (their input's bytes) is below ``min_weight`` always run here."""

    def __init__(self, size: int, *, min_weight: int) -> None:
        self.size = size
        self.min_weight = min_weight
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._workers: set[Worker] = set()
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self.jobs_in_workers = 0  # for /-/status
        self.jobs_here = 0

    async def run(self, fn: Callable[..., T], *args: Any, weight: int) -> T:
        if self.size == 0 or weight < self.min_weight or self._closed or not self._start():
            self.jobs_here += 1
            return fn(*args)
        worker = await self._idle.get()
        self.jobs_in_workers += 1
        try:
            result = await worker.call(fn, args)
        except WorkerDied as exc:
            log.error("%s; starting another", exc)
            self._replace(worker)
            raise Unavailable("an ingest worker stopped; retry the request", retry_after=1) from exc
        except BaseException:  # the job's own error, or the call was cancelled
            if worker.mid_call:
                self._replace(worker)
            else:
                self._idle.put_nowait(worker)
            raise
        self._idle.put_nowait(worker)
        return result

    def _replace(self, worker: Worker) -> None:
        """Kill a worker whose pipe can no longer be trusted, and start another."""
        self._workers.discard(worker)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        if not self._closed:
            self._starting = asyncio.create_task(self._spawn(1))

    @property
    def workers(self) -> list[Worker]:
        """The workers running now."""
        return list(self._workers)

    def _start(self) -> bool:
        """Whether the workers are up; the first call starts them."""
        if self._starting is None:
            self._starting = asyncio.create_task(self._spawn(self.size))
        return bool(self._workers)

    async def _spawn(self, count: int) -> None:
        for _ in range(count):
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "trackhouse.workers",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            except OSError as exc:  # no memory, no processes left: jobs run here meanwhile
                log.error("could not start an ingest worker: %s", exc)
                return
            if process.stdin is None or process.stdout is None:  # pragma: no cover - PIPE
                raise RuntimeError("an ingest worker started without its pipes")
            worker = Worker(process, process.stdin, process.stdout)
            if self._closed:
                await worker.stop()
                return
            self._workers.add(worker)
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        """Stop every worker once its current job is answered."""
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        workers, self._workers = list(self._workers), set()
        await asyncio.gather(*(worker.stop() for worker in workers))


def serve() -> None:
    """A worker's life: answer jobs from stdin until it closes."""
    # The server decides when its workers stop (it closes their stdin); a Ctrl-C in the
    # terminal reaches the whole process group, and must not kill a job half done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    while True:
        head = source.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return  # the server closed our stdin, or died
        (length,) = _LENGTH.unpack(head)
        fn, args = pickle.loads(source.read(length))  # noqa: S301 - our own server
        try:
            answer = pickle.dumps((True, fn(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # the job's own refusal (e.g. invalid JSON): the caller's
            try:
                answer = pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # an exception that does not pickle
                answer = pickle.dumps((False, RuntimeError(repr(exc))))
        sink.write(_LENGTH.pack(len(answer)))
        sink.write(answer)
        sink.flush()


if __name__ == "__main__":
    serve()
