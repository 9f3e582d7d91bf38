"""Retention: each project's events older than its ``retention_days`` are deleted.

A thread of the server looks every ``retention_interval_s`` (and shortly after start),
by event time. Events imported with an older time are stored, then go at the next look.
"""

from __future__ import annotations

import logging
import threading
import time

from trackhouse.errors import TrackhouseError
from trackhouse.projects import Registry
from trackhouse.storage.base import Store

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
FIRST_LOOK_S = 5.0


class Retention:
    def __init__(self, registry: Registry, store: Store, *, interval_s: float) -> None:
        self.registry = registry
        self.store = store
        self.interval_s = interval_s
        self.expired = 0  # events deleted since start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now_ms: int | None = None) -> dict[int, int]:
        """Delete what is past each project's retention now; events deleted by project."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        deleted = {}
        for project in self.registry.projects():
            if project.retention_days:
                count = self.store.expire(project.id, now_ms - project.retention_days * DAY_MS)
                if count:
                    log.info(
                        "retention: deleted %d events older than %d days from project %d",
                        count,
                        project.retention_days,
                        project.id,
                    )
                deleted[project.id] = count
                self.expired += count
        return deleted

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        wait = min(FIRST_LOOK_S, self.interval_s)
        while not self._stop.wait(wait):
            try:
                self.run_once()
            except TrackhouseError as exc:  # the store is down: try again next time
                log.error("retention: %s", exc)
            except Exception:
                log.exception("retention: unexpected error")
            wait = self.interval_s
