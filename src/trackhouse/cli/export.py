"""``trackhouse export``: a project's events as NDJSON, like the export API.

With a server running on the data directory, this asks it (the store belongs to the
server's process); otherwise it opens the data directory itself, first loading any
events the journal still holds, so nothing acknowledged is missing from the output.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, BinaryIO

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.errors import ProjectError, TrackhouseError
from trackhouse.journal import Journal
from trackhouse.loader import Loader
from trackhouse.projects import Registry
from trackhouse.query.export import export_lines, parse_export_params
from trackhouse.settings import Settings
from trackhouse.storage.duckdb import DuckDBStore


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "export", help="export a project's events as NDJSON", description=__doc__
    )
    parser.add_argument("--project", type=int, required=True, dest="project_id", metavar="ID")
    parser.add_argument("--from", required=True, dest="from_date", metavar="YYYY-MM-DD")
    parser.add_argument("--to", required=True, dest="to_date", metavar="YYYY-MM-DD")
    parser.add_argument("--event", action="append", help="only this event name (repeatable)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--time-in-ms", action="store_true", help="time in ms, not seconds")
    parser.add_argument("--output", "-o", help="write to this file instead of stdout")
    add_settings_arguments(parser, ["data_dir"])
    parser.set_defaults(run=run)


def _params(args: argparse.Namespace) -> dict[str, str]:
    params = {"from_date": args.from_date, "to_date": args.to_date}
    if args.event:
        params["event"] = json.dumps(args.event)
    if args.limit is not None:
        params["limit"] = str(args.limit)
    if args.time_in_ms:
        params["time_in_ms"] = "true"
    return params


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    registry = Registry(settings.registry_path)
    try:
        project = registry.get(args.project_id)
    finally:
        registry.close()
    if project is None:
        raise ProjectError(f"no project with id {args.project_id}")
    params = _params(args)
    parse_export_params(project.id, params)  # refuse bad dates before any work
    out: BinaryIO = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        url = running_server_url(settings)
        if url:
            _export_via_server(url, project.secret, params, out)
        else:
            _export_offline(settings, project.id, params, out)
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    return 0


def running_server_url(settings: Settings) -> str | None:
    try:
        info = json.loads(settings.server_file.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(info["url"])


def _export_via_server(url: str, secret: str, params: dict[str, str], out: BinaryIO) -> None:
    query = urllib.parse.urlencode(params)
    request = urllib.request.Request(f"{url}/api/2.0/export?{query}")  # noqa: S310 - our own server
    token = base64.b64encode(f"{secret}:".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310
            while chunk := reply.read(1 << 16):
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise TrackhouseError(
            f"the server refused the export: {exc.read().decode(errors='replace')}"
        ) from exc
    except urllib.error.URLError as exc:
        raise TrackhouseError(f"cannot reach the server at {url}: {exc.reason}") from exc


def _export_offline(
    settings: Settings, project_id: int, params: dict[str, str], out: BinaryIO
) -> None:
    store = DuckDBStore(settings.store_path)
    try:
        checkpoint = store.checkpoint()
        journal = Journal(
            settings.journal_dir,
            fsync=True,
            first_segment=(checkpoint.segment + 1) if checkpoint else 1,
        )
        try:
            Loader(journal, store, batch_events=settings.loader_batch_events, idle_ms=50).catch_up()
        finally:
            journal.close()
        for chunk in export_lines(store, parse_export_params(project_id, params)):
            out.write(chunk)
    finally:
        store.close()
