"""Signed-in browsers of the console: a random session id (its cookie) → a project.

Sessions live in the server's memory: a restart signs everyone out, which a page that
only reads can afford. A session ends when it expires, when its user signs out, or when
the project's API secret changes (rotating a leaked secret must lock out whoever
signed in with it).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from trackhouse.projects import Project, Registry

COOKIE = "trackhouse_session"
SESSION_S = 12 * 3600
MAX_SESSIONS = 10_000  # the oldest is signed out past this


@dataclass(frozen=True, slots=True)
class _Session:
    project_id: int
    secret_digest: bytes
    expires: float


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ConsoleSessions:
    def __init__(self, ttl_s: float = SESSION_S) -> None:
        self._ttl_s = ttl_s
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def start(self, project: Project) -> str:
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = _Session(
            project.id, _digest(project.secret), time.monotonic() + self._ttl_s
        )
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id

    def project(self, session_id: str | None, registry: Registry) -> Project | None:
        """The session's project, if the session is still good."""
        session = self._sessions.get(session_id) if session_id else None
        if session is None:
            return None
        project = registry.get(session.project_id)
        if (
            session.expires < time.monotonic()
            or project is None
            or not secrets.compare_digest(session.secret_digest, _digest(project.secret))
        ):
            self.end(session_id)
            return None
        return project

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)


def cookie_value(header: str | None, name: str = COOKIE) -> str | None:
    """One cookie's value from a Cookie header."""
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
