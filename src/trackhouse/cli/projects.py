"""``trackhouse projects``: create, list, update projects and rotate their secrets.

Works on the registry file directly, whether or not a server runs on the same data
directory; a running server sees the change on its next request.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.projects import Project, Registry


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser("projects", help="manage projects")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a project")
    create.add_argument("name")
    create.add_argument("--id", type=int, dest="project_id", help="project id (default: next free)")
    create.add_argument("--token", help="keep an existing Mixpanel token (default: random)")
    create.add_argument("--secret", help="keep an existing API secret (default: random)")
    create.set_defaults(run=_create)

    listing = actions.add_parser("list", help="list projects")
    listing.set_defaults(run=_list)

    rotate = actions.add_parser("rotate-secret", help="give a project a new API secret")
    rotate.add_argument("project_id", type=int, metavar="ID")
    rotate.add_argument("--secret", help="the new secret (default: random)")
    rotate.set_defaults(run=_rotate)

    update = actions.add_parser("update", help="change a project's name or limits")
    update.add_argument("project_id", type=int, metavar="ID")
    update.add_argument("--name")
    update.add_argument("--events-per-second", type=int, help="ingestion limit; 0 removes it")
    update.add_argument(
        "--bytes-per-minute",
        type=int,
        help="ingestion limit in uncompressed JSON bytes; 0 goes back to the server's default",
    )
    update.add_argument(
        "--retention-days",
        type=int,
        help="delete events whose time is older than this many days (0: keep everything)",
    )
    update.add_argument(
        "--allow-token-import",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="accept the public token as /import credentials (off by default)",
    )
    update.set_defaults(run=_update)

    for sub in (create, listing, rotate, update):
        sub.add_argument("--json", action="store_true", help="print JSON")
        add_settings_arguments(sub, ["data_dir"])


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(settings_from_args(args).registry_path)


def _print(projects: list[Project], as_json: bool, single: bool = False) -> None:
    if as_json:
        value: Any = projects[0].as_dict() if single else [p.as_dict() for p in projects]
        print(json.dumps(value, indent=None if single else 2))
        return
    print(
        f"{'ID':>8}  {'NAME':<20} {'TOKEN':<34} {'API SECRET':<34} {'EVENTS/S':>8} {'KEEP DAYS':>9}"
    )
    for p in projects:
        limit = str(p.events_per_second or "-")
        keep = str(p.retention_days or "-")
        print(f"{p.id:>8}  {p.name[:20]:<20} {p.token:<34} {p.secret:<34} {limit:>8} {keep:>9}")


def _create(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        project = registry.create_project(
            args.name, project_id=args.project_id, token=args.token, secret=args.secret
        )
    finally:
        registry.close()
    _print([project], args.json, single=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        _print(registry.projects(), args.json)
    finally:
        registry.close()
    return 0


def _rotate(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        project = registry.rotate_secret(args.project_id, args.secret)
    finally:
        registry.close()
    _print([project], args.json, single=True)
    return 0


def _update(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        project = registry.update(
            args.project_id,
            name=args.name,
            events_per_second=args.events_per_second,
            allow_token_import=args.allow_token_import,
            retention_days=args.retention_days,
            bytes_per_minute=args.bytes_per_minute,
        )
    finally:
        registry.close()
    _print([project], args.json, single=True)
    return 0
