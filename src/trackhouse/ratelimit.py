"""Per-project events-per-second limits (a token bucket per project).

A request may overdraw the bucket once (a 2000-event batch against a 100/s limit still
goes through when the bucket is full); the debt is then paid back before the next
request passes, and the 429's Retry-After says how long that takes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from trackhouse.errors import RateLimited

RATE_LIMITED_MESSAGE = (
    "Project exceeded rate limits. Please retry the request with exponential backoff."
)


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # project -> (tokens, stamp)
        self._lock = threading.Lock()

    def take(self, project_id: int, events_per_second: int | None, count: int) -> None:
        """Spend ``count`` events of the project's budget or raise RateLimited."""
        if not events_per_second or count <= 0:
            return
        rate = float(events_per_second)
        now = self._clock()
        with self._lock:
            tokens, stamp = self._buckets.get(project_id, (rate, now))
            tokens = min(rate, tokens + (now - stamp) * rate)
            if tokens <= 0:
                self._buckets[project_id] = (tokens, now)
                raise RateLimited(
                    RATE_LIMITED_MESSAGE, retry_after=max(1, math.ceil(-tokens / rate + 1e-9))
                )
            self._buckets[project_id] = (tokens - count, now)
