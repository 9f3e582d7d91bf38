"""Raw event objects → normalized events, or rejections. Spec §3, §4, §6 and §7.

Pure: the only outside knowledge it needs (which project a token names) is passed in
as a function. One bad event never spoils its batch: each becomes a
:class:`Rejection` value carrying its index, insert_id, field and message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

import orjson

MAX_STRING = 255
MAX_PROPERTIES = 255  # "< 255 properties": 254 is the most allowed
MAX_COLLECTION = 255  # nested object keys and array elements: fewer than this
MAX_DEPTH = 3  # object levels below the properties object
MAX_CONTAINERS = 8  # any nesting of objects and arrays
_INT_MIN, _INT_MAX = -(2**63), 2**64  # what orjson (and the store) keep as integers
MIN_TIME_MS = 31_536_000_000  # 1971-01-01T00:00:00Z
MS_THRESHOLD = 100_000_000_000  # spec Decision: values >= 1e11 are milliseconds

PLACEHOLDER_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "anon",
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "<nil>",
        "0",
        "-1",
        "true",
        "false",
        "[]",
        "{}",
    }
)

# Properties that become columns (or are never stored) rather than JSON properties.
_COLUMN_PROPERTIES = frozenset(
    ("token", "time", "$time", "distinct_id", "$distinct_id", "$insert_id", "ip")
)


class Endpoint(Enum):
    TRACK = "track"
    IMPORT_STRICT = "import"
    IMPORT_LEGACY = "import-legacy"

    @property
    def is_import(self) -> bool:
        return self is not Endpoint.TRACK


class Event(NamedTuple):
    """A normalized event, as the journal and the store hold it."""

    project_id: int
    name: str
    distinct_id: str
    time_ms: int
    insert_id: str
    properties_json: str  # the event's other properties, JSON text
    lib: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    insert_id: str | None
    field: str
    message: str

    def __post_init__(self) -> None:
        # Field names and messages quote the client's own property names, which may be
        # lone surrogates (a name that was not UTF-8): the reply must still encode.
        for name in ("field", "message"):
            text = getattr(self, name)
            if has_surrogates(text):
                object.__setattr__(self, name, text.encode("utf-8", "backslashreplace").decode())

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "insert_id": self.insert_id,
            "field": self.field,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a request adds to each of its events."""

    endpoint: Endpoint
    received_ms: int
    api_host: str
    #: /import: the project the credentials name. /track: None (token decides).
    project_id: int | None = None
    #: ip=1 on /track: the client address, to derive a distinct_id when it is missing.
    client_ip: str | None = None
    track_max_age_ms: int = 5 * 86_400_000
    future_tolerance_ms: int = 3_600_000
    max_event_bytes: int = 1024 * 1024
    #: endpoint.is_import, read once per event or more: a plain field, not an Enum property.
    is_import: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_import", self.endpoint.is_import)


@dataclass(slots=True)
class Outcome:
    events: list[Event]
    rejections: list[Rejection]
    ignored: int = 0  # events dropped on purpose ($ignore): valid, not stored

    @property
    def accepted(self) -> int:
        return len(self.events) + self.ignored


class Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


TokenResolver = Callable[[str], int | None]


def validate_events(
    raw_events: list[Any], ctx: RequestContext, resolve_token: TokenResolver
) -> Outcome:
    outcome = Outcome([], [])
    for index, raw in enumerate(raw_events):
        try:
            event = _normalize(raw, ctx, resolve_token)
        except Invalid as bad:
            outcome.rejections.append(Rejection(index, _insert_id_of(raw), bad.field, bad.message))
            continue
        if event is None:
            outcome.ignored += 1
        else:
            outcome.events.append(event)
    return outcome


def _insert_id_of(raw: Any) -> str | None:
    if isinstance(raw, dict):
        props = raw.get("properties")
        if isinstance(props, dict):
            value = props.get("$insert_id")
            if isinstance(value, str) and not has_surrogates(value):
                return value[:MAX_STRING]
    return None


def _normalize(raw: Any, ctx: RequestContext, resolve_token: TokenResolver) -> Event | None:
    if not isinstance(raw, dict):
        raise Invalid("event", "each event must be a JSON object")
    name = raw.get("event")
    if not isinstance(name, str) or not name:
        raise Invalid("event", "event name must be a non-empty string")
    if has_surrogates(name):
        raise Invalid("event", "event name is not valid UTF-8")
    name = name[:MAX_STRING]
    props = raw.get("properties", {})
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise Invalid("properties", "properties must be a JSON object")

    if "$ignore" in props:
        return None

    project_id = _project_of(props, ctx, resolve_token)
    time_ms = _time_ms(props, ctx)
    distinct_id = _distinct_id(props, ctx, name)
    insert_id = _given_insert_id(props, ctx)

    count = len(props) - len(_COLUMN_PROPERTIES.intersection(props))
    if count >= MAX_PROPERTIES:
        raise Invalid(
            "properties",
            f"event has {count} properties; fewer than {MAX_PROPERTIES} are allowed",
        )
    extra = clean_object(props, 0, "properties", skip=_COLUMN_PROPERTIES)
    try:
        if insert_id is None:
            insert_id = _generated_insert_id(name, distinct_id, time_ms, extra, props)
        extra["mp_processing_time_ms"] = ctx.received_ms
        if ctx.api_host:
            extra["$mp_api_endpoint"] = ctx.api_host[:MAX_STRING]  # a client's Host header
        if ctx.is_import:
            extra["$import"] = True
        encoded = orjson.dumps(extra)
    except TypeError:  # orjson refuses lone surrogates: a string that was not UTF-8
        raise Invalid(
            _find_bad_string(extra) or "properties", "string is not valid UTF-8"
        ) from None
    if len(encoded) >= ctx.max_event_bytes:  # bytes, not characters
        raise Invalid(
            "properties",
            f"event is {len(encoded)} bytes of JSON; the limit is {ctx.max_event_bytes}",
        )
    properties_json = encoded.decode()
    lib = extra.get("mp_lib")
    return Event(
        project_id,
        name,
        distinct_id,
        time_ms,
        insert_id,
        properties_json,
        lib if isinstance(lib, str) else None,
    )


def _project_of(props: dict[str, Any], ctx: RequestContext, resolve_token: TokenResolver) -> int:
    if ctx.project_id is not None:  # /import: the credentials decided
        return ctx.project_id
    return project_for_token(props.get("token"), "token", "properties.token", resolve_token)


def project_for_token(token: Any, name: str, field: str, resolve_token: TokenResolver) -> int:
    """The project a token names, or Invalid with the spec's two messages."""
    if not isinstance(token, str) or not token:
        raise Invalid(field, f"{name}, missing or empty")
    project_id = resolve_token(token)
    if project_id is None:
        raise Invalid(field, f"{name}, no project found")
    return project_id


# No time in seconds or ms is anywhere near this; bigger ints are not times.
MAX_TIME_NUMBER = 10**18


def parse_time_ms(value: Any) -> int | None:
    """Seconds or milliseconds (number or numeric string) → ms; None if not a time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int) and abs(value) > MAX_TIME_NUMBER:
        return None  # far past any time, and past what a float holds (isfinite overflows)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if abs(value) >= MS_THRESHOLD:
        return round(value)
    return round(value * 1000)


def _time_ms(props: dict[str, Any], ctx: RequestContext) -> int:
    field = "properties.time" if "time" in props else "properties.$time"
    raw = props.get("time", props.get("$time"))
    if raw is None:
        if ctx.endpoint is Endpoint.IMPORT_STRICT:
            raise Invalid("properties.time", "time is missing (required by strict /import)")
        # /track, and legacy /import: mixpanel-python's merge() sends $merge with no time.
        return ctx.received_ms
    time_ms = parse_time_ms(raw)
    if time_ms is None:
        raise Invalid(field, "time must be a number of seconds or milliseconds since the epoch")
    if time_ms < MIN_TIME_MS:
        raise Invalid(field, "time is before 1971-01-01")
    if ctx.is_import:
        if time_ms > ctx.received_ms + ctx.future_tolerance_ms:
            raise Invalid(field, "time is more than 1 hour in the future")
        return min(time_ms, ctx.received_ms)
    if time_ms < ctx.received_ms - ctx.track_max_age_ms:
        days = ctx.track_max_age_ms // 86_400_000
        raise Invalid(
            field, f"time is more than {days} days old; send historical events to /import"
        )
    return min(time_ms, ctx.received_ms)  # spec §3: a future time becomes the arrival time


def _distinct_id(props: dict[str, Any], ctx: RequestContext, name: str) -> str:
    field = "properties.distinct_id"
    raw = props.get("distinct_id")
    if raw is None:
        raw = props.get("$distinct_id")
    if raw is None and name == "$merge":
        # mixpanel-python's merge(): the two identities travel in $distinct_ids.
        ids = props.get("$distinct_ids")
        if isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) and i for i in ids):
            raw = ids[0]
    if raw is None:
        if ctx.is_import:
            raise Invalid(field, "distinct_id is missing")
        given = props.get("ip")
        address = given.strip() if isinstance(given, str) and _is_ip(given) else ctx.client_ip
        if ctx.client_ip and address:  # spec §3: properties.ip overrides the peer
            return "$ip:" + hashlib.sha256(address.encode()).hexdigest()[:32]
        return ""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise Invalid(field, "distinct_id must be a string")
    value = raw if isinstance(raw, str) else _number_text(raw)
    if has_surrogates(value):
        raise Invalid(field, "distinct_id is not valid UTF-8")
    if ctx.is_import and value.strip().lower() in PLACEHOLDER_IDS:
        raise Invalid(field, f"distinct_id {value!r} is a placeholder value, not an identity")
    return value[:MAX_STRING]


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _given_insert_id(props: dict[str, Any], ctx: RequestContext) -> str | None:
    field = "properties.$insert_id"
    if "$insert_id" not in props:
        if ctx.endpoint is Endpoint.IMPORT_STRICT:
            raise Invalid(field, "$insert_id is missing (required by strict /import)")
        return None
    value = props["$insert_id"]
    if not isinstance(value, str) or not value:
        raise Invalid(field, "$insert_id must be a non-empty string")
    # Bytes, so non-ASCII text is measured encoded; ASCII's length is its byte count.
    size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if size > 36:
        raise Invalid(field, "$insert_id is longer than 36 bytes")
    letters = value.replace("-", "")
    # isascii + isalnum (both in C) rather than a per-character set test.
    if not value.isascii() or (letters and not letters.isalnum()):
        raise Invalid(field, "$insert_id may contain only letters, digits and '-'")
    if value.lower() in PLACEHOLDER_IDS:
        raise Invalid(field, f"$insert_id {value!r} is a placeholder value")
    return value


def _generated_insert_id(
    name: str, distinct_id: str, time_ms: int, cleaned: dict[str, Any], props: dict[str, Any]
) -> str:
    if "time" not in props and "$time" not in props:
        # No client time: the arrival time stands in, so a copy can never be recognised
        # (as at Mixpanel). Two such identical events are two real occurrences.
        return uuid.uuid4().hex
    # A client time but no $insert_id: derive the id from the content, so that a client
    # resending the same event is deduplicated (spec §7).
    content = orjson.dumps([name, distinct_id, time_ms, cleaned], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(content, digest_size=16).hexdigest()


def _is_ip(text: str) -> bool:
    if has_surrogates(text):  # an IPv6 zone id is free text, but must be UTF-8
        return False
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def has_surrogates(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _clean_value(value: Any, depth: int, path: str, containers: int = 0) -> Any:
    """Truncate strings and enforce §6's nesting limits below one property.

    ``depth`` counts nested objects (the limit Mixpanel applies: the browser SDK sends
    ``{"a": {"b": [1, {"c": "d"}]}}``, three object levels). Arrays do not add a level,
    but every container counts toward ``MAX_CONTAINERS`` so lists of lists stay bounded.
    """
    kind = type(value)
    if kind is str:
        return value[:MAX_STRING] if len(value) > MAX_STRING else value
    if kind is dict or kind is list:
        if containers >= MAX_CONTAINERS:
            raise Invalid(path, f"nested more than {MAX_CONTAINERS} containers deep")
        if len(value) >= MAX_COLLECTION:
            noun = "keys" if kind is dict else "elements"
            raise Invalid(path, f"has {len(value)} {noun}; fewer than {MAX_COLLECTION} are allowed")
        if kind is list:
            out: list[Any] = []
            for i, item in enumerate(value):
                scalar = _clean_scalar(item)
                out.append(
                    _clean_value(item, depth, f"{path}[{i}]", containers + 1)
                    if scalar is _NOT_SCALAR
                    else scalar
                )
            return out
        if depth >= MAX_DEPTH:
            raise Invalid(path, f"objects nested more than {MAX_DEPTH} levels deep")
        return clean_object(value, depth + 1, path, containers + 1)
    if kind is float and not math.isfinite(value):
        raise Invalid(path, "numbers must be finite")
    if kind is int and not _INT_MIN <= value < _INT_MAX:
        return _wide_int(value, path)
    return value


def _wide_int(value: int, path: str) -> float:
    """An integer JSON cannot keep in 64 bits becomes a double, as Mixpanel stores
    every number; past a double's range it is refused."""
    try:
        return float(value)
    except OverflowError:
        raise Invalid(path, "number is too large") from None


_NOT_SCALAR = object()


def _clean_scalar(value: Any) -> Any:
    """The common values' fast path (no error path to name): a cleaned string, number,
    boolean or null, or _NOT_SCALAR for anything that needs _clean_value."""
    kind = type(value)
    if kind is str:
        return value[:MAX_STRING] if len(value) > MAX_STRING else value
    if kind is bool or value is None:
        return value
    if kind is int:
        return value if _INT_MIN <= value < _INT_MAX else _NOT_SCALAR
    if kind is float:
        return value if math.isfinite(value) else _NOT_SCALAR
    return _NOT_SCALAR


def clean_object(
    obj: dict[str, Any],
    depth: int,
    path: str,
    containers: int = 0,
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``obj`` with every value cleaned (``_clean_value``), leaving out the keys in ``skip``.

    The common values (short strings, 64-bit integers, finite floats, booleans, null)
    are checked inline: this loop runs for every property of every event, and a call
    per value was a tenth of validation."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in skip:
            continue
        name = key[:MAX_STRING] if len(key) > MAX_STRING else key
        kind = type(value)
        if kind is str:
            out[name] = value[:MAX_STRING] if len(value) > MAX_STRING else value
        elif (
            value is None
            or kind is bool
            or (kind is int and _INT_MIN <= value < _INT_MAX)
            or (kind is float and math.isfinite(value))
        ):
            out[name] = value
        else:
            out[name] = _clean_value(value, depth, f"{path}.{name}", containers)
    return out


def _find_bad_string(value: Any, path: str = "properties") -> str:
    """The path of the first key or string that is not valid UTF-8 (slow path only)."""
    if isinstance(value, str):
        return path if has_surrogates(value) else ""
    if isinstance(value, dict):
        for key, item in value.items():
            if has_surrogates(key):
                return f"{path}.{key.encode('utf-8', 'replace').decode()}"
            found = _find_bad_string(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _find_bad_string(item, f"{path}[{i}]")
            if found:
                return found
    return ""
