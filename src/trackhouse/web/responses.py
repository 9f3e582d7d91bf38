"""The only place that builds wire replies (spec §3, §4, §8, §9).

Every reply a client can see is made by a function here, so one test can walk them
all against the shapes the spec names.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import orjson

from trackhouse.errors import BadCallback
from trackhouse.ingest.validate import Rejection
from trackhouse.web.http import Response

JSON = "application/json"
JAVASCRIPT = "text/javascript; charset=utf-8"
PLAIN = "text/plain; charset=utf-8"

# 1x1 transparent GIF89a.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# A JavaScript member expression as mixpanel-browser builds it: identifiers joined by
# dots, and [..] with digits or a quoted alphanumeric key. Nothing else can run.
_CALLBACK = re.compile(
    r"[A-Za-z_$][\w$]*"
    r"(?:\.[A-Za-z_$][\w$]*|\[(?:\d+|\"[\w$-]*\"|'[\w$-]*')\])*",
    re.ASCII,
)
MAX_CALLBACK = 128


@dataclass(frozen=True, slots=True)
class TrackMode:
    """How a /track, /engage or /groups client wants its answer (spec §3)."""

    verbose: bool = False
    img: bool = False
    callback: str | None = None


def track_mode(params: Mapping[str, str]) -> TrackMode:
    callback = params.get("callback") or None
    if callback is not None and (len(callback) > MAX_CALLBACK or not _CALLBACK.fullmatch(callback)):
        raise BadCallback(
            "callback must be a JavaScript name such as mixpanel._jsc.abc (letters, digits, "
            "_, $, dots and [index])"
        )
    return TrackMode(
        verbose=params.get("verbose") == "1",
        img=params.get("img") == "1",
        callback=callback,
    )


def track_reply(
    mode: TrackMode, *, ok: bool, error: str | None = None, status: int = 200
) -> Response:
    """The 1/0, verbose, pixel or JSONP answer. Pixels and JSONP are always HTTP 200:
    an <img> or <script> tag cannot read a status anyway."""
    if mode.img:
        return Response(
            200, PIXEL, "image/gif", [("cache-control", "no-cache, no-store, must-revalidate")]
        )
    if mode.verbose:
        # A partial success still says what was not stored (spec §3).
        payload = orjson.dumps({"status": 1 if ok else 0, "error": error})
    else:
        payload = b"1" if ok else b"0"
    if mode.callback is not None:
        return Response(200, mode.callback.encode() + b"(" + payload + b")", JAVASCRIPT)
    return Response(status, payload, JSON if mode.verbose else PLAIN)


def bad_callback(message: str) -> Response:
    return Response(400, message.encode(), PLAIN)


def summarize_rejections(rejections: Sequence[Rejection], total: int, noun: str = "events") -> str:
    """The verbose error text: how many events (or updates) were not stored, and the
    first reason."""
    first = rejections[0]
    where = f"{noun[:-1]} {first.index}" + (
        f" ($insert_id {first.insert_id})" if first.insert_id else ""
    )
    return (
        f"{len(rejections)} of {total} {noun} were not stored; first: {where}: "
        f"{first.field}: {first.message}"
    )


# -- /import, strict mode (spec §4) ------------------------------------------------------
def _phrase(status: int) -> str:
    if status == 413:
        return "Request Entity Too Large"  # the spec's (and Mixpanel's) older phrase
    return HTTPStatus(status).phrase


def import_ok(imported: int) -> Response:
    return Response(
        200, orjson.dumps({"code": 200, "num_records_imported": imported, "status": "OK"}), JSON
    )


def import_partial(imported: int, rejections: Sequence[Rejection]) -> Response:
    return Response(
        400,
        orjson.dumps(
            {
                "code": 400,
                "error": "some data points in the request failed validation",
                "status": "Bad Request",
                "num_records_imported": imported,
                "failed_records": [r.as_dict() for r in rejections],
            }
        ),
        JSON,
    )


def import_error(status: int, message: str, *, retry_after: int | None = None) -> Response:
    """401, 413, 429, 503 and unparseable-body 400s, in the /import envelope."""
    body: dict[str, object] = {"code": status, "error": message, "status": _phrase(status)}
    if status == 400:
        body["num_records_imported"] = 0
        body["failed_records"] = []
    headers = [("retry-after", str(retry_after))] if retry_after is not None else []
    return Response(status, orjson.dumps(body), JSON, headers)


def unauthorized() -> Response:
    return import_error(401, "Invalid credentials")


# -- everything else ----------------------------------------------------------------------
def plain_error(status: int, message: str, *, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """Export errors (spec §8: a plain-text reason) and unknown paths or methods."""
    return Response(status, message.encode(), PLAIN, list(headers))


def query_error(status: int, message: str, *, retry_after: int | None = None) -> Response:
    """Errors of the JSON query APIs (/api/2.0/engage), in Mixpanel's shape."""
    headers = [] if retry_after is None else [("retry-after", str(retry_after))]
    return Response(status, orjson.dumps({"error": message, "status": "error"}), JSON, headers)


def json_reply(
    value: object, status: int = 200, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    return Response(status, orjson.dumps(value), JSON, list(headers))
