"""Raw export (spec §8): parameters, and the NDJSON lines, built without re-parsing.

Stored properties are JSON text; each line splices the column fields in front of them
instead of parsing and re-serialising every event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import orjson

from trackhouse.errors import PayloadError
from trackhouse.query.where import parse_where
from trackhouse.storage.base import ExportQuery, ExportRow, Store

MAX_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class ExportRequest:
    query: ExportQuery
    time_in_ms: bool


def _day(value: str | None, name: str) -> dt.date:
    if not value:
        raise PayloadError(f"{name} is required (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise PayloadError(f"{name} must be a date as YYYY-MM-DD, not {value!r}") from exc


def _midnight_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def parse_export_params(project_id: int, params: Mapping[str, str]) -> ExportRequest:
    start = _day(params.get("from_date"), "from_date")
    end = _day(params.get("to_date"), "to_date")
    if end < start:
        raise PayloadError("to_date is before from_date")
    events = None
    if params.get("event"):
        try:
            parsed = orjson.loads(params["event"])
        except orjson.JSONDecodeError as exc:
            raise PayloadError('event must be a JSON array of names, e.g. ["Signed up"]') from exc
        if isinstance(parsed, str):
            parsed = [parsed]
        if not isinstance(parsed, list) or not all(isinstance(e, str) for e in parsed):
            raise PayloadError('event must be a JSON array of names, e.g. ["Signed up"]')
        events = parsed
    where = parse_where(params["where"]) if params.get("where") else None
    limit = None
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError as exc:
            raise PayloadError("limit must be a whole number") from exc
        if not 0 < limit <= MAX_LIMIT:
            raise PayloadError(f"limit must be between 1 and {MAX_LIMIT}")
    time_in_ms = params.get("time_in_ms", "").lower() in ("1", "true")
    query = ExportQuery(
        project_id,
        _midnight_ms(start),
        _midnight_ms(end + dt.timedelta(days=1)),
        events,
        limit,
        where,
    )
    return ExportRequest(query, time_in_ms)


def ndjson_line(row: ExportRow, time_in_ms: bool) -> bytes:
    time_value = row.time_ms if time_in_ms else row.time_ms // 1000
    head = b'{"event":%b,"properties":{"time":%d,"distinct_id":%b,"$insert_id":%b' % (
        orjson.dumps(row.event),
        time_value,
        orjson.dumps(row.distinct_id),
        orjson.dumps(row.insert_id),
    )
    props = row.properties.encode()
    if props == b"{}":
        return head + b"}}\n"
    return head + b"," + props[1:] + b"}\n"


def export_lines(store: Store, request: ExportRequest) -> Iterator[bytes]:
    """Chunks of NDJSON, one store chunk at a time."""
    for rows in store.export(request.query):
        yield b"".join(ndjson_line(row, request.time_in_ms) for row in rows)
