"""The loader's pacing, on a real journal and a real DuckDB file: a load after a quiet
spell starts at once, loads while data keeps arriving are spaced by the interval, and a
stop drains at once whatever the interval."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackhouse.ingest.validate import Event
from trackhouse.journal import Journal, Position
from trackhouse.journal.records import encode_events
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
