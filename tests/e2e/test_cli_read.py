"""The reading commands (`trackhouse export`, `trackhouse profiles`), both ways they
work: through a running server, and on the data directory after the server is gone
(including a SIGKILL, where acknowledged data may still be only in the journal)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import (
    Server,
    import_events,
    run_cli,
    send_updates,
    start_with_project,
)

TOKEN = "cli-token"
SECRET = "cli-secret"


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def send_events(server: Server, names: list[str]) -> None:
    now = int(time.time() * 1000)
    events = [
        {
            "event": name,
            "properties": {
                "distinct_id": f"d{i}",
                "time": now - 1000 * i,
                "$insert_id": f"cli-{i}",
                "i": i,
            },
        }
        for i, name in enumerate(names)
    ]
    import_events(server, SECRET, events)


def fill(server: Server) -> None:
    send_events(server, ["a", "b", "a"])
    send_updates(
        server,
        [
            {"$token": TOKEN, "$distinct_id": f"u{i}", "$set": {"i": i, "even": i % 2 == 0}}
            for i in range(1200)  # more than one page of the query API
        ],
    )
    send_updates(
        server,
        [{"$token": TOKEN, "$group_key": "company", "$group_id": "Acme", "$set": {"tier": "gold"}}],
        group=True,
    )


@pytest.fixture
def project_server(tmp_path: Path) -> Iterator[Server]:
    server = start_with_project(tmp_path / "data", token=TOKEN, secret=SECRET)
    yield server
    server.kill()


def check_reads(data_dir: Path, today: str) -> None:
    events = run_cli(data_dir, "export", "--project", "1", "--from", today, "--to", today)
    assert events.returncode == 0, events.stderr
    assert sorted(e["properties"]["$insert_id"] for e in ndjson(events.stdout)) == [
        "cli-0",
        "cli-1",
        "cli-2",
    ]
    only_b = run_cli(
        data_dir, "export", "--project", "1", "--from", today, "--to", today, "--event", "b"
    )
    assert [e["event"] for e in ndjson(only_b.stdout)] == ["b"]

    everyone = run_cli(data_dir, "profiles", "export", "--project", "1")
    assert everyone.returncode == 0, everyone.stderr
    ids = [p["$distinct_id"] for p in ndjson(everyone.stdout)]
    assert sorted(ids) == sorted(f"u{i}" for i in range(1200))  # each exactly once

    filtered = run_cli(
        data_dir,
        "profiles",
        "export",
        "--project",
        "1",
        "--where",
        'properties["i"] < 3 and properties["even"] == true',
        "--output-properties",
        "i",
    )
    assert ndjson(filtered.stdout) == [
        {"$distinct_id": "u0", "$properties": {"i": 0}},
        {"$distinct_id": "u2", "$properties": {"i": 2}},
    ]

    one = run_cli(data_dir, "profiles", "get", "u7", "--project", "1")
    assert one.returncode == 0, one.stderr
    got = json.loads(one.stdout)
    assert got["$distinct_id"] == "u7"
    assert {k: v for k, v in got["$properties"].items() if k != "$last_seen"} == {
        "i": 7,
        "even": False,
    }

    group = run_cli(data_dir, "profiles", "get", "Acme", "--project", "1", "--group-key", "company")
    assert json.loads(group.stdout)["$properties"]["tier"] == "gold"

    missing = run_cli(data_dir, "profiles", "get", "nobody", "--project", "1")
    assert missing.returncode == 1
    assert "no user profile 'nobody'" in missing.stderr


def test_reads_through_the_running_server(project_server: Server, today: str) -> None:
    fill(project_server)
    project_server.wait_loaded()
    check_reads(project_server.data_dir, today)


def test_reads_from_the_data_dir_after_a_kill(project_server: Server, today: str) -> None:
    """After SIGKILL the CLI opens the data dir itself and loads the journal's backlog
    first, so everything acknowledged is there even if the loader never ran."""
    fill(project_server)
    project_server.kill()
    check_reads(project_server.data_dir, today)


def test_bad_input_is_refused_before_any_work(project_server: Server) -> None:
    data_dir = project_server.data_dir
    bad_where = run_cli(data_dir, "profiles", "export", "--project", "1", "--where", "plan = 1")
    assert bad_where.returncode == 2
    assert "where:" in bad_where.stderr
    no_project = run_cli(data_dir, "profiles", "export", "--project", "99")
    assert no_project.returncode == 2
    assert "no project with id 99" in no_project.stderr
    bad_date = run_cli(data_dir, "export", "--project", "1", "--from", "yesterday", "--to", "x")
    assert bad_date.returncode == 2
    assert "from_date" in bad_date.stderr
