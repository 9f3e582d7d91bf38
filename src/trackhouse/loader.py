"""The loader: journal → store, exactly once.

One thread reads records from the store's checkpoint up to the journal's durable end,
turns them into one columnar batch and hands it to the store with the position it ends
at; the store commits rows and checkpoint together. Only then may the journal drop
segments the checkpoint has passed. If the store fails, the loader backs off and tries
the same records again: the journal keeps them, and its backlog bound turns into 503s
at the API if the store stays down.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields

import pyarrow as pa

from trackhouse.errors import StorageError
from trackhouse.journal import Journal, Position, read_range
from trackhouse.journal.records import (
    DeletionRecord,
    EventRecord,
    EventTableRecord,
    UpdateRecord,
    decode,
)
from trackhouse.malloc import release_free_memory
from trackhouse.storage.base import Deleted, EventBatch, Store, UpdateBatch

log = logging.getLogger(__name__)

READ_BYTES_PER_BATCH = 64 * 1024 * 1024
KEPT_DELETIONS = 1000


@dataclass
class LoaderStats:
    batches: int = 0
    events_loaded: int = 0
    duplicates_dropped: int = 0
    last_lag_ms: int = 0
    errors: int = 0
    last_error: str | None = None


class Loader:
    def __init__(
        self,
        journal: Journal,
        store: Store,
        *,
        batch_events: int,
        idle_ms: int,
        interval_ms: int = 0,
    ) -> None:
        self.journal = journal
        self.store = store
        self.batch_events = batch_events
        self.idle_s = idle_ms / 1000
        self.interval_s = interval_ms / 1000
        self.stats = LoaderStats()
        start = store.checkpoint()
        self._position = start if start is not None else Position(0, 0)
        journal.release(self._position)
        self._progress = threading.Condition()
        # Outcomes of the latest deletions, by the end of their record (for the
        # requests waiting on them).
        self.deletions: dict[Position, Deleted] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def position(self) -> Position:
        return self._position

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after loading everything already durable (a graceful drain)."""
        self._stop.set()
        with self.journal.data_ready:
            self.journal.data_ready.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        backoff = 0.1
        busy = False
        next_start = 0.0
        while True:
            # While data keeps arriving, a load starts at most every interval_s. Each
            # load is a store transaction with a fixed cost, and it holds the interpreter
            # lock the request handlers need: a load per group commit (hundreds a second
            # under one-event /track) costs the API far more than it saves in lag. After
            # an idle spell, or when a full batch left more waiting, it starts at once.
            pause = next_start - time.monotonic()
            if busy and pause > 0:
                self._stop.wait(pause)  # stopping cuts it short: drain at once
            next_start = time.monotonic() + self.interval_s
            try:
                loaded, behind = self._load()
            except Exception as exc:  # the loader must outlive any one failure
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                if isinstance(exc, StorageError):
                    log.error("loader: %s (retrying in %.1fs)", exc, backoff)
                else:
                    log.exception("loader: unexpected error (retrying in %.1fs)", backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if loaded:
                busy = True
                if behind:
                    next_start = 0.0
                continue
            if self._stop.is_set():
                return
            if busy:  # caught up after a burst: hand back what the burst freed
                release_free_memory()
                busy = False
            self.journal.wait_for_data(self._position, self.idle_s)

    def load_once(self) -> int:
        """Load one batch from the checkpoint; the number of journal records loaded."""
        return self._load()[0]

    def _load(self) -> tuple[int, bool]:
        """Load one batch: the number of journal records loaded, and whether the batch
        stopped short of what was durable when it began (more is waiting)."""
        end = self.journal.durable_end
        if end <= self._position:
            return 0, False
        records = read_range(self.journal.directory, self._position, end, READ_BYTES_PER_BATCH)
        if not records:
            # Nothing valid before the durable end (empty segments from restarts, or a
            # torn tail): move past it in memory, or the loader would spin on it. The
            # stored checkpoint may stay behind; re-reading nothing is harmless.
            with self._progress:
                self._position = end
                self._progress.notify_all()
            self.journal.release(end)
            return 0, False
        events = EventBatch([], [], [], [], [], [], [], [], [])
        updates = UpdateBatch([], [], [], [], [], [], [], [], [], [], [], [], [])
        taken = 0
        oldest_received = None
        for record in records:
            content = decode(record.payload)
            if isinstance(content, DeletionRecord):
                if taken:  # load what came before it first: the deletion covers it
                    break
                self._delete(content, record.end)
                return 1, record.end < end
            taken += 1
            if isinstance(content, EventRecord):
                _add_events(events, content)
            elif isinstance(content, EventTableRecord):
                # Journal order matters: of two copies of an event in one batch the
                # store keeps the first. Rows listed so far go ahead as a table.
                _seal_rows(events)
                events.tables.append(_event_columns(content))
            elif isinstance(content, UpdateRecord):
                _add_updates(updates, content, record.position)
            if content is not None and oldest_received is None:
                oldest_received = content.received_ms
            if len(events) + len(updates) >= self.batch_events:
                break
        checkpoint = records[taken - 1].end
        added = self.store.write_batch(events, updates, checkpoint)
        self._advance(checkpoint, len(events), added, oldest_received)
        return taken, checkpoint < end

    def _delete(self, record: DeletionRecord, end: Position) -> None:
        deleted = self.store.delete_users(record.project_id, record.distinct_ids, end)
        log.info(
            "deleted %d events, %d profiles of %d users in project %d",
            deleted.events,
            deleted.profiles,
            len(record.distinct_ids),
            record.project_id,
        )
        with self._progress:
            self.deletions[end] = deleted
            while len(self.deletions) > KEPT_DELETIONS:
                del self.deletions[next(iter(self.deletions))]
        self._advance(end, 0, 0, record.received_ms)

    def deleted(self, end: Position) -> Deleted | None:
        """What the deletion record ending at ``end`` deleted, once it is applied."""
        with self._progress:
            return self.deletions.get(end)

    def _advance(
        self, checkpoint: Position, offered: int, added: int, oldest_received: int | None
    ) -> None:
        self.stats.batches += 1
        self.stats.events_loaded += added
        self.stats.duplicates_dropped += offered - added
        if oldest_received is not None:
            lag = int(time.time() * 1000) - oldest_received
            self.stats.last_lag_ms = lag
        with self._progress:
            self._position = checkpoint
            self._progress.notify_all()
        self.journal.release(checkpoint)

    def catch_up(self) -> None:
        """Load everything durable now (used at start-up of offline commands)."""
        while self.load_once():
            pass

    def wait_until_loaded(self, target: Position, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._position < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True


def _add_events(columns: EventBatch, record: EventRecord) -> None:
    rows = record.rows
    columns.project_id.extend(r[0] for r in rows)
    columns.event.extend(r[1] for r in rows)
    columns.distinct_id.extend(r[2] for r in rows)
    columns.time_ms.extend(r[3] for r in rows)
    columns.insert_id.extend(r[4] for r in rows)
    columns.properties.extend(r[5] for r in rows)
    columns.lib.extend(r[6] for r in rows)
    columns.received_ms.extend([record.received_ms] * len(rows))
    columns.endpoint.extend([record.endpoint] * len(rows))


_BATCH_COLUMNS = tuple(f.name for f in fields(EventBatch) if f.name != "tables")


def _seal_rows(batch: EventBatch) -> None:
    """Move the rows listed so far into ``batch.tables``, which the store takes in
    order before any rows listed after (so journal order holds across record kinds)."""
    if not batch.event:
        return
    batch.tables.append(pa.table({name: getattr(batch, name) for name in _BATCH_COLUMNS}))
    for name in _BATCH_COLUMNS:
        getattr(batch, name).clear()


def _event_columns(record: EventTableRecord) -> pa.Table:
    """A columnar record as the batch's columns: its own, and its received time and
    endpoint repeated, in EventBatch's order."""
    table = record.table
    rows = table.num_rows
    columns = {name: table.column(name) for name in table.column_names}
    columns["received_ms"] = pa.repeat(pa.scalar(record.received_ms, pa.int64()), rows)
    columns["endpoint"] = pa.repeat(pa.scalar(record.endpoint, pa.string()), rows)
    return pa.Table.from_arrays(
        [columns[name] for name in _BATCH_COLUMNS], names=list(_BATCH_COLUMNS)
    )


def _add_updates(columns: UpdateBatch, record: UpdateRecord, position: Position) -> None:
    for seq, row in enumerate(record.rows):
        columns.project_id.append(row[0])
        columns.kind.append(row[1])
        columns.distinct_id.append(row[2])
        columns.group_key.append(row[3])
        columns.group_id.append(row[4])
        columns.operation.append(row[5])
        columns.value.append(row[6])
        columns.modifiers.append(row[7])
        columns.time_ms.append(row[8])
        columns.received_ms.append(record.received_ms)
        columns.segment.append(position.segment)
        columns.offset.append(position.offset)
        columns.seq.append(seq)
