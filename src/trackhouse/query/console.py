"""What the console page shows, shaped from the store's answers (pure functions)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from trackhouse.storage.base import Activity, EventShape

MINUTE_MS = 60_000
CHART_MINUTES = 60
TOP_EVENTS = 10
SCHEMA_EVENTS = 500

# Fields every stored event has, kept in columns rather than in its properties.
_BUILT_IN = (("distinct_id", "string"), ("time", "number"), ("$insert_id", "string"))


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def chart_window(now_ms: int, minutes: int = CHART_MINUTES) -> tuple[int, int]:
    """[from, to) of the chart: whole minutes, the current one last."""
    end = (now_ms // MINUTE_MS + 1) * MINUTE_MS
    return end - minutes * MINUTE_MS, end


def overview(activity: Activity, window: tuple[int, int]) -> dict[str, Any]:
    """Events per minute over the window (every minute, zeros included) and the top
    event names in it."""
    start, end = window
    counts = dict(activity.per_minute)
    minutes = [{"t": t, "count": counts.get(t, 0)} for t in range(start, end, MINUTE_MS)]
    return {
        "from": start,
        "to": end,
        "minutes": minutes,
        "total": sum(m["count"] for m in minutes),
        "top_events": [{"event": name, "count": n} for name, n in activity.top_events],
    }


@dataclass
class _Property:
    name: str
    count: int
    types: dict[str, int]
    first_seen: int
    last_seen: int
    built_in: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "types": self.types,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "built_in": self.built_in,
        }


def schema(shapes: list[EventShape]) -> dict[str, Any]:
    """Each event name with its properties, each property with the types it came with
    (a property has one type in an event, so its count is the sum over its types)."""
    events = []
    for shape in shapes:
        properties: dict[str, _Property] = {}
        for prop in shape.properties:
            entry = properties.get(prop.name)
            if entry is None:
                entry = properties[prop.name] = _Property(
                    prop.name, 0, {}, prop.first_seen_ms, prop.last_seen_ms
                )
            entry.count += prop.count
            entry.types[prop.type] = prop.count
            entry.first_seen = min(entry.first_seen, prop.first_seen_ms)
            entry.last_seen = max(entry.last_seen, prop.last_seen_ms)
        built_in = [
            _Property(
                name,
                shape.count,
                {kind: shape.count},
                shape.first_seen_ms,
                shape.last_seen_ms,
                True,
            )
            for name, kind in _BUILT_IN
        ]
        listed = built_in + sorted(properties.values(), key=lambda p: (-p.count, p.name))
        events.append(
            {
                "event": shape.event,
                "count": shape.count,
                "first_seen": iso(shape.first_seen_ms),
                "last_seen": iso(shape.last_seen_ms),
                "properties": [entry.as_json() for entry in listed],
            }
        )
    return {"events": events}
