"""The console's server side without a server: the live feed (trackhouse.live) on an
asyncio loop, and the console's sign-in sessions (trackhouse.web.sessions)."""

from __future__ import annotations

import asyncio
import string
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar, cast

import orjson
import pytest

from trackhouse.ingest.validate import Event
from trackhouse.live import (
    EVENT_BYTES,
    EVENTS_PER_MESSAGE,
    QUEUE_MESSAGES,
    LiveFeed,
    Message,
    Watcher,
    messages_for,
)
from trackhouse.projects import Project, Registry
from trackhouse.query.export import ndjson_line
from trackhouse.storage.base import ExportRow
from trackhouse.web import sessions
from trackhouse.web.sessions import COOKIE, MAX_SESSIONS, SESSION_S, ConsoleSessions, cookie_value

T = TypeVar("T")
RECEIVED_MS = 1_700_000_000_123


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_event(
    project_id: int, n: int = 0, *, name: str = "e", properties: dict[str, Any] | None = None
) -> Event:
    props = {"n": n} if properties is None else properties
    return Event(
        project_id,
        name,
        f"user-{n}",
        1_700_000_000_000 + n,
        f"id-{project_id}-{n}",
        orjson.dumps(props).decode(),
        None,
    )


def publish(feed: LiveFeed, events: list[Event], endpoint: str = "track") -> None:
    """What the ingest path does with a request's events (trackhouse.prepare)."""
    for project_id, message in messages_for(events, feed.watched(), RECEIVED_MS, endpoint).items():
        feed.offer(project_id, message)


def take(watcher: Watcher) -> Message:
    message = watcher.queue.get_nowait()
    assert message is not None
    return message


def body(message: Message) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(message.data)
    return parsed


def ids(message: Message) -> list[str]:
    return [e["properties"]["$insert_id"] for e in body(message)["events"]]


# -- the live feed ------------------------------------------------------------------------------
def test_publishing_with_nobody_watching_does_not_even_look_at_the_events() -> None:
    def events() -> Iterator[Event]:
        raise AssertionError("iterated")
        yield  # pragma: no cover

    async def main() -> None:
        feed = LiveFeed()
        publish(feed, cast("list[Event]", events()))  # no watcher: not iterated
        watcher = feed.watch(1)
        feed.unwatch(watcher)
        publish(feed, cast("list[Event]", events()))  # nobody left

    run(main())


def test_watchers_get_only_their_projects_events() -> None:
    async def main() -> None:
        feed = LiveFeed()
        one, one_again, two = feed.watch(1), feed.watch(1), feed.watch(2)
        assert (feed.watchers(1), feed.watchers(2), feed.watchers(3)) == (2, 1, 0)
        publish(feed, [make_event(1, 0), make_event(1, 1)])
        first = take(one)
        assert take(one_again) is first  # one message, shared
        assert ids(first) == ["id-1-0", "id-1-1"]
        assert first.events == 2
        assert two.queue.empty()
        publish(feed, [make_event(3, 0)])  # nobody watches project 3
        assert one.queue.empty()
        assert two.queue.empty()

    run(main())


def test_a_request_spanning_projects_is_split_per_project_in_order() -> None:
    async def main() -> None:
        feed = LiveFeed()
        one, two = feed.watch(1), feed.watch(2)
        publish(
            feed,
            [make_event(1, 0), make_event(2, 1), make_event(3, 2), make_event(1, 3)],
            "import",
        )
        mine, theirs = take(one), take(two)
        assert ids(mine) == ["id-1-0", "id-1-3"]
        assert ids(theirs) == ["id-2-1"]
        assert (mine.events, theirs.events) == (2, 1)
        assert body(mine)["endpoint"] == body(theirs)["endpoint"] == "import"
        assert one.queue.empty()
        assert two.queue.empty()

    run(main())


def test_a_waiting_reader_is_woken_by_a_publish() -> None:
    async def main() -> None:
        feed = LiveFeed()
        watcher = feed.watch(1)
        asyncio.get_running_loop().call_soon(publish, feed, [make_event(1, 5)])
        message = await asyncio.wait_for(watcher.queue.get(), timeout=5)
        assert message is not None
        assert ids(message) == ["id-1-5"]

    run(main())


def test_more_than_a_message_holds_is_shown_in_part_and_counted() -> None:
    async def main() -> None:
        feed = LiveFeed()
        watcher = feed.watch(1)
        publish(feed, [make_event(1, n) for n in range(EVENTS_PER_MESSAGE + 57)])
        message = take(watcher)
        assert message.events == EVENTS_PER_MESSAGE + 57
        assert body(message)["more"] == 57
        assert ids(message) == [f"id-1-{n}" for n in range(EVENTS_PER_MESSAGE)]
        publish(feed, [make_event(1, n) for n in range(EVENTS_PER_MESSAGE)])
        exactly = take(watcher)
        assert body(exactly)["more"] == 0
        assert len(body(exactly)["events"]) == EVENTS_PER_MESSAGE

    run(main())


def test_a_very_large_event_is_shown_without_its_other_properties() -> None:
    def sized(total: int) -> dict[str, str]:
        filler = total - len(orjson.dumps({"pad": ""}))
        return {"pad": "x" * filler}

    async def main() -> None:
        feed = LiveFeed()
        watcher = feed.watch(1)
        at_limit = make_event(1, 0, properties=sized(EVENT_BYTES))
        past_limit = make_event(1, 1, properties=sized(EVENT_BYTES + 1))
        assert len(at_limit.properties_json) == EVENT_BYTES
        assert len(past_limit.properties_json) == EVENT_BYTES + 1
        publish(feed, [at_limit, past_limit])
        shown = body(take(watcher))["events"]
        assert shown[0]["properties"]["pad"] == "x" * (EVENT_BYTES - 10)
        assert shown[1] == {
            "event": "e",
            "properties": {
                "time": past_limit.time_ms,
                "distinct_id": "user-1",
                "$insert_id": "id-1-1",
            },
        }

    run(main())


def test_a_full_queue_drops_messages_and_counts_their_events() -> None:
    async def main() -> None:
        feed = LiveFeed()
        slow, fast = feed.watch(1), feed.watch(1)
        for n in range(QUEUE_MESSAGES):
            publish(feed, [make_event(1, n), make_event(1, n + 1000)])
            take(fast)
        assert slow.queue.full()
        assert slow.dropped == 0
        publish(feed, [make_event(1, n) for n in range(5)])
        publish(feed, [make_event(1, n) for n in range(7)])
        assert slow.dropped == 12
        assert slow.queue.qsize() == QUEUE_MESSAGES
        assert fast.dropped == 0  # one slow reader costs the others nothing
        assert take(fast).events == 5
        assert take(fast).events == 7
        # What stayed in the queue is the oldest, in order.
        assert ids(take(slow)) == ["id-1-0", "id-1-1000"]

    run(main())


def test_close_ends_every_watcher_even_a_full_one() -> None:
    async def main() -> None:
        feed = LiveFeed()
        idle, full, other = feed.watch(1), feed.watch(1), feed.watch(2)
        while not full.queue.full():
            full.offer(Message(b"{}", 1))
        idle_reader = asyncio.ensure_future(idle.queue.get())
        await asyncio.sleep(0)  # the reader waits on the empty queue
        feed.close()
        assert feed.closed
        assert await asyncio.wait_for(idle_reader, timeout=5) is None
        assert other.queue.get_nowait() is None
        drained = [full.queue.get_nowait() for _ in range(full.queue.qsize())]
        assert drained[-1] is None  # the end, after what it still had to show
        assert all(m is not None for m in drained[:-1])
        assert (feed.watchers(1), feed.watchers(2)) == (0, 0)
        publish(feed, [make_event(1)])  # after close: nobody gets anything
        assert idle.queue.empty()

    run(main())


def test_watching_a_closed_feed_ends_at_once() -> None:
    async def main() -> None:
        feed = LiveFeed()
        feed.close()
        late = feed.watch(1)
        assert feed.watchers(1) == 0
        assert await asyncio.wait_for(late.queue.get(), timeout=5) is None
        feed.unwatch(late)  # harmless
        feed.close()  # twice: harmless

    run(main())


def test_unwatch_removes_one_watcher_only() -> None:
    async def main() -> None:
        feed = LiveFeed()
        leaving, staying = feed.watch(1), feed.watch(1)
        feed.unwatch(leaving)
        feed.unwatch(leaving)  # twice: harmless
        assert feed.watchers(1) == 1
        publish(feed, [make_event(1)])
        assert leaving.queue.empty()
        assert take(staying).events == 1
        feed.unwatch(staying)
        assert feed.watchers(1) == 0
        publish(feed, [make_event(1)])
        assert staying.queue.empty()

    run(main())


def test_a_message_is_json_with_events_exactly_as_export_prints_them() -> None:
    hostile = 'quote " backslash \\ newline \n\n event: dropped \r\n data: {} \u2028 é 🚀 \u0000'
    events = [
        make_event(1, 0, properties={"a": [1, {"b": None}], "s": "x", "f": 1.5, "t": True}),
        make_event(1, 1, name=hostile, properties={hostile: hostile}),
        make_event(1, 2, properties={}),
    ]

    async def main() -> None:
        feed = LiveFeed()
        watcher = feed.watch(1)
        publish(feed, events, endpoint='im"port')
        message = take(watcher)
        # One SSE data line: no raw line break may split it.
        assert b"\n" not in message.data
        assert b"\r" not in message.data
        parsed = body(message)
        assert list(parsed) == ["received_ms", "endpoint", "more", "events"]
        assert parsed["received_ms"] == RECEIVED_MS
        assert parsed["endpoint"] == 'im"port'
        assert parsed["more"] == 0
        for shown, sent in zip(parsed["events"], events, strict=True):
            row = ExportRow(
                sent.name, sent.distinct_id, sent.time_ms, sent.insert_id, sent.properties_json
            )
            assert shown == orjson.loads(ndjson_line(row, time_in_ms=True))
            assert shown["properties"]["time"] == sent.time_ms  # ms, not seconds
        assert parsed["events"][1]["event"] == hostile
        assert parsed["events"][1]["properties"][hostile] == hostile
        assert parsed["events"][2]["properties"] == {
            "time": events[2].time_ms,
            "distinct_id": "user-2",
            "$insert_id": "id-1-2",
        }

    run(main())


# -- console sessions ---------------------------------------------------------------------------
class FakeRegistry:
    """What ConsoleSessions asks of the registry: get(project_id)."""

    def __init__(self, *projects: Project) -> None:
        self.projects = {p.id: p for p in projects}

    def get(self, project_id: int) -> Project | None:
        return self.projects.get(project_id)

    def rotate(self, project_id: int, secret: str) -> None:
        old = self.projects[project_id]
        self.projects[project_id] = Project(old.id, old.name, old.token, secret, old.created_at)

    @property
    def registry(self) -> Registry:
        return cast("Registry", self)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The sessions module's monotonic clock, moved by hand."""
    fake = Clock()
    monkeypatch.setattr(sessions, "time", fake)
    return fake


FIRST_SECRET = "secret-1"


def project(project_id: int = 1, secret: str = FIRST_SECRET) -> Project:
    return Project(project_id, f"p{project_id}", f"token-{project_id}", secret, 0)


def test_a_session_names_its_project_until_it_expires(clock: Clock) -> None:
    registry = FakeRegistry(project(1), project(2, "secret-2"))
    console = ConsoleSessions(ttl_s=60)
    one, two = console.start(project(1)), console.start(project(2, "secret-2"))
    assert one != two
    assert console.project(one, registry.registry) == project(1)
    assert console.project(two, registry.registry) == project(2, "secret-2")
    clock.now += 60  # the last moment it is good
    assert console.project(one, registry.registry) == project(1)
    clock.now += 0.001
    assert console.project(one, registry.registry) is None
    assert console.project(two, registry.registry) is None
    clock.now -= 30  # ended for good, not merely expired
    assert console.project(one, registry.registry) is None


def test_the_default_lifetime_is_twelve_hours(clock: Clock) -> None:
    registry = FakeRegistry(project())
    console = ConsoleSessions()
    session = console.start(project())
    clock.now += SESSION_S
    assert console.project(session, registry.registry) == project()
    clock.now += 1
    assert console.project(session, registry.registry) is None


def test_a_new_secret_ends_the_sessions_made_with_the_old_one(clock: Clock) -> None:
    registry = FakeRegistry(project(1, "old"))
    console = ConsoleSessions()
    before = console.start(project(1, "old"))
    registry.rotate(1, "new")
    assert console.project(before, registry.registry) is None
    registry.rotate(1, "old")  # rotating back does not revive it
    assert console.project(before, registry.registry) is None
    registry.rotate(1, "new")
    after = console.start(project(1, "new"))
    assert console.project(after, registry.registry) == project(1, "new")
    registry.projects.clear()  # the project is gone
    assert console.project(after, registry.registry) is None


def test_unknown_empty_and_ended_sessions_name_no_project(clock: Clock) -> None:
    registry = FakeRegistry(project())
    console = ConsoleSessions()
    for session_id in (None, "", "unknown", "x" * 1000):
        assert console.project(session_id, registry.registry) is None
        console.end(session_id)  # harmless
    session = console.start(project())
    console.end(session)
    assert console.project(session, registry.registry) is None


def test_session_ids_are_long_random_and_cookie_safe(clock: Clock) -> None:
    console = ConsoleSessions()
    made = {console.start(project()) for _ in range(200)}
    assert len(made) == 200
    allowed = set(string.ascii_letters + string.digits + "-_")
    for session_id in made:
        assert len(session_id) >= 43  # 32 random bytes
        assert set(session_id) <= allowed


def test_past_the_limit_the_oldest_sessions_are_signed_out(clock: Clock) -> None:
    registry = FakeRegistry(project())
    console = ConsoleSessions()
    first = [console.start(project()) for _ in range(3)]
    rest = [console.start(project()) for _ in range(MAX_SESSIONS - 3)]
    assert console.project(first[0], registry.registry) == project()  # exactly at the limit
    newest = console.start(project())
    assert console.project(first[0], registry.registry) is None  # the oldest made, though used
    assert console.project(first[1], registry.registry) == project()
    assert console.project(rest[-1], registry.registry) == project()
    assert console.project(newest, registry.registry) == project()
    console.start(project())
    assert console.project(first[1], registry.registry) is None
    assert console.project(first[2], registry.registry) == project()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (None, None),
        ("", None),
        (f"{COOKIE}=abc", "abc"),
        (f"theme=dark; {COOKIE}=abc; lang=fr", "abc"),
        (f"  {COOKIE}=abc  ", "abc"),
        (f"theme=dark;{COOKIE}=abc", "abc"),
        (f"{COOKIE}=", ""),
        (COOKIE, ""),
        (f"{COOKIE}=a=b", "a=b"),
        (f"{COOKIE}=first; {COOKIE}=second", "first"),
        (f"x{COOKIE}=abc", None),
        (f"{COOKIE}x=abc", None),
        (f"{COOKIE.upper()}=abc", None),
        ("theme=dark; lang=fr", None),
        (";;;", None),
    ],
)
def test_cookie_value(header: str | None, value: str | None) -> None:
    assert cookie_value(header) == value


def test_cookie_value_of_another_name() -> None:
    assert cookie_value(f"{COOKIE}=a; other=b", "other") == "b"
    assert cookie_value(f"{COOKIE}=a", "other") is None
