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
import collections
import contextlib
import logging
import pickle
import signal
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from trackhouse.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
J = TypeVar("J")

_LENGTH = struct.Struct("<Q")
STOP_TIMEOUT_S = 10.0
RESPAWN_FIRST_S = 0.5
RESPAWN_MAX_S = 30.0


class WorkerDied(Exception):
    pass


class Worker:
    """One worker process. Jobs are pipelined: a job is written as soon as it comes, and
    a reader task matches answers to jobs in order. (Waiting for each answer before
    sending the next job left the worker idle while a busy event loop got round to
    reading it: two workers then did less than the event loop alone.)"""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        on_death: Callable[[Worker], None],
    ) -> None:
        self.process = process
        self.stdin = stdin
        self.stdout = stdout
        self._on_death = on_death
        self.pending: collections.deque[asyncio.Future[tuple[bool, Any]]] = collections.deque()
        self.alive = True
        self._reader = asyncio.create_task(self._read_answers())

    async def call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        answer: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        try:
            # Both writes before any await: frames from concurrent calls never interleave.
            self.stdin.write(_LENGTH.pack(len(payload)))
            self.stdin.write(payload)
            self.pending.append(answer)
            await self.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            # RuntimeError: uvloop's answer to a write on a pipe it has seen close.
            answer.cancel()
            self._died(exc)
            raise WorkerDied(str(exc)) from exc
        except BaseException:  # cancelled while the pipe was full: nobody will wait for it
            answer.cancel()
            raise
        ok, value = await answer  # a cancelled caller leaves its answer to the reader
        if not ok:
            raise value
        return cast(T, value)

    async def _read_answers(self) -> None:
        try:
            while True:
                (length,) = _LENGTH.unpack(await self.stdout.readexactly(_LENGTH.size))
                answer = await self.stdout.readexactly(length)
                waiter = self.pending.popleft()
                if not waiter.done():
                    waiter.set_result(pickle.loads(answer))  # noqa: S301 - our own child
        except asyncio.CancelledError:
            self._died(ConnectionError("the server is stopping"))
            raise
        except Exception as exc:  # the pipe ended, or an answer that cannot be read:
            self._died(exc)  # either way no later answer can be matched to its job

    def _died(self, cause: BaseException) -> None:
        """The pipe failed: every job still waiting fails with WorkerDied."""
        if self.alive:
            self.alive = False
            log.error("ingest worker %s stopped: %s; starting another", self.process.pid, cause)
            self._on_death(self)
        while self.pending:
            waiter = self.pending.popleft()
            if not waiter.done():
                waiter.set_exception(WorkerDied(str(cause)))

    async def stop(self) -> None:
        self.alive = False  # from here on its pipe's end is expected, not an error
        self.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class WorkerPool:
    """``size`` worker processes (0: every job runs in the calling process). Jobs whose
    ``weight`` (their input's bytes) is below ``min_weight`` always run here."""

    def __init__(self, size: int, *, min_weight: int) -> None:
        self.size = size
        self.min_weight = min_weight
        self._workers: list[Worker] = []
        self._started = False
        self._spawning: set[asyncio.Task[None]] = set()
        self._closed = False
        # Wait before replacing a worker that died young (one that cannot even start
        # would otherwise be restarted in a tight loop); doubles up to RESPAWN_MAX_S.
        self._respawn_delay = 0.0
        self.jobs_in_workers = 0  # for /-/status
        self.jobs_here = 0

    async def run(self, fn: Callable[[J], T], job: J, *, weight: int, here: Callable[[], T]) -> T:
        """``fn(job)`` in a worker; or ``here()``, the same work done in this process,
        for a job lighter than ``min_weight`` or while no worker is up."""
        if self.size == 0 or weight < self.min_weight or self._closed:
            self.jobs_here += 1
            return here()
        self._start()
        live = self.workers
        if not live:  # starting
            self.jobs_here += 1
            return here()
        worker = min(live, key=lambda w: len(w.pending))
        self.jobs_in_workers += 1
        try:
            result = await worker.call(fn, (job,))
        except WorkerDied as exc:
            raise Unavailable("an ingest worker stopped; retry the request", retry_after=1) from exc
        self._respawn_delay = 0.0  # workers answer: the next death is not a start-up loop
        return result

    @property
    def workers(self) -> list[Worker]:
        """The workers running now."""
        return [worker for worker in self._workers if worker.alive]

    def _start(self) -> None:
        """Start the workers, the first time a job is heavy enough for one."""
        if not self._started:
            self._started = True
            self._in_background(self._spawn(self.size))

    def _in_background(self, spawning: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(spawning)
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    def _replace(self, worker: Worker) -> None:
        """A worker's pipe failed: make sure it is dead, and start another in its place."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        worker.stdin.close()
        if not self._closed:
            delay = self._respawn_delay
            self._respawn_delay = min(max(delay * 2, RESPAWN_FIRST_S), RESPAWN_MAX_S)
            self._in_background(self._spawn(1, delay))

    async def _spawn(self, count: int, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        for _ in range(count):
            if self._closed:
                return
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
            worker = Worker(process, process.stdin, process.stdout, self._replace)
            if self._closed:
                await worker.stop()
                return
            self._workers.append(worker)

    async def close(self) -> None:
        """Stop every worker once the jobs it has are answered."""
        self._closed = True
        for spawning in list(self._spawning):
            spawning.cancel()
        await asyncio.gather(*self._spawning, return_exceptions=True)
        workers, self._workers = self._workers, []
        await asyncio.gather(*(worker.stop() for worker in workers))


def serve() -> None:
    """A worker's life: answer jobs from stdin until it closes."""
    # The server decides when its workers stop (it closes their stdin, or dies). A Ctrl-C
    # in the terminal, or a service manager's SIGTERM to the whole group, reaches the
    # workers too: it must not kill the jobs of requests the server is still finishing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
