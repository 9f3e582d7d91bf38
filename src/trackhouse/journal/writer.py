"""The journal: append, group commit with fsync, and the durable end the loader reads to.

Request handlers call :meth:`Journal.append_and_sync` and get their answer only after
the fsync that covers their record. One writer thread owns the open segment: it takes
every record queued while the previous fsync ran and writes them with one ``write`` and
one ``fdatasync`` (group commit), so concurrent requests share the cost of a sync.

Each process start begins a new segment; the previous last segment is first cut back
to its last valid record (the torn tail of a crash was never acknowledged).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
from pathlib import Path

from trackhouse.errors import JournalError, Unavailable
from trackhouse.journal.segments import (
    Position,
    frame,
    fsync_directory,
    list_segments,
    segment_path,
    valid_length,
)

log = logging.getLogger(__name__)


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = 64 * 1024 * 1024,
        max_backlog_bytes: int | None = None,
        first_segment: int = 1,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.max_backlog_bytes = max_backlog_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(directory)
        self._sizes: dict[int, int] = {}
        last = 0
        for number in list_segments(directory):
            path = segment_path(directory, number)
            self._sizes[number] = path.stat().st_size
            last = number
        if last:
            self._cut_torn_tail(last)
        self._segment = max(last + 1, first_segment)
        self._fd = self._open_segment(self._segment)
        self._size = 0
        self._durable = Position(self._segment, 0)
        self._loaded = Position(min(self._sizes, default=self._segment), 0)
        self._pending: list[tuple[bytes, asyncio.Future[Position]]] = []
        self._cond = threading.Condition()
        self.data_ready = threading.Condition()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    # -- write side ----------------------------------------------------------------
    async def append_and_sync(self, payload: bytes) -> Position:
        """Append one record; return once it is durable (its end position)."""
        if self._closing:
            raise Unavailable("server is shutting down")
        self._check_backlog()
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[Position] = loop.create_future()
        with self._cond:
            self._pending.append((payload, future))
            self._cond.notify()
        return await future

    def _check_backlog(self) -> None:
        if self.max_backlog_bytes is not None and self.backlog_bytes() > self.max_backlog_bytes:
            raise Unavailable("the store is behind; the journal backlog is full", retry_after=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                batch, self._pending = self._pending, []
            if not batch:
                return  # closing and drained
            self._write_batch(batch)

    def _write_batch(self, batch: list[tuple[bytes, asyncio.Future[Position]]]) -> None:
        frames = [frame(payload) for payload, _ in batch]
        total = sum(len(f) for f in frames)
        try:
            if self._size and self._size + total > self.segment_bytes:
                self._rotate()
            _write_all(self._fd, b"".join(frames))
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._undo_partial_write()
            log.error("journal write failed: %s", exc)
            error = Unavailable(
                f"could not write the journal: {exc.strerror or exc}", retry_after=5
            )
            self._resolve([(fut, error) for _, fut in batch])
            return
        results: list[tuple[asyncio.Future[Position], Position | BaseException]] = []
        for (_, fut), framed in zip(batch, frames, strict=True):
            self._size += len(framed)
            results.append((fut, Position(self._segment, self._size)))
        self._sizes[self._segment] = self._size
        with self.data_ready:
            self._durable = Position(self._segment, self._size)
            self.data_ready.notify_all()
        self._resolve(results)

    def _resolve(
        self, results: list[tuple[asyncio.Future[Position], Position | BaseException]]
    ) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(_settle, results)

    def _undo_partial_write(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:  # pragma: no cover - the disk refused even a truncate
            log.error("journal could not cut back a partial write: %s", exc)

    def _rotate(self) -> None:
        """Move on to the next segment. It is opened before the current one is let go:
        if it cannot be created (no space, no inode left), nothing changes, the batch
        fails with a 503, and a later batch tries again on an intact journal."""
        os.fsync(self._fd)
        fd = self._open_segment(self._segment + 1)
        os.close(self._fd)
        self._segment += 1
        self._fd = fd
        self._size = 0

    def _open_segment(self, number: int) -> int:
        fd = os.open(
            segment_path(self.directory, number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        try:
            fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            raise
        self._sizes[number] = 0
        return fd

    def _cut_torn_tail(self, number: int) -> None:
        path = segment_path(self.directory, number)
        good = valid_length(path)
        if good < self._sizes[number]:
            log.warning(
                "journal segment %s: dropping a torn tail of %d bytes (never acknowledged)",
                path.name,
                self._sizes[number] - good,
            )
            with path.open("r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())
            self._sizes[number] = good

    # -- read side -----------------------------------------------------------------
    @property
    def durable_end(self) -> Position:
        return self._durable

    def wait_for_data(self, after: Position, timeout: float) -> bool:
        """Block until the durable end is past ``after`` (or the timeout passes)."""
        with self.data_ready:
            if self._durable > after:
                return True
            self.data_ready.wait(timeout)
            return self._durable > after

    def release(self, loaded: Position) -> None:
        """Everything before ``loaded`` is safely in the store: drop whole old segments."""
        self._loaded = loaded
        # list(): the writer thread may add a segment to _sizes meanwhile.
        for number in [n for n in list(self._sizes) if n < loaded.segment]:
            try:
                segment_path(self.directory, number).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise JournalError(f"could not remove loaded segment {number}: {exc}") from exc
            self._sizes.pop(number, None)

    def backlog_bytes(self) -> int:
        """Journal bytes not yet loaded into the store."""
        loaded = self._loaded
        return sum(size for n, size in list(self._sizes.items()) if n >= loaded.segment) - (
            loaded.offset if loaded.segment in self._sizes else 0
        )

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            os.close(self._lock_fd)
        with self.data_ready:
            self.data_ready.notify_all()


def _settle(results: list[tuple[asyncio.Future[Position], Position | BaseException]]) -> None:
    for future, outcome in results:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise JournalError(
            f"{directory} is in use by another trackhouse process (a server is running?)"
        ) from exc
    return fd
