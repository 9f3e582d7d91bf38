"""Deleting users' data (POST /api/data-deletions, `trackhouse delete`) and retention,
against real server processes.

The deletion rides the journal, so it must also remove events acknowledged but not yet
loaded: that case is built exactly by writing events and a deletion into a data
directory's journal before any server has loaded them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import (
    Reply,
    Server,
    basic,
    cli,
    dumps,
    export,
    import_events,
    profile,
    request,
    send_updates,
)
from trackhouse.ingest.validate import Event
from trackhouse.journal import Journal
from trackhouse.journal.records import encode_deletion, encode_events

pytestmark = pytest.mark.e2e

A_TOKEN, A_SECRET, A_ID = "del-token-a", "del-secret-a", 31
B_TOKEN, B_SECRET, B_ID = "del-token-b", "del-secret-b", 32
DAY = 86_400


def create_projects(data_dir: Path, which: str = "ab") -> None:
    for name, token, secret, pid in (
        ("a", A_TOKEN, A_SECRET, A_ID),
        ("b", B_TOKEN, B_SECRET, B_ID),
    ):
        if name in which:
            cli(
                data_dir,
                "projects",
                "create",
                name,
                "--token",
                token,
                "--secret",
                secret,
                "--id",
                str(pid),
            )


def days() -> tuple[str, str]:
    today = dt.datetime.now(dt.UTC).date()
    return (today - dt.timedelta(days=60)).isoformat(), (today + dt.timedelta(days=1)).isoformat()


def event(name: str, distinct_id: str, insert_id: str, when: int | None = None) -> dict[str, Any]:
    return {
        "event": name,
        "properties": {
            "time": int(time.time()) - 5 if when is None else when,
            "distinct_id": distinct_id,
            "$insert_id": insert_id,
            "n": 1,
        },
    }


def delete(server: Server, secret: str, body: dict[str, Any] | bytes) -> Reply:
    payload = body if isinstance(body, bytes) else dumps(body)
    return request(
        server,
        "POST",
        "/api/data-deletions",
        payload,
        {"Authorization": basic(secret), "Content-Type": "application/json"},
    )


def stored(server: Server, secret: str) -> list[tuple[str, str]]:
    return sorted(
        (e["properties"]["distinct_id"], e["event"]) for e in export(server, secret, *days())
    )


def schema_counts(server: Server, secret: str) -> dict[str, int]:
    reply = request(server, "GET", "/console/api/schema", headers={"Authorization": basic(secret)})
    assert reply.status == 200, reply
    return {e["event"]: e["count"] for e in reply.json()["events"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("deletion") / "data"
    create_projects(data_dir)
    running = Server(data_dir).start()
    yield running
    running.stop()
    assert "Traceback" not in running.log()


def test_deleting_a_user_removes_their_events_and_profile_and_nothing_else(
    server: Server,
) -> None:
    import_events(
        server,
        A_SECRET,
        [event("signup", "gone", "g1"), event("buy", "gone", "g2"), event("signup", "kept", "k1")],
    )
    import_events(server, B_SECRET, [event("signup", "gone", "b1")])  # same id, other project
    for token in (A_TOKEN, B_TOKEN):
        send_updates(server, [{"$token": token, "$distinct_id": "gone", "$set": {"plan": "pro"}}])
        send_updates(server, [{"$token": token, "$distinct_id": "gone", "$add": {"n": 1}}])
    send_updates(server, [{"$token": A_TOKEN, "$distinct_id": "kept", "$set": {"x": 1}}])
    server.wait_loaded()
    assert schema_counts(server, A_SECRET) == {"signup": 2, "buy": 1}

    reply = delete(server, A_SECRET, {"distinct_ids": ["gone", "nobody", "gone"]})
    assert reply.status == 200, reply
    assert reply.json() == {
        "status": "ok",
        "users": 2,
        "deleted": {"events": 2, "profiles": 1, "profile_updates": 2},
    }
    assert stored(server, A_SECRET) == [("kept", "signup")]
    assert profile(server, A_SECRET, "gone") is None
    kept = profile(server, A_SECRET, "kept")
    assert kept is not None
    assert kept["x"] == 1
    # The schema no longer counts them; a name no event has any more goes.
    assert schema_counts(server, A_SECRET) == {"signup": 1}
    # Project B's user of the same id is untouched.
    assert stored(server, B_SECRET) == [("gone", "signup")]
    assert profile(server, B_SECRET, "gone") is not None

    # Deleting again finds nothing; new data for the user is kept.
    again = delete(server, A_SECRET, {"distinct_ids": ["gone"]})
    assert again.json()["deleted"] == {"events": 0, "profiles": 0, "profile_updates": 0}
    import_events(server, A_SECRET, [event("signup", "gone", "g3")])
    server.wait_loaded()
    assert ("gone", "signup") in stored(server, A_SECRET)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "distinct_ids is required"),
        ({"distinct_ids": []}, "empty"),
        ({"distinct_ids": "gone"}, "JSON array"),
        (b'{"distinct_ids": "[1, 2"}', "JSON array"),
        ({"distinct_ids": [1]}, "non-empty string"),
        ({"distinct_ids": [""]}, "non-empty string"),
        ({"distinct_ids": ["x" * 256]}, "longer than 255"),
        ({"distinct_ids": [f"u{i}" for i in range(2001)]}, "at most 2000"),
        (b"[not json", "JSON"),
    ],
)
def test_bad_deletions_are_refused_with_a_reason(
    server: Server, body: dict[str, Any] | bytes, reason: str
) -> None:
    reply = delete(server, A_SECRET, body)
    assert reply.status == 400, reply
    assert reply.json()["status"] == "error"
    assert reason in reply.json()["error"]


def test_a_form_body_and_a_single_distinct_id_work(server: Server) -> None:
    import_events(server, A_SECRET, [event("form", "form-user", "f1")])
    reply = request(
        server,
        "POST",
        "/api/data-deletions",
        urllib.parse.urlencode({"distinct_id": "form-user"}).encode(),
        {"Authorization": basic(A_SECRET), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 200, reply
    assert reply.json()["deleted"]["events"] == 1


@pytest.mark.parametrize(
    "credentials",
    [None, basic(A_TOKEN), basic("wrong"), basic(B_SECRET) + "x"],
)
def test_deletion_needs_the_projects_secret(server: Server, credentials: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if credentials:
        headers["Authorization"] = credentials
    reply = request(server, "POST", "/api/data-deletions", dumps({"distinct_ids": ["x"]}), headers)
    assert reply.status == 401, reply
    assert reply.json()["status"] == "error"


def test_another_projects_secret_with_this_project_id_is_refused(server: Server) -> None:
    reply = request(
        server,
        "POST",
        f"/api/data-deletions?project_id={A_ID}",
        dumps({"distinct_ids": ["kept"]}),
        {"Authorization": basic(B_SECRET), "Content-Type": "application/json"},
    )
    assert reply.status == 401, reply
    assert ("kept", "signup") in stored(server, A_SECRET)


def test_only_post_deletes(server: Server) -> None:
    reply = request(server, "GET", "/api/data-deletions?distinct_id=kept")
    assert reply.status == 405, reply


def _events(project_id: int, rows: list[tuple[str, str, str]], now_ms: int) -> list[Event]:
    return [
        Event(project_id, name, distinct_id, now_ms - 1000, insert_id, '{"n":1}', None)
        for name, distinct_id, insert_id in rows
    ]


def _append(data_dir: Path, payloads: list[bytes]) -> None:
    journal = Journal(data_dir / "journal", fsync=True)

    async def write() -> None:
        for payload in payloads:
            await journal.append_and_sync(payload)

    try:
        asyncio.run(write())
    finally:
        journal.close()


def test_a_deletion_removes_events_still_waiting_in_the_journal(tmp_path: Path) -> None:
    """Events and a deletion journaled before any load: the server loads the events,
    then applies the deletion over them; what came after the deletion stays."""
    data_dir = tmp_path / "data"
    create_projects(data_dir, "a")
    now_ms = int(time.time() * 1000)
    _append(
        data_dir,
        [
            encode_events(
                _events(A_ID, [("e", "gone", "1"), ("e", "kept", "2")], now_ms),
                received_ms=now_ms,
                endpoint="import",
            ),
            encode_events(
                _events(A_ID, [("e", "gone", "3")], now_ms), received_ms=now_ms, endpoint="import"
            ),
            encode_deletion(A_ID, ["gone"], received_ms=now_ms),
            encode_events(
                _events(A_ID, [("later", "gone", "4")], now_ms),
                received_ms=now_ms,
                endpoint="import",
            ),
        ],
    )
    server = Server(data_dir).start()
    try:
        server.wait_loaded()
        assert stored(server, A_SECRET) == [("gone", "later"), ("kept", "e")]
        assert schema_counts(server, A_SECRET) == {"e": 1, "later": 1}
        # A restart replays nothing twice.
        server.stop()
        server = Server(data_dir).start()
        server.wait_loaded()
        assert stored(server, A_SECRET) == [("gone", "later"), ("kept", "e")]
    finally:
        server.stop()


def _delete_cli(data_dir: Path, *ids: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "trackhouse", "delete", "--project", str(A_ID)]
    for distinct_id in ids:
        args += ["--distinct-id", distinct_id]
    out = subprocess.run(
        [*args, "--data-dir", str(data_dir)], check=True, capture_output=True, text=True, timeout=60
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_the_cli_deletes_through_the_server_or_on_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    create_projects(data_dir, "a")
    server = Server(data_dir).start()
    try:
        import_events(
            server, A_SECRET, [event("e", "u1", "1"), event("e", "u2", "2"), event("e", "u3", "3")]
        )
        assert _delete_cli(data_dir, "u1")["deleted"]["events"] == 1  # via the server
        assert stored(server, A_SECRET) == [("u2", "e"), ("u3", "e")]
    finally:
        server.stop()
    # No server: the command opens the data directory itself.
    assert _delete_cli(data_dir, "u2", "u9") == {
        "status": "ok",
        "users": 2,
        "deleted": {"events": 1, "profiles": 0, "profile_updates": 0},
    }
    server = Server(data_dir).start()
    try:
        assert stored(server, A_SECRET) == [("u3", "e")]
    finally:
        server.stop()


def test_retention_deletes_events_older_than_the_projects_days(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    create_projects(data_dir)
    updated = cli(data_dir, "projects", "update", str(A_ID), "--retention-days", "30")
    assert updated["retention_days"] == 30
    now = int(time.time())
    server = Server(data_dir, args=["--retention-interval-s", "1"]).start()
    try:
        rows = [
            event("old", "u", "o1", now - 40 * DAY),
            event("old", "u", "o2", now - 31 * DAY),
            event("edge", "u", "e1", now - 29 * DAY),
            event("new", "u", "n1"),
        ]
        import_events(server, A_SECRET, rows)
        import_events(server, B_SECRET, rows)  # no retention: all kept
        server.wait_loaded()
        deadline = time.monotonic() + 30
        while ("u", "old") in stored(server, A_SECRET):
            assert time.monotonic() < deadline, "retention did not run within 30 s"
            time.sleep(0.2)
        assert stored(server, A_SECRET) == [("u", "edge"), ("u", "new")]
        assert schema_counts(server, A_SECRET) == {"edge": 1, "new": 1}
        assert len(stored(server, B_SECRET)) == 4
        # 0 turns it off again (the running server sees the change).
        assert (
            cli(data_dir, "projects", "update", str(A_ID), "--retention-days", "0")[
                "retention_days"
            ]
            is None
        )
    finally:
        server.stop()
    assert "Traceback" not in server.log()
