"""``trackhouse delete``: delete users' events and profiles (data-subject requests).

Through the running server if there is one (POST /api/data-deletions), else on the data
directory itself. Either way the deletion goes through the journal, so it also covers
events acknowledged but not yet loaded into the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.cli.source import (
    find_project,
    journaled_store,
    json_from_server,
    running_server,
)
from trackhouse.errors import StorageError
from trackhouse.journal.records import encode_deletion
from trackhouse.query.deletion import deletion_result, parse_distinct_ids
from trackhouse.settings import Settings


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "delete", help="delete users' events and profiles", description=__doc__
    )
    parser.add_argument("--project", type=int, required=True, dest="project_id", metavar="ID")
    parser.add_argument(
        "--distinct-id",
        action="append",
        required=True,
        dest="distinct_ids",
        metavar="ID",
        help="a user to delete (repeat for more)",
    )
    add_settings_arguments(parser, ["data_dir"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    project = find_project(settings, args.project_id)
    ids = parse_distinct_ids({"distinct_ids": json.dumps(args.distinct_ids)})
    server = running_server(settings)
    if server:
        result = json_from_server(
            server,
            "/api/data-deletions",
            project.secret,
            {"distinct_ids": json.dumps(ids)},
            post=True,
        )
    else:
        result = _delete_here(settings, project.id, ids)
    print(json.dumps(result))
    return 0 if result.get("status") == "ok" else 1


def _delete_here(settings: Settings, project_id: int, ids: list[str]) -> dict[str, Any]:
    with journaled_store(settings) as (_store, journal, loader):
        payload = encode_deletion(project_id, ids, received_ms=int(time.time() * 1000))
        end = asyncio.run(journal.append_and_sync(payload))
        loader.catch_up()
        deleted = loader.deleted(end)
    if deleted is None:  # pragma: no cover - catch_up applies it or raises
        raise StorageError("the deletion was recorded but not applied; run the command again")
    return deletion_result(len(ids), deleted)
