"""Bytes → raw JSON objects. All the transport variety of spec §2 lives here.

Pure: no I/O, no web framework, no database. Every failure is a
:class:`~trackhouse.errors.PayloadError` (or ``PayloadTooLarge``) with a message that
tells the client what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from trackhouse.errors import PayloadError, PayloadTooLarge

# Python's json module recurses; orjson stops at 1024 levels. Anything deeper than this
# cannot be a valid event (spec §6 allows 3 levels), so refuse before the slow path.
_MAX_NESTING_FOR_SLOW_PATH = 256


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip (or zlib) body, refusing to produce more than ``limit`` bytes.

    The decompressor is asked for at most ``limit + 1`` bytes, so a gzip bomb costs us
    ``limit`` bytes of memory and is then refused, never inflated.
    """
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise PayloadError(f"body is not valid gzip: {exc}") from exc
    if len(out) > limit:
        raise PayloadTooLarge(f"request exceeds max limit of {limit} bytes", limit=limit)
    if not inflater.eof:
        raise PayloadError("body is not valid gzip: truncated stream")
    while inflater.unused_data:  # concatenated gzip members are legal gzip
        rest = inflater.unused_data
        inflater = zlib.decompressobj(wbits=47)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise PayloadError(f"body is not valid gzip: {exc}") from exc
        if len(out) > limit:
            raise PayloadTooLarge(f"request exceeds max limit of {limit} bytes", limit=limit)
        if not inflater.eof:
            raise PayloadError("body is not valid gzip: truncated stream")
    return out


def first_significant_byte(data: bytes | str) -> str:
    """The first non-blank character (of the first 256), or "" when there is none:
    enough to tell a JSON payload from a form or base64 without copying the body."""
    head = data[:256]
    text = head.decode("latin-1") if isinstance(head, bytes) else head
    return text.lstrip(" \t\r\n\ufeff")[:1]


@dataclass(frozen=True)
class RequestParams:
    """The parameters of a /track-style request (query ∪ form body, body wins)."""

    params: dict[str, str]
    #: The payload when the body itself was JSON (no ``data=`` wrapper), else None.
    json_body: bytes | None


def parse_params(query_string: bytes, body: bytes, content_type: str) -> RequestParams:
    """Spec §2.2–2.3: find the parameters in the query string and in a form-like body."""
    return params_with_body(_parse_form(query_string, "query string"), body, content_type)


def params_with_body(query: Mapping[str, str], body: bytes, content_type: str) -> RequestParams:
    """``parse_params`` for a query string already parsed (the web layer has it)."""
    params = dict(query)
    if not body.strip():
        return RequestParams(params, None)
    if first_significant_byte(body) in "[{":
        return RequestParams(params, body)
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in ("", "application/x-www-form-urlencoded", "text/plain"):
        params.update(_parse_form(body, "body"))
        return RequestParams(params, None)
    raise PayloadError(
        f"unsupported Content-Type {ctype!r}: send a form body (data=...) or a JSON body"
    )


# The only %-escapes in base64 (what mixpanel-browser's data= holds), either case.
_BASE64_ESCAPES = (
    ("%2B", "+"),
    ("%2b", "+"),
    ("%2F", "/"),
    ("%2f", "/"),
    ("%3D", "="),
    ("%3d", "="),
)


def _parse_simple_form(text: str) -> dict[str, str] | None:
    """``parse_qsl``'s answer for a form whose only %-escapes are base64's (every SDK's
    case), by str.replace in C; None for anything else. parse_qsl unquotes escape by
    escape in Python: ~150 µs of a 50-event /track body's ~17 KB, on the event loop."""
    params: dict[str, str] = {}
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            return None
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            for escape, char in _BASE64_ESCAPES:
                if escape in value:  # a scan is cheaper than replace's copy
                    value = value.replace(escape, char)
            if "%" in value:  # some other escape: leave it all to parse_qsl
                return None
        params[name] = value
    return params


def _parse_form(raw: bytes, where: str) -> dict[str, str]:
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{where} is not valid UTF-8") from exc
    fast = _parse_simple_form(text)
    if fast is not None:
        return fast
    try:
        # errors="strict": a %-escape that decodes to invalid UTF-8 is the client's bug.
        return dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{where} has a %-escape that is not valid UTF-8") from exc
    except ValueError as exc:
        raise PayloadError(f"{where} is not form-encoded: {exc}") from exc


def decode_client_payload(
    json_body: bytes | None, data: str | None, *, max_items: int, noun: str
) -> list[Any]:
    """A /track, /engage or /groups payload: a JSON body (spec §2.3) or ``data``."""
    raw = as_list(loads(json_body)) if json_body is not None else decode_data(data)
    if len(raw) > max_items:
        raise PayloadTooLarge(
            f"request has {len(raw)} {noun}; the limit is {max_items} per request"
        )
    return raw


def decode_data(value: str | None) -> list[Any]:
    """Spec §2.4–2.6: a ``data`` parameter, JSON or base64(JSON), one object or many."""
    if value is None or not value.strip():
        raise PayloadError("data, missing or empty")
    if first_significant_byte(value) in "[{":
        return as_list(loads(value.encode("utf-8", "surrogatepass")))
    # mixpanel-node writes raw base64 into form bodies, so a form decoder turned its
    # '+' into ' '; base64 has no spaces, so mapping them back is lossless.
    text = value.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError("data is neither JSON nor valid base64") from exc
    if not raw.strip():
        raise PayloadError("data, missing or empty")
    return as_list(loads(raw))


def as_list(payload: Any) -> list[Any]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        return [payload]
    raise PayloadError("payload must be a JSON object or an array of objects")


def loads(raw: bytes) -> Any:
    """Parse JSON; fast path orjson, slow path for the one case orjson refuses whole.

    orjson rejects a document with any invalid UTF-8 or lone surrogate. Spec §6 wants
    that to spoil only the event that holds it, with the property named. So on such a
    failure we re-parse with the stdlib, keeping bad bytes as surrogates, and let
    validation find and name them.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fast_error = json_error(exc)
    if not fast_error.startswith(_NOT_UTF8):
        # Not an encoding problem: the stdlib would only find the same fault, slowly
        # (a 10 MB body held the event loop for a second).
        raise PayloadError(f"invalid JSON: {fast_error}")
    try:
        text = raw.decode("utf-8", "surrogateescape")
        if _nesting_exceeds(text, _MAX_NESTING_FOR_SLOW_PATH):
            raise PayloadError("invalid JSON: nested too deeply")
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"invalid JSON: {fast_error}") from exc


_NOT_UTF8 = "not valid UTF-8"


def json_error(exc: ValueError) -> str:
    """orjson's reason, in words a client can act on (its depth limit is 1024)."""
    text = str(exc)
    if "depth limit" in text or "recursion" in text.lower():
        return "nested too deeply"
    if "surrogate" in text or "UTF-8" in text:
        return f"{_NOT_UTF8} ({text})"
    return text


def _nesting_exceeds(text: str, limit: int) -> bool:
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def decode_import_body(body: bytes) -> list[Any]:
    """Spec §4: a JSON array, one JSON object, or NDJSON (one JSON value per line)."""
    if not body.strip():
        raise PayloadError("request body is empty")
    if first_significant_byte(body) not in "[{":
        raise PayloadError("request body must be a JSON array of events or NDJSON")
    if first_significant_byte(body) == "[":
        return as_list(loads(body))  # one document: the slow path names bad strings
    try:
        return as_list(orjson.loads(body))
    except orjson.JSONDecodeError:
        pass
    lines = [line for line in body.split(b"\n") if line.strip()]
    if len(lines) <= 1:
        return as_list(loads(body))
    events: list[Any] = []
    for number, line in enumerate(lines, start=1):
        try:
            value = loads(line)
        except PayloadError as exc:
            raise PayloadError(f"NDJSON line {number}: {exc.message}") from exc
        if not isinstance(value, dict):
            raise PayloadError(f"NDJSON line {number}: each line must be one JSON object")
        events.append(value)
    return events
