"""Every command's --help prints (argparse formats help texts with %, so a setting's
help that says "80%" once crashed `trackhouse serve --help`)."""

from __future__ import annotations

import contextlib
import io

import pytest

from trackhouse.cli import main

COMMANDS = [
    [],
    ["serve"],
    ["projects"],
    ["projects", "create"],
    ["projects", "update"],
    ["service-accounts"],
    ["export"],
    ["profiles"],
    ["query"],
    ["delete"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "trackhouse")
def test_help_prints_and_exits_0(command: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: trackhouse" in out.getvalue()
