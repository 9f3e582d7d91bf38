"""The store contract. DuckDB implements it now; ClickHouse will too.

One writer (the loader) calls :meth:`Store.write_events` with a columnar batch and the
journal position the batch ends at; the store records that position *in the same
transaction* as the rows, so a crash can never load a batch twice or lose it. Readers
may call the read methods from any thread.

Deduplication (spec §7) is the store's job: a row whose key
(project, event, distinct_id, time to the second, $insert_id) is already stored is not
stored again, however long ago the first copy arrived.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from trackhouse.journal.segments import Position


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Columns of events to store; every list has the same length."""

    project_id: list[int]
    event: list[str]
    distinct_id: list[str]
    time_ms: list[int]
    insert_id: list[str]
    properties: list[str]
    received_ms: list[int]
    endpoint: list[str]
    lib: list[str | None]

    def __len__(self) -> int:
        return len(self.event)


@dataclass(frozen=True, slots=True)
class UpdateBatch:
    """Columns of profile updates, in arrival order; every list has the same length.
    (segment, offset, seq) is where each came from in the journal: its order and key."""

    project_id: list[int]
    kind: list[str]
    distinct_id: list[str | None]
    group_key: list[str | None]
    group_id: list[str | None]
    operation: list[str]
    value: list[str]
    modifiers: list[str]
    time_ms: list[int]
    received_ms: list[int]
    segment: list[int]
    offset: list[int]
    seq: list[int]

    def __len__(self) -> int:
        return len(self.operation)


@dataclass(frozen=True, slots=True)
class ExportQuery:
    project_id: int
    from_ms: int  # inclusive
    to_ms: int  # exclusive
    events: Sequence[str] | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class ExportRow:
    event: str
    distinct_id: str
    time_ms: int
    insert_id: str
    properties: str  # JSON object text


class Store(Protocol):
    def checkpoint(self) -> Position | None:
        """Where in the journal the last stored batch ended; None for a new store."""

    def write_batch(self, events: EventBatch, updates: UpdateBatch, checkpoint: Position) -> int:
        """Store events (deduplicated), profile updates and the checkpoint atomically;
        returns the number of events added (duplicates are not)."""

    def export(self, query: ExportQuery) -> Iterator[list[ExportRow]]:
        """Matching events in time order, in chunks (never the whole result at once)."""

    def close(self) -> None: ...
