"""The one settings object.

Every tunable of trackhouse is a field of :class:`Settings` with a default and a help
text. Values are layered, later wins: defaults → a TOML file (``--config`` or
``TRACKHOUSE_CONFIG``) → environment variables ``TRACKHOUSE_<NAME>`` → command-line
flags. This module is the only place that reads the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trackhouse.errors import ConfigError

ENV_PREFIX = "TRACKHOUSE_"


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "Address the HTTP server listens on.")
    port: int = _setting(8000, "TCP port the HTTP server listens on.")
    tls_cert: Path | None = _setting(
        None,
        "PEM certificate (chain) file: serve HTTPS directly with it and --tls-key. The "
        "Node and Python Mixpanel libraries send secrets and retry only over HTTPS.",
    )
    tls_key: Path | None = _setting(None, "PEM private key file for --tls-cert.")
    data_dir: Path = _setting(
        Path("trackhouse-data"),
        "Directory holding the journal, the DuckDB store and the project registry.",
    )
    journal_fsync: bool = _setting(
        True,
        "fsync the journal before acknowledging a request. Turning this off trades the "
        "durability of acknowledged events on power loss (not on a process crash) for speed.",
    )
    journal_segment_bytes: int = _setting(
        64 * 1024 * 1024, "Size at which the journal starts a new segment file."
    )
    journal_max_backlog_bytes: int = _setting(
        2 * 1024 * 1024 * 1024,
        "Journal bytes not yet loaded into the store above which ingestion answers 503.",
    )
    loader_batch_events: int = _setting(
        50_000,
        "Most events the loader writes to the store in one transaction (bigger batches "
        "load faster per event and take more memory while loading).",
    )
    store_memory_mb: int = _setting(
        64,
        "Memory the embedded store (DuckDB) may use for its cache, sorts and joins, on top "
        "of its deduplication index (which must stay in memory, about 60 bytes per event); "
        "beyond it, sorts and joins spill to a directory beside the store file (0: "
        "DuckDB's default, 80% of RAM for everything).",
    )
    loader_idle_ms: int = _setting(
        50, "How long the loader sleeps when the journal has nothing new to load."
    )
    ingest_workers: int = _setting(
        os.cpu_count() or 1,
        "Worker processes that decode and validate large /import and /track payloads while the event "
        "loop serves other requests (default: one per CPU; 0: all in the server process). "
        "They start with the first large request.",
    )
    loader_interval_ms: int = _setting(
        100,
        "Least time between the starts of two loads while events keep arriving (each "
        "load is one store transaction: fewer, larger ones cost the API less). A load "
        "after a quiet spell, or after a full batch, starts at once.",
    )
    max_events_per_request: int = _setting(
        2000, "Most events (or profile updates) accepted in one request."
    )
    max_body_bytes: int = _setting(
        10 * 1024 * 1024,
        "Largest request body accepted, after gzip decompression (compressed bodies are "
        "capped at the same size).",
    )
    max_event_bytes: int = _setting(1024 * 1024, "Largest JSON size of one event.")
    max_header_bytes: int = _setting(
        64 * 1024, "Largest request head (request line and headers); past it, 431."
    )
    request_timeout_s: int = _setting(
        60,
        "A request's headers must arrive within this many seconds of the connection "
        "opening (or the previous reply), and its body within this many seconds of its "
        "headers; else 408 and the connection is closed.",
    )
    track_max_age_days: int = _setting(
        5, "/track refuses events whose time is older than this many days."
    )
    import_future_tolerance_s: int = _setting(
        3600, "/import refuses event times further than this in the future."
    )
    trusted_proxies: tuple[str, ...] = _setting(
        (),
        "Peers (IPs or CIDR networks, comma separated) whose X-Forwarded-For / X-Real-IP "
        "headers are believed for ip=1.",
    )
    auto_create_projects: bool = _setting(
        False,
        "Create a project for an unknown /track token instead of refusing its events "
        "(for a local Mixpanel stand-in in application test suites).",
    )
    default_events_per_second: int = _setting(
        0,
        "Per-project ingestion limit in events per second for projects without their own "
        "(0: unlimited).",
    )
    retention_interval_s: int = _setting(
        3600,
        "How often the server deletes events past their project's retention "
        "(trackhouse projects update ID --retention-days N).",
    )
    default_bytes_per_minute: int = _setting(
        2 * 1024**3,
        "Per-project ingestion limit in bytes of uncompressed JSON per minute for projects "
        "without their own (Mixpanel's is 2 GB; 0: unlimited).",
    )
    sql_timeout_ms: int = _setting(
        10_000, "Read-only SQL queries (/api/sql, trackhouse query) are stopped after this."
    )
    sql_max_rows: int = _setting(10_000, "Most rows a read-only SQL query returns.")
    log_level: str = _setting("info", "Log level: debug, info, warning, error.")

    # -- derived values ------------------------------------------------------------
    @property
    def url(self) -> str:
        """Where the server listens, as a client on this machine would write it."""
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "events.duckdb"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "projects.sqlite"

    @property
    def server_file(self) -> Path:
        """Written while a server runs on this data dir: where to reach it."""
        return self.data_dir / "server.json"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind_name == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if kind_name == "Path":
            return Path(raw)
        if kind_name == "Path | None":  # an empty value unsets it
            return Path(raw) if str(raw).strip() else None
        if kind_name.startswith("tuple"):
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {name}: invalid value {raw!r}") from exc


def _validate(settings: Settings) -> Settings:
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ConfigError(f"setting trusted_proxies: {proxy!r} is not an IP or CIDR") from exc
    for name in (
        "port",
        "max_events_per_request",
        "max_body_bytes",
        "max_event_bytes",
        "max_header_bytes",
        "request_timeout_s",
        "sql_timeout_ms",
        "sql_max_rows",
    ):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"setting {name}: must be positive")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("settings tls_cert and tls_key: give both or neither")
    for name in ("tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"setting {name}: cannot read {path}")
    if settings.log_level not in {"debug", "info", "warning", "error"}:
        raise ConfigError("setting log_level: one of debug, info, warning, error")
    return settings


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, a TOML file, the environment and overrides."""
    env = os.environ if environ is None else environ
    known = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or (
        Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None
    )
    if path is not None:
        try:
            with path.open("rb") as fh:
                from_file = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, raw in from_file.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, known[key], raw)

    for key, kind in known.items():
        raw_env = env.get(ENV_PREFIX + key.upper())
        if raw_env is not None:
            values[key] = _coerce(key, kind, raw_env)

    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, known[key], raw)

    return _validate(Settings(**values))
