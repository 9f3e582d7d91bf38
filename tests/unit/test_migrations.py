"""Store migrations that need more than SQL: migration 3 builds profiles from the
updates a store kept before profiles existed, migration 4 the event schema from the
events it held."""

from __future__ import annotations

from pathlib import Path

import duckdb

from trackhouse.journal.segments import Position
from trackhouse.storage.base import EventBatch, ProfileQuery, UpdateBatch
from trackhouse.storage.duckdb import DuckDBStore


def _updates() -> UpdateBatch:
    rows = [
        ("u1", "$set", '{"a":1,"l":["x"]}', "{}"),
        ("u1", "$add", '{"n":2}', "{}"),
        ("u1", "$add", '{"n":3}', '{"$ignore_time":true}'),
        ("u2", "$set", '{"b":true}', "{}"),
        ("u2", "$delete", "null", "{}"),
        ("u3", "$append", '{"l":"y"}', "{}"),
    ]
    n = len(rows)
    return UpdateBatch(
        project_id=[1] * n,
        kind=["user"] * n,
        distinct_id=[r[0] for r in rows],
        group_key=[None] * n,
        group_id=[None] * n,
        operation=[r[1] for r in rows],
        value=[r[2] for r in rows],
        modifiers=[r[3] for r in rows],
        time_ms=[1_795_300_000_000 + i for i in range(n)],
        received_ms=[1_795_300_000_000] * n,
        segment=[1] * n,
        offset=[0] * n,
        seq=list(range(n)),
    )


def _profiles(store: DuckDBStore) -> dict[str, str]:
    return {
        row.profile_id: row.properties
        for chunk in store.profiles(ProfileQuery(1), limit=None)
        for row in chunk
    }


def test_migration_3_folds_updates_kept_before_profiles_existed(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    store = DuckDBStore(path)
    empty = EventBatch([], [], [], [], [], [], [], [], [])
    store.write_batch(empty, _updates(), Position(1, 500))
    expected = _profiles(store)
    assert set(expected) == {"u1", "u3"}
    store.close()

    # Put the file back to how version 2 left it: updates kept, no profiles table.
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE profiles")
    con.execute("DELETE FROM schema_migrations WHERE version = 3")
    con.close()

    reopened = DuckDBStore(path)
    try:
        assert _profiles(reopened) == expected
        assert reopened.checkpoint() == Position(1, 500)
    finally:
        reopened.close()


def test_migration_4_counts_the_events_a_store_held_before_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    store = DuckDBStore(path)
    n = 5
    batch = EventBatch(
        project_id=[1, 1, 1, 2, 1],
        event=["a", "a", "b", "a", "a"],
        distinct_id=["d"] * n,
        time_ms=[1_795_300_000_000 + i for i in range(n)],
        insert_id=[f"i{i}" for i in range(n)],
        properties=['{"x":1}', '{"x":"s"}', "{}", '{"y":[1]}', '{"x":2}'],
        received_ms=[1_795_300_000_000 + i for i in range(n)],
        endpoint=["track"] * n,
        lib=[None] * n,
    )
    store.write_batch(batch, _updates(), Position(1, 500))
    expected = {p: store.schema(p, limit=10) for p in (1, 2)}
    assert [(s.event, s.count) for s in expected[1]] == [("a", 3), ("b", 1)]
    store.close()

    con = duckdb.connect(str(path))
    con.execute("DROP TABLE event_names")
    con.execute("DROP TABLE event_properties")
    con.execute("DELETE FROM schema_migrations WHERE version = 4")
    con.close()

    reopened = DuckDBStore(path)
    try:
        assert {p: reopened.schema(p, limit=10) for p in (1, 2)} == expected
    finally:
        reopened.close()
