"""One /import request's events made ready for the journal: decode, validate, encode.

This is all of a request's per-event work, and none of it needs the server: it takes
bytes and settings and gives back bytes and counts. So it can run in an ingest worker
process (``trackhouse.workers``) while the server's event loop goes on with other
requests, and in the server process itself for small bodies. Both run this same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackhouse.errors import PayloadTooLarge
from trackhouse.ingest.decode import decode_data, decode_import_body
from trackhouse.ingest.validate import Rejection, RequestContext, validate_events
from trackhouse.journal.records import encode_event_table, encode_events
from trackhouse.live import Message, message_for
from trackhouse.ratelimit import usage


@dataclass(frozen=True, slots=True)
class ImportJob:
    ctx: RequestContext  # with the project the credentials named
    body: bytes  # the JSON or NDJSON body (decompressed); unused for a form request
    data: str | None  # a form request's data= value (legacy clients)
    form: bool
    max_events: int
    live: bool  # someone watches the project: build the live feed's message too
    # Journal the events columnar (Arrow): for a large request it spares the loader
    # ~3 µs of Python per event; for a few events Arrow's fixed costs outweigh that.
    columnar: bool


@dataclass(frozen=True, slots=True)
class Prepared:
    total: int  # events in the request
    accepted: int  # stored, or dropped on purpose ($ignore)
    rejections: list[Rejection]
    record: bytes | None  # the journal record of the events to store, if any
    usage: dict[int, tuple[int, int]]  # per project: events and bytes, for rate limits
    live: Message | None


def prepare_import(job: ImportJob) -> Prepared:
    """Decode, validate and encode; PayloadError or PayloadTooLarge refuse the request."""
    raw_events = decode_data(job.data) if job.form else decode_import_body(job.body)
    if len(raw_events) > job.max_events:
        raise PayloadTooLarge(f"request exceeds max limit of {job.max_events} events")
    project_id = job.ctx.project_id
    outcome = validate_events(raw_events, job.ctx, lambda _token: project_id)
    record = live = None
    if outcome.events:
        received_ms = job.ctx.received_ms
        endpoint = "import"
        encode = encode_event_table if job.columnar else encode_events
        record = encode(outcome.events, received_ms=received_ms, endpoint=endpoint)
        if job.live:
            live = message_for(outcome.events, received_ms, endpoint)
    return Prepared(
        len(raw_events),
        outcome.accepted,
        outcome.rejections,
        record,
        usage(outcome.events),
        live,
    )
