"""The store contract. DuckDB implements it now; ClickHouse will too.

One writer (the loader) calls :meth:`Store.write_events` with a columnar batch and the
journal position the batch ends at; the store records that position *in the same
transaction* as the rows, so a crash can never load a batch twice or lose it. Readers
may call the read methods from any thread.

Deduplication (spec §7) is the store's job: a row whose key
(project, event, distinct_id, time to the second, $insert_id) is already stored is not
stored again, however long ago the first copy arrived.

Profile updates are the store's job too: it keeps them, and folds each one into its
profile with :func:`trackhouse.ingest.profile_ops.apply_update`, in journal order, in
the same transaction as the checkpoint. An update at a position the checkpoint has
passed is never applied again, so a replay after a crash cannot double an ``$add``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from trackhouse.journal.segments import Position
from trackhouse.query.where import Expr


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Columns of events to store; every list has the same length. More events may come
    already columnar, in ``tables``: Arrow tables with these same columns, in this order
    (large requests are journaled columnar). The batch's order, which decides which of
    two copies of an event is kept, is the tables' rows in turn, then the lists'."""

    project_id: list[int]
    event: list[str]
    distinct_id: list[str]
    time_ms: list[int]
    insert_id: list[str]
    properties: list[str]
    received_ms: list[int]
    endpoint: list[str]
    lib: list[str | None]
    tables: list[pa.Table] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event) + sum(int(table.num_rows) for table in self.tables)


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
    where: Expr | None = None  # properties["time"] is in seconds, as export prints it


@dataclass(frozen=True, slots=True)
class ExportRow:
    event: str
    distinct_id: str
    time_ms: int
    insert_id: str
    properties: str  # JSON object text


USERS = ""  # the group_key of user profiles


@dataclass(frozen=True, slots=True)
class ProfileQuery:
    """Profiles of one project: users (group_key ``""``) or one group key's groups."""

    project_id: int
    group_key: str = USERS
    ids: Sequence[str] | None = None  # only these distinct_ids / group_ids
    where: Expr | None = None


@dataclass(frozen=True, slots=True)
class ProfileRow:
    profile_id: str  # $distinct_id, or $group_id
    properties: str  # JSON object text


@dataclass(frozen=True, slots=True)
class SqlResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows than max_rows matched


@dataclass(frozen=True, slots=True)
class PropertyShape:
    name: str
    type: str  # string | number | boolean | list | object | null
    count: int  # events that had this property with this type
    first_seen_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class EventShape:
    """One event name of a project's schema (its Lexicon entry)."""

    event: str
    count: int
    first_seen_ms: int
    last_seen_ms: int
    properties: list[PropertyShape]  # most frequent first


@dataclass(frozen=True, slots=True)
class Activity:
    """Events that arrived in a time window: per minute, and the most frequent names."""

    per_minute: list[tuple[int, int]]  # (minute start ms, events); minutes with none left out
    top_events: list[tuple[str, int]]  # (name, events), most first


@dataclass(frozen=True, slots=True)
class Deleted:
    events: int = 0
    profiles: int = 0
    profile_updates: int = 0


class Store(Protocol):
    def checkpoint(self) -> Position | None:
        """Where in the journal the last stored batch ended; None for a new store."""

    def write_batch(self, events: EventBatch, updates: UpdateBatch, checkpoint: Position) -> int:
        """Store events (deduplicated), profile updates and the checkpoint atomically;
        returns the number of events added (duplicates are not)."""

    def export(self, query: ExportQuery) -> Iterator[list[ExportRow]]:
        """Matching events in time order, in chunks (never the whole result at once)."""

    def count_profiles(self, query: ProfileQuery) -> int: ...

    def profiles(
        self, query: ProfileQuery, *, after: str | None = None, offset: int = 0, limit: int | None
    ) -> Iterator[list[ProfileRow]]:
        """Matching profiles ordered by id, from the first id greater than ``after``
        (skipping ``offset`` more), in chunks."""

    def run_sql(self, project_id: int, sql: str, *, max_rows: int, timeout_s: float) -> SqlResult:
        """One read-only SELECT over the project's own ``events``, ``profiles`` and
        ``group_profiles``; anything else (another project's rows, writes, files) is
        refused with SqlRefused, and so is a query running past ``timeout_s``."""

    def delete_users(
        self, project_id: int, distinct_ids: Sequence[str], checkpoint: Position
    ) -> Deleted:
        """Delete the users' events, user profiles and kept profile updates, and the
        events from the schema counts, atomically with the checkpoint."""

    def expire(self, project_id: int, before_ms: int) -> int:
        """Delete the project's events whose time is before ``before_ms`` (retention);
        the number deleted."""

    def schema(self, project_id: int, *, limit: int) -> list[EventShape]:
        """The project's event names (the ``limit`` most frequent, most first), each with
        the properties and types it has arrived with; every stored event counted once."""

    def activity(self, project_id: int, from_ms: int, to_ms: int, *, top: int) -> Activity:
        """Events received (by arrival time) in [from_ms, to_ms)."""

    def close(self) -> None: ...
