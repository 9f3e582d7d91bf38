"""The SDK × scenario conformance matrix, kept in docs/CONFORMANCE.md by the suite itself.

A test joins the matrix with ``@pytest.mark.conformance(sdk, scenario)``; a cell passes only
if every test marked with it passed (a scenario may take several tests). At the end of a run
the matrix is printed, and the cells this run exercised are written into docs/conformance.json
and rendered to docs/CONFORMANCE.md; cells a partial run (``-k``, one file) did not reach keep
their last recorded result and date, so running one test never blanks the document.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
RESULTS = DOCS / "conformance.json"
DOCUMENT = DOCS / "CONFORMANCE.md"

# Column order of the matrix; SDKs not listed here come after, alphabetically.
SDKS = ("mixpanel-browser", "mixpanel (Node)", "mixpanel (Python)")

_PASS, _FAIL = "pass", "FAIL"


class Matrix:
    """Collects the outcome of each marked test, per (sdk, scenario) cell."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], list[str]] = {}

    def record(self, sdk: str, scenario: str, outcome: str) -> None:
        self.cells.setdefault((sdk, scenario), []).append(outcome)

    def results(self) -> dict[tuple[str, str], str]:
        return {
            cell: (_PASS if all(o == "passed" for o in outcomes) else _FAIL)
            for cell, outcomes in self.cells.items()
        }


def _load() -> dict[str, dict[str, Any]]:
    try:
        stored: dict[str, dict[str, Any]] = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}
    return stored


def _render(stored: dict[str, dict[str, Any]]) -> str:
    sdks = sorted({c["sdk"] for c in stored.values()}, key=_sdk_order)
    scenarios = sorted({c["scenario"] for c in stored.values()})
    lines = [
        "# SDK conformance matrix",
        "",
        "Written by the test suite (`tests/conformance.py`): each cell is the result of the",
        "end-to-end tests marked `conformance(sdk, scenario)`, run against a real trackhouse",
        "server with the official SDK in its real runtime (mixpanel-browser in Debian's chromium,",
        "the Node library under node, the Python library in CPython). A cell passes only if",
        "every event and profile update the SDK sent is stored exactly once. Each",
        "mixpanel-browser scenario is a transport or a failure; every one of them also calls",
        "register, identify, alias, people.set/set_once/increment/append/union/unset and the",
        "group calls, and checks they landed. `—`: the SDK has no such scenario. Dates are",
        "when the cell last ran (`pytest tests/e2e -k sdk` or the README's test command).",
        "",
        "| scenario | " + " | ".join(sdks) + " |",
        "|---|" + "---|" * len(sdks),
    ]
    for scenario in scenarios:
        row = []
        for sdk in sdks:
            cell = stored.get(f"{sdk} :: {scenario}")
            row.append(f"{cell['result']} ({cell['date']})" if cell else "—")
        lines.append(f"| {scenario} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _sdk_order(sdk: str) -> tuple[int, str]:
    return (SDKS.index(sdk) if sdk in SDKS else len(SDKS), sdk)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "conformance(sdk, scenario): a cell of the SDK conformance matrix"
    )
    config.stash[_KEY] = Matrix()


_KEY = pytest.StashKey[Matrix]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    marker = item.get_closest_marker("conformance")
    if marker is not None:
        sdk, scenario = marker.args
        # One outcome per test: the call phase, or a setup/teardown failure or skip.
        if report.when == "call" or report.outcome != "passed":
            item.config.stash[_KEY].record(sdk, scenario, report.outcome)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash[_KEY].results()
    if not results:
        return
    today = dt.datetime.now(dt.UTC).date().isoformat()
    stored = _load()
    for (sdk, scenario), result in results.items():
        stored[f"{sdk} :: {scenario}"] = {
            "sdk": sdk,
            "scenario": scenario,
            "result": result,
            "date": today,
        }
    DOCS.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(dict(sorted(stored.items())), indent=1) + "\n")
    document = _render(stored)
    DOCUMENT.write_text(document)
    terminalreporter.write_sep("=", "SDK conformance (docs/CONFORMANCE.md)")
    terminalreporter.write(document)
