"""Per-project ingestion limits: events per second and bytes per minute (token buckets).

A request may overdraw a bucket once (a 2000-event batch against a 100/s limit still
goes through when the bucket is full); the debt is then paid back before the next
request passes, and the 429's Retry-After says how long that takes. A request spends
from all of its project's buckets or from none.

Bytes are the uncompressed JSON of what a request stores for the project (Mixpanel's
limit is 2 GB of it a minute); the events-per-second bucket holds one second's worth,
the bytes bucket one minute's.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from trackhouse.errors import RateLimited
from trackhouse.ingest.profiles import ProfileUpdate
from trackhouse.ingest.validate import Event

RATE_LIMITED_MESSAGE = (
    "Project exceeded rate limits. Please retry the request with exponential backoff."
)
# The JSON around an event's fields that its stored columns leave out ({"event":...}).
_FRAMING_BYTES = 64


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # "events" or "bytes": one bucket per project and name
    per_second: float
    burst: float  # the bucket's size


def events_per_second(rate: int) -> Limit:
    return Limit("events", float(rate), float(rate))


def bytes_per_minute(rate: int) -> Limit:
    return Limit("bytes", rate / 60, float(rate))


def stored_bytes(item: Event | ProfileUpdate) -> int:
    """About how many bytes of JSON an event or profile update is."""
    if isinstance(item, Event):  # on every request's path: no list, no generator
        return (
            _FRAMING_BYTES
            + len(item.name)
            + len(item.distinct_id)
            + len(item.insert_id)
            + len(item.properties_json)
        )
    who = item.distinct_id or item.group_id or ""
    return _FRAMING_BYTES + len(who) + len(item.value_json) + len(item.modifiers_json)


def usage(items: Iterable[Event | ProfileUpdate]) -> dict[int, tuple[int, int]]:
    """Per project: (events or updates, bytes)."""
    used: dict[int, tuple[int, int]] = {}
    for item in items:
        count, size = used.get(item.project_id, (0, 0))
        used[item.project_id] = (count + 1, size + stored_bytes(item))
    return used


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[int, str], tuple[float, float]] = {}  # -> (tokens, stamp)
        self._lock = threading.Lock()

    def take(self, project_id: int, spend: Sequence[tuple[Limit, int]]) -> None:
        """Spend ``amount`` from each limit's bucket, all or none, or raise RateLimited."""
        now = self._clock()
        with self._lock:
            refilled = []
            wait = 0
            for limit, amount in spend:
                if limit.per_second <= 0 or amount <= 0:
                    continue
                key = (project_id, limit.name)
                tokens, stamp = self._buckets.get(key, (limit.burst, now))
                tokens = min(limit.burst, tokens + (now - stamp) * limit.per_second)
                refilled.append((key, tokens, amount))
                if tokens <= 0:
                    wait = max(wait, math.ceil(-tokens / limit.per_second + 1e-9))
            if wait:
                for key, tokens, _ in refilled:
                    self._buckets[key] = (tokens, now)
                raise RateLimited(RATE_LIMITED_MESSAGE, retry_after=max(1, wait))
            for key, tokens, amount in refilled:
                self._buckets[key] = (tokens - amount, now)
