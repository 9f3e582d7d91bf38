"""What a journal record holds: one request's accepted events or profile updates, or a
deletion of users' data.

A record is compact JSON: ``{"k":"ev","r":<received ms>,"e":<endpoint>,"rows":[...]}``,
each row an :class:`~trackhouse.ingest.validate.Event` as a list. Properties stay JSON
text inside it, so the loader never parses them again.

The events of a large request are written columnar instead: an Arrow IPC stream (which
begins with bytes no JSON text begins with) of the same fields, with the received time
and endpoint in its schema's metadata. Building the columns costs about what the JSON
did (in an ingest worker, usually), and the loader, which shares the server's
interpreter lock with the request handlers, then takes the columns as they are: no
Python work per event (JSON rows cost it ~3 µs per event to turn into columns).
A build from before columnar records cannot read them: it stops at the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from trackhouse.ingest.profiles import ProfileUpdate
from trackhouse.ingest.validate import Event

EVENTS = "ev"
PROFILE_UPDATES = "pu"
DELETION = "del"


@dataclass(frozen=True, slots=True)
class EventRecord:
    received_ms: int
    endpoint: str
    rows: list[list[Any]]  # Event fields, in Event's order


def encode_events(events: list[Event], *, received_ms: int, endpoint: str) -> bytes:
    # Event is a NamedTuple, which orjson leaves to `default`: a plain tuple is an array.
    return orjson.dumps(
        {"k": EVENTS, "r": received_ms, "e": endpoint, "rows": events}, default=tuple
    )


# The fields of Event, in order, as columns.
EVENT_COLUMNS = pa.schema(
    [
        ("project_id", pa.int32()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("time_ms", pa.int64()),
        ("insert_id", pa.string()),
        ("properties", pa.string()),
        ("lib", pa.string()),
    ]
)
_ARROW_STREAM = b"\xff\xff\xff\xff"  # how an Arrow IPC stream begins


@dataclass(frozen=True, slots=True)
class EventTableRecord:
    received_ms: int
    endpoint: str
    table: pa.Table  # EVENT_COLUMNS


def encode_event_table(events: list[Event], *, received_ms: int, endpoint: str) -> bytes:
    """The events (one or more) as an Arrow IPC stream: an event record, columnar."""
    schema = EVENT_COLUMNS.with_metadata({"r": str(received_ms), "e": endpoint})
    columns = zip(*events, strict=True)
    table = pa.Table.from_arrays(
        [pa.array(values, f.type) for f, values in zip(EVENT_COLUMNS, columns, strict=True)],
        schema=schema,
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    received_ms: int
    rows: list[list[Any]]  # ProfileUpdate fields, in ProfileUpdate's order


def encode_updates(updates: list[ProfileUpdate], *, received_ms: int) -> bytes:
    return orjson.dumps({"k": PROFILE_UPDATES, "r": received_ms, "rows": updates}, default=tuple)


@dataclass(frozen=True, slots=True)
class DeletionRecord:
    """Delete these users' events and profiles: everything the journal held for them
    before this record (it is applied in journal order, after what came earlier)."""

    received_ms: int
    project_id: int
    distinct_ids: list[str]


def encode_deletion(project_id: int, distinct_ids: list[str], *, received_ms: int) -> bytes:
    return orjson.dumps({"k": DELETION, "r": received_ms, "p": project_id, "ids": distinct_ids})


Record = EventRecord | EventTableRecord | UpdateRecord | DeletionRecord


def decode(payload: bytes) -> Record | None:
    """The record's content, or None for a kind this version does not load."""
    if payload.startswith(_ARROW_STREAM):
        table = pa.ipc.open_stream(payload).read_all()
        meta = table.schema.metadata
        return EventTableRecord(
            int(meta[b"r"]), meta[b"e"].decode(), table.replace_schema_metadata(None)
        )
    body = orjson.loads(payload)
    kind = body.get("k")
    if kind == EVENTS:
        return EventRecord(body["r"], body["e"], body["rows"])
    if kind == PROFILE_UPDATES:
        return UpdateRecord(body["r"], body["rows"])
    if kind == DELETION:
        return DeletionRecord(body["r"], body["p"], body["ids"])
    return None
