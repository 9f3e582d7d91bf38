"""Token buckets per project and limit: overdraw once, pay back, all or nothing."""

from __future__ import annotations

import pytest

from trackhouse.errors import RateLimited
from trackhouse.ingest.profiles import ProfileUpdate
from trackhouse.ingest.validate import Event
from trackhouse.ratelimit import (
    RateLimiter,
    bytes_per_minute,
    events_per_second,
    stored_bytes,
    usage,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_may_be_overdrawn_once_then_waits_for_the_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = events_per_second(100)
    limiter.take(1, [(limit, 500)])  # full bucket: passes, 400 in debt
    with pytest.raises(RateLimited) as refused:
        limiter.take(1, [(limit, 1)])
    assert refused.value.retry_after == 5  # 4 s pays the debt back; 5 leaves some
    clock.now += 4.01
    limiter.take(1, [(limit, 1)])


def test_bytes_per_minute_refills_over_a_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = bytes_per_minute(6000)  # 100 bytes a second
    limiter.take(1, [(limit, 6000)])
    with pytest.raises(RateLimited) as refused:
        limiter.take(1, [(limit, 1)])
    assert refused.value.retry_after == 1
    clock.now += 30
    limiter.take(1, [(limit, 3500)])  # 3000 refilled: overdraws again
    with pytest.raises(RateLimited) as again:
        limiter.take(1, [(limit, 1)])
    assert again.value.retry_after == 6


def test_a_refused_request_spends_from_no_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    events, size = events_per_second(1), bytes_per_minute(60)  # 1 event, 1 byte a second
    limiter.take(1, [(events, 1), (size, 61)])  # events bucket empty, bytes 1 in debt
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.take(1, [(events, 1), (size, 1)])
    clock.now += 1.5
    # Had the refused requests spent their event, this one would be refused too.
    limiter.take(1, [(events, 1), (size, 1)])


def test_projects_and_unlimited_limits_are_independent() -> None:
    limiter = RateLimiter(Clock())
    limiter.take(1, [(events_per_second(1), 5)])
    with pytest.raises(RateLimited):
        limiter.take(1, [(events_per_second(1), 1)])
    limiter.take(2, [(events_per_second(1), 1)])  # another project
    for _ in range(100):  # 0 means no limit
        limiter.take(1, [(bytes_per_minute(0), 10**9)])


def test_usage_counts_items_and_their_json_size_per_project() -> None:
    event = Event(1, "signup", "user-1", 1, "id-1", '{"plan":"pro"}', None)
    update = ProfileUpdate(2, "user", "user-1", None, None, "$set", '{"a":1}', "{}", 1)
    assert stored_bytes(event) == 64 + len("signup") + len("user-1") + len("id-1") + 14
    assert usage([event, event, update]) == {
        1: (2, 2 * stored_bytes(event)),
        2: (1, stored_bytes(update)),
    }
