"""The project registry: a registry written before retention existed opens and gains it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trackhouse.errors import ProjectError
from trackhouse.projects import Registry

_FIRST_SCHEMA = """
CREATE TABLE projects (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, token TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
    allow_token_import INTEGER NOT NULL DEFAULT 0, events_per_second INTEGER
);
INSERT INTO projects VALUES (7, 'old', 'tok', 'sec', 1700000000, 0, 500);
"""


def test_a_registry_from_before_retention_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "projects.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_FIRST_SCHEMA)
    db.close()
    registry = Registry(path)
    try:
        project = registry.get(7)
        assert project is not None
        assert (project.name, project.events_per_second, project.retention_days) == (
            "old",
            500,
            None,
        )
        assert registry.update(7, retention_days=90).retention_days == 90
        assert registry.update(7, retention_days=0).retention_days is None
        with pytest.raises(ProjectError, match="retention"):
            registry.update(7, retention_days=-1)
    finally:
        registry.close()
    reopened = Registry(path)  # the column is added once
    try:
        assert reopened.get(7) is not None
    finally:
        reopened.close()
