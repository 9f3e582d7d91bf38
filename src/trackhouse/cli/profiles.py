"""``trackhouse profiles``: read user and group profiles (export as NDJSON, or get one).

The same parameters as ``/api/2.0/engage``, from the running server if there is one,
else from the data directory (cli/source.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.cli.source import find_project, json_from_server, loaded_store, running_server
from trackhouse.query.profiles import PAGE_SIZE, parse_profile_params, profile_result
from trackhouse.settings import Settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "profiles", help="read user and group profiles", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    export = actions.add_parser("export", help="every matching profile, one JSON per line")
    _common(export)
    export.add_argument("--where", help='a filter, e.g. properties["plan"] == "pro"')
    export.add_argument(
        "--output-properties", metavar="A,B", help="only these properties (comma-separated)"
    )
    export.add_argument("--output", "-o", help="write to this file instead of stdout")
    export.set_defaults(run=_export)

    get = actions.add_parser("get", help="one profile, as JSON")
    get.add_argument("profile_id", metavar="DISTINCT_ID", help="a $distinct_id, or a $group_id")
    _common(get)
    get.set_defaults(run=_get)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", type=int, required=True, dest="project_id", metavar="ID")
    parser.add_argument(
        "--group-key", metavar="KEY", help="group profiles of this group key (default: users)"
    )
    add_settings_arguments(parser, ["data_dir"])


def _params(args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    if args.group_key:
        params["data_group_id"] = args.group_key
    if getattr(args, "where", None):
        params["where"] = args.where
    if getattr(args, "output_properties", None):
        names = [n.strip() for n in args.output_properties.split(",") if n.strip()]
        params["output_properties"] = json.dumps(names)
    if getattr(args, "profile_id", None) is not None:
        params["distinct_id"] = args.profile_id
    return params


def profiles(
    settings: Settings, project_id: int, params: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """Every matching profile as the query API's result objects."""
    project = find_project(settings, project_id)
    request = parse_profile_params(project.id, params)  # refuse bad input before any work
    server = running_server(settings)
    if server:
        session: dict[str, str] = {}
        page = 0
        while True:
            reply = json_from_server(
                server,
                "/api/2.0/engage",
                project.secret,
                {**params, **session, "page": str(page), "page_size": str(PAGE_SIZE)},
            )
            yield from reply["results"]
            if len(reply["results"]) < reply["page_size"]:
                return
            session = {"session_id": reply["session_id"]}
            page += 1
    else:
        with loaded_store(settings) as store:
            for rows in store.profiles(request.query, limit=None):
                for row in rows:
                    yield profile_result(row, request.output_properties)


def _export(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        for result in profiles(settings, args.project_id, _params(args)):
            out.write(orjson.dumps(result) + b"\n")
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    return 0


def _get(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    found = list(profiles(settings, args.project_id, _params(args)))
    if not found:
        kind = f"group {args.group_key!r}" if args.group_key else "user"
        print(f"trackhouse: no {kind} profile {args.profile_id!r}", file=sys.stderr)
        return 1
    print(json.dumps(found[0], indent=2, ensure_ascii=False))
    return 0
