"""``trackhouse export``: a project's events as NDJSON, like the export API.

From the running server if there is one, else from the data directory (cli/source.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, BinaryIO

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.cli.source import copy_from_server, find_project, loaded_store, running_server
from trackhouse.query.export import export_lines, parse_export_params


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "export", help="export a project's events as NDJSON", description=__doc__
    )
    parser.add_argument("--project", type=int, required=True, dest="project_id", metavar="ID")
    parser.add_argument("--from", required=True, dest="from_date", metavar="YYYY-MM-DD")
    parser.add_argument("--to", required=True, dest="to_date", metavar="YYYY-MM-DD")
    parser.add_argument("--event", action="append", help="only this event name (repeatable)")
    parser.add_argument("--where", help='a filter, e.g. properties["plan"] == "pro"')
    parser.add_argument("--limit", type=int)
    parser.add_argument("--time-in-ms", action="store_true", help="time in ms, not seconds")
    parser.add_argument("--output", "-o", help="write to this file instead of stdout")
    add_settings_arguments(parser, ["data_dir"])
    parser.set_defaults(run=run)


def _params(args: argparse.Namespace) -> dict[str, str]:
    params = {"from_date": args.from_date, "to_date": args.to_date}
    if args.event:
        params["event"] = json.dumps(args.event)
    if args.where:
        params["where"] = args.where
    if args.limit is not None:
        params["limit"] = str(args.limit)
    if args.time_in_ms:
        params["time_in_ms"] = "true"
    return params


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    project = find_project(settings, args.project_id)
    params = _params(args)
    parse_export_params(project.id, params)  # refuse bad dates before any work
    out: BinaryIO = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        server = running_server(settings)
        if server:
            copy_from_server(server, "/api/2.0/export", project.secret, params, out)
        else:
            with loaded_store(settings) as store:
                for chunk in export_lines(store, parse_export_params(project.id, params)):
                    out.write(chunk)
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    return 0
