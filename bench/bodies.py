"""Request bodies for the benchmarks, built before the clock starts, each with unique
$insert_ids so the store deduplicates nothing, and the raw floors that go with them: what
one process does with the same bytes without any server around it."""

from __future__ import annotations

import base64
import gzip
import time
import urllib.parse
import zlib
from typing import Any

import orjson

TOKEN = "bench-token"  # noqa: S105 - a throwaway project on a temp dir
SECRET = "bench-secret"  # noqa: S105


def _event(serial: int, now: int, *, token: bool) -> dict[str, Any]:
    """A browser-like event: a dozen properties, ~350 bytes of JSON."""
    properties: dict[str, Any] = {
        "time": now - (serial % 3600),
        "distinct_id": f"user-{serial % 50_000}",
        "$insert_id": f"{serial:032x}",
        "plan": "pro" if serial % 3 else "free",
        "price": serial % 1000 * 0.5,
        "$browser": "Chrome",
        "$os": "Linux",
        "$current_url": f"https://example.com/page/{serial % 100}",
        "$screen_width": 1920,
        "mp_lib": "web",
        "tags": ["a", "b"],
    }
    if token:
        properties["token"] = TOKEN
    return {"event": f"event {serial % 20}", "properties": properties}


def import_body(batch: int, events: int, seed: int = 0) -> bytes:
    """/import: a gzip'd JSON array of ``events`` events (as a bulk importer sends)."""
    now = int(time.time())
    base = (seed << 40) + batch * events
    rows = [_event(base + i, now, token=False) for i in range(events)]
    return gzip.compress(orjson.dumps(rows), compresslevel=6)


def track_body(batch: int, events: int, seed: int = 0) -> bytes:
    """/track: form ``data=<base64 JSON>``, as mixpanel-browser sends to a custom host;
    one event as an object (batching off), several as an array (its batch mode)."""
    now = int(time.time())
    base = (seed << 40) + batch * events
    rows = [_event(base + i, now, token=True) for i in range(events)]
    payload = orjson.dumps(rows[0] if events == 1 else rows)
    return urllib.parse.urlencode({"data": base64.b64encode(payload).decode()}).encode()


def import_floor(bodies: list[bytes]) -> int:
    """Events in the bodies after gunzip + JSON parse (the floor's unit of work)."""
    return sum(len(orjson.loads(zlib.decompress(body, 47))) for body in bodies)


def track_floor(bodies: list[bytes]) -> int:
    """Events in the bodies after form-decode + base64 + JSON parse."""
    count = 0
    for body in bodies:
        data = urllib.parse.parse_qs(body.decode())["data"][0]
        parsed = orjson.loads(base64.b64decode(data))
        count += len(parsed) if isinstance(parsed, list) else 1
    return count
