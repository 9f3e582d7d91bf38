"""A parsed ``where`` (query/where.py) as a DuckDB boolean expression over JSON text.

Only fixed fragments are written here; property paths (as JSON pointers) and values
are bound parameters. Every test is wrapped in COALESCE(..., FALSE) so a missing
property is plainly false, never SQL's NULL, and ``not`` means what users expect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trackhouse.query.where import And, Compare, Contains, Defined, Expr, Member, Not, Or, Value

_NUMBER_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE')"
_SQL_OPS = {"==": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


@dataclass(slots=True)
class SqlFilter:
    sql: str
    params: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Column:
    """A property kept in its own column rather than in the JSON (an event's
    distinct_id, time and $insert_id): its SQL, never NULL, and its type."""

    sql: str
    kind: Literal["string", "number"]


def compile_where(
    expr: Expr, column: str, columns: Mapping[str, Column] | None = None
) -> SqlFilter:
    """``column`` (the JSON text) and ``columns`` are SQL written by trackhouse, never
    user input."""
    params: list[Any] = []
    sql = _Compiler(column, columns or {}, params).compile(expr)
    return SqlFilter(sql, params)


def json_pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in path)


class _Compiler:
    def __init__(self, column: str, columns: Mapping[str, Column], params: list[Any]) -> None:
        self.column = column
        self.columns = columns
        self.params = params

    def compile(self, expr: Expr) -> str:
        if isinstance(expr, And | Or):
            joiner = " AND " if isinstance(expr, And) else " OR "
            return "(" + joiner.join(self.compile(item) for item in expr.items) + ")"
        if isinstance(expr, Not):
            return f"(NOT {self.compile(expr.inner)})"
        own = self.columns.get(expr.path[0]) if len(expr.path) == 1 else None
        if own is not None:
            return self._on_column(expr, own)
        if isinstance(expr, Defined):
            return f"COALESCE({self._type(expr.path)} <> 'NULL', FALSE)"
        if isinstance(expr, Compare):
            return self._compare(expr.path, expr.op, expr.value)
        if isinstance(expr, Member):
            if not expr.values:
                return "FALSE"
            return "(" + " OR ".join(self._compare(expr.path, "==", v) for v in expr.values) + ")"
        return self._contains(expr)

    def _on_column(self, expr: Compare | Member | Contains | Defined, column: Column) -> str:
        """The same tests on a typed, never-null column: a value of the other type, or
        null, simply does not match."""
        if isinstance(expr, Defined):
            return "TRUE"
        if isinstance(expr, Member):
            tests = [self._column_compare(column, "==", v) for v in expr.values]
            return "(" + " OR ".join(tests) + ")" if tests else "FALSE"
        if isinstance(expr, Compare):
            return self._column_compare(column, expr.op, expr.value)
        if column.kind != "string" or not isinstance(expr.value, str):
            return "FALSE"
        self.params.append(expr.value)
        return f"contains({column.sql}, ?)"

    def _column_compare(self, column: Column, op: str, value: Value) -> str:
        if isinstance(value, bool) or value is None:
            return "FALSE"
        if column.kind == "string" and isinstance(value, str):
            self.params.append(value)
        elif column.kind == "number" and not isinstance(value, str):
            self.params.append(float(value))
        else:
            return "FALSE"
        return f"({column.sql} {_SQL_OPS[op]} ?)"

    def _type(self, path: tuple[str, ...]) -> str:
        self.params.append(json_pointer(path))
        return f"json_type({self.column}, ?)"

    def _text(self, path: tuple[str, ...]) -> str:
        self.params.append(json_pointer(path))
        return f"json_extract_string({self.column}, ?)"

    def _compare(self, path: tuple[str, ...], op: str, value: Value) -> str:
        kind = self._type(path)
        return self._value_test(kind, lambda: self._text(path), op, value)

    def _value_test(self, kind: str, text: Callable[[], str], op: str, value: Value) -> str:
        """``kind`` is SQL already written (its parameters added); ``text`` writes the
        value's text when called, so parameters stay in the order of the SQL."""
        if value is None:
            return f"COALESCE({kind}, 'NULL') = 'NULL'"
        if isinstance(value, bool):
            test = f"{kind} = 'BOOLEAN' AND {text()} = ?"
            self.params.append("true" if value else "false")
        elif isinstance(value, str):
            test = f"{kind} = 'VARCHAR' AND {text()} {_SQL_OPS[op]} ?"
            self.params.append(value)
        else:
            test = f"{kind} IN {_NUMBER_TYPES} AND TRY_CAST({text()} AS DOUBLE) {_SQL_OPS[op]} ?"
            self.params.append(float(value))
        return f"COALESCE({test}, FALSE)"

    def _contains(self, expr: Contains) -> str:
        kind = self._type(expr.path)
        self.params.append(json_pointer(expr.path))
        # Each element of the list compared as == compares (7 matches 7.0, null
        # matches null), not by its JSON text.
        element = self._value_test("json_type(_e)", lambda: "(_e ->> '$')", "==", expr.value)
        in_list = (
            f"WHEN 'ARRAY' THEN len(list_filter("
            f"json_extract(json_extract({self.column}, ?), '$[*]'), lambda _e: {element})) > 0"
        )
        in_string = ""
        if isinstance(expr.value, str):
            in_string = f" WHEN 'VARCHAR' THEN contains({self._text(expr.path)}, ?)"
            self.params.append(expr.value)
        return f"COALESCE(CASE {kind} {in_list}{in_string} ELSE FALSE END, FALSE)"
