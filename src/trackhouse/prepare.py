"""One request's events made ready for the journal: decode, validate, encode.

This is all of an /import or /track request's per-event work, and none of it needs the
server: it takes bytes and settings and gives back bytes and counts. So it can run in
an ingest worker process (``trackhouse.workers``) while the server's event loop goes on
with other requests, and in the server process itself for small bodies. Both run this
same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trackhouse.errors import PayloadTooLarge
from trackhouse.ingest.decode import decode_client_payload, decode_data, decode_import_body
from trackhouse.ingest.validate import (
    Outcome,
    Rejection,
    RequestContext,
    TokenResolver,
    validate_events,
)
from trackhouse.journal.records import encode_event_table, encode_events
from trackhouse.live import Message, messages_for
from trackhouse.projects import Registry, token_resolver
from trackhouse.ratelimit import usage


@dataclass(frozen=True, slots=True)
class Prepared:
    total: int  # events in the request
    accepted: int  # stored, or dropped on purpose ($ignore)
    rejections: list[Rejection]
    record: bytes | None  # the journal record of the events to store, if any
    usage: dict[int, tuple[int, int]]  # per project: events and bytes, for rate limits
    live: dict[int, Message]  # the live feed's message, for each watched project


@dataclass(frozen=True, slots=True)
class Job:
    """What every request's preparation needs besides its payload."""

    ctx: RequestContext
    max_events: int
    watched: frozenset[int]  # projects someone watches live: build their messages
    # Journal the events columnar (Arrow): for a large request it spares the loader
    # ~3 µs of Python per event; for a few events Arrow's fixed costs outweigh that.
    columnar: bool


@dataclass(frozen=True, slots=True)
class ImportJob:
    job: Job  # ctx.project_id: the project the credentials named
    body: bytes  # the JSON or NDJSON body (decompressed); unused for a form request
    data: str | None  # a form request's data= value (legacy clients)
    form: bool


@dataclass(frozen=True, slots=True)
class TrackJob:
    job: Job
    json_body: bytes | None  # spec §2.3: a JSON body is the payload itself
    data: str | None  # or the data= parameter
    registry: Path  # where an ingest worker resolves the events' tokens


def prepare_import(work: ImportJob) -> Prepared:
    """Decode, validate and encode; PayloadError or PayloadTooLarge refuse the request."""
    job = work.job
    raw_events = decode_data(work.data) if work.form else decode_import_body(work.body)
    if len(raw_events) > job.max_events:
        raise PayloadTooLarge(f"request exceeds max limit of {job.max_events} events")
    project_id = job.ctx.project_id
    outcome = validate_events(raw_events, job.ctx, lambda _token: project_id)
    return _prepared(job, "import", len(raw_events), outcome)


def prepare_track(work: TrackJob, resolve_token: TokenResolver | None = None) -> Prepared:
    """The same for /track, whose events name their projects by token: resolved with
    ``resolve_token``, or (in a worker) against the registry at ``work.registry``."""
    job = work.job
    raw_events = decode_client_payload(
        work.json_body, work.data, max_items=job.max_events, noun="events"
    )
    if resolve_token is None:
        resolve_token = token_resolver(_registry(work.registry), auto_create=False)
    outcome = validate_events(raw_events, job.ctx, resolve_token)
    return _prepared(job, "track", len(raw_events), outcome)


def _prepared(job: Job, endpoint: str, total: int, outcome: Outcome) -> Prepared:
    events = outcome.events
    record = None
    live: dict[int, Message] = {}
    if events:
        received_ms = job.ctx.received_ms
        encode = encode_event_table if job.columnar else encode_events
        record = encode(events, received_ms=received_ms, endpoint=endpoint)
        if job.watched:
            live = messages_for(events, job.watched, received_ms, endpoint)
    return Prepared(total, outcome.accepted, outcome.rejections, record, usage(events), live)


# A worker's registries (one per server data directory it has served; in practice one),
# kept open between jobs: it refreshes from the file as the server's own does.
_REGISTRIES: dict[Path, Registry] = {}


def _registry(path: Path) -> Registry:
    registry = _REGISTRIES.get(path)
    if registry is None:
        registry = _REGISTRIES[path] = Registry(path)
    return registry
