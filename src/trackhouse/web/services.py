"""The resources a running server holds, opened and closed in the app's lifespan."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trackhouse.ingest.profiles import ProfileUpdate
from trackhouse.ingest.validate import Event, RequestContext
from trackhouse.journal import Journal
from trackhouse.live import LiveFeed
from trackhouse.loader import Loader
from trackhouse.prepare import Job, Prepared
from trackhouse.projects import Registry, token_resolver
from trackhouse.query.profiles import ProfileSessions
from trackhouse.ratelimit import RateLimiter, bytes_per_minute, events_per_second, usage
from trackhouse.retention import Retention
from trackhouse.settings import Settings
from trackhouse.storage.duckdb import DuckDBStore
from trackhouse.web.sessions import ConsoleSessions
from trackhouse.workers import WorkerPool

log = logging.getLogger(__name__)

# Payloads smaller than this (~45 events) are decoded and validated in the server
# process: a round trip to a worker (two pipe transfers, two pickles and the wake-ups)
# costs more than their validation.
WORKER_MIN_BYTES = 16 * 1024
# Payloads from this size (~180 events) are journaled columnar: Arrow's fixed costs per
# record, paid where the request is prepared and again by the loader, are below the
# ~3 µs per event it spares the loader only for records of a few hundred events.
COLUMNAR_MIN_BYTES = 64 * 1024


@dataclass
class Services:
    settings: Settings
    registry: Registry
    store: DuckDBStore
    journal: Journal
    loader: Loader
    limiter: RateLimiter
    profile_sessions: ProfileSessions
    live: LiveFeed
    console_sessions: ConsoleSessions
    retention: Retention
    workers: WorkerPool

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open in dependency order: registry, store, journal (past the store's
        checkpoint), then the loader, which replays whatever the journal still holds."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.registry_path)
        store = DuckDBStore(settings.store_path, memory_limit_mb=settings.store_memory_mb)
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
            journal,
            store,
            batch_events=settings.loader_batch_events,
            idle_ms=settings.loader_idle_ms,
            interval_ms=settings.loader_interval_ms,
        )
        return cls(
            settings,
            registry,
            store,
            journal,
            loader,
            RateLimiter(),
            ProfileSessions(),
            LiveFeed(),
            ConsoleSessions(),
            Retention(registry, store, interval_s=settings.retention_interval_s),
            WorkerPool(settings.ingest_workers, min_weight=WORKER_MIN_BYTES),
        )

    def token_resolver(self) -> Callable[[str], int | None]:
        """Token → project id for one request."""
        return token_resolver(self.registry, auto_create=self.settings.auto_create_projects)

    def job(self, ctx: RequestContext, size: int) -> Job:
        """What preparing a request of ``size`` payload bytes needs besides its payload."""
        return Job(
            ctx,
            self.settings.max_events_per_request,
            self.live.watched(),
            columnar=size >= COLUMNAR_MIN_BYTES,
        )

    async def keep(self, prepared: Prepared) -> None:
        """Store a prepared request: spend its rate budgets (or raise RateLimited), make
        its record durable in the journal, and show its events to live watchers."""
        self.spend_rate(prepared.usage)
        if prepared.record is not None:
            await self.journal.append_and_sync(prepared.record)
        for project_id, message in prepared.live.items():
            self.live.offer(project_id, message)

    def take_rate(self, items: Iterable[Event | ProfileUpdate]) -> None:
        """Spend each project's events-per-second and bytes-per-minute budgets on what
        a request stores, or raise RateLimited (and store nothing)."""
        self.spend_rate(usage(items))

    def spend_rate(self, used: dict[int, tuple[int, int]]) -> None:
        """take_rate, for counts already made (per project: events, bytes)."""
        settings = self.settings
        for project_id, (count, size) in used.items():
            project = self.registry.get(project_id)
            per_second = project.events_per_second if project is not None else None
            per_minute = project.bytes_per_minute if project is not None else None
            self.limiter.take(
                project_id,
                [
                    (events_per_second(per_second or settings.default_events_per_second), count),
                    (bytes_per_minute(per_minute or settings.default_bytes_per_minute), size),
                ],
            )

    def close(self) -> None:
        """Close in reverse order: no new appends, drain the loader, then the store."""
        self.live.close()
        self.retention.stop()
        self.journal.close()
        self.loader.stop()
        self.store.close()
        self.registry.close()
