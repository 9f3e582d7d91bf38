"""The live feed: events as they are acknowledged, to whoever watches a project.

The ingest handlers offer each request's events right after the journal has them on
disk (the moment the client gets its success reply); the console's event stream
subscribes per project. The message is built where the request is prepared (in an
ingest worker for a large one) and only for watched projects: nothing while nobody
watches. A watcher that
reads too slowly loses messages, never slows ingestion: its queue is bounded and what
does not fit is counted as dropped and reported to it.

The feed itself runs on the server's event loop (one process, one loop); ``close`` is
scheduled onto it from the signal handler at shutdown.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from trackhouse.ingest.validate import Event
from trackhouse.query.export import ndjson_line
from trackhouse.storage.base import ExportRow

QUEUE_MESSAGES = 256  # per watcher
EVENTS_PER_MESSAGE = 100  # a bigger request is shown in part, the rest counted
EVENT_BYTES = 8192  # a bigger event is shown without its other properties


@dataclass(frozen=True, slots=True)
class Message:
    """One request's events, as JSON text ready for the wire."""

    data: bytes
    events: int


@dataclass(eq=False)
class Watcher:
    project_id: int
    # Messages in order; None once the feed has closed.
    queue: asyncio.Queue[Message | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_MESSAGES)
    )
    dropped: int = 0  # events not delivered since the last message that said so

    def offer(self, message: Message | None) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            if message is not None:
                self.dropped += message.events


class LiveFeed:
    def __init__(self) -> None:
        self._watchers: dict[int, set[Watcher]] = defaultdict(set)
        self.closed = False
        self.closing = asyncio.Event()  # set by close(), for senders stuck on a reader

    def watch(self, project_id: int) -> Watcher:
        watcher = Watcher(project_id)
        if self.closed:
            watcher.offer(None)
        else:
            self._watchers[project_id].add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.project_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[watcher.project_id]

    def watchers(self, project_id: int) -> int:
        return len(self._watchers.get(project_id, ()))

    def watched(self) -> frozenset[int]:
        """The projects someone watches now."""
        return frozenset(self._watchers)

    def offer(self, project_id: int, message: Message) -> None:
        """A request's message (``messages_for``) to the project's watchers."""
        for watcher in self._watchers.get(project_id, ()):
            watcher.offer(message)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        self.closing.set()
        for watchers in self._watchers.values():
            for watcher in watchers:
                if watcher.queue.full():  # it still has to end: drop its oldest message
                    watcher.queue.get_nowait()
                watcher.queue.put_nowait(None)
        self._watchers.clear()


def messages_for(
    events: Iterable[Event], watched: frozenset[int], received_ms: int, endpoint: str
) -> dict[int, Message]:
    """The message of each watched project that has events in a request. Built where the
    request is prepared (maybe an ingest worker), delivered by LiveFeed.offer."""
    if not watched:  # nobody watches: not even a look at the events
        return {}
    by_project: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        if event.project_id in watched:
            by_project[event.project_id].append(event)
    return {
        project_id: message_for(mine, received_ms, endpoint)
        for project_id, mine in by_project.items()
    }


def message_for(events: list[Event], received_ms: int, endpoint: str) -> Message:
    """One request's events as a message (built once, whoever watches)."""
    shown = [_line(event) for event in events[:EVENTS_PER_MESSAGE]]
    head = b'{"received_ms":%d,"endpoint":%b,"more":%d,"events":[' % (
        received_ms,
        orjson.dumps(endpoint),
        len(events) - len(shown),
    )
    return Message(head + b",".join(shown) + b"]}", len(events))


def _line(event: Event) -> bytes:
    """The event as the export prints it (time in ms), cut down if very large."""
    row = ExportRow(event.name, event.distinct_id, event.time_ms, event.insert_id, "{}")
    if len(event.properties_json) <= EVENT_BYTES:
        row = ExportRow(
            row.event, row.distinct_id, row.time_ms, row.insert_id, event.properties_json
        )
    return ndjson_line(row, time_in_ms=True).rstrip(b"\n")
