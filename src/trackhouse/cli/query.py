"""``trackhouse query "SELECT ..."``: read-only SQL over one project's data.

The project's ``events`` (event, distinct_id, time, insert_id, properties JSON,
received_at, endpoint, lib), ``profiles`` (distinct_id, properties, updated_at) and
``group_profiles`` (group_key, group_id, properties, updated_at). From the running
server if there is one, else from the data directory (cli/source.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.cli.source import find_project, json_from_server, loaded_store, running_server
from trackhouse.query.sql import result_csv, result_json, result_table


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "query",
        help="run a read-only SQL query over a project's events and profiles",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sql", help="one SELECT statement")
    parser.add_argument("--project", type=int, required=True, dest="project_id", metavar="ID")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    add_settings_arguments(parser, ["data_dir", "sql_timeout_ms", "sql_max_rows"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    project = find_project(settings, args.project_id)
    server = running_server(settings)
    if server:
        reply = json_from_server(
            server,
            "/api/sql",
            project.secret,
            {"sql": args.sql, "limit": str(settings.sql_max_rows)},
        )
    else:
        with loaded_store(settings) as store:
            result = store.run_sql(
                project.id,
                args.sql,
                max_rows=settings.sql_max_rows,
                timeout_s=settings.sql_timeout_ms / 1000,
            )
        reply = result_json(result)
    if args.format == "json":
        print(json.dumps(reply, ensure_ascii=False))
    elif args.format == "csv":
        sys.stdout.write(result_csv(reply["columns"], reply["rows"]))
    else:
        sys.stdout.write(result_table(reply["columns"], reply["rows"]))
        if reply["truncated"]:
            print(f"(only the first {reply['row_count']} rows)")
    return 0
