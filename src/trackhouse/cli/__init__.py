"""The ``trackhouse`` command: one module per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trackhouse import __version__
from trackhouse.cli import delete, export, profiles, projects, query, serve, service_accounts
from trackhouse.errors import TrackhouseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackhouse",
        description="Self-hosted event store that speaks Mixpanel's HTTP API.",
    )
    parser.add_argument("--version", action="version", version=f"trackhouse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, projects, service_accounts, export, profiles, query, delete):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except TrackhouseError as exc:
        print(f"trackhouse: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
