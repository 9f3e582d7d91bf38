"""The requests the official SDKs sent (../shared/spec/wire/*.jsonl), as test fixtures."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

WIRE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "wire"
# The credentials inside the captures (wire/README.md), for a replay to recreate.
TOKEN, SECRET, PROJECT_ID = "TESTTOKEN123", "TESTAPISECRET", 123456


@dataclass
class Capture:
    client: str
    scenario: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    reply_body: str

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def captures(client: str | None = None) -> list[Capture]:
    """Every capture in file order (one client's file, or all files by name)."""
    paths = [WIRE / f"{client}.jsonl"] if client else sorted(WIRE.glob("*.jsonl"))
    out = []
    for path in paths:
        for line in path.read_text().splitlines():
            raw = json.loads(line)
            out.append(
                Capture(
                    raw["client"],
                    raw["scenario"],
                    raw["method"],
                    raw["target"],
                    raw["headers"],
                    base64.b64decode(raw["body_b64"]),
                    raw["capture_reply"]["body"],
                )
            )
    return out
