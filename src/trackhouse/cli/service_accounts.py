"""``trackhouse service-accounts``: credentials for /import and the read APIs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.projects import Registry


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "service-accounts", help="manage service accounts"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a service account (secret shown once)")
    create.add_argument("--project", type=int, required=True, dest="project_id", metavar="ID")
    create.add_argument("--username", help="default: a random sa-….trackhouse-service-account")
    create.add_argument("--secret", help="default: random")
    create.set_defaults(run=_create)
    listing = actions.add_parser("list", help="list service accounts (no secrets)")
    listing.set_defaults(run=_list)
    for sub in (create, listing):
        sub.add_argument("--json", action="store_true", help="print JSON")
        add_settings_arguments(sub, ["data_dir"])


def _create(args: argparse.Namespace) -> int:
    registry = Registry(settings_from_args(args).registry_path)
    try:
        account, secret = registry.create_service_account(
            args.project_id, username=args.username, secret=args.secret
        )
    finally:
        registry.close()
    if args.json:
        print(
            json.dumps(
                {"username": account.username, "secret": secret, "project_id": account.project_id}
            )
        )
    else:
        print(
            f"username:   {account.username}\nsecret:     {secret}   (shown only now)\nproject id: {account.project_id}"
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    registry = Registry(settings_from_args(args).registry_path)
    try:
        accounts = registry.service_accounts()
    finally:
        registry.close()
    if args.json:
        print(
            json.dumps(
                [
                    {"username": a.username, "project_id": a.project_id, "created_at": a.created_at}
                    for a in accounts
                ],
                indent=2,
            )
        )
    else:
        for a in accounts:
            print(f"{a.username}\tproject {a.project_id}")
    return 0
