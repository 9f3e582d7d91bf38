"""Projects and service accounts: who may send and read which data.

The registry is a small SQLite file beside the store (not inside DuckDB, which admits
one process at a time): the CLI edits it while a server runs, and the server notices a
change on its next request through SQLite's ``data_version`` and reloads it, so a
rotated secret stops working at once, without a restart.

Project API secrets are kept as given (the CLI shows them, as Mixpanel's UI does).
Service-account secrets are shown once at creation and kept only as salted hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trackhouse.errors import ProjectError

# How old the /track path's view of the registry may be: what other processes change
# (`trackhouse projects update`, a rotated secret) counts within this; a token it does
# not know is looked up at once.
STALE_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL,
    token              TEXT    NOT NULL UNIQUE,
    secret             TEXT    NOT NULL UNIQUE,
    created_at         INTEGER NOT NULL,
    allow_token_import INTEGER NOT NULL DEFAULT 0,
    events_per_second  INTEGER,
    retention_days     INTEGER,
    bytes_per_minute   INTEGER
);
CREATE TABLE IF NOT EXISTS service_accounts (
    username    TEXT    PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    salt        TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    token: str
    secret: str
    created_at: int
    allow_token_import: bool = False
    events_per_second: int | None = None
    retention_days: int | None = None  # events older than this are deleted
    bytes_per_minute: int | None = None  # uncompressed JSON ingested (None: the default)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServiceAccount:
    username: str
    project_id: int
    created_at: int


def _hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


class Registry:
    """The project registry. Thread-safe; reads come from an in-memory snapshot."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=10
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            _add_missing_columns(self._db)
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot open the project registry {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._version = -1
        self._by_id: dict[int, Project] = {}
        self._by_token: dict[str, Project] = {}
        self._by_secret: dict[str, Project] = {}
        self._accounts: dict[str, tuple[int, str, str]] = {}
        self._checked = 0.0
        self.refresh()

    # -- reading ---------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> None:
        """Reload the snapshot if another process changed the registry since the last
        look (``data_version`` moves only for other connections' commits, hence
        ``force`` after our own)."""
        with self._lock:
            try:
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
                self._checked = time.monotonic()
                if version == self._version and not force:
                    return
                projects = [
                    Project(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8])
                    for r in self._db.execute(
                        "SELECT id, name, token, secret, created_at, allow_token_import, "
                        "events_per_second, retention_days, bytes_per_minute FROM projects "
                        "ORDER BY id"
                    )
                ]
                accounts = {
                    r[0]: (r[1], r[2], r[3])
                    for r in self._db.execute(
                        "SELECT username, project_id, salt, secret_hash FROM service_accounts"
                    )
                }
            except sqlite3.Error as exc:
                raise ProjectError(f"cannot read the project registry: {exc}") from exc
            self._by_id = {p.id: p for p in projects}
            self._by_token = {p.token: p for p in projects}
            self._by_secret = {p.secret: p for p in projects}
            self._accounts = accounts
            self._version = version

    def refresh_if_stale(self) -> None:
        """``refresh``, at most every STALE_S: for the per-request path of /track,
        /engage and /groups, where the query (and the GIL it hands to the loader thread
        while SQLite runs) cost more than the rest of a one-event request."""
        if time.monotonic() - self._checked >= STALE_S:
            self.refresh()

    def projects(self) -> list[Project]:
        self.refresh()
        return list(self._by_id.values())

    def get(self, project_id: int) -> Project | None:
        return self._by_id.get(project_id)

    def by_token(self, token: str) -> Project | None:
        return self._by_token.get(token)

    def by_secret(self, secret: str) -> Project | None:
        for known, project in self._by_secret.items():
            if hmac.compare_digest(known.encode(), secret.encode()):
                return project
        return None

    def service_account(self, username: str, secret: str) -> int | None:
        """The project id of a service account whose secret matches, else None."""
        found = self._accounts.get(username)
        if found is None:
            return None
        project_id, salt, secret_hash = found
        if hmac.compare_digest(_hash_secret(salt, secret), secret_hash):
            return project_id
        return None

    # -- writing ---------------------------------------------------------------------
    def create_project(
        self,
        name: str,
        *,
        project_id: int | None = None,
        token: str | None = None,
        secret: str | None = None,
    ) -> Project:
        token = token or secrets.token_hex(16)
        secret = secret or secrets.token_hex(16)
        for label, value in (("token", token), ("secret", secret)):
            if not value or len(value) > 255 or any(c.isspace() or c == ":" for c in value):
                raise ProjectError(f"{label} must be 1-255 characters without spaces or ':'")
        if project_id is not None and project_id <= 0:
            raise ProjectError("project id must be a positive integer")
        now = int(time.time())
        try:
            cursor = self._db.execute(
                "INSERT INTO projects (id, name, token, secret, created_at) VALUES (?, ?, ?, ?, ?)",
                (project_id, name, token, secret, now),
            )
        except sqlite3.IntegrityError as exc:
            raise ProjectError(_conflict_message(str(exc), project_id)) from exc
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot create the project: {exc}") from exc
        self.refresh(force=True)
        created = self.get(int(cursor.lastrowid or 0))
        if created is None:  # pragma: no cover - the row was just inserted
            raise ProjectError("the new project vanished from the registry")
        return created

    def rotate_secret(self, project_id: int, secret: str | None = None) -> Project:
        new = secret or secrets.token_hex(16)
        self._update(project_id, "secret = ?", (new,))
        project = self.get(project_id)
        if project is None:  # pragma: no cover - _update checked it exists
            raise ProjectError(f"no project with id {project_id}")
        return project

    def update(
        self,
        project_id: int,
        *,
        name: str | None = None,
        events_per_second: int | None = None,
        allow_token_import: bool | None = None,
        retention_days: int | None = None,
        bytes_per_minute: int | None = None,
    ) -> Project:
        if name is not None:
            self._update(project_id, "name = ?", (name,))
        if events_per_second is not None:
            # 0 clears the project's own limit (the server default applies again).
            self._update(project_id, "events_per_second = ?", (events_per_second or None,))
        if allow_token_import is not None:
            self._update(project_id, "allow_token_import = ?", (int(allow_token_import),))
        if bytes_per_minute is not None:
            # 0 clears the project's own limit (the server default applies again).
            self._update(project_id, "bytes_per_minute = ?", (bytes_per_minute or None,))
        if retention_days is not None:
            if retention_days < 0:
                raise ProjectError("retention days must be 0 (keep everything) or more")
            self._update(project_id, "retention_days = ?", (retention_days or None,))
        project = self.get(project_id)
        if project is None:
            raise ProjectError(f"no project with id {project_id}")
        return project

    def _update(self, project_id: int, assignment: str, values: tuple[Any, ...]) -> None:
        try:
            cursor = self._db.execute(
                f"UPDATE projects SET {assignment} WHERE id = ?",  # noqa: S608 - fixed fragments
                (*values, project_id),
            )
        except sqlite3.IntegrityError as exc:
            raise ProjectError(_conflict_message(str(exc), project_id)) from exc
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot update project {project_id}: {exc}") from exc
        if cursor.rowcount == 0:
            raise ProjectError(f"no project with id {project_id}")
        self.refresh(force=True)

    def create_service_account(
        self, project_id: int, *, username: str | None = None, secret: str | None = None
    ) -> tuple[ServiceAccount, str]:
        """Create an account; returns it and its secret (shown once, stored hashed)."""
        self.refresh()
        if self.get(project_id) is None:
            raise ProjectError(f"no project with id {project_id}")
        username = username or f"sa-{secrets.token_hex(6)}.trackhouse-service-account"
        secret = secret or secrets.token_urlsafe(24)
        if ":" in username or not username.strip():
            raise ProjectError("username must be non-empty and may not contain ':'")
        salt = secrets.token_hex(8)
        now = int(time.time())
        try:
            self._db.execute(
                "INSERT INTO service_accounts VALUES (?, ?, ?, ?, ?)",
                (username, project_id, salt, _hash_secret(salt, secret), now),
            )
        except sqlite3.IntegrityError as exc:
            raise ProjectError(f"a service account named {username!r} exists already") from exc
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot create the service account: {exc}") from exc
        self.refresh(force=True)
        return ServiceAccount(username, project_id, now), secret

    def service_accounts(self) -> list[ServiceAccount]:
        rows = self._db.execute(
            "SELECT username, project_id, created_at FROM service_accounts ORDER BY created_at"
        ).fetchall()
        return [ServiceAccount(r[0], r[1], r[2]) for r in rows]

    def close(self) -> None:
        self._db.close()


# Columns added after the first release: (name, SQL type). A registry written by an
# older version gets them on open.
_ADDED_COLUMNS = (("retention_days", "INTEGER"), ("bytes_per_minute", "INTEGER"))


def _add_missing_columns(db: sqlite3.Connection) -> None:
    have = {row[1] for row in db.execute("PRAGMA table_info(projects)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE projects ADD COLUMN {name} {kind}")


def _conflict_message(detail: str, project_id: int | None) -> str:
    if "projects.id" in detail:
        return f"a project with id {project_id} exists already"
    if "projects.token" in detail:
        return "another project uses that token already"
    if "projects.secret" in detail:
        return "another project uses that secret already"
    return f"conflict: {detail}"


def token_resolver(registry: Registry, *, auto_create: bool) -> Callable[[str], int | None]:
    """Token → project id, for one request's events (in the server or an ingest worker)."""
    registry.refresh_if_stale()
    looked = False

    def resolve(token: str) -> int | None:
        nonlocal looked
        project = registry.by_token(token)
        if project is None and not looked:
            # Created a moment ago by another process? Once per request, so that a
            # request full of unknown tokens costs one registry query, not 2000.
            looked = True
            registry.refresh()
            project = registry.by_token(token)
        if project is None and auto_create:
            project = registry.create_project(f"auto {token[:40]}", token=token)
        return None if project is None else project.id

    return resolve
