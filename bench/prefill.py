"""A data directory whose store already holds N events, for scenario (e).

Loading 10 million events through the API would take longer than the whole benchmark,
so they are generated inside DuckDB, into the very table, primary key and index that
trackhouse's migrations create (the store is opened by trackhouse first, so its schema
is current). The rows look like the benchmark's own events, spread over the past 30
days. Built once per N into bench/.cache and copied for each run, as the run adds to it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb
from tests.serverproc import cli

from bench.bodies import SECRET, TOKEN
from trackhouse.settings import load_settings
from trackhouse.storage.duckdb import DuckDBStore

CACHE = Path(__file__).resolve().parent / ".cache"
CHUNK = 1_000_000


def _build(data_dir: Path, events: int) -> None:
    project = cli(data_dir, "projects", "create", "bench", "--token", TOKEN, "--secret", SECRET)
    settings = load_settings({"data_dir": data_dir}, environ={})
    DuckDBStore(settings.store_path).close()  # runs the migrations
    now_ms = int(time.time() * 1000)
    span_ms = 30 * 86_400_000
    with duckdb.connect(str(settings.store_path)) as db:
        for start in range(0, events, CHUNK):
            db.execute(
                """
                INSERT INTO events
                SELECT
                    $project,
                    'event ' || (i % 20),
                    'user-' || (i % 50000),
                    epoch_ms($now - span)::TIMESTAMP_MS,
                    md5(i::VARCHAR),
                    '{"plan":"' || CASE WHEN i % 3 = 0 THEN 'free' ELSE 'pro' END
                        || '","price":' || (i % 1000 * 0.5)
                        || ',"$browser":"Chrome","$os":"Linux","$current_url":'
                        || '"https://example.com/page/' || (i % 100)
                        || '","$screen_width":1920,"tags":["a","b"]}',
                    epoch_ms($now - span)::TIMESTAMP_MS,
                    'import',
                    'web',
                    md5_number('prefill-' || i)
                FROM (
                    SELECT i, (hash(i) % $span_ms)::BIGINT AS span
                    FROM range($start, $end) AS t(i)
                )
                """,
                {
                    "project": project["id"],
                    "now": now_ms,
                    "span_ms": span_ms,
                    "start": start,
                    "end": min(events, start + CHUNK),
                },
            )
        db.execute("CHECKPOINT")


def prefilled(events: int, into: Path) -> Path:
    """A copy of the cached data dir holding ``events`` events, at ``into``."""
    cached = CACHE / f"prefill-{events}"
    if not (cached / "done").exists():
        shutil.rmtree(cached, ignore_errors=True)
        print(f"building a store of {events:,} events in {cached} (once)...", flush=True)
        started = time.perf_counter()
        _build(cached, events)
        (cached / "done").write_text("")
        print(f"  built in {time.perf_counter() - started:.0f}s", flush=True)
    shutil.copytree(cached, into, ignore=shutil.ignore_patterns("done", "server.json"))
    return into
