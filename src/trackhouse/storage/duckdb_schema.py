"""The event schema (Lexicon) of the DuckDB store: counting events in and out.

Every event the store adds is counted in ``event_names`` and, per top-level property
and JSON kind, in ``event_properties``, in the transaction that adds it; deletions take
their events out again. Reading properties means parsing JSON, and DuckDB's JSON
functions take memory in proportion to the JSON they see at once (and 16 MB blocks per
thread), so the properties are always counted in slices of at most SLICE_BYTES of JSON:
an Arrow batch is cut by the length of its rows, a table by row id ranges.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

SLICE_BYTES = 8 << 20

# A JSON value's kind from its first character: no second parse of the value.
_KIND = """CASE type
    WHEN '"' THEN 'string' WHEN '[' THEN 'list' WHEN '{' THEN 'object' WHEN 't' THEN 'boolean'
    WHEN 'f' THEN 'boolean' WHEN 'n' THEN 'null' ELSE 'number' END"""

_ADD = """ON CONFLICT DO UPDATE SET count = count + excluded.count,
    first_seen = least(first_seen, excluded.first_seen),
    last_seen = greatest(last_seen, excluded.last_seen)"""

# Rows to count come as fixed SQL selecting project_id, event, received_at, properties.
_BATCH_ROWS = (
    "SELECT project_id, event, epoch_ms(received_ms) AS received_at, properties FROM {name}"
)
_TABLE_ROWS = "SELECT project_id, event, received_at, properties FROM events WHERE {where}"


def _property_rows(rows: str) -> str:
    """One row per top-level property of each event of ``rows``: its name and kind.

    Names and values' JSON text side by side: one parse for the names, one for the
    values (json_structure or json_type would parse each value again, which costs as
    much as the rest of the load)."""
    return (
        f"SELECT project_id, event, received_at, property, {_KIND} AS kind FROM "  # noqa: S608
        "(SELECT project_id, event, received_at, unnest(json_keys(properties)) AS property, "
        "unnest(list_transform(json_extract(properties, '$.*'), lambda v: left(v::VARCHAR, 1))) "
        f"AS type FROM ({rows}))"
    )


def _add_names(con: duckdb.DuckDBPyConnection, rows: str, params: Sequence[Any]) -> None:
    con.execute(
        "INSERT INTO event_names SELECT project_id, event, count(*), min(received_at), "  # noqa: S608
        f"max(received_at) FROM ({rows}) GROUP BY ALL {_ADD}",
        params,
    )


def _add_properties(con: duckdb.DuckDBPyConnection, rows: str, params: Sequence[Any]) -> None:
    con.execute(
        "INSERT INTO event_properties SELECT project_id, event, property, kind, count(*), "  # noqa: S608
        f"min(received_at), max(received_at) FROM ({_property_rows(rows)}) GROUP BY ALL {_ADD}",
        params,
    )


def _take_names(con: duckdb.DuckDBPyConnection, rows: str, params: Sequence[Any]) -> None:
    con.execute(
        "UPDATE event_names AS n SET count = n.count - d.n FROM (SELECT project_id, event, "  # noqa: S608
        f"count(*) AS n FROM ({rows}) GROUP BY ALL) AS d "
        "WHERE n.project_id = d.project_id AND n.event = d.event",
        params,
    )


def _take_properties(con: duckdb.DuckDBPyConnection, rows: str, params: Sequence[Any]) -> None:
    con.execute(
        "UPDATE event_properties AS p SET count = p.count - d.n FROM (SELECT project_id, "  # noqa: S608
        f"event, property, kind, count(*) AS n FROM ({_property_rows(rows)}) GROUP BY ALL) "
        "AS d WHERE p.project_id = d.project_id AND p.event = d.event "
        "AND p.property = d.property AND p.type = d.kind",
        params,
    )


def count_batch(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
    """Count added events, given as an Arrow table of the loader's batch schema."""
    if not rows.num_rows:
        return
    with registered(con, "counted", rows):
        _add_names(con, _BATCH_ROWS.format(name="counted"), ())
    for part in _byte_slices(rows):
        with registered(con, "counted", part):
            _add_properties(con, _BATCH_ROWS.format(name="counted"), ())


def uncount_rows(con: duckdb.DuckDBPyConnection, where: str, params: Sequence[Any]) -> None:
    """Take the events matching ``where`` (fixed SQL with ``params``) out of the counts,
    before they are deleted. Names and properties no event has any more go; first and
    last seen stay as they were (they say when events arrived, not which are left)."""
    _take_names(con, _TABLE_ROWS.format(where=where), params)
    for lo, hi in _rowid_slices(con, where, params):
        _take_properties(
            con, _TABLE_ROWS.format(where=f"({where}) AND rowid BETWEEN ? AND ?"), [*params, lo, hi]
        )
    con.execute("DELETE FROM event_names WHERE count <= 0")
    con.execute("DELETE FROM event_properties WHERE count <= 0")


def count_all(con: duckdb.DuckDBPyConnection) -> None:
    """Count every stored event (migration 4, for stores written before the schema)."""
    _add_names(con, _TABLE_ROWS.format(where="true"), ())
    for lo, hi in _rowid_slices(con, "true", ()):
        _add_properties(con, _TABLE_ROWS.format(where="rowid BETWEEN ? AND ?"), [lo, hi])


def _byte_slices(rows: pa.Table) -> Iterator[pa.Table]:
    sizes = pc.binary_length(rows.column("properties")).to_pylist()
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if total and total + size > SLICE_BYTES:
            yield rows.slice(start, i - start)
            start, total = i, 0
        total += size
    yield rows.slice(start)


def _rowid_slices(
    con: duckdb.DuckDBPyConnection, where: str, params: Sequence[Any]
) -> list[tuple[int, int]]:
    """Row id ranges, in order, each holding at most about SLICE_BYTES of the
    properties of the events matching ``where`` (one row more at most)."""
    return [
        (int(lo), int(hi))
        for lo, hi in con.execute(
            "SELECT min(rowid), max(rowid) FROM (SELECT rowid, sum(strlen(properties)) "  # noqa: S608
            f"OVER (ORDER BY rowid) - strlen(properties) AS before FROM events WHERE {where}) "
            f"GROUP BY before // {SLICE_BYTES} ORDER BY 1",
            params,
        ).fetchall()
    ]


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` queryable as ``name`` for a block. Unregistering never hides the error
    that ended the block (in an aborted transaction it fails too)."""
    con.register(name, table)
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.unregister(name)
        raise
    con.unregister(name)
