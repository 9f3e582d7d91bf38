"""The store contract (storage/base.py), run against every store implementation.

To add a store, add one line to OPENERS: a function from a fresh directory to an open
store. It is called again with the same directory to reopen the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from trackhouse.errors import StorageError
from trackhouse.journal.segments import Position
from trackhouse.query.where import parse_where
from trackhouse.storage.base import (
    USERS,
    Deleted,
    EventBatch,
    ExportQuery,
    ExportRow,
    ProfileQuery,
    Store,
    UpdateBatch,
)
from trackhouse.storage.duckdb import DuckDBStore

OPENERS: dict[str, Callable[[Path], Store]] = {
    "duckdb": lambda root: DuckDBStore(root / "events.duckdb"),
}

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
IGNORE_TIME: dict[str, Any] = {"$ignore_time": True}


class Stores:
    """Opens the store kept in one directory; reopens it after a close, as a restart does."""

    def __init__(self, opener: Callable[[Path], Store], root: Path) -> None:
        self._opener = opener
        self._root = root
        self.open_now: list[Store] = []

    def open(self) -> Store:
        store = self._opener(self._root)
        self.open_now.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        self.open_now.remove(store)
        store.close()
        return self.open()

    def close_all(self) -> None:
        while self.open_now:
            self.open_now.pop().close()


@pytest.fixture(params=sorted(OPENERS))
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(OPENERS[request.param], tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture
def store(stores: Stores) -> Store:
    return stores.open()


# -- building batches ---------------------------------------------------------------------
class Ev(NamedTuple):
    event: str
    distinct_id: str
    time_ms: int
    insert_id: str
    project_id: int = 1
    properties: str = "{}"


def events(*rows: Ev) -> EventBatch:
    return EventBatch(
        project_id=[r.project_id for r in rows],
        event=[r.event for r in rows],
        distinct_id=[r.distinct_id for r in rows],
        time_ms=[r.time_ms for r in rows],
        insert_id=[r.insert_id for r in rows],
        properties=[r.properties for r in rows],
        received_ms=[r.time_ms + 500 for r in rows],
        endpoint=["track"] * len(rows),
        lib=[None] * len(rows),
    )


class Up(NamedTuple):
    operation: str
    value: Any
    profile_id: str = "u1"
    group_key: str | None = None  # None: a user profile
    project_id: int = 1
    modifiers: dict[str, Any] = IGNORE_TIME
    time_ms: int = T0


def updates(*rows: Up, segment: int = 1, offset: int = 0, step: int = 10) -> UpdateBatch:
    """One journal record per update, at segment:offset, segment:offset+step, ..."""
    return UpdateBatch(
        project_id=[r.project_id for r in rows],
        kind=["user" if r.group_key is None else "group" for r in rows],
        distinct_id=[r.profile_id if r.group_key is None else None for r in rows],
        group_key=[r.group_key for r in rows],
        group_id=[None if r.group_key is None else r.profile_id for r in rows],
        operation=[r.operation for r in rows],
        value=[orjson.dumps(r.value).decode() for r in rows],
        modifiers=[orjson.dumps(r.modifiers).decode() for r in rows],
        time_ms=[r.time_ms for r in rows],
        received_ms=[r.time_ms for r in rows],
        segment=[segment] * len(rows),
        offset=[offset + i * step for i in range(len(rows))],
        seq=[0] * len(rows),
    )


def no_events() -> EventBatch:
    return events()


def no_updates() -> UpdateBatch:
    return updates()


# -- reading back ----------------------------------------------------------------------------
def exported(store: Store, query: ExportQuery) -> list[ExportRow]:
    chunks = list(store.export(query))
    assert all(chunks), "no empty chunks"
    return [row for chunk in chunks for row in chunk]


def everything(project_id: int = 1, **kw: Any) -> ExportQuery:
    return ExportQuery(project_id, 0, T0 + 10**9, **kw)


def profile_list(
    store: Store,
    query: ProfileQuery,
    *,
    after: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    return [
        (row.profile_id, orjson.loads(row.properties))
        for chunk in store.profiles(query, after=after, offset=offset, limit=limit)
        for row in chunk
    ]


def profiles_of(store: Store, project_id: int = 1, group_key: str = USERS) -> dict[str, Any]:
    return dict(profile_list(store, ProfileQuery(project_id, group_key)))


def ids_of(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [profile_id for profile_id, _ in rows]


# -- checkpoint and events ---------------------------------------------------------------------
def test_a_new_store_has_no_checkpoint_and_nothing_stored(store: Store) -> None:
    assert store.checkpoint() is None
    assert exported(store, everything()) == []
    assert store.count_profiles(ProfileQuery(1)) == 0
    assert profile_list(store, ProfileQuery(1)) == []


def test_write_batch_stores_events_and_checkpoint(store: Store) -> None:
    batch = events(
        Ev("signup", "d1", T0 + 1234, "i1", properties='{"plan":"pro","n":1.5}'),
        Ev("login", "d2", T0 + 2000, "i2"),
        Ev("login", "d1", T0 + 3000, "i3"),
    )
    assert store.write_batch(batch, no_updates(), Position(1, 300)) == 3
    assert store.checkpoint() == Position(1, 300)
    rows = exported(store, everything())
    assert [(r.event, r.distinct_id, r.time_ms, r.insert_id) for r in rows] == [
        ("signup", "d1", T0 + 1234, "i1"),
        ("login", "d2", T0 + 2000, "i2"),
        ("login", "d1", T0 + 3000, "i3"),
    ]
    assert orjson.loads(rows[0].properties) == {"plan": "pro", "n": 1.5}
    assert orjson.loads(rows[1].properties) == {}


def test_checkpoint_moves_with_every_batch_even_an_empty_one(store: Store) -> None:
    assert store.write_batch(events(Ev("e", "d", T0, "a")), no_updates(), Position(1, 50)) == 1
    assert store.write_batch(no_events(), no_updates(), Position(2, 0)) == 0
    assert store.checkpoint() == Position(2, 0)
    store.write_batch(no_events(), updates(Up("$set", {"a": 1})), Position(2, 40))
    assert store.checkpoint() == Position(2, 40)


def test_duplicates_are_not_added_in_the_same_or_a_later_batch(store: Store) -> None:
    first = events(
        Ev("e", "d", T0 + 100, "x", properties='{"copy":1}'),
        Ev("e", "d", T0 + 100, "x", properties='{"copy":1}'),  # identical
        Ev("e", "d", T0 + 100, "y"),
    )
    assert store.write_batch(first, no_updates(), Position(1, 10)) == 2
    # Same key: same project, event, distinct_id, second and insert_id.
    later = events(
        Ev("e", "d", T0 + 999, "x", properties='{"copy":2}'),
        Ev("e", "d", T0 + 100, "y", properties='{"copy":2}'),
    )
    assert store.write_batch(later, no_updates(), Position(1, 20)) == 0
    assert store.checkpoint() == Position(1, 20)
    rows = exported(store, everything())
    assert sorted((r.insert_id, r.time_ms, r.properties) for r in rows) == [
        ("x", T0 + 100, '{"copy":1}'),
        ("y", T0 + 100, "{}"),
    ]


def test_a_different_part_of_the_key_makes_a_new_event(store: Store) -> None:
    base = Ev("e", "d", T0 + 100, "x")
    assert store.write_batch(events(base), no_updates(), Position(1, 1)) == 1
    variants = events(
        base._replace(time_ms=T0 + 1000),  # the next second
        base._replace(time_ms=T0 - 1),  # the second before
        base._replace(event="f"),
        base._replace(distinct_id="d2"),
        base._replace(insert_id="x2"),
        base._replace(project_id=2),
        # the key keeps ("ab", "c") and ("a", "bc") apart
        Ev("ab", "c", T0, "k"),
        Ev("a", "bc", T0, "k"),
    )
    assert store.write_batch(variants, no_updates(), Position(1, 2)) == 8
    assert store.write_batch(variants, no_updates(), Position(1, 3)) == 0
    assert len(exported(store, everything(1))) == 8
    assert len(exported(store, everything(2))) == 1


# -- export --------------------------------------------------------------------------------------
def test_export_is_in_time_order_and_filtered(store: Store) -> None:
    batch = events(
        Ev("c", "d1", T0 + 3000, "i3"),
        Ev("a", "d1", T0 + 1000, "i1"),
        Ev("b", "d2", T0 + 2000, "i2"),
        Ev("a", "d3", T0 + 4000, "i4"),
        Ev("a", "other", T0 + 1500, "o1", project_id=2),
    )
    store.write_batch(batch, no_updates(), Position(1, 10))

    def ids(query: ExportQuery) -> list[str]:
        return [row.insert_id for row in exported(store, query)]

    assert ids(everything()) == ["i1", "i2", "i3", "i4"]
    # from inclusive, to exclusive
    assert ids(ExportQuery(1, T0 + 1000, T0 + 3000)) == ["i1", "i2"]
    assert ids(ExportQuery(1, T0 + 1001, T0 + 3001)) == ["i2", "i3"]
    assert ids(ExportQuery(1, T0 + 5000, T0 + 9000)) == []
    assert ids(everything(events=["a", "c"])) == ["i1", "i3", "i4"]
    assert ids(everything(events=("b",))) == ["i2"]
    assert ids(everything(events=["nope"])) == []
    assert ids(everything(events=[])) == []
    assert ids(everything(limit=2)) == ["i1", "i2"]
    assert ids(everything(events=["a"], limit=1)) == ["i1"]
    assert ids(everything(limit=0)) == []
    assert ids(everything(2)) == ["o1"]
    assert ids(everything(3)) == []


def test_export_of_many_rows_comes_in_chunks_in_order(store: Store) -> None:
    count = 12_000
    batch = events(*(Ev("e", "d", T0 + (count - i) * 7, f"i{i:05d}") for i in range(count)))
    assert store.write_batch(batch, no_updates(), Position(1, 10)) == count
    rows = exported(store, everything())
    assert len(rows) == count
    times = [row.time_ms for row in rows]
    assert times == sorted(times)
    assert rows[0].insert_id == f"i{count - 1:05d}"


# -- profiles: folding -------------------------------------------------------------------------
def test_updates_fold_in_order_across_batches(store: Store) -> None:
    store.write_batch(
        no_events(), updates(Up("$set", {"n": 1, "l": ["a"]}), offset=0), Position(1, 10)
    )
    store.write_batch(no_events(), updates(Up("$add", {"n": 2}), offset=10), Position(1, 20))
    store.write_batch(no_events(), updates(Up("$append", {"l": "b"}), offset=20), Position(2, 0))
    assert profiles_of(store) == {"u1": {"n": 3, "l": ["a", "b"]}}


def test_updates_fold_in_order_within_a_batch(store: Store) -> None:
    batch = updates(
        Up("$set", {"a": 1}),
        Up("$set", {"x": 1}, profile_id="u2"),
        Up("$set_once", {"a": 2, "b": 2}),
        Up("$add", {"x": 5}, profile_id="u2"),
        Up("$unset", ["a"]),
        Up("$set", {"c": 3}),
        Up("$union", {"l": [1, 2]}, profile_id="u2"),
        Up("$remove", {"l": 1}, profile_id="u2"),
    )
    store.write_batch(no_events(), batch, Position(1, 100))
    assert profiles_of(store) == {"u1": {"b": 2, "c": 3}, "u2": {"x": 6, "l": [2]}}
    assert store.count_profiles(ProfileQuery(1)) == 2


def test_updates_and_events_in_one_batch(store: Store) -> None:
    added = store.write_batch(
        events(Ev("e", "u1", T0, "i")), updates(Up("$set", {"a": 1})), Position(1, 10)
    )
    assert added == 1
    assert len(exported(store, everything())) == 1
    assert profiles_of(store) == {"u1": {"a": 1}}


def test_last_seen_is_kept_unless_ignore_time(store: Store) -> None:
    batch = updates(
        Up("$set", {"a": 1}, modifiers={}, time_ms=T0 + 5000),
        Up("$set", {"b": 1}, profile_id="u2", modifiers={"$ignore_time": True}),
        # an older update does not move $last_seen back
        Up("$set", {"c": 1}, modifiers={}, time_ms=T0 - 60_000),
    )
    store.write_batch(no_events(), batch, Position(1, 100))
    assert profiles_of(store) == {
        "u1": {"a": 1, "c": 1, "$last_seen": "2023-11-14T22:13:25"},
        "u2": {"b": 1},
    }


def test_a_replayed_batch_is_not_applied_again(store: Store) -> None:
    batch = updates(
        Up("$add", {"n": 5}),
        Up("$add", {"n": 5}),
        Up("$add", {"n": 5}),
        Up("$append", {"l": "x"}),
        Up("$set", {"m": 1}, profile_id="u2"),
        Up("$add", {"m": 1}, profile_id="u2"),
        offset=0,
    )
    store.write_batch(no_events(), batch, Position(1, 100))
    assert profiles_of(store) == {"u1": {"n": 15, "l": ["x"]}, "u2": {"m": 2}}
    # After a crash, the loader reads the same records again with a later checkpoint.
    store.write_batch(no_events(), batch, Position(1, 200))
    assert store.checkpoint() == Position(1, 200)
    assert profiles_of(store) == {"u1": {"n": 15, "l": ["x"]}, "u2": {"m": 2}}


def test_a_batch_straddling_the_checkpoint_applies_only_what_is_new(store: Store) -> None:
    store.write_batch(
        no_events(), updates(Up("$add", {"n": 1}), Up("$add", {"n": 2})), Position(1, 20)
    )
    # offsets 10 (before the checkpoint: already applied) and 20, 30 (new)
    replay = updates(Up("$add", {"n": 2}), Up("$add", {"n": 10}), Up("$add", {"n": 100}), offset=10)
    store.write_batch(no_events(), replay, Position(1, 40))
    assert profiles_of(store) == {"u1": {"n": 113}}


def test_updates_in_a_later_segment_apply(store: Store) -> None:
    store.write_batch(no_events(), updates(Up("$add", {"n": 1}), offset=900), Position(1, 1000))
    store.write_batch(
        no_events(), updates(Up("$add", {"n": 2}), segment=2, offset=0), Position(2, 10)
    )
    assert profiles_of(store) == {"u1": {"n": 3}}


def test_group_profiles_are_apart_from_user_profiles(store: Store) -> None:
    batch = updates(
        Up("$set", {"kind": "user"}, profile_id="acme"),
        Up("$set", {"kind": "company"}, profile_id="acme", group_key="company"),
        Up("$set", {"kind": "team"}, profile_id="acme", group_key="team"),
        Up("$add", {"n": 1}, profile_id="acme", group_key="company"),
    )
    store.write_batch(no_events(), batch, Position(1, 100))
    assert profiles_of(store) == {"acme": {"kind": "user"}}
    assert profiles_of(store, group_key="company") == {"acme": {"kind": "company", "n": 1}}
    assert profiles_of(store, group_key="team") == {"acme": {"kind": "team"}}
    assert profiles_of(store, group_key="nope") == {}
    assert store.count_profiles(ProfileQuery(1)) == 1
    assert store.count_profiles(ProfileQuery(1, "company")) == 1

    delete = updates(Up("$delete", None, profile_id="acme", group_key="company"), offset=100)
    store.write_batch(no_events(), delete, Position(1, 200))
    assert profiles_of(store, group_key="company") == {}
    assert profiles_of(store) == {"acme": {"kind": "user"}}
    assert profiles_of(store, group_key="team") == {"acme": {"kind": "team"}}


def test_delete_removes_the_profile(store: Store) -> None:
    store.write_batch(
        no_events(),
        updates(Up("$set", {"a": 1}), Up("$set", {"b": 1}, profile_id="u2")),
        Position(1, 100),
    )
    store.write_batch(no_events(), updates(Up("$delete", None), offset=100), Position(1, 200))
    assert profiles_of(store) == {"u2": {"b": 1}}
    assert store.count_profiles(ProfileQuery(1)) == 1
    assert store.count_profiles(ProfileQuery(1, ids=["u1"])) == 0


def test_delete_then_set_starts_a_fresh_profile(store: Store) -> None:
    batch = updates(
        Up("$set", {"a": 1}),
        Up("$delete", None),
        Up("$set", {"b": 2}),
        Up("$set", {"c": 1}, profile_id="u2"),
        Up("$delete", None, profile_id="u2"),
        Up("$delete", None, profile_id="never"),
    )
    store.write_batch(no_events(), batch, Position(1, 100))
    assert profiles_of(store) == {"u1": {"b": 2}}
    # the same across batches
    store.write_batch(
        no_events(),
        updates(Up("$delete", None), Up("$set", {"z": 0}), offset=100),
        Position(1, 200),
    )
    assert profiles_of(store) == {"u1": {"z": 0}}


# -- profiles: queries --------------------------------------------------------------------------
@pytest.fixture
def populated(store: Store) -> Store:
    """Project 1: users u01..u10 (even ones on "pro"), a group "u05"; project 2: u01..u03."""
    rows = [
        Up("$set", {"i": i, "plan": "pro" if i % 2 == 0 else "free"}, profile_id=f"u{i:02d}")
        for i in range(1, 11)
    ]
    rows += [
        Up("$set", {"i": 100 + i, "plan": "pro"}, profile_id=f"u{i:02d}", project_id=2)
        for i in range(1, 4)
    ]
    rows.append(Up("$set", {"plan": "pro"}, profile_id="u05", group_key="company"))
    store.write_batch(no_events(), updates(*rows), Position(1, 1000))
    return store


USER_IDS = [f"u{i:02d}" for i in range(1, 11)]


def test_profiles_are_ordered_by_id_with_their_properties(populated: Store) -> None:
    rows = profile_list(populated, ProfileQuery(1))
    assert ids_of(rows) == USER_IDS
    assert rows[2] == ("u03", {"i": 3, "plan": "free"})
    assert populated.count_profiles(ProfileQuery(1)) == 10


def test_profiles_by_ids(populated: Store) -> None:
    query = ProfileQuery(1, ids=["u07", "u03", "nope", "u03"])
    assert ids_of(profile_list(populated, query)) == ["u03", "u07"]
    assert populated.count_profiles(query) == 2
    assert profile_list(populated, ProfileQuery(1, ids=[])) == []
    assert populated.count_profiles(ProfileQuery(1, ids=[])) == 0


def test_profiles_by_where(populated: Store) -> None:
    pro = ProfileQuery(1, where=parse_where('properties["plan"] == "pro"'))
    assert ids_of(profile_list(populated, pro)) == ["u02", "u04", "u06", "u08", "u10"]
    assert populated.count_profiles(pro) == 5

    both = ProfileQuery(
        1, ids=["u01", "u02", "u03"], where=parse_where('properties["plan"] == "pro"')
    )
    assert ids_of(profile_list(populated, both)) == ["u02"]
    assert populated.count_profiles(both) == 1

    numeric = ProfileQuery(1, where=parse_where('properties["i"] > 3 and properties["i"] <= 5'))
    assert ids_of(profile_list(populated, numeric)) == ["u04", "u05"]

    missing = ProfileQuery(1, where=parse_where('defined(properties["nope"])'))
    assert profile_list(populated, missing) == []
    assert populated.count_profiles(missing) == 0


def test_profiles_after_offset_limit(populated: Store) -> None:
    query = ProfileQuery(1)
    assert ids_of(profile_list(populated, query, after="u04")) == USER_IDS[4:]
    assert ids_of(profile_list(populated, query, after="u04", offset=2)) == USER_IDS[6:]
    assert ids_of(profile_list(populated, query, after="u04", limit=3)) == ["u05", "u06", "u07"]
    assert ids_of(profile_list(populated, query, after="u04", offset=1, limit=2)) == ["u06", "u07"]
    assert ids_of(profile_list(populated, query, offset=8)) == ["u09", "u10"]
    assert profile_list(populated, query, offset=20) == []
    assert profile_list(populated, query, limit=0) == []
    assert profile_list(populated, query, after="u10") == []
    # after need not be a stored id
    assert ids_of(profile_list(populated, query, after="u045")) == USER_IDS[4:]
    assert ids_of(profile_list(populated, query, after="")) == USER_IDS


def test_keyset_paging_visits_every_profile_once(populated: Store) -> None:
    query = ProfileQuery(1, where=parse_where('properties["plan"] != "pro"'))
    seen: list[str] = []
    after: str | None = None
    while page := ids_of(profile_list(populated, query, after=after, limit=2)):
        seen += page
        after = page[-1]
    assert seen == ["u01", "u03", "u05", "u07", "u09"]


def test_another_projects_profiles_never_appear(populated: Store) -> None:
    project_2 = profile_list(populated, ProfileQuery(2))
    assert project_2 == [
        ("u01", {"i": 101, "plan": "pro"}),
        ("u02", {"i": 102, "plan": "pro"}),
        ("u03", {"i": 103, "plan": "pro"}),
    ]
    assert populated.count_profiles(ProfileQuery(2)) == 3
    pro = parse_where('properties["plan"] == "pro"')
    assert ids_of(profile_list(populated, ProfileQuery(1, where=pro, ids=["u01", "u03"]))) == []
    assert populated.count_profiles(ProfileQuery(3)) == 0
    assert profile_list(populated, ProfileQuery(3, ids=["u01"])) == []
    assert profile_list(populated, ProfileQuery(2, "company")) == []
    assert profile_list(populated, ProfileQuery(1, "company")) == [("u05", {"plan": "pro"})]


def test_a_profile_update_in_one_project_leaves_the_other_alone(populated: Store) -> None:
    batch = updates(Up("$add", {"i": 1000}, profile_id="u01", project_id=2), offset=1000)
    populated.write_batch(no_events(), batch, Position(1, 2000))
    assert profiles_of(populated, 2)["u01"] == {"i": 1101, "plan": "pro"}
    assert profiles_of(populated, 1)["u01"] == {"i": 1, "plan": "free"}


# -- durability ---------------------------------------------------------------------------------
def test_a_reopened_store_keeps_everything(stores: Stores) -> None:
    store = stores.open()
    batch = events(Ev("e", "d", T0, "i1"), Ev("e", "d", T0 + 1000, "i2"))
    ups = updates(Up("$set", {"a": 1}), Up("$add", {"n": 2}), Up("$set", {"g": 1}, group_key="k"))
    store.write_batch(batch, ups, Position(3, 77))
    before_events = exported(store, everything())
    reopened = stores.reopen(store)
    assert reopened.checkpoint() == Position(3, 77)
    assert exported(reopened, everything()) == before_events
    assert profiles_of(reopened) == {"u1": {"a": 1, "n": 2}}
    assert profiles_of(reopened, group_key="k") == {"u1": {"g": 1}}
    # deduplication and replay protection survive the reopen
    assert reopened.write_batch(batch, ups, Position(3, 99)) == 0
    assert profiles_of(reopened) == {"u1": {"a": 1, "n": 2}}
    assert len(exported(reopened, everything())) == 2
    again = stores.reopen(reopened)
    assert again.checkpoint() == Position(3, 99)
    assert profiles_of(again) == {"u1": {"a": 1, "n": 2}}


# -- edge cases that once failed ---------------------------------------------------------------
BIG = 18_446_744_073_709_551_615  # 2**64 - 1: the largest integer JSON encoders here accept


def test_an_add_past_64_bits_is_stored_or_a_storage_error(store: Store) -> None:
    # Once a bare TypeError from the JSON encoder, out of write_batch.
    store.write_batch(no_events(), updates(Up("$add", {"n": BIG})), Position(1, 10))
    try:
        store.write_batch(no_events(), updates(Up("$add", {"n": 1}), offset=10), Position(1, 20))
    except StorageError:
        assert store.checkpoint() == Position(1, 10)
        assert profiles_of(store) == {"u1": {"n": BIG}}
    else:
        assert store.checkpoint() == Position(1, 20)
        total = profiles_of(store)["u1"]["n"]
        assert isinstance(total, int | float)
        assert total >= BIG


def test_a_failed_batch_stores_nothing_and_the_store_stays_writable(store: Store) -> None:
    # Once: a failure other than the driver's left the transaction open, and every
    # later batch failed with "cannot start a transaction within a transaction".
    store.write_batch(events(Ev("e", "d", T0, "i0")), no_updates(), Position(1, 10))
    bad = dataclasses.replace(updates(Up("$set", {"a": 1}), offset=10), value=["not json"])
    with pytest.raises(StorageError):
        store.write_batch(events(Ev("e", "d", T0, "i1")), bad, Position(1, 20))
    assert store.checkpoint() == Position(1, 10)
    assert [row.insert_id for row in exported(store, everything())] == ["i0"]
    assert profiles_of(store) == {}

    added = store.write_batch(
        events(Ev("e", "d", T0, "i1")), updates(Up("$set", {"a": 1}), offset=10), Position(1, 20)
    )
    assert added == 1
    assert store.checkpoint() == Position(1, 20)
    assert profiles_of(store) == {"u1": {"a": 1}}


# -- the event schema and recent activity ------------------------------------------------------
def shapes_of(store: Store, project_id: int = 1) -> dict[str, Any]:
    """{event: (count, first, last, {(property, type): (count, first, last)})}"""
    return {
        shape.event: (
            shape.count,
            shape.first_seen_ms,
            shape.last_seen_ms,
            {
                (p.name, p.type): (p.count, p.first_seen_ms, p.last_seen_ms)
                for p in shape.properties
            },
        )
        for shape in store.schema(project_id, limit=100)
    }


def test_schema_counts_each_added_event_once_by_property_type(store: Store) -> None:
    typed = [
        '{"v":"text","s":"a"}',
        '{"v":12,"s":"b"}',
        '{"v":1.5}',
        '{"v":true}',
        '{"v":false}',
        '{"v":["x",1]}',
        '{"v":{"k":{"deep":1}}}',
        '{"v":{}}',
        '{"v":null}',
        '{"v":-3e5}',
        "{}",
    ]
    batch = events(
        *(Ev("typed", f"d{i}", T0 + i, f"t{i}", properties=p) for i, p in enumerate(typed)),
        Ev("other", "d", T0, "o1", properties='{"v":"x"}'),
        Ev("typed", "d", T0, "elsewhere", project_id=2, properties='{"w":1}'),
    )
    store.write_batch(batch, no_updates(), Position(1, 10))
    received = T0 + 500  # events() sets received = time + 500
    count, first, last, props = shapes_of(store)["typed"]
    assert (count, first, last) == (11, received, received + 10)
    assert {key: value[0] for key, value in props.items()} == {
        ("v", "string"): 1,
        ("v", "number"): 3,
        ("v", "boolean"): 2,
        ("v", "list"): 1,
        ("v", "object"): 2,
        ("v", "null"): 1,
        ("s", "string"): 2,
    }
    assert props[("v", "number")][1:] == (received + 1, received + 9)
    assert set(shapes_of(store)) == {"typed", "other"}
    assert shapes_of(store, 2) == {
        "typed": (1, received, received, {("w", "number"): (1, received, received)})
    }
    assert shapes_of(store, 3) == {}


def test_schema_never_counts_duplicates_or_replays(stores: Stores) -> None:
    store = stores.open()
    one = Ev("e", "d", T0, "same", properties='{"a":1}')
    # The same event twice in a batch, then again in a later batch and a replay.
    assert store.write_batch(events(one, one), no_updates(), Position(1, 10)) == 1
    assert (
        store.write_batch(events(one, Ev("e", "d", T0, "new")), no_updates(), Position(1, 20)) == 1
    )
    store = stores.reopen(store)
    assert store.write_batch(events(one), no_updates(), Position(1, 20)) == 0
    count, _, _, props = shapes_of(store)["e"]
    assert count == 2 == len(exported(store, everything()))
    assert props == {("a", "number"): (1, T0 + 500, T0 + 500)}


def test_schema_lists_the_most_frequent_events_first(store: Store) -> None:
    rows = [Ev(f"e{n}", "d", T0 + i, f"{n}-{i}") for n in range(5) for i in range(n + 1)]
    store.write_batch(events(*rows), no_updates(), Position(1, 10))
    assert [s.event for s in store.schema(1, limit=3)] == ["e4", "e3", "e2"]
    assert [s.count for s in store.schema(1, limit=10)] == [5, 4, 3, 2, 1]


def test_activity_counts_events_by_arrival_minute_and_name(store: Store) -> None:
    minute = 60_000
    start = T0 - T0 % minute
    batch = events(
        Ev("a", "d", start - 500, "1"),  # arrives at start + 0
        Ev("a", "d", start + 10_000, "2"),
        Ev("b", "d", start + minute, "3"),
        Ev("a", "d", start + 3 * minute, "4"),
        Ev("c", "d", start + 3 * minute + 1, "5"),
        Ev("a", "d", start, "x", project_id=2),
    )
    store.write_batch(batch, no_updates(), Position(1, 10))
    activity = store.activity(1, start, start + 4 * minute, top=2)
    assert activity.per_minute == [(start, 2), (start + minute, 1), (start + 3 * minute, 2)]
    assert activity.top_events == [("a", 3), ("b", 1)]
    # [from, to): the last minute left out, by arrival time
    assert store.activity(1, start, start + 3 * minute, top=5).top_events == [("a", 2), ("b", 1)]
    assert store.activity(3, start, start + 4 * minute, top=5).per_minute == []


# -- deleting users' data, retention ---------------------------------------------------------------
def test_delete_users_removes_their_events_profiles_and_updates_atomically(
    stores: Stores,
) -> None:
    store = stores.open()
    store.write_batch(
        events(
            Ev("a", "gone", T0, "1", properties='{"x":1}'),
            Ev("b", "gone", T0 + 1, "2", properties='{"y":"s"}'),
            Ev("a", "kept", T0 + 2, "3", properties='{"x":2}'),
            Ev("a", "gone", T0, "4", project_id=2),
        ),
        updates(
            Up("$set", {"p": 1}, profile_id="gone"),
            Up("$set", {"p": 2}, profile_id="kept"),
            Up("$set", {"p": 3}, profile_id="gone", group_key="company"),  # a group, kept
            Up("$set", {"p": 4}, profile_id="gone", project_id=2),
        ),
        Position(1, 100),
    )
    deleted = store.delete_users(1, ["gone", "absent"], Position(1, 200))
    assert deleted == Deleted(events=2, profiles=1, profile_updates=1)
    assert store.checkpoint() == Position(1, 200)
    assert [r.insert_id for r in exported(store, everything())] == ["3"]
    assert set(profiles_of(store)) == {"kept"}
    assert list(profiles_of(store, 1, "company")) == ["gone"]
    assert len(exported(store, everything(2))) == 1
    assert profiles_of(store, 2) == {"gone": {"p": 4}}
    schema = shapes_of(store)
    assert set(schema) == {"a"}
    assert schema["a"][0] == 1
    assert set(schema["a"][3]) == {("x", "number")}
    store = stores.reopen(store)
    assert store.delete_users(1, ["gone"], Position(1, 300)) == Deleted()


def test_expire_deletes_a_projects_events_older_than_a_time(store: Store) -> None:
    store.write_batch(
        events(
            Ev("old", "d", T0, "1"),
            Ev("old", "d", T0 + 999, "2"),
            Ev("new", "d", T0 + 1000, "3"),
            Ev("old", "d", T0, "4", project_id=2),
        ),
        no_updates(),
        Position(1, 10),
    )
    assert store.expire(1, T0 + 1000) == 2
    assert store.expire(1, T0 + 1000) == 0
    assert [r.insert_id for r in exported(store, everything())] == ["3"]
    assert set(shapes_of(store)) == {"new"}
    assert len(exported(store, everything(2))) == 1
