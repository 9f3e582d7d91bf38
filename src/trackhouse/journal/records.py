"""What a journal record holds: one request's accepted events or profile updates, or a
deletion of users' data.

A record is compact JSON: ``{"k":"ev","r":<received ms>,"e":<endpoint>,"rows":[...]}``,
each row an :class:`~trackhouse.ingest.validate.Event` as a list. Properties stay JSON
text inside it, so the loader never parses them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

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


Record = EventRecord | UpdateRecord | DeletionRecord


def decode(payload: bytes) -> Record | None:
    """The record's content, or None for a kind this version does not load."""
    body = orjson.loads(payload)
    kind = body.get("k")
    if kind == EVENTS:
        return EventRecord(body["r"], body["e"], body["rows"])
    if kind == PROFILE_UPDATES:
        return UpdateRecord(body["r"], body["rows"])
    if kind == DELETION:
        return DeletionRecord(body["r"], body["p"], body["ids"])
    return None
