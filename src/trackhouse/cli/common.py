"""Shared by the subcommands: settings flags derived from the Settings fields."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from trackhouse.settings import Settings, load_settings


def add_settings_arguments(parser: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """One flag per setting (``--data-dir`` for data_dir ...), help from the Settings."""
    parser.add_argument("--config", type=Path, help="TOML file of settings")
    for f in fields(Settings):
        if names is not None and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default}; env TRACKHOUSE_{f.name.upper()})"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if f.type == "bool":
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)
    }
    return load_settings(overrides, config_file=getattr(args, "config", None))
