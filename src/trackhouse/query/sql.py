"""Read-only SQL results in the shapes users ask for: JSON (the API), CSV, a table."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import uuid
from typing import Any

import orjson

from trackhouse.storage.base import SqlResult


def _plain(value: Any, kind: str) -> Any:
    """A JSON-ready value: JSON columns embedded as JSON, the rest as JSON scalars."""
    if value is None:
        return None
    if kind == "JSON" and isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            # Valid for DuckDB, not for orjson (nested past 1024, a number past a
            # double): the JSON text itself, as a string.
            return value
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v, "") for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, "") for k, v in value.items()}
    return str(value)


def result_rows(result: SqlResult) -> list[list[Any]]:
    return [[_plain(v, t) for v, t in zip(row, result.types, strict=True)] for row in result.rows]


def result_json(result: SqlResult) -> dict[str, Any]:
    return {
        "status": "ok",
        "columns": result.columns,
        "types": result.types,
        "rows": result_rows(result),
        "row_count": len(result.rows),
        "truncated": result.truncated,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def result_csv(columns: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def result_table(columns: list[str], rows: list[list[Any]], max_width: int = 60) -> str:
    """Aligned text columns, long cells cut with an ellipsis (for a terminal)."""
    cells = [[_cell(v) for v in row] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [len(name) for name in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "-+-".join("-" * w for w in widths)
    head = " | ".join(n.ljust(w) for n, w in zip(columns, widths, strict=True))
    body = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([head, line, *body]) + "\n"
