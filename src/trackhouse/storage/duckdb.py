"""The embedded store: one DuckDB file.

The loader owns the write connection (one writer, as DuckDB wants); readers use their
own cursors, which see committed data only. Driver errors leave this module as
:class:`~trackhouse.errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from trackhouse.errors import StorageError
from trackhouse.journal.segments import Position
from trackhouse.storage.base import EventBatch, ExportQuery, ExportRow, UpdateBatch

EXPORT_CHUNK_ROWS = 5000

# The deduplication key of spec §7, computed by DuckDB (vectorised, off the GIL).
# Length prefixes keep ("ab","c") and ("a","bc") apart.
_DEDUP_KEY = """md5_number(concat_ws('|',
    project_id, length(event), event, length(distinct_id), distinct_id,
    time_ms // 1000, insert_id))"""

# Fixed SQL: user data arrives only as Arrow columns.
_INSERT = f"""
INSERT OR IGNORE INTO events
SELECT project_id, event, distinct_id, epoch_ms(time_ms), insert_id, properties,
       epoch_ms(received_ms), endpoint, lib, {_DEDUP_KEY}
FROM batch
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

_SCHEMA = pa.schema(
    [
        ("project_id", pa.int32()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("time_ms", pa.int64()),
        ("insert_id", pa.string()),
        ("properties", pa.string()),
        ("received_ms", pa.int64()),
        ("endpoint", pa.string()),
        ("lib", pa.string()),
    ]
)


class DuckDBStore:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        try:
            self._con = duckdb.connect(str(path), read_only=read_only)
            if not read_only:
                migrate(self._con)
        except duckdb.Error as exc:
            raise StorageError(f"cannot open the store {path}: {exc}") from exc
        self._write_lock = threading.Lock()

    def checkpoint(self) -> Position | None:
        try:
            row = _one(
                self._cursor().execute('SELECT segment, "offset" FROM load_checkpoint WHERE id = 1')
            )
        except duckdb.Error as exc:
            raise StorageError(f"cannot read the load checkpoint: {exc}") from exc
        return None if row is None else Position(int(row[0]), int(row[1]))

    def write_batch(self, events: EventBatch, updates: UpdateBatch, checkpoint: Position) -> int:
        event_table = _table(events, _SCHEMA) if len(events) else None
        update_table = _table(updates, _UPDATE_SCHEMA) if len(updates) else None
        with self._write_lock:
            con = self._con
            try:
                con.execute("BEGIN")
                added = 0
                if event_table is not None:
                    before = _count(con)
                    _insert_from(con, "batch", event_table, _INSERT)
                    added = _count(con) - before
                if update_table is not None:
                    _insert_from(con, "updates", update_table, _INSERT_UPDATES)
                con.execute(
                    "INSERT OR REPLACE INTO load_checkpoint VALUES (1, ?, ?)",
                    [checkpoint.segment, checkpoint.offset],
                )
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                raise StorageError(f"cannot write to the store: {exc}") from exc
        return added

    def export(self, query: ExportQuery) -> Iterator[list[ExportRow]]:
        sql = [
            "SELECT event, distinct_id, epoch_ms(time), insert_id, properties FROM events",
            "WHERE project_id = ? AND time >= epoch_ms(?) AND time < epoch_ms(?)",
        ]
        params: list[Any] = [query.project_id, query.from_ms, query.to_ms]
        if query.events is not None:
            sql.append("AND list_contains(?, event)")
            params.append(list(query.events))
        sql.append("ORDER BY time, insert_id")
        if query.limit is not None:
            sql.append("LIMIT ?")
            params.append(query.limit)
        cursor = self._cursor()
        try:
            cursor.execute(" ".join(sql), params)
            while True:
                rows = cursor.fetchmany(EXPORT_CHUNK_ROWS)
                if not rows:
                    return
                yield [ExportRow(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows]
        except duckdb.Error as exc:
            raise StorageError(f"export failed: {exc}") from exc
        finally:
            cursor.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()

    def close(self) -> None:
        with self._write_lock:
            try:
                self._con.close()
            except duckdb.Error as exc:  # pragma: no cover
                raise StorageError(f"cannot close the store: {exc}") from exc


def _table(batch: EventBatch | UpdateBatch, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(getattr(batch, f.name), f.type) for f in schema], schema=schema
    )


def _insert_from(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str) -> None:
    con.register(name, table)
    try:
        con.execute(sql)
    finally:
        con.unregister(name)


def _one(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open on the
    # connection and refuses the next statement until it is drained.
    rows = result.fetchall()
    return rows[0] if rows else None


def _count(con: duckdb.DuckDBPyConnection) -> int:
    row = _one(con.execute("SELECT count(*) FROM events"))
    return int(row[0]) if row else 0


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


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
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, entry.name]
            )
            con.execute("COMMIT")
        except duckdb.Error:
            _rollback(con)
            raise
        applied.append(version)
    return applied
