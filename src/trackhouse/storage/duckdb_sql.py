"""Read-only SQL over one project's data, in DuckDB.

A project's credentials must never read another project's rows, whatever SQL they
send. The defences, each enough to stop a different attack:

1. The statement is parsed by DuckDB itself (``json_serialize_sql``), which serializes
   SELECT statements only: anything that writes, attaches, sets, copies or calls a
   pragma is refused before it runs, and so is more than one statement.
2. The parse tree is walked: every table it names must be unqualified and be one of
   the project's views (``events``, ``profiles``, ``group_profiles``) or a CTE the
   statement defines (whose name may not be any real table's or system view's, so an
   out-of-scope reference cannot reach one); table functions other than ``range``,
   ``generate_series`` and ``unnest`` are refused, as are functions that read
   settings, variables, files or run SQL.
3. The views are temporary, on the query's own connection, and filter by project id:
   an unqualified name (even ``main.events``) resolves to them first.
4. The database runs with external access disabled (no files, no network, no ATTACH).

A statement runs under a time limit (interrupted past it) and returns at most
``max_rows`` rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import duckdb
import orjson

from trackhouse.errors import PayloadError, StorageError
from trackhouse.storage.base import SqlResult

_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
_REFUSED_FUNCTION_PREFIXES = ("read_", "duckdb_", "pragma_", "json_execute", "sqlite_")
_REFUSED_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getenv",
        "getvariable",
        "query",
        "query_table",
        "json_serialize_sql",
        "json_deserialize_sql",
        "sql_auto_complete",
        "which_secret",
        "checkpoint",
        "force_checkpoint",
        "glob",
        "current_database",
        "current_catalog",
    }
)


class SqlRefused(PayloadError):
    """The statement is not a read of the project's own data, or failed as written."""


_VIEW_BODIES = {
    "events": (
        "SELECT event, distinct_id, time, insert_id, CAST(properties AS JSON) AS properties,"
        " received_at, endpoint, lib FROM {source}.events WHERE {where}"
    ),
    "profiles": (
        "SELECT profile_id AS distinct_id, CAST(properties AS JSON) AS properties,"
        " updated_at FROM {source}.profiles WHERE {where} AND group_key = ''"
    ),
    "group_profiles": (
        "SELECT group_key, profile_id AS group_id, CAST(properties AS JSON) AS properties,"
        " updated_at FROM {source}.profiles WHERE {where} AND group_key <> ''"
    ),
}

VIEWS = tuple(_VIEW_BODIES)


def _view_sql(catalog: str, project_id: int) -> dict[str, str]:
    # A view body cannot take parameters; project_id is an int from the registry and
    # the catalog name comes from DuckDB (quoted as an identifier): no user text.
    where = f"project_id = {int(project_id)}"
    source = '"{}".main'.format(catalog.replace('"', '""'))
    return {name: body.format(source=source, where=where) for name, body in _VIEW_BODIES.items()}


def check_statement(con: duckdb.DuckDBPyConnection, sql: str, reserved: frozenset[str]) -> None:
    """Raise SqlRefused unless ``sql`` is one SELECT over the project views and its own
    CTEs. ``reserved``: lower-case names of every real table and system view."""
    rows = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
    tree = orjson.loads(rows[0][0])
    if tree.get("error"):
        message = str(tree.get("error_message", "cannot parse the statement"))
        if "Only SELECT" in message:
            message = "only SELECT statements are allowed (this endpoint is read-only)"
        raise SqlRefused(message)
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise SqlRefused("send exactly one SELECT statement")
    nodes = list(_walk(statements[0]))
    ctes = {
        str(entry["key"]).lower()
        for node in nodes
        if isinstance(node.get("cte_map"), dict)
        for entry in node["cte_map"].get("map", [])
    }
    clash = ctes & (reserved | set(VIEWS))
    if clash:
        raise SqlRefused(f"a CTE may not be named {sorted(clash)[0]!r}: pick another name")
    allowed = set(VIEWS) | ctes
    for node in nodes:
        kind = node.get("type")
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if node.get("schema_name") or node.get("catalog_name") or name.lower() not in allowed:
                parts = (node.get("catalog_name"), node.get("schema_name"), name)
                qualified = ".".join(str(p) for p in parts if p)
                raise SqlRefused(
                    f"unknown table {qualified!r}: query {', '.join(VIEWS)} (or your own CTEs)"
                )
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if name not in _TABLE_FUNCTIONS:
                raise SqlRefused(f"table function {name}() is not allowed")
        if node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in _REFUSED_FUNCTIONS or name.startswith(_REFUSED_FUNCTION_PREFIXES):
                raise SqlRefused(f"function {name}() is not allowed")


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def reserved_names(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Lower-case names of every table, view and table function: names a CTE may not
    take (read once when the store opens; the schema only changes by migration)."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() UNION "
        "SELECT view_name FROM duckdb_views() UNION "
        "SELECT function_name FROM duckdb_functions() WHERE function_type = 'table'"
    ).fetchall()
    return frozenset(str(r[0]).lower() for r in rows)


def run_readonly(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    reserved: frozenset[str],
    project_id: int,
    sql: str,
    *,
    max_rows: int,
    timeout_s: float,
) -> SqlResult:
    """Run ``sql`` on a fresh connection (``con.cursor()``) scoped to the project."""
    cursor = con.cursor()
    try:
        check_statement(cursor, sql, reserved)
        for name, body in _view_sql(catalog, project_id).items():
            cursor.execute(f"CREATE TEMP VIEW {name} AS {body}")
        timer = threading.Timer(timeout_s, cursor.interrupt)
        timer.start()
        try:
            cursor.execute(sql)
            description = cursor.description or []
            rows = cursor.fetchmany(max_rows + 1)
        except duckdb.InterruptException as exc:
            raise SqlRefused(f"the query ran longer than {timeout_s:g} s and was stopped") from exc
        except duckdb.Error as exc:
            if not timer.is_alive():
                raise SqlRefused(
                    f"the query ran longer than {timeout_s:g} s and was stopped"
                ) from exc
            raise SqlRefused(str(exc).split("\n\n")[0]) from exc
        finally:
            timer.cancel()
        return SqlResult(
            [d[0] for d in description],
            [str(d[1]) for d in description],
            rows[:max_rows],
            len(rows) > max_rows,
        )
    except duckdb.Error as exc:
        raise StorageError(f"SQL query failed: {exc}") from exc
    finally:
        cursor.close()
