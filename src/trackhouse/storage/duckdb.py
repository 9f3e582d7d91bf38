"""The embedded store: one DuckDB file.

The loader owns the write connection (one writer, as DuckDB wants); readers use their
own cursors, which see committed data only. Driver errors leave this module as
:class:`~trackhouse.errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from trackhouse.errors import StorageError
from trackhouse.ingest.profile_ops import Profile, apply_update
from trackhouse.journal.records import EVENT_COLUMNS
from trackhouse.journal.segments import Position
from trackhouse.storage.base import (
    Activity,
    Deleted,
    EventBatch,
    EventShape,
    ExportQuery,
    ExportRow,
    ProfileQuery,
    ProfileRow,
    PropertyShape,
    SqlResult,
    UpdateBatch,
)
from trackhouse.storage.duckdb_schema import count_all, count_batch, registered, uncount_rows
from trackhouse.storage.duckdb_sql import reserved_names, run_readonly
from trackhouse.storage.duckdb_where import Column, compile_where

log = logging.getLogger(__name__)

EXPORT_CHUNK_ROWS = 5000

# An export sorts at most about this many rows at a time (see DuckDBStore.export).
EXPORT_SLICE_ROWS = 50_000
# Bucket widths, in ms, an export's time range is cut by: hours, then minutes, seconds.
_SLICE_UNITS_MS = (3_600_000, 60_000, 1_000)

# Event properties kept in columns, not in the properties JSON (for `where`).
_EVENT_COLUMNS = {
    "distinct_id": Column("distinct_id", "string"),
    "$insert_id": Column("insert_id", "string"),
    # Whole seconds, as export prints it (a filter on a printed time must find it).
    "time": Column("(epoch_ms(time) // 1000)", "number"),
}

# The deduplication key of spec §7, computed by DuckDB (vectorised, off the GIL).
# Length prefixes keep ("ab","c") and ("a","bc") apart.
_DEDUP_KEY = """md5_number(concat_ws('|',
    project_id, length(event), event, length(distinct_id), distinct_id,
    time_ms // 1000, insert_id))"""

# A 128-bit key as two 64-bit halves: Arrow has no 128-bit integer, and a cast of the
# key to text costs more than the whole insert.
_KEY_HALVES = "({key} >> 64)::UBIGINT AS hi, ({key} & 18446744073709551615)::UBIGINT AS lo"

# Fixed SQL: user data arrives only as Arrow columns. RETURNING gives the keys of the
# rows actually added: duplicates are ignored.
_INSERT = f"""
INSERT OR IGNORE INTO events
SELECT project_id, event, distinct_id, epoch_ms(time_ms), insert_id, properties,
       epoch_ms(received_ms), endpoint, lib, {_DEDUP_KEY}
FROM batch
RETURNING {_KEY_HALVES.format(key="dedup_key")}
"""  # noqa: S608

_INSERT_UPDATES = """
INSERT OR IGNORE INTO profile_updates
SELECT project_id, kind, distinct_id, group_key, group_id, operation, value, modifiers,
       epoch_ms(time_ms), epoch_ms(received_ms), segment, "offset", seq
FROM updates
"""

_UPDATE_SCHEMA = pa.schema(
    [
        ("project_id", pa.int32()),
        ("kind", pa.string()),
        ("distinct_id", pa.string()),
        ("group_key", pa.string()),
        ("group_id", pa.string()),
        ("operation", pa.string()),
        ("value", pa.string()),
        ("modifiers", pa.string()),
        ("time_ms", pa.int64()),
        ("received_ms", pa.int64()),
        ("segment", pa.int64()),
        ("offset", pa.int64()),
        ("seq", pa.int32()),
    ]
)

# EventBatch's columns: an event record's (EVENT_COLUMNS), and where the record came in.
_ARRIVAL = {"received_ms": pa.int64(), "endpoint": pa.string()}
_SCHEMA = pa.schema(
    [
        (f.name, _ARRIVAL[f.name] if f.name in _ARRIVAL else EVENT_COLUMNS.field(f.name).type)
        for f in fields(EventBatch)
        if f.name != "tables"
    ]
)


CHECKPOINT_THRESHOLD = "128MB"

# Added to the memory limit while writing (see DuckDBStore._write_memory).
WRITE_HEADROOM_MB = 128

# Memory an index (ART) takes per row, a little above what DuckDB 2.0 uses for the
# 16-byte dedup key: enough to size the memory limit before the index is loaded.
_INDEX_BYTES_PER_ROW = 64


class DuckDBStore:
    def __init__(self, path: Path, *, read_only: bool = False, memory_limit_mb: int = 0) -> None:
        """``memory_limit_mb``: what DuckDB may use for its cache, sorts and joins on
        top of its indexes (0: DuckDB's default, 80% of RAM, indexes included)."""
        self.path = path
        self._working_mb = memory_limit_mb
        # No files, network or ATTACH from SQL: the store never needs them, and the
        # read-only SQL endpoint must not have them (storage/duckdb_sql.py).
        config: dict[str, Any] = {
            "enable_external_access": False,
            # DuckDB checkpoints (rewrites the tables from the WAL) every 16 MB of WAL by
            # default: with loader batches of tens of MB that is every batch or two, and
            # loading costs half as much again. A bigger WAL costs a longer replay at start.
            "checkpoint_threshold": CHECKPOINT_THRESHOLD,
        }
        if memory_limit_mb > 0:
            # Sorts and joins that outgrow the limit spill here instead of failing;
            # without external access DuckDB has no spill directory unless it is named.
            config["memory_limit"] = f"{memory_limit_mb}MB"
            config["temp_directory"] = str(path.with_name(path.name + ".tmp"))
        try:
            self._con = duckdb.connect(str(path), read_only=read_only, config=config)
            if not read_only:
                migrate(self._con)
            row = _one(self._con.execute("SELECT current_database()"))
            self._catalog = str(row[0]) if row else "memory"
            self._reserved = reserved_names(self._con)
        except duckdb.Error as exc:
            raise StorageError(f"cannot open the store {path}: {exc}") from exc
        self._write_lock = threading.Lock()

    @contextmanager
    def _transaction(self, failure: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """The write connection inside one transaction (one writer at a time, with the
        memory a write needs): committed if the block ends, rolled back if it raises,
        whatever it raised, as StorageError("<failure>: <reason>")."""
        with self._write_lock, self._write_memory():
            con = self._con
            try:
                con.execute("BEGIN")
                yield con
                con.execute("COMMIT")
            except Exception as exc:
                # Left open, the transaction would make every later write fail
                # ("cannot start a transaction within a transaction").
                _rollback(con)
                raise StorageError(f"{failure}: {exc}") from exc

    @contextmanager
    def _write_memory(self) -> Iterator[None]:
        """The memory limit for one write: the working budget, plus the indexes, plus
        WRITE_HEADROOM_MB; then back to the budget plus the indexes.

        DuckDB cannot evict an index, and an insert that needs more index memory than
        the limit leaves fails with out-of-memory instead of spilling; its JSON
        functions (the schema counts) want room too. Indexes load on the first write,
        and DuckDB does not report their size, so it is estimated from the row counts.
        Between writes, reads (exports) live within the budget."""
        if self._working_mb <= 0:
            yield
            return
        loaded, rows = _one(
            self._con.execute(
                "SELECT (SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                "WHERE tag = 'ART_INDEX'), (SELECT coalesce(sum(estimated_size), 0) "
                "FROM duckdb_tables() WHERE index_count > 0)"
            )
        ) or (0, 0)
        index_mb = max(int(loaded), int(rows) * _INDEX_BYTES_PER_ROW) * 5 // 4 >> 20
        self._con.execute(
            f"SET memory_limit = '{self._working_mb + index_mb + WRITE_HEADROOM_MB}MB'"
        )
        try:
            yield
        finally:
            try:
                self._con.execute(f"SET memory_limit = '{self._working_mb + index_mb}MB'")
            except duckdb.Error as exc:  # it stays higher until the next write
                log.warning("could not lower the store's memory limit: %s", exc)

    def checkpoint(self) -> Position | None:
        try:
            return _load_checkpoint(self._cursor())
        except duckdb.Error as exc:
            raise StorageError(f"cannot read the load checkpoint: {exc}") from exc

    def write_batch(self, events: EventBatch, updates: UpdateBatch, checkpoint: Position) -> int:
        event_table = _event_table(events) if len(events) else None
        update_table = _table(updates, _UPDATE_SCHEMA) if len(updates) else None
        with self._transaction("cannot write to the store") as con:
            added = 0
            if event_table is not None:
                with registered(con, "batch", event_table):
                    # sql(), not execute(): its Arrow result is not copied again.
                    added_keys = con.sql(_INSERT).to_arrow_table()
                added = added_keys.num_rows
                fresh = event_table
                if added < len(events):  # some were duplicates
                    fresh = _added_rows(con, event_table, added_keys)
                count_batch(con, fresh)
            if update_table is not None:
                applied = _load_checkpoint(con)
                _execute_with(con, "updates", update_table, _INSERT_UPDATES)
                _apply_updates(con, _fresh_updates(updates, applied))
            _save_checkpoint(con, checkpoint)
        return added

    def export(self, query: ExportQuery) -> Iterator[list[ExportRow]]:
        """Rows in (time, $insert_id) order, a chunk at a time, in bounded memory.

        Sorting the whole range at once would hold every matching row before the
        first one leaves. Instead a grouped count (cheap: no row is kept) cuts the
        range into time slices of at most about EXPORT_SLICE_ROWS rows, and each slice
        is sorted on its own. Slices never split a second; a single second holding more
        rows than that is sorted whole, spilling to disk past the memory limit.
        """
        where = ["project_id = ?"]
        params: list[Any] = [query.project_id]
        if query.events is not None:
            where.append("list_contains(?, event)")
            params.append(list(query.events))
        if query.where is not None:
            compiled = compile_where(query.where, "properties", _EVENT_COLUMNS)
            where.append(compiled.sql)
            params += compiled.params
        # Fixed SQL only: user values are in params (compile_where binds its own).
        sql = (
            "SELECT event, distinct_id, epoch_ms(time), insert_id, properties FROM events "  # noqa: S608
            f"WHERE {' AND '.join(where)} AND time >= epoch_ms(?) AND time < epoch_ms(?) "
            "ORDER BY time, insert_id LIMIT ?"
        )
        left = query.limit
        cursor = self._cursor()
        try:
            # One snapshot for the counts and every slice: rows loaded meanwhile are
            # neither half-seen nor able to push a slice past its size.
            cursor.execute("BEGIN TRANSACTION")
            for start, end in _slices(cursor, where, params, query.from_ms, query.to_ms):
                cursor.execute(sql, [*params, start, end, left])
                while rows := cursor.fetchmany(EXPORT_CHUNK_ROWS):
                    yield [ExportRow(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows]
                    if left is not None:
                        left -= len(rows)
                if left is not None and left <= 0:
                    return
        except duckdb.Error as exc:
            raise StorageError(f"export failed: {exc}") from exc
        finally:
            cursor.close()

    def count_profiles(self, query: ProfileQuery) -> int:
        where, params = _profile_filter(query)
        try:
            # `where` is fixed SQL from _profile_filter; user values are in `params`.
            sql = f"SELECT count(*) FROM profiles WHERE {where}"  # noqa: S608
            row = _one(self._cursor().execute(sql, params))
        except duckdb.Error as exc:
            raise StorageError(f"profile query failed: {exc}") from exc
        return int(row[0]) if row else 0

    def profiles(
        self, query: ProfileQuery, *, after: str | None = None, offset: int = 0, limit: int | None
    ) -> Iterator[list[ProfileRow]]:
        where, params = _profile_filter(query)
        sql = f"SELECT profile_id, properties FROM profiles WHERE {where}"  # noqa: S608
        if after is not None:
            sql += " AND profile_id > ?"
            params.append(after)
        sql += " ORDER BY profile_id LIMIT ? OFFSET ?"
        params += [limit, offset]
        cursor = self._cursor()
        try:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(EXPORT_CHUNK_ROWS):
                yield [ProfileRow(r[0], r[1]) for r in rows]
        except duckdb.Error as exc:
            raise StorageError(f"profile query failed: {exc}") from exc
        finally:
            cursor.close()

    def delete_users(
        self, project_id: int, distinct_ids: Sequence[str], checkpoint: Position
    ) -> Deleted:
        ids = list(distinct_ids)
        mine = "project_id = ? AND list_contains(?, distinct_id)"
        with self._transaction("could not remove the users' data") as con:
            uncount_rows(con, mine, [project_id, ids])
            deleted = Deleted(
                _deleted(con, f"DELETE FROM events WHERE {mine}", [project_id, ids]),  # noqa: S608
                _deleted(
                    con,
                    "DELETE FROM profiles WHERE project_id = ? AND group_key = '' "
                    "AND list_contains(?, profile_id)",
                    [project_id, ids],
                ),
                _deleted(
                    con,
                    f"DELETE FROM profile_updates WHERE {mine} AND kind = 'user'",  # noqa: S608
                    [project_id, ids],
                ),
            )
            _save_checkpoint(con, checkpoint)
        return deleted

    def expire(self, project_id: int, before_ms: int) -> int:
        old = "project_id = ? AND time < epoch_ms(?)"
        with self._transaction("cannot delete expired events") as con:
            uncount_rows(con, old, [project_id, before_ms])
            return _deleted(con, f"DELETE FROM events WHERE {old}", [project_id, before_ms])  # noqa: S608

    def schema(self, project_id: int, *, limit: int) -> list[EventShape]:
        cursor = self._cursor()
        try:
            names = cursor.execute(
                "SELECT event, count, epoch_ms(first_seen), epoch_ms(last_seen) FROM event_names "
                "WHERE project_id = ? ORDER BY count DESC, event LIMIT ?",
                [project_id, limit],
            ).fetchall()
            properties: dict[str, list[PropertyShape]] = {name[0]: [] for name in names}
            for event, *shape in cursor.execute(
                "SELECT event, property, type, count, epoch_ms(first_seen), epoch_ms(last_seen) "
                "FROM event_properties WHERE project_id = ? AND list_contains(?, event) "
                "ORDER BY event, count DESC, property, type",
                [project_id, list(properties)],
            ).fetchall():
                properties[event].append(PropertyShape(*shape))
        except duckdb.Error as exc:
            raise StorageError(f"schema query failed: {exc}") from exc
        finally:
            cursor.close()
        return [
            EventShape(event, int(count), int(first), int(last), properties[event])
            for event, count, first, last in names
        ]

    def activity(self, project_id: int, from_ms: int, to_ms: int, *, top: int) -> Activity:
        window = "project_id = ? AND received_at >= epoch_ms(?) AND received_at < epoch_ms(?)"
        params = [project_id, from_ms, to_ms]
        cursor = self._cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")  # both answers from one snapshot
            minutes = cursor.execute(
                "SELECT epoch_ms(received_at) // 60000 * 60000 AS minute, count(*) FROM events "  # noqa: S608
                f"WHERE {window} GROUP BY minute ORDER BY minute",
                params,
            ).fetchall()
            names = cursor.execute(
                f"SELECT event, count(*) AS n FROM events WHERE {window} "  # noqa: S608
                "GROUP BY event ORDER BY n DESC, event LIMIT ?",
                [*params, top],
            ).fetchall()
        except duckdb.Error as exc:
            raise StorageError(f"activity query failed: {exc}") from exc
        finally:
            cursor.close()
        return Activity(
            [(int(m), int(n)) for m, n in minutes], [(str(e), int(n)) for e, n in names]
        )

    def run_sql(self, project_id: int, sql: str, *, max_rows: int, timeout_s: float) -> SqlResult:
        return run_readonly(
            self._con,
            self._catalog,
            self._reserved,
            project_id,
            sql,
            max_rows=max_rows,
            timeout_s=timeout_s,
        )

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()

    def close(self) -> None:
        with self._write_lock:
            try:
                self._con.close()
            except duckdb.Error as exc:  # pragma: no cover
                raise StorageError(f"cannot close the store: {exc}") from exc


def _added_rows(con: duckdb.DuckDBPyConnection, batch: pa.Table, added_keys: pa.Table) -> pa.Table:
    """The rows of ``batch`` the store added (``added_keys``): the first of each key."""
    indexed = batch.append_column("i", pa.array(range(batch.num_rows), pa.int64()))
    with registered(con, "indexed", indexed), registered(con, "added_keys", added_keys):
        picked = con.execute(
            f"SELECT min(i) FROM (SELECT i, {_KEY_HALVES.format(key=_DEDUP_KEY)} "  # noqa: S608
            "FROM indexed) SEMI JOIN added_keys USING (hi, lo) GROUP BY hi, lo"
        ).fetchall()
    return batch.take(pa.array(sorted(row[0] for row in picked), pa.int64()))


def _slices(
    cursor: duckdb.DuckDBPyConnection,
    where: list[str],
    params: list[Any],
    from_ms: int,
    to_ms: int,
    units: Sequence[int] = _SLICE_UNITS_MS,
) -> Iterator[tuple[int, int]]:
    """Consecutive [start, end) ms ranges covering the matching rows of [from_ms, to_ms)
    in order, each holding at most EXPORT_SLICE_ROWS rows unless one second does."""
    unit, finer = units[0], units[1:]
    counts = cursor.execute(
        f"SELECT epoch_ms(time) // {unit} AS bucket, count(*) FROM events "  # noqa: S608
        f"WHERE {' AND '.join(where)} AND time >= epoch_ms(?) AND time < epoch_ms(?) "
        "GROUP BY bucket ORDER BY bucket",
        [*params, from_ms, to_ms],
    ).fetchall()
    start, rows = from_ms, 0
    for bucket, count in counts:
        lo, hi = max(bucket * unit, from_ms), min((bucket + 1) * unit, to_ms)
        if rows and rows + count > EXPORT_SLICE_ROWS:
            yield start, lo
            start, rows = lo, 0
        if count > EXPORT_SLICE_ROWS and finer:
            yield from _slices(cursor, where, params, lo, hi, finer)
            start = hi
        else:
            rows += count
    if rows:
        yield start, to_ms


def _table(batch: EventBatch | UpdateBatch, schema: pa.Schema) -> pa.Table:
    return _columns(schema, [getattr(batch, f.name) for f in schema])


def _event_table(batch: EventBatch) -> pa.Table:
    """The batch's rows as one table of _SCHEMA, in order: its tables, then its lists."""
    tables = [t if t.schema.equals(_SCHEMA) else t.cast(_SCHEMA) for t in batch.tables]
    if batch.event or not tables:
        tables.append(_table(batch, _SCHEMA))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _execute_with(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str) -> None:
    with registered(con, name, table):
        con.execute(sql)


def _save_checkpoint(con: duckdb.DuckDBPyConnection, checkpoint: Position) -> None:
    con.execute(
        "INSERT OR REPLACE INTO load_checkpoint VALUES (1, ?, ?)",
        [checkpoint.segment, checkpoint.offset],
    )


def _deleted(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> int:
    """Run a DELETE; how many rows it deleted."""
    row = _one(con.execute(sql, params))
    return int(row[0]) if row else 0


def _load_checkpoint(con: duckdb.DuckDBPyConnection) -> Position | None:
    row = _one(con.execute('SELECT segment, "offset" FROM load_checkpoint WHERE id = 1'))
    return None if row is None else Position(int(row[0]), int(row[1]))


def _profile_filter(query: ProfileQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed SQL) and its parameters for a profile query."""
    sql = ["project_id = ? AND group_key = ?"]
    params: list[Any] = [query.project_id, query.group_key]
    if query.ids is not None:
        sql.append("list_contains(?, profile_id)")
        params.append(list(query.ids))
    if query.where is not None:
        compiled = compile_where(query.where, "properties")
        sql.append(compiled.sql)
        params += compiled.params
    return " AND ".join(sql), params


# ---- profiles: folding updates ------------------------------------------------------

# One update to apply: project_id, group_key ("" for users), profile id, operation,
# value JSON, modifiers JSON, time in ms.
_Update = tuple[int, str, str, str, str, str, int]
_Key = tuple[int, str, str]

_PROFILE_KEYS = pa.schema(
    [("project_id", pa.int32()), ("group_key", pa.string()), ("profile_id", pa.string())]
)
_PROFILE_ROWS = pa.schema(
    [
        ("project_id", pa.int32()),
        ("group_key", pa.string()),
        ("profile_id", pa.string()),
        ("properties", pa.string()),
        ("updated_ms", pa.int64()),
    ]
)


def _fresh_updates(batch: UpdateBatch, applied: Position | None) -> list[_Update]:
    """The batch's updates the store has not applied yet: those at or after the
    checkpoint (a record before it was loaded, and applied, by an earlier batch)."""
    fresh = []
    for i in range(len(batch)):
        if applied is not None and Position(batch.segment[i], batch.offset[i]) < applied:
            continue
        group_key = batch.group_key[i]
        profile_id = batch.group_id[i] if group_key is not None else batch.distinct_id[i]
        fresh.append(
            (
                batch.project_id[i],
                group_key or "",
                profile_id or "",
                batch.operation[i],
                batch.value[i],
                batch.modifiers[i],
                batch.time_ms[i],
            )
        )
    return fresh


def _apply_updates(con: duckdb.DuckDBPyConnection, updates: list[_Update]) -> None:
    """Fold updates, in order, into the profiles they name (inside the caller's
    transaction): read those profiles, apply, write back or delete."""
    if not updates:
        return
    keys = list(dict.fromkeys((u[0], u[1], u[2]) for u in updates))
    with registered(con, "profile_keys", _columns(_PROFILE_KEYS, list(zip(*keys, strict=True)))):
        stored = con.execute(
            "SELECT p.project_id, p.group_key, p.profile_id, p.properties FROM profiles p "
            "JOIN profile_keys k USING (project_id, group_key, profile_id)"
        ).fetchall()
    existing = {(r[0], r[1], r[2]): r[3] for r in stored}
    state: dict[_Key, Profile | None] = {}
    updated_ms: dict[_Key, int] = {}
    for project_id, group_key, profile_id, operation, value, modifiers, time_ms in updates:
        key = (project_id, group_key, profile_id)
        if key in state:
            current = state[key]
        else:
            text = existing.get(key)
            current = orjson.loads(text) if text is not None else None
        state[key] = apply_update(
            current, operation, orjson.loads(value), orjson.loads(modifiers), time_ms
        )
        updated_ms[key] = time_ms
    gone = [key for key, props in state.items() if props is None and key in existing]
    kept = [
        (*key, orjson.dumps(props).decode(), updated_ms[key])
        for key, props in state.items()
        if props is not None
    ]
    if gone:
        _execute_with(
            con,
            "gone",
            _columns(_PROFILE_KEYS, list(zip(*gone, strict=True))),
            "DELETE FROM profiles USING gone WHERE profiles.project_id = gone.project_id "
            "AND profiles.group_key = gone.group_key AND profiles.profile_id = gone.profile_id",
        )
    if kept:
        _execute_with(
            con,
            "kept",
            _columns(_PROFILE_ROWS, list(zip(*kept, strict=True))),
            "INSERT OR REPLACE INTO profiles SELECT project_id, group_key, profile_id, "
            "properties, epoch_ms(updated_ms) FROM kept",
        )


def _fold_all_updates(con: duckdb.DuckDBPyConnection) -> None:
    """Build profiles from every stored update (migration 3, for stores that kept
    updates before profiles existed)."""
    cursor = con.execute(
        "SELECT project_id, coalesce(group_key, ''), coalesce(group_id, distinct_id, ''), "
        "operation, value, modifiers, epoch_ms(time) FROM profile_updates "
        "ORDER BY journal_segment, journal_offset, seq"
    )
    _apply_updates(con, cursor.fetchall())


def _columns(schema: pa.Schema, columns: Sequence[Sequence[Any]]) -> pa.Table:
    """An Arrow table of ``schema`` from one sequence of values per field."""
    return pa.Table.from_arrays(
        [pa.array(values, f.type) for f, values in zip(schema, columns, strict=True)],
        schema=schema,
    )


def _one(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open on the
    # connection and refuses the next statement until it is drained.
    rows = result.fetchall()
    return rows[0] if rows else None


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


# Steps SQL cannot do, run in the same transaction as the numbered migration.
_AFTER_MIGRATION = {3: _fold_all_updates, 4: count_all}

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply the numbered migrations not yet applied, each in its own transaction."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP DEFAULT now())"
    )
    done = {int(r[0]) for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
    files = importlib.resources.files("trackhouse.storage.migrations")
    applied = []
    for entry in sorted(files.iterdir(), key=lambda e: e.name):
        match = _MIGRATION_NAME.match(entry.name)
        if not match or int(match.group(1)) in done:
            continue
        version = int(match.group(1))
        con.execute("BEGIN")
        try:
            con.execute(entry.read_text())
            if version in _AFTER_MIGRATION:
                _AFTER_MIGRATION[version](con)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, entry.name]
            )
            con.execute("COMMIT")
        except duckdb.Error:
            _rollback(con)
            raise
        applied.append(version)
    return applied
