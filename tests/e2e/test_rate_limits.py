"""Per-project bytes-per-minute limits on every ingestion endpoint, against a real
server: past the budget a request gets 429 with Retry-After in its endpoint's reply
shape and stores nothing; another project is not slowed at all."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serverproc import Reply, Server, basic, cli, dumps, request

pytestmark = pytest.mark.e2e

LIMITED = ("rl-tok-limited", "rl-sec-limited")
FREE = ("rl-tok-free", "rl-sec-free")
BUDGET = 20_000  # bytes a minute for the limited project
PADDING = "x" * 250


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("ratelimits") / "data"
    for token, secret in (LIMITED, FREE):
        cli(data_dir, "projects", "create", token, "--token", token, "--secret", secret)
    limited = cli(data_dir, "projects", "list")[0]
    updated = cli(
        data_dir, "projects", "update", str(limited["id"]), "--bytes-per-minute", str(BUDGET)
    )
    assert updated["bytes_per_minute"] == BUDGET
    running = Server(data_dir).start()
    yield running
    running.stop()
    assert "Traceback" not in running.log()


def events(token: str, tag: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "event": "padded",
            "properties": {
                "token": token,
                "distinct_id": "u",
                "$insert_id": f"{tag}-{i}",
                "time": int(time.time()) - 5,
                "pad": PADDING,
            },
        }
        for i in range(count)
    ]


def track(server: Server, token: str, tag: str, count: int) -> Reply:
    body = urllib.parse.urlencode({"data": json.dumps(events(token, tag, count)), "verbose": "1"})
    return request(
        server,
        "POST",
        "/track",
        body.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def import_(server: Server, secret: str, tag: str, count: int) -> Reply:
    return request(
        server,
        "POST",
        "/import?strict=1",
        dumps(events("", tag, count)),
        {"Authorization": basic(secret), "Content-Type": "application/json"},
    )


def engage(server: Server, token: str, count: int) -> Reply:
    updates = [
        {"$token": token, "$distinct_id": f"u{i}", "$set": {"pad": PADDING}} for i in range(count)
    ]
    body = urllib.parse.urlencode({"data": json.dumps(updates), "verbose": "1"})
    return request(
        server,
        "POST",
        "/engage",
        body.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def exported_ids(server: Server, secret: str) -> set[str]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    query = urllib.parse.urlencode({"from_date": today, "to_date": today})
    reply = request(
        server, "GET", f"/api/2.0/export?{query}", headers={"Authorization": basic(secret)}
    )
    assert reply.status == 200, reply
    return {json.loads(line)["properties"]["$insert_id"] for line in reply.body.splitlines()}


def assert_limited(reply: Reply) -> None:
    assert reply.status == 429, reply
    retry_after = reply.header("retry-after")
    assert retry_after.isdigit(), reply
    assert int(retry_after) >= 1, reply


def test_a_project_past_its_bytes_per_minute_gets_429_on_every_endpoint(server: Server) -> None:
    token, secret = LIMITED
    # ~400 bytes an event: 100 events overdraw the 20 kB budget by a minute or more.
    first = import_(server, secret, "first", 100)
    assert first.status == 200, first
    refused = {
        "track": track(server, token, "late-track", 1),
        "import": import_(server, secret, "late-import", 1),
        "engage": engage(server, token, 1),
    }
    for reply in refused.values():  # spec §4's 429, whatever the endpoint
        assert_limited(reply)
        assert reply.json() == {
            "code": 429,
            "error": "Project exceeded rate limits. Please retry the request with exponential backoff.",
            "status": "Too Many Requests",
        }
    # The free project is not slowed, however much the limited one sends.
    for round_ in range(3):
        assert track(server, FREE[0], f"free-{round_}", 100).status == 200
        assert import_(server, FREE[1], f"free-import-{round_}", 100).status == 200
    server.wait_loaded()
    ids = exported_ids(server, secret)
    assert {f"first-{i}" for i in range(100)} <= ids
    assert not {i for i in ids if i.startswith("late-")}  # refused requests stored nothing
    assert len(exported_ids(server, FREE[1])) == 600
