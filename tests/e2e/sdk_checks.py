"""Exact read-back checks shared by the SDK conformance tests (test_sdk_node.py,
test_sdk_python.py): what an SDK sent must be what the export API and the profile query
give back, event for event and property for property.

An event is named by its event name and its ``seq`` property (the tests number every
event they make; the library's own events, such as ``$merge``, have none), so a
duplicate or a missing event is reported by name, never hidden by a count that happens
to match.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.serverproc import Server, export, profile
from trackhouse.projects import Registry

Props = dict[str, Any]

GENERATED_INSERT_ID = re.compile(r"[0-9a-f]{32}")
LAST_SEEN_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


@dataclass(frozen=True)
class Project:
    id: int
    token: str
    secret: str
    service_account: tuple[str, str] | None = None  # (username, secret)


_serial = itertools.count(1)


def create_project(server: Server, prefix: str, *, service_account: bool = False) -> Project:
    """A fresh project on a running server, so that a test's export holds only what it
    sent. Written to the registry as `trackhouse projects create` does (the server
    notices on its next request), without a CLI process (a second each) per test."""
    n = next(_serial)
    registry = Registry(server.data_dir / "projects.sqlite")
    try:
        made = registry.create_project(
            f"{prefix}-{n}", token=f"{prefix}-token-{n}", secret=f"{prefix}-secret-{n}"
        )
        account = None
        if service_account:
            username = f"{prefix}-sa-{n}.trackhouse-service-account"
            _, account_secret = registry.create_service_account(
                made.id, username=username, secret=f"{prefix}-sa-secret-{n}"
            )
            account = (username, account_secret)
    finally:
        registry.close()
    return Project(made.id, made.token, made.secret, account)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Window:
    """The span of wall-clock time (ms) around what the SDK did: an arrival time (an
    event sent without a time, mp_processing_time_ms, $last_seen) lies in it."""

    first_ms: int
    last_ms: int = 0

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.first_ms <= value <= self.last_ms

    def seen_texts(self) -> tuple[str, str]:
        """The first and last $last_seen (UTC, to the second) this window allows."""
        return seen_text(self.first_ms), seen_text(self.last_ms)


@contextmanager
def arrival_window() -> Iterator[Window]:
    window = Window(now_ms())
    yield window
    window.last_ms = now_ms()


def seen_text(time_ms: int) -> str:
    """$last_seen's format for a moment: UTC, to the second, no zone suffix."""
    moment = dt.datetime.fromtimestamp(time_ms // 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Expected:
    """One event as it must come out of the export API.

    properties: everything the SDK sent except ``token`` (never stored), ``time`` and
    ``$insert_id`` (checked on their own) and what the server adds.
    time_ms: the exact time (ms), or a Window when the SDK sent none (arrival time).
    insert_id: the SDK's $insert_id, or None when it sent none (the server makes one).
    """

    event: str
    properties: Props
    time_ms: int | Window
    insert_id: str | None = None
    imported: bool = False
    host: str | None = None  # $mp_api_endpoint; None: 127.0.0.1:<the server's port>
    key: Any = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.event, self.properties.get("seq"))


def export_ms(server: Server, secret: str) -> list[Props]:
    """Every event of the secret's project, with times in milliseconds, once the loader
    has caught up with everything acknowledged."""
    server.wait_loaded()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return export(server, secret, "2000-01-01", today, time_in_ms="true")


def assert_events(
    server: Server, secret: str, expected: list[Expected], arrival: Window
) -> list[Props]:
    """The project holds exactly the expected events: each once, nothing else, every
    property equal. Returns the exported events."""
    exported = export_ms(server, secret)
    by_key: dict[Any, Props] = {}
    for event in exported:
        key = (event["event"], event["properties"].get("seq"))
        assert key not in by_key, f"stored twice: {key}\n{by_key[key]}\n{event}"
        by_key[key] = event
    wanted = {e.key: e for e in expected}
    assert len(wanted) == len(expected), "the test names two expected events alike"
    missing = sorted(set(wanted) - set(by_key), key=repr)
    extra = sorted(set(by_key) - set(wanted), key=repr)
    assert not missing, f"missing {missing}"
    assert not extra, f"not sent (or unrecognised): {extra}"

    generated: list[str] = []
    for key, want in wanted.items():
        props = dict(by_key[key]["properties"])
        where = f"event {key}: {by_key[key]}"
        time_ms = props.pop("time")
        if isinstance(want.time_ms, Window):
            assert time_ms in want.time_ms, (where, want.time_ms)
        else:
            assert time_ms == want.time_ms, where
        insert_id = props.pop("$insert_id")
        if want.insert_id is None:
            assert GENERATED_INSERT_ID.fullmatch(insert_id), where
            generated.append(insert_id)
        else:
            assert insert_id == want.insert_id, where
        assert props.pop("mp_processing_time_ms") in arrival, (where, arrival)
        assert props.pop("$mp_api_endpoint") == (want.host or f"127.0.0.1:{server.port}"), where
        assert props.pop("$import", False) is want.imported, where
        assert props == want.properties, where
    assert len(set(generated)) == len(generated), f"generated $insert_ids repeat: {generated}"
    return exported


def assert_profile(
    server: Server,
    secret: str,
    distinct_id: str,
    expected: Props | None,
    seen: str | Window | None,
    *,
    group_key: str | None = None,
) -> None:
    """The profile is `expected` plus $last_seen, which is `seen` (exact text, within the
    window, or absent); None: there is no such profile."""
    server.wait_loaded()
    actual = profile(server, secret, distinct_id, group_key=group_key)
    where = f"profile {group_key or 'user'}/{distinct_id}: {actual}"
    if expected is None:
        assert actual is None, where
        return
    assert actual is not None, where
    props = dict(actual)
    last_seen = props.pop("$last_seen", None)
    assert props == expected, where
    if seen is None:
        assert last_seen is None, where
        return
    assert isinstance(last_seen, str), where
    assert LAST_SEEN_FORMAT.fullmatch(last_seen), where
    if isinstance(seen, Window):
        first, last = seen.seen_texts()
        assert first <= last_seen <= last, (where, first, last)
    else:
        assert last_seen == seen, where
