"""What the console page shows, shaped from the store's answers (trackhouse.query.console):
the chart's window, the zero-filled minutes, and the schema's merging of types."""

from __future__ import annotations

import datetime as dt

import pytest

from trackhouse.query.console import (
    CHART_MINUTES,
    MINUTE_MS,
    chart_window,
    iso,
    overview,
    schema,
)
from trackhouse.storage.base import Activity, EventShape, PropertyShape

NOW_MS = 1_700_000_123_456  # 2023-11-14T22:15:23.456Z
T0 = 1_700_000_000_000


@pytest.mark.parametrize(
    "now_ms",
    [NOW_MS, NOW_MS // MINUTE_MS * MINUTE_MS, NOW_MS // MINUTE_MS * MINUTE_MS + MINUTE_MS - 1, 0],
)
def test_the_chart_window_is_whole_minutes_ending_with_the_current_one(now_ms: int) -> None:
    start, end = chart_window(now_ms)
    assert start % MINUTE_MS == 0
    assert end % MINUTE_MS == 0
    assert end - start == CHART_MINUTES * MINUTE_MS
    assert end - MINUTE_MS <= now_ms < end  # the current minute is the last one


def test_the_chart_window_of_another_length() -> None:
    start, end = chart_window(NOW_MS, minutes=5)
    assert (end - start) // MINUTE_MS == 5
    assert end == (NOW_MS // MINUTE_MS + 1) * MINUTE_MS


def test_overview_fills_every_minute_with_zeros() -> None:
    window = chart_window(NOW_MS)
    start, end = window
    activity = Activity(
        per_minute=[(start, 3), (start + 5 * MINUTE_MS, 2), (end - MINUTE_MS, 7)],
        top_events=[("signup", 8), ("login", 4)],
    )
    shaped = overview(activity, window)
    assert shaped["from"] == start
    assert shaped["to"] == end
    assert len(shaped["minutes"]) == CHART_MINUTES
    assert [m["t"] for m in shaped["minutes"]] == list(range(start, end, MINUTE_MS))
    counts = [m["count"] for m in shaped["minutes"]]
    assert counts[0] == 3
    assert counts[5] == 2
    assert counts[-1] == 7
    assert sum(counts) == 12
    assert counts.count(0) == CHART_MINUTES - 3
    assert shaped["total"] == 12
    assert shaped["top_events"] == [
        {"event": "signup", "count": 8},
        {"event": "login", "count": 4},
    ]


def test_overview_of_nothing_and_minutes_outside_the_window() -> None:
    window = chart_window(NOW_MS)
    empty = overview(Activity([], []), window)
    assert empty["total"] == 0
    assert empty["top_events"] == []
    assert all(m["count"] == 0 for m in empty["minutes"])
    start, end = window
    stray = Activity([(start - MINUTE_MS, 9), (end, 9), (start + 1, 9)], [])
    assert overview(stray, window)["total"] == 0  # only whole minutes of the window count


def test_iso_is_utc_to_the_second() -> None:
    assert iso(T0) == "2023-11-14T22:13:20+00:00"
    assert iso(T0 + 999) == "2023-11-14T22:13:20+00:00"
    assert dt.datetime.fromisoformat(iso(NOW_MS)).tzinfo == dt.UTC


def prop(name: str, kind: str, count: int, first: int = T0, last: int = T0) -> PropertyShape:
    return PropertyShape(name, kind, count, first, last)


def test_schema_merges_a_propertys_types_and_lists_the_built_ins_first() -> None:
    shape = EventShape(
        "Purchase",
        10,
        T0,
        T0 + 50_000,
        [
            prop("price", "number", 6, T0 + 10_000, T0 + 20_000),
            prop("plan", "string", 10),
            prop("price", "string", 3, T0 + 5_000, T0 + 40_000),
            prop("coupon", "null", 2),
            prop("price", "null", 1, T0 + 30_000, T0 + 30_000),
            prop("a_flag", "boolean", 2),
        ],
    )
    [shaped] = schema([shape])["events"]
    assert shaped["event"] == "Purchase"
    assert shaped["count"] == 10
    assert shaped["first_seen"] == iso(T0)
    assert shaped["last_seen"] == iso(T0 + 50_000)
    names = [p["name"] for p in shaped["properties"]]
    # Built-ins, then by count (most first), then by name.
    assert names == ["distinct_id", "time", "$insert_id", "plan", "price", "a_flag", "coupon"]
    built_in = shaped["properties"][:3]
    assert [p["types"] for p in built_in] == [{"string": 10}, {"number": 10}, {"string": 10}]
    for entry in built_in:
        assert entry["built_in"] is True
        assert entry["count"] == 10
        assert (entry["first_seen"], entry["last_seen"]) == (iso(T0), iso(T0 + 50_000))
    price = shaped["properties"][4]
    assert price == {
        "name": "price",
        "count": 10,
        "types": {"number": 6, "string": 3, "null": 1},
        "first_seen": iso(T0 + 5_000),
        "last_seen": iso(T0 + 40_000),
        "built_in": False,
    }


def test_schema_keeps_the_stores_event_order_and_names_verbatim() -> None:
    hostile = "'; DROP TABLE events; -- <script>\u0000 🚀"
    shapes = [
        EventShape(hostile, 5, T0, T0, [prop(hostile, "string", 5)]),
        EventShape("quiet", 1, T0, T0, []),
    ]
    events = schema(shapes)["events"]
    assert [e["event"] for e in events] == [hostile, "quiet"]
    assert events[0]["properties"][3]["name"] == hostile
    assert [p["name"] for p in events[1]["properties"]] == ["distinct_id", "time", "$insert_id"]
    assert schema([]) == {"events": []}
