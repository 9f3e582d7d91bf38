"""The loader, on a real journal and a real DuckDB file: a load after a quiet spell
starts at once, loads while data keeps arriving are spaced by the interval, a stop
drains at once whatever the interval; and columnar (Arrow) event records load exactly
as JSON ones do."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackhouse.ingest.validate import Event
from trackhouse.journal import Journal, Position
from trackhouse.journal.records import encode_event_table, encode_events
from trackhouse.loader import Loader
from trackhouse.storage.duckdb import DuckDBStore

WAIT_S = 30  # bounded waits: far longer than any load takes, never reached when it works


def _append(journal: Journal, insert_id: str) -> Position:
    event = Event(1, "e", "u", 1_700_000_000_000, insert_id, "{}", None)
    record = encode_events([event], received_ms=1_700_000_000_000, endpoint="import")
    return asyncio.run(journal.append_and_sync(record))


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Journal, DuckDBStore]]:
    journal = Journal(tmp_path / "journal", fsync=False)
    store = DuckDBStore(tmp_path / "store.duckdb")
    yield journal, store
    journal.close()
    store.close()


def test_a_load_after_a_quiet_spell_starts_at_once(parts: tuple[Journal, DuckDBStore]) -> None:
    journal, store = parts
    loader = Loader(journal, store, batch_events=1000, idle_ms=50, interval_ms=3_600_000)
    loader.start()
    try:
        assert loader.wait_until_loaded(_append(journal, "a1"), WAIT_S)
    finally:
        loader.stop()


def test_loads_while_data_arrives_wait_for_the_interval_and_a_stop_drains_at_once(
    parts: tuple[Journal, DuckDBStore],
) -> None:
    journal, store = parts
    loader = Loader(journal, store, batch_events=1000, idle_ms=50, interval_ms=3_600_000)
    loader.start()
    stopped = False
    try:
        assert loader.wait_until_loaded(_append(journal, "a1"), WAIT_S)
        second = _append(journal, "a2")  # the loader is busy now: the next load waits
        assert not loader.wait_until_loaded(second, 0.5)
        stopping = threading.Thread(target=loader.stop)
        stopping.start()
        stopping.join(WAIT_S)  # not the hour of the interval
        assert not stopping.is_alive()
        stopped = True
        assert loader.position >= second
        assert loader.stats.events_loaded == 2
    finally:
        if not stopped:
            loader.stop()


def test_a_full_batch_is_followed_at_once_by_the_next(parts: tuple[Journal, DuckDBStore]) -> None:
    journal, store = parts
    ends = [_append(journal, f"b{i}") for i in range(5)]
    # One event per batch: every load leaves more waiting, so none waits for the interval.
    loader = Loader(journal, store, batch_events=1, idle_ms=50, interval_ms=3_600_000)
    loader.start()
    try:
        assert loader.wait_until_loaded(ends[-1], WAIT_S)
        assert loader.stats.batches == 5
    finally:
        loader.stop()


def _stored(store: DuckDBStore) -> list[tuple[object, ...]]:
    return store.run_sql(
        1,
        "SELECT event, distinct_id, time, insert_id, properties, received_at, endpoint, lib "
        "FROM events ORDER BY insert_id",
        max_rows=1000,
        timeout_s=30,
    ).rows


def _record(events: list[Event], columnar: bool) -> bytes:
    encode = encode_event_table if columnar else encode_events
    return encode(events, received_ms=1_700_000_000_000, endpoint="import")


def test_columnar_and_json_records_load_the_same_rows_and_dedup_each_other(
    parts: tuple[Journal, DuckDBStore], tmp_path: Path
) -> None:
    journal, store = parts
    events = [
        Event(1, f"e{i}", f"u{i}", 1_700_000_000_000 + i, f"id{i}", f'{{"n":{i}}}', lib)
        for i, lib in enumerate(["web", None, "python"])
    ]
    # Both kinds of record in one batch, then the same events again in the other form.
    for record in (_record(events[:2], True), _record(events[2:], False)):
        asyncio.run(journal.append_and_sync(record))
    resent = [_record(events, False), _record(events, True)]
    ends = [asyncio.run(journal.append_and_sync(record)) for record in resent]
    loader = Loader(journal, store, batch_events=1000, idle_ms=50)
    loader.catch_up()
    assert loader.position >= ends[-1]
    assert loader.stats.events_loaded == 3
    assert loader.stats.duplicates_dropped == 6
    # The same events, all JSON, into a second store: the very same rows.
    other = DuckDBStore(tmp_path / "other.duckdb")
    try:
        second = Journal(tmp_path / "journal-json", fsync=False)
        try:
            asyncio.run(second.append_and_sync(_record(events, False)))
            Loader(second, other, batch_events=1000, idle_ms=50).catch_up()
        finally:
            second.close()
        assert _stored(store) == _stored(other)
        assert [row[7] for row in _stored(store)] == ["web", None, "python"]
    finally:
        other.close()


@pytest.mark.parametrize("first_columnar", [True, False])
def test_of_two_copies_in_one_batch_the_first_in_the_journal_is_kept(
    parts: tuple[Journal, DuckDBStore], first_columnar: bool
) -> None:
    """Spec §7: the first copy stays. A columnar record and a JSON one in the same batch
    must reach the store in journal order, whichever kind comes first."""
    journal, store = parts
    first = Event(1, "e", "u", 1_700_000_000_000, "dup", '{"v":1}', None)
    second = first._replace(properties_json='{"v":2}')
    asyncio.run(journal.append_and_sync(_record([first], first_columnar)))
    asyncio.run(journal.append_and_sync(_record([second], not first_columnar)))
    Loader(journal, store, batch_events=1000, idle_ms=50).catch_up()
    assert [row[4] for row in _stored(store)] == ['{"v":1}']
