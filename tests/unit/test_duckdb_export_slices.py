"""The DuckDB export sorts a time slice at a time (storage/duckdb.py): with a slice size
of a few rows, every way of cutting the range must still give exactly the rows, in
(time, $insert_id) order, that one big sort would."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.test_store import T0, Ev, events, exported, no_updates
from trackhouse.journal.segments import Position
from trackhouse.query.where import parse_where
from trackhouse.storage import duckdb as duckdb_store
from trackhouse.storage.base import ExportQuery
from trackhouse.storage.duckdb import DuckDBStore

HOUR, MINUTE, SECOND = 3_600_000, 60_000, 1_000


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DuckDBStore]:
    monkeypatch.setattr(duckdb_store, "EXPORT_SLICE_ROWS", 5)
    monkeypatch.setattr(duckdb_store, "EXPORT_CHUNK_ROWS", 3)
    opened = DuckDBStore(tmp_path / "events.duckdb", memory_limit_mb=64)
    yield opened
    opened.close()


def shapes() -> dict[str, list[int]]:
    """Event times (ms) that exercise each cut: sparse hours, a busy hour of busy
    minutes, a busy minute of busy seconds, and one second holding many rows."""
    rng = random.Random(7)
    return {
        "sparse hours": [T0 + h * HOUR + rng.randrange(HOUR) for h in range(0, 30, 3)],
        "busy hour": [T0 + rng.randrange(HOUR) for _ in range(60)],
        "busy minute": [T0 + rng.randrange(MINUTE) for _ in range(40)],
        "one second": [T0 + rng.randrange(SECOND) for _ in range(17)],
        "one millisecond": [T0] * 12,
        "mixed": [T0 + rng.choice((0, 1, 59, 61, 3599, 3601)) * SECOND for _ in range(80)]
        + [T0 + 5 * HOUR + rng.randrange(3 * HOUR) for _ in range(30)],
    }


@pytest.mark.parametrize("shape", sorted(shapes()))
def test_sliced_export_equals_one_sort(store: DuckDBStore, shape: str) -> None:
    times = shapes()[shape]
    rows = [
        Ev(f"e{i % 3}", f"d{i}", t, f"i{(i * 7919) % 1000:03d}-{i}", properties=f'{{"n":{i}}}')
        for i, t in enumerate(times)
    ]
    store.write_batch(events(*rows), no_updates(), Position(1, 10))
    expected = sorted(rows, key=lambda r: (r.time_ms, r.insert_id))
    lo, hi = min(times) - 1, max(times) + 1

    def ids(query: ExportQuery) -> list[str]:
        return [row.insert_id for row in exported(store, query)]

    assert ids(ExportQuery(1, lo, hi)) == [r.insert_id for r in expected]
    for limit in (1, 4, 5, 6, 11, len(rows) - 1, len(rows), len(rows) + 5):
        assert ids(ExportQuery(1, lo, hi, limit=limit)) == [r.insert_id for r in expected][:limit]
    only = [r.insert_id for r in expected if r.event == "e1"]
    assert ids(ExportQuery(1, lo, hi, events=("e1",))) == only
    late = [r.insert_id for r in expected if int(r.properties[5:-1]) >= 9]
    assert ids(ExportQuery(1, lo, hi, where=parse_where('properties["n"] >= 9'))) == late
    # A window that starts and ends inside buckets.
    start, end = sorted(times)[len(times) // 3], sorted(times)[2 * len(times) // 3]
    inside = [r.insert_id for r in expected if start <= r.time_ms < end]
    assert ids(ExportQuery(1, start, end)) == inside
