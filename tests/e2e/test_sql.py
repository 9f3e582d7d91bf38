"""Read-only SQL (/api/sql and `trackhouse query`): a project reads its own rows and
nothing else, whatever SQL it sends; writes, files and runaway queries are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Reply, Server, basic, cli, dumps, import_events, request, send_updates

SECRET_A, TOKEN_A = "sql-secret-a", "sql-token-a"
SECRET_B, TOKEN_B = "sql-secret-b", "sql-token-b"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("sql") / "data"
    cli(data_dir, "projects", "create", "a", "--token", TOKEN_A, "--secret", SECRET_A)
    cli(data_dir, "projects", "create", "b", "--token", TOKEN_B, "--secret", SECRET_B)
    srv = Server(data_dir, args=["--sql-timeout-ms", "1500", "--sql-max-rows", "50"]).start()
    now = int(time.time())
    for secret, prefix, count in ((SECRET_A, "a", 3), (SECRET_B, "b", 7)):
        events = [
            {
                "event": f"{prefix}-event",
                "properties": {
                    "distinct_id": f"{prefix}{i}",
                    "time": now - i,
                    "$insert_id": f"{prefix}-{i}",
                    "n": i,
                    "secret_of": prefix,
                },
            }
            for i in range(count)
        ]
        import_events(srv, secret, events)
    send_updates(srv, [{"$token": TOKEN_A, "$distinct_id": "a0", "$set": {"plan": "pro"}}])
    send_updates(srv, [{"$token": TOKEN_B, "$distinct_id": "b0", "$set": {"plan": "b-only"}}])
    send_updates(
        srv,
        [{"$token": TOKEN_B, "$group_key": "company", "$group_id": "B", "$set": {"x": 1}}],
        group=True,
    )
    srv.wait_loaded()
    yield srv
    srv.kill()


def sql(server: Server, statement: str, secret: str = SECRET_A, **extra: str) -> Reply:
    body = urllib.parse.urlencode({"sql": statement, **extra}).encode()
    return request(
        server,
        "POST",
        "/api/sql",
        body,
        {"Authorization": basic(secret), "Content-Type": "application/x-www-form-urlencoded"},
    )


def rows(server: Server, statement: str, secret: str = SECRET_A) -> list[list[Any]]:
    reply = sql(server, statement, secret)
    assert reply.status == 200, reply
    result: list[list[Any]] = reply.json()["rows"]
    return result


def test_a_project_reads_its_own_events_and_profiles(server: Server) -> None:
    assert rows(server, "SELECT count(*) FROM events") == [[3]]
    assert rows(server, "SELECT count(*) FROM events", SECRET_B) == [[7]]
    assert rows(
        server, "SELECT distinct_id, properties->>'n' FROM events ORDER BY distinct_id"
    ) == [["a0", "0"], ["a1", "1"], ["a2", "2"]]
    reply = sql(server, "SELECT distinct_id, properties FROM profiles")
    body = reply.json()
    assert body["columns"] == ["distinct_id", "properties"]
    assert body["types"] == ["VARCHAR", "JSON"]
    assert body["rows"][0][0] == "a0"
    assert body["rows"][0][1]["plan"] == "pro"  # JSON columns come back as JSON
    assert rows(server, "SELECT group_key, group_id FROM group_profiles", SECRET_B) == [
        ["company", "B"]
    ]
    assert rows(server, "SELECT count(*) FROM group_profiles") == [[0]]


# Every way we know to reach past the project's views. None may error out with a 5xx or
# return a row of project b to project a.
ESCAPES = [
    "SELECT * FROM main.events",
    'SELECT * FROM "events".main.events',
    "SELECT * FROM events.main.events",
    "SELECT * FROM temp.events",
    "SELECT * FROM memory.main.events",
    "SELECT * FROM system.main.duckdb_tables",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM duckdb_tables",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM sqlite_master",
    "SELECT * FROM pg_catalog.pg_tables",
    "SELECT * FROM profile_updates",
    "SELECT * FROM load_checkpoint",
    "SELECT * FROM query('SELECT * FROM main.events')",
    "SELECT * FROM query_table('events')",
    "SELECT * FROM json_execute_serialized_sql('x')",
    "WITH profile_updates AS (SELECT 1) SELECT * FROM profile_updates",
    "WITH events AS (SELECT * FROM events) SELECT * FROM events",
    "SELECT * FROM (WITH q AS (SELECT 1) SELECT * FROM q), profile_updates",
    "SELECT (SELECT count(*) FROM main.events)",
    "SELECT * FROM events WHERE 1=1 UNION ALL SELECT * FROM main.events",
    "SELECT * FROM events; SELECT * FROM main.events",
    "SELECT current_setting('memory_limit')",
    "SELECT getenv('HOME')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/*')",
    "SELECT current_database()",
]


@pytest.mark.parametrize("statement", ESCAPES)
def test_no_sql_reaches_another_projects_rows(server: Server, statement: str) -> None:
    reply = sql(server, statement)
    assert reply.status == 400, reply
    assert reply.json()["status"] == "error"
    assert "b-event" not in reply.body.decode()


WRITES = [
    "DELETE FROM events",
    "UPDATE events SET event = 'x'",
    "INSERT INTO events SELECT * FROM events",
    "DROP TABLE events",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH '/tmp/trackhouse-evil.duckdb' AS evil",
    "COPY events TO '/tmp/trackhouse-evil.csv'",
    "EXPORT DATABASE '/tmp/trackhouse-evil'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "CHECKPOINT",
    "CALL pragma_version()",
    "BEGIN",
]


@pytest.mark.parametrize("statement", WRITES)
def test_statements_that_are_not_a_select_are_refused(server: Server, statement: str) -> None:
    reply = sql(server, statement)
    assert reply.status == 400, reply
    assert reply.json()["error"], reply
    assert rows(server, "SELECT count(*) FROM events", SECRET_B) == [[7]]


def test_long_queries_are_stopped_and_the_server_goes_on(server: Server) -> None:
    reply = sql(server, "SELECT count(*) FROM range(1000000000000) a")
    assert reply.status == 400, reply
    assert "longer than 1.5 s" in reply.json()["error"]
    reply = sql(
        server,
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t",
    )
    assert reply.status == 400, reply
    assert rows(server, "SELECT count(*) FROM events") == [[3]]


def test_results_are_capped_and_say_so(server: Server) -> None:
    body = sql(server, "SELECT * FROM range(100)").json()
    assert body["row_count"] == 50
    assert body["truncated"] is True
    body = sql(server, "SELECT * FROM range(100)", limit="10").json()
    assert body["row_count"] == 10
    assert body["truncated"] is True
    body = sql(server, "SELECT * FROM range(5)").json()
    assert body["truncated"] is False
    assert body["rows"] == [[0], [1], [2], [3], [4]]


def test_credentials_and_request_shapes(server: Server) -> None:
    assert sql(server, "SELECT 1", secret="wrong").status == 401
    assert sql(server, "SELECT 1", secret=TOKEN_A).status == 401  # tokens are public
    assert request(server, "GET", "/api/sql?sql=SELECT+1").status == 401
    assert sql(server, "").json()["error"] == "sql is required: one SELECT statement"
    assert "syntax error" in sql(server, "SELEC 1").json()["error"]
    as_json = request(
        server,
        "POST",
        "/api/sql",
        dumps({"sql": "SELECT 41 + 1 AS answer"}),
        {"Content-Type": "application/json", "Authorization": basic(SECRET_A)},
    )
    assert as_json.json()["rows"] == [[42]]
    as_get = request(
        server, "GET", "/api/sql?sql=SELECT+2", None, {"Authorization": basic(SECRET_A)}
    )
    assert as_get.json()["rows"] == [[2]]


def test_cli_query_formats(server: Server) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "trackhouse",
                "query",
                *args,
                "--data-dir",
                str(server.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    statement = "SELECT distinct_id, (properties->>'n')::INT AS n FROM events ORDER BY n"
    as_csv = run(statement, "--project", "1", "--format", "csv")
    assert as_csv.stdout == "distinct_id,n\na0,0\na1,1\na2,2\n"
    as_json = json.loads(run(statement, "--project", "2", "--format", "json").stdout)
    assert [r[0] for r in as_json["rows"]] == [f"b{i}" for i in range(7)]
    table = run(statement, "--project", "1").stdout.splitlines()
    assert table[0].split("|")[0].strip() == "distinct_id"
    assert len(table) == 2 + 3
    refused = run("SELECT * FROM main.events", "--project", "1")
    assert refused.returncode == 2
    assert "unknown table 'main.events'" in refused.stderr


def test_cli_query_without_a_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cli(data_dir, "projects", "create", "solo", "--token", "t", "--secret", "s")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackhouse",
            "query",
            "SELECT count(*) AS n FROM events",
            "--project",
            "1",
            "--format",
            "csv",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "n\n0\n"
