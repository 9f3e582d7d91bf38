"""The resources a running server holds, opened and closed in the app's lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trackhouse.journal import Journal
from trackhouse.loader import Loader
from trackhouse.projects import Registry
from trackhouse.ratelimit import RateLimiter
from trackhouse.settings import Settings
from trackhouse.storage.duckdb import DuckDBStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    registry: Registry
    store: DuckDBStore
    journal: Journal
    loader: Loader
    limiter: RateLimiter

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open in dependency order: registry, store, journal (past the store's
        checkpoint), then the loader, which replays whatever the journal still holds."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.registry_path)
        store = DuckDBStore(settings.store_path)
        try:
            checkpoint = store.checkpoint()
            journal = Journal(
                settings.journal_dir,
                fsync=settings.journal_fsync,
                segment_bytes=settings.journal_segment_bytes,
                max_backlog_bytes=settings.journal_max_backlog_bytes,
                first_segment=(checkpoint.segment + 1) if checkpoint else 1,
            )
        except Exception:
            store.close()
            registry.close()
            raise
        loader = Loader(
            journal, store, batch_events=settings.loader_batch_events, idle_ms=settings.loader_idle_ms
        )
        return cls(settings, registry, store, journal, loader, RateLimiter())

    def close(self) -> None:
        """Close in reverse order: no new appends, drain the loader, then the store."""
        self.journal.close()
        self.loader.stop()
        self.store.close()
        self.registry.close()
