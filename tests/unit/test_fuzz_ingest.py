"""Property-based fuzz tests of the pure ingest core (decode, validate, profiles, profile_ops).

The contract under test (trackhouse.errors): the decode layer turns any bytes or text
into raw JSON values or raises a TrackhouseError; validation turns any raw values into
events (or updates) and Rejection values, one outcome per input, and raises nothing;
the profile fold takes what validation produced and returns a profile JSON can hold.

Everything is derandomized and kept out of a .hypothesis database, so CI sees the same
examples on every run. Each test reports how many examples it ran.

The tests at the end of the file (section "Regressions") pin the bugs these properties
found, each with its minimal failing example as an explicit @example.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import ipaddress
import json
import math
import re
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from trackhouse.errors import PayloadError, PayloadTooLarge, TrackhouseError
from trackhouse.ingest.decode import (
    RequestParams,
    as_list,
    decode_data,
    decode_import_body,
    first_significant_byte,
    gunzip,
    loads,
    parse_params,
)
from trackhouse.ingest.profile_ops import LAST_SEEN, apply_update, last_seen_text
from trackhouse.ingest.profiles import (
    KEPT_MODIFIERS,
    OPERATIONS,
    ProfileOutcome,
    validate_updates,
)
from trackhouse.ingest.validate import (
    MAX_COLLECTION,
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_PROPERTIES,
    MAX_STRING,
    MIN_TIME_MS,
    PLACEHOLDER_IDS,
    Endpoint,
    Outcome,
    Rejection,
    RequestContext,
    parse_time_ms,
    validate_events,
)
from trackhouse.journal.records import encode_events, encode_updates
from trackhouse.web.responses import TrackMode, import_partial, summarize_rejections, track_reply

T = TypeVar("T")

RECEIVED_MS = 1_795_322_847_405  # fixed, not time.time(): the same examples on every run
TOKENS = {"tok": 7, "tok2": 8}
IMPORT_PROJECT = 3
SERVER_KEYS = frozenset({"mp_processing_time_ms", "$mp_api_endpoint", "$import"})
COLUMN_KEYS = frozenset(
    {"token", "time", "$time", "distinct_id", "$distinct_id", "$insert_id", "ip"}
)
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
BODY_LIMIT = 1 << 20

# database=None keeps examples out of a .hypothesis database, but hypothesis still caches
# Unicode tables and source constants in its home directory: keep those out of the repo.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "trackhouse-hypothesis")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


def resolve(token: str) -> int | None:
    """Resolves some tokens and not others, like the registry."""
    return TOKENS.get(token)


# -- example counts ----------------------------------------------------------------------
_examples: dict[str, int] = {}
_current: list[str] = [""]


def _tally() -> None:
    _examples[_current[0]] = _examples.get(_current[0], 0) + 1


@pytest.fixture(autouse=True)
def _report_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many examples each property ran (autouse: no hypothesis health check)."""
    name = request.node.name
    _current[0] = name
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"  {name}: {_examples.get(name, 0)} examples in {elapsed:.2f}s")


# -- helpers -----------------------------------------------------------------------------
def ours(call: Callable[[], T]) -> T | None:
    """The call's result, or None when it raised one of our errors; anything else
    (ValueError, RecursionError, UnicodeError, zlib.error ...) propagates and fails."""
    try:
        return call()
    except TrackhouseError:
        return None


def utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def _event(extra: dict[str, Any], name: Any, properties: Any) -> dict[str, Any]:
    return {**extra, "event": name, "properties": properties}


def _nest(value: Any, shape: list[str]) -> Any:
    """Wrap ``value`` in containers, innermost last in ``shape`` ("[" or "{")."""
    for kind in reversed(shape):
        value = [value] if kind == "[" else {"k": value}
    return value


def _stdlib_json(value: Any, *, ascii_only: bool = True) -> bytes:
    """JSON text as a sloppy client writes it: NaN, Infinity, integers of any width, and
    lone surrogates as \\ud800 escapes (ascii) or as invalid UTF-8 bytes (raw)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


# -- strategies: text and scalars ----------------------------------------------------------
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
ANY_CHAR = st.one_of(
    st.characters(exclude_categories=()),  # every code point, surrogates included
    SURROGATE,
    st.sampled_from('\x00\ufeff\u2028 \t\n\r%&=+/-_[]{}"\\é€𝄞'),
)
INTERESTING_TEXT = st.sampled_from(
    [
        "",
        " ",
        "tok",
        "tok2",
        "nope",
        "e",
        "$merge",
        "0",
        "-1",
        "null",
        " Anonymous ",
        "N/A",
        "undefined",
        "00000000-0000-0000-0000-000000000000",
        "\x00",
        "\ud800",
        "\udcff",
        "a\udc80b",
        "\ud83d\ude00",
        "\ufeff",
        "é",
        "𝄞",
        "1795322847",
        "1795322847405",
        " 1795322847.5 ",
        "1e400",
        "nan",
        "-inf",
        "1_795_322_847",
        "true",
    ]
)
LONG_TEXT = st.builds(
    lambda unit, n: unit * n, st.sampled_from(["x", "é", "𝄞", "\ud800", " "]), st.integers(250, 300)
)
TEXT = st.one_of(st.text(ANY_CHAR, max_size=12), INTERESTING_TEXT, LONG_TEXT)
CLEAN_TEXT = st.one_of(
    st.text(max_size=12),  # no surrogates: what a UTF-8 JSON document can hold
    st.sampled_from(["", "a", "b", "é", "𝄞", "\x00", "x" * 255, "y" * 300, "é" * 260]),
)

INTS = st.one_of(
    st.integers(-1000, 1000),
    st.integers(-(2**66), 2**66),
    st.sampled_from(
        [
            2**63 - 1,
            2**63,
            2**64 - 1,
            2**64,
            -(2**63),
            -(2**63) - 1,
            2**1023,
            2**1024,
            -(2**1024),
        ]
    ),
    st.builds(
        lambda digits, sign: sign * 10**digits, st.integers(19, 4299), st.sampled_from([1, -1])
    ),
    st.builds(pow, st.just(10), st.just(4299)),  # the widest integer json.loads returns
)
FLOATS = st.one_of(
    st.floats(),  # nan, +-inf, -0.0 and subnormals included: json.loads returns them all
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0, 1.5e11]),
)
SCALAR = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)

SPECIAL_KEYS = st.sampled_from(
    [
        "token",
        "time",
        "$time",
        "distinct_id",
        "$distinct_id",
        "$distinct_ids",
        "$insert_id",
        "ip",
        "$ignore",
        "mp_lib",
        "event",
        "properties",
        "mp_processing_time_ms",
        "$mp_api_endpoint",
        "$import",
        "$token",
        "$group_key",
        "$group_id",
        "$ignore_time",
        "$set",
        "$add",
        "a",
        "",
    ]
)
KEY = st.one_of(SPECIAL_KEYS, TEXT)

JSON_VALUE: st.SearchStrategy[Any] = st.recursive(
    SCALAR,
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(KEY, kids, max_size=3)),
    max_leaves=4,
)
# Nesting around the §6 limits (3 object levels, 8 containers), and collections around 255.
NESTED = st.builds(_nest, SCALAR, st.lists(st.sampled_from(["[", "{"]), max_size=11))
WIDE = st.one_of(
    st.builds(lambda n: list(range(n)), st.integers(250, 256)),
    st.builds(lambda n: {f"k{i}": i for i in range(n)}, st.integers(250, 256)),
)
PROPERTY_VALUE = st.one_of(JSON_VALUE, NESTED, WIDE)

CLEAN_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False),
    CLEAN_TEXT,
)
CLEAN_KEY = st.one_of(st.sampled_from(["a", "b", "l", "n", LAST_SEEN, "x" * 300]), CLEAN_TEXT)
CLEAN_JSON: st.SearchStrategy[Any] = st.recursive(
    CLEAN_SCALAR,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(CLEAN_KEY, kids, max_size=3)
    ),
    max_leaves=4,
)

# -- strategies: events ------------------------------------------------------------------
TIME_VALUE = st.one_of(
    st.integers(RECEIVED_MS - 7 * 86_400_000, RECEIVED_MS + 2 * 3_600_000),
    st.integers(RECEIVED_MS // 1000 - 7 * 86_400, RECEIVED_MS // 1000 + 2 * 3_600),
    st.floats(RECEIVED_MS / 1000 - 7 * 86_400, RECEIVED_MS / 1000 + 7_200),
    st.integers(-(10**12), 10**12),
    st.builds(
        lambda n, pad: f"{pad}{n}{pad}",
        st.integers(0, 2 * RECEIVED_MS),
        st.sampled_from(["", " ", "\t"]),
    ),
    SCALAR,
)
PLACEHOLDER = st.sampled_from(sorted(PLACEHOLDER_IDS))
DISTINCT_ID = st.one_of(TEXT, PLACEHOLDER, INTS, FLOATS, st.booleans(), st.none(), JSON_VALUE)
INSERT_ID_VALUE = st.one_of(
    st.text("ABCXYZabcxyz0189-", min_size=0, max_size=40),
    PLACEHOLDER,
    TEXT,
    SCALAR,
)
TOKEN = st.one_of(
    st.just("tok"), st.just("tok"), st.just("tok2"), st.sampled_from(["nope", ""]), SCALAR
)
IPV6 = st.sampled_from(["::", "::1", "fe80::1", "2001:db8::7"])
ZONED_IPV6 = st.builds(lambda ip, zone: f"{ip}%{zone}", IPV6, TEXT)  # fe80::1%eth0
IP_VALUE = st.one_of(
    st.sampled_from(["1.2.3.4", "203.0.113.7", "::1", "not an ip", " 10.0.0.1 ", ""]),
    ZONED_IPV6,
    SCALAR,
)
EVENT_NAME = st.one_of(
    st.just("e"),
    st.just("e"),
    st.sampled_from(["Signed up", "$merge", "$identify"]),
    TEXT,
    SCALAR,
)


def properties(token: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A properties object: the keys that become columns, optional, among any others."""
    return st.builds(
        _merge,
        st.dictionaries(KEY, PROPERTY_VALUE, max_size=3),
        st.fixed_dictionaries(
            {"token": token},
            optional={
                "time": TIME_VALUE,
                "$time": TIME_VALUE,
                "distinct_id": DISTINCT_ID,
                "$distinct_id": DISTINCT_ID,
                "$distinct_ids": st.lists(TEXT, max_size=3),
                "$insert_id": INSERT_ID_VALUE,
                "ip": IP_VALUE,
                "mp_lib": TEXT,
            },
        ),
        st.one_of(
            st.just({}),
            st.just({}),
            st.just({}),
            st.builds(lambda n: {f"p{i}": i for i in range(n)}, st.integers(250, 256)),
        ),
    )


GOOD_NAME = st.sampled_from(["e", "Signed up", "$merge", "é", "x" * 300])
GOOD_TOKEN = st.sampled_from(["tok", "tok2"])
GOOD_TIME = st.one_of(  # inside both the /track window and /import's future tolerance
    st.integers(RECEIVED_MS - 4 * 86_400_000, RECEIVED_MS + 1_800_000),
    st.integers(RECEIVED_MS // 1000 - 4 * 86_400, RECEIVED_MS // 1000 + 1_800),
    st.floats(RECEIVED_MS / 1000 - 4 * 86_400, RECEIVED_MS / 1000 + 1_800),
)
GOOD_INSERT_ID = st.text("ABCXYZabcxyz0189-", min_size=1, max_size=36)
GOOD_PROPERTIES = st.builds(
    _merge,
    st.dictionaries(KEY, st.one_of(CLEAN_JSON, CLEAN_JSON, PROPERTY_VALUE), max_size=4),
    st.fixed_dictionaries(
        {"token": GOOD_TOKEN, "distinct_id": st.one_of(st.just("u"), CLEAN_TEXT, st.integers())},
        optional={
            "time": GOOD_TIME,
            "$insert_id": GOOD_INSERT_ID,
            "ip": IP_VALUE,
            "mp_lib": CLEAN_TEXT,
        },
    ),
)
EXTRA_KEYS = st.dictionaries(KEY, JSON_VALUE, max_size=2)
# Mostly events that get past the first checks (a name, a known token, a time), so
# validation goes deep; then events with anything in those places; then any JSON value.
RAW_EVENT = st.one_of(
    st.builds(_event, st.dictionaries(KEY, CLEAN_JSON, max_size=1), GOOD_NAME, GOOD_PROPERTIES),
    st.builds(_event, st.dictionaries(KEY, CLEAN_JSON, max_size=1), GOOD_NAME, GOOD_PROPERTIES),
    st.builds(_event, EXTRA_KEYS, GOOD_NAME, properties(GOOD_TOKEN)),
    st.builds(_event, EXTRA_KEYS, EVENT_NAME, properties(TOKEN)),
    st.fixed_dictionaries(
        {}, optional={"event": EVENT_NAME, "properties": st.one_of(properties(TOKEN), JSON_VALUE)}
    ),
    JSON_VALUE,
)
HOST = st.one_of(
    st.sampled_from(["", "127.0.0.1:8000", "api.example.com"]),
    st.text(st.characters(max_codepoint=0xFF), max_size=40),  # headers are latin-1
)
MAX_EVENT_BYTES = st.one_of(st.just(1024 * 1024), st.integers(40, 4000))
TRACK_CONTEXT = st.builds(
    RequestContext,
    endpoint=st.just(Endpoint.TRACK),
    received_ms=st.just(RECEIVED_MS),
    api_host=HOST,
    client_ip=st.sampled_from([None, "198.51.100.4", "2001:db8::1"]),
    max_event_bytes=MAX_EVENT_BYTES,
)
IMPORT_CONTEXT = st.builds(
    RequestContext,
    endpoint=st.sampled_from([Endpoint.IMPORT_STRICT, Endpoint.IMPORT_LEGACY]),
    received_ms=st.just(RECEIVED_MS),
    api_host=HOST,
    project_id=st.just(IMPORT_PROJECT),
    max_event_bytes=MAX_EVENT_BYTES,
)
CONTEXT = st.one_of(TRACK_CONTEXT, IMPORT_CONTEXT, IMPORT_CONTEXT)

# -- strategies: profile updates -----------------------------------------------------------
NUMBER_MAP = st.dictionaries(KEY, st.one_of(INTS, FLOATS, SCALAR), max_size=3)
OPERATION_VALUE: dict[str, st.SearchStrategy[Any]] = {
    "$set": st.dictionaries(KEY, PROPERTY_VALUE, max_size=3),
    "$set_once": st.dictionaries(KEY, PROPERTY_VALUE, max_size=3),
    "$add": NUMBER_MAP,
    "$union": st.dictionaries(KEY, st.one_of(st.lists(JSON_VALUE, max_size=3), SCALAR), max_size=3),
    "$append": st.dictionaries(KEY, PROPERTY_VALUE, max_size=3),
    "$remove": st.dictionaries(KEY, JSON_VALUE, max_size=3),
    "$unset": st.one_of(st.lists(TEXT, max_size=3), JSON_VALUE, WIDE),
    "$delete": st.one_of(st.just(""), st.none(), JSON_VALUE),
}
ONE_OPERATION = st.sampled_from(OPERATIONS).flatmap(
    lambda op: st.fixed_dictionaries({op: st.one_of(OPERATION_VALUE[op], JSON_VALUE, WIDE)})
)
IDENTITY = st.one_of(st.just("u"), DISTINCT_ID)
UPDATE_MODIFIERS = {
    "$time": TIME_VALUE,
    "$ignore_time": SCALAR,
    "$ignore_alias": SCALAR,
    "$ip": TEXT,
}
GOOD_ID = st.one_of(st.just("u"), st.text(min_size=1, max_size=12), st.integers())
GOOD_OPERATION_VALUE: dict[str, st.SearchStrategy[Any]] = {
    "$set": st.dictionaries(CLEAN_KEY, st.one_of(CLEAN_JSON, PROPERTY_VALUE), max_size=3),
    "$set_once": st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=3),
    "$add": st.dictionaries(CLEAN_KEY, st.one_of(st.integers(-5, 5), INTS, FLOATS), max_size=3),
    "$union": st.dictionaries(CLEAN_KEY, st.lists(CLEAN_JSON, max_size=3), max_size=3),
    "$append": st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=3),
    "$remove": st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=3),
    "$unset": st.lists(CLEAN_KEY, max_size=3),
    "$delete": st.sampled_from(["", None]),
}
GOOD_UPDATE = st.builds(
    _merge,
    st.fixed_dictionaries(
        {
            "$token": GOOD_TOKEN,
            "$distinct_id": GOOD_ID,
            "$group_key": GOOD_ID,
            "$group_id": GOOD_ID,
        },
        optional={"$time": GOOD_TIME, "$ignore_time": CLEAN_SCALAR, "$ip": CLEAN_TEXT},
    ),
    st.sampled_from(OPERATIONS).flatmap(
        lambda op: st.fixed_dictionaries({op: GOOD_OPERATION_VALUE[op]})
    ),
)
# As for events: mostly updates that validation takes, then anything in any place.
RAW_UPDATE = st.one_of(
    GOOD_UPDATE,
    GOOD_UPDATE,
    st.builds(
        _merge,
        st.dictionaries(KEY, JSON_VALUE, max_size=2),
        st.one_of(
            st.fixed_dictionaries(
                {
                    "$token": TOKEN,
                    "$distinct_id": IDENTITY,
                    "$group_key": IDENTITY,
                    "$group_id": IDENTITY,
                },
                optional=UPDATE_MODIFIERS,
            ),
            st.fixed_dictionaries(
                {"$token": TOKEN},
                optional={
                    "$distinct_id": IDENTITY,
                    "$group_key": IDENTITY,
                    "$group_id": IDENTITY,
                    **UPDATE_MODIFIERS,
                },
            ),
        ),
        st.one_of(
            ONE_OPERATION,
            ONE_OPERATION,
            st.dictionaries(st.sampled_from(OPERATIONS), JSON_VALUE, max_size=3),
        ),
    ),
    JSON_VALUE,
)
MAX_UPDATE_BYTES = MAX_EVENT_BYTES

# -- strategies: bytes on the wire --------------------------------------------------------
JUNK = st.one_of(
    st.sampled_from(
        [
            b"\x00",
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",  # a surrogate, UTF-8 encoded: invalid UTF-8
            b"\\ud800",
            b"\\udfff",
            b"\\u00",
            b'"',
            b"[",
            b"{",
            b"]",
            b"}",
            b",",
            b":",
            b"\n",
            b"\\",
            b"\xef\xbb\xbf",
            b"NaN",
            b"-Infinity",
            b"1e999",
            b"-",
            b"9" * 30,
            b"%",
            b"%ff",
            b"=",
            b"&",
        ]
    ),
    st.binary(max_size=4),
)


@st.composite
def mangled(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base``, then up to three truncations, insertions of junk, or byte deletions."""
    data = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["cut", "insert", "delete"]))
        if kind == "cut":
            data = data[:pos]
        elif kind == "insert":
            data = data[:pos] + draw(JUNK) + data[pos:]
        else:
            data = data[:pos] + data[pos + 1 :]
    return data


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """Nesting from a few levels to past orjson's 1024 and the interpreter's recursion
    limit; balanced or not; with a lone-surrogate string inside to force the slow path."""
    depth = draw(
        st.one_of(st.integers(1, 300), st.sampled_from([255, 256, 257, 1023, 1024, 1025, 5000]))
    )
    opener = draw(st.sampled_from(["[", '{"a":', "mixed"]))
    inner = draw(st.sampled_from([b"1", b'"\\ud800"', b'"x"', b"NaN", b"", b"[", b"{"]))
    opens: list[bytes] = []
    for level in range(depth):
        if opener == "mixed":
            opens.append(b"[" if level % 2 else b'{"a":')
        else:
            opens.append(opener.encode())
    closes = [b"]" if o == b"[" else b"}" for o in reversed(opens)]
    keep = draw(st.sampled_from(["all", "none", "some"]))
    if keep == "none":
        closes = []
    elif keep == "some":
        closes = closes[: draw(st.integers(0, len(closes)))]
    return b"".join(opens) + inner + b"".join(closes)


EVENTS_JSON = st.one_of(
    st.lists(RAW_EVENT, max_size=4).map(_stdlib_json),
    RAW_EVENT.map(_stdlib_json),
    st.lists(RAW_EVENT, max_size=3).map(lambda v: _stdlib_json(v, ascii_only=False)),
)
ANY_JSON = st.one_of(
    JSON_VALUE.map(_stdlib_json),
    JSON_VALUE.map(lambda v: _stdlib_json(v, ascii_only=False)),
    EVENTS_JSON,
)
WIRE_JSON = st.one_of(mangled(ANY_JSON), deep_json(), st.binary(max_size=64))


def _ndjson(lines: list[bytes], sep: bytes) -> bytes:
    return sep.join(lines)


NDJSON = st.builds(
    _ndjson,
    st.lists(
        st.one_of(RAW_EVENT.map(_stdlib_json), mangled(ANY_JSON), st.just(b""), st.just(b"  ")),
        max_size=5,
    ),
    st.sampled_from([b"\n", b"\r\n", b"\n\n"]),
)


def _base64(payload: bytes, variant: str) -> str:
    if variant == "urlsafe":
        return base64.urlsafe_b64encode(payload).decode()
    text = base64.b64encode(payload).decode()
    if variant == "unpadded":
        return text.rstrip("=")
    if variant == "form-mangled":  # mixpanel-node's raw base64, after form decoding
        return text.replace("+", " ")
    if variant == "padded-blanks":
        return f"  {text}\n"
    return text


BASE64_VARIANT = st.sampled_from(["std", "urlsafe", "unpadded", "form-mangled", "padded-blanks"])


@st.composite
def base64_junk(draw: st.DrawFn) -> str:
    text = _base64(draw(st.one_of(ANY_JSON, st.binary(max_size=40))), draw(BASE64_VARIANT))
    for _ in range(draw(st.integers(0, 2))):
        pos = draw(st.integers(0, len(text)))
        junk = draw(
            st.one_of(
                st.sampled_from(["=", "==", "!", "*", "\x00", "é", "\ud800", " ", "-", "_"]), TEXT
            )
        )
        text = text[:pos] + junk + text[pos:]
    return text


DATA_VALUE = st.one_of(
    st.none(),
    TEXT,
    ANY_JSON.map(lambda b: b.decode("utf-8", "surrogatepass")),  # parse_qsl cannot, callers can
    st.builds(_base64, ANY_JSON, BASE64_VARIANT),
    base64_junk(),
    deep_json().map(lambda b: b.decode()),
)

FORM_PIECE = st.sampled_from(
    [
        b"a",
        b"data",
        b"=",
        b"&",
        b"%",
        b"%2",
        b"%zz",
        b"%ff",
        b"%C3%A9",
        b"%ED%A0%80",
        b"%00",
        b"+",
        b";",
        b"\xff",
        b"\x00",
        b"[",
        b" ",
    ]
)
FORM_GARBAGE = st.lists(FORM_PIECE, max_size=12).map(b"".join)
CLEAN_FORM = st.dictionaries(CLEAN_TEXT, CLEAN_TEXT, max_size=4)
CONTENT_TYPE = st.one_of(
    st.sampled_from(
        [
            "",
            "application/x-www-form-urlencoded",
            "text/plain;charset=UTF-8",
            " TEXT/PLAIN ; charset=utf-8",
            "application/json",
            "application/x-ndjson",
            "multipart/form-data; boundary=x",
        ]
    ),
    st.text(ANY_CHAR, max_size=20),
)


def _form_with_data(data: str | None, extra: dict[str, str]) -> bytes:
    """A form body; a data value that is not UTF-8 becomes %-escapes of its raw bytes."""
    fields: dict[str, str | bytes] = dict(extra)
    if data is not None:
        fields["data"] = data.encode("utf-8", "surrogatepass")
    return urllib.parse.urlencode(fields).encode()


FORM_BODY = st.builds(_form_with_data, DATA_VALUE, CLEAN_FORM)
BODY = st.one_of(
    FORM_GARBAGE,
    FORM_BODY,
    mangled(FORM_BODY),
    WIRE_JSON,
    st.sampled_from([b"", b"   ", b" " * 256 + b"data=x", b"\t\r\n"]),
)


@st.composite
def gzip_body(draw: st.DrawFn) -> tuple[bytes, bytes | None, bool]:
    """(body, the payload when the body is valid gzip/zlib, whether it is truncated)."""
    payload = draw(
        st.one_of(
            st.binary(max_size=200),
            ANY_JSON,
            st.builds(lambda n: b"\0" * n, st.integers(0, 200_000)),  # a small bomb
        )
    )
    kind = draw(
        st.sampled_from(
            ["gzip", "zlib", "members", "truncated", "corrupt", "junk-tail", "raw-deflate", "plain"]
        )
    )
    if kind == "gzip":
        return gzip.compress(payload, mtime=0), payload, False
    if kind == "zlib":
        return zlib.compress(payload), payload, False
    if kind == "members":
        split = draw(st.integers(0, len(payload)))
        first, second = payload[:split], payload[split:]
        return gzip.compress(first, mtime=0) + zlib.compress(second), payload, False
    if kind == "truncated":
        whole = gzip.compress(payload, mtime=0)
        return whole[: draw(st.integers(0, len(whole) - 1))], None, True
    if kind == "corrupt":
        flipped = bytearray(gzip.compress(payload, mtime=0))
        pos = draw(st.integers(0, len(flipped) - 1))
        flipped[pos] ^= draw(st.integers(1, 255))
        return bytes(flipped), None, False
    if kind == "junk-tail":
        return (
            gzip.compress(payload, mtime=0) + draw(st.one_of(JUNK, st.just(b"\x1f\x8b"))),
            None,
            False,
        )
    if kind == "raw-deflate":
        deflater = zlib.compressobj(wbits=-15)
        return deflater.compress(payload) + deflater.flush(), None, False
    return payload, None, False


# -- invariants ----------------------------------------------------------------------------
def check_tree(value: Any, *, objects: int = 0, containers: int = 0) -> None:
    """A cleaned value below a properties-like object obeys spec §6: strings and keys at
    most MAX_STRING, collections below MAX_COLLECTION, at most MAX_DEPTH object levels and
    MAX_CONTAINERS containers, integers in 64 bits (signed or unsigned), finite floats."""
    stack = [(value, objects, containers)]
    while stack:
        item, objects_above, containers_above = stack.pop()
        kind = type(item)
        if kind is str:
            assert len(item) <= MAX_STRING
            assert utf8(item)
        elif kind is int:
            assert -(2**63) <= item < 2**64
        elif kind is float:
            assert math.isfinite(item)
        elif kind is dict:
            assert objects_above + 1 <= MAX_DEPTH
            assert containers_above + 1 <= MAX_CONTAINERS
            assert len(item) < MAX_COLLECTION
            for key, child in item.items():
                assert len(key) <= MAX_STRING
                stack.append((child, objects_above + 1, containers_above + 1))
        elif kind is list:
            assert containers_above + 1 <= MAX_CONTAINERS
            assert len(item) < MAX_COLLECTION
            stack.extend((child, objects_above, containers_above + 1) for child in item)
        else:
            assert item is None or kind is bool, item


def check_rejections(rejections: list[Rejection], total: int) -> None:
    indices = [r.index for r in rejections]
    assert indices == sorted(set(indices)), "each input is rejected at most once, in order"
    assert all(0 <= i < total for i in indices)
    for rejection in rejections:
        assert rejection.field
        assert rejection.message
        assert utf8(rejection.message)
        if rejection.insert_id is not None:
            assert len(rejection.insert_id) <= MAX_STRING
            assert utf8(rejection.insert_id)
        # What the replies do with a rejection (strict /import, verbose /track).
        orjson.dumps(rejection.as_dict())


def check_event(event: Any, ctx: RequestContext) -> None:
    assert type(event.project_id) is int
    if ctx.endpoint.is_import:
        assert event.project_id == IMPORT_PROJECT
    else:
        assert event.project_id in TOKENS.values()
    assert isinstance(event.name, str)
    assert 0 < len(event.name) <= MAX_STRING
    assert utf8(event.name)
    assert isinstance(event.distinct_id, str)
    assert len(event.distinct_id) <= MAX_STRING
    assert utf8(event.distinct_id)
    # time: an int, after 1971, never after the arrival; /track: not older than the window
    assert type(event.time_ms) is int
    assert MIN_TIME_MS <= event.time_ms <= ctx.received_ms
    if not ctx.endpoint.is_import:
        assert event.time_ms >= ctx.received_ms - ctx.track_max_age_ms
    # insert_id: given ([A-Za-z0-9-], at most 36) or derived (32 hex); never a placeholder
    assert INSERT_ID.fullmatch(event.insert_id), event.insert_id
    assert event.insert_id.lower() not in PLACEHOLDER_IDS
    assert event.lib is None or (isinstance(event.lib, str) and utf8(event.lib))
    # properties_json: valid UTF-8 JSON of an object within the limits
    assert utf8(event.properties_json)
    assert len(event.properties_json.encode()) < ctx.max_event_bytes  # bytes: see bug 5
    props = orjson.loads(event.properties_json)
    assert isinstance(props, dict)
    assert not COLUMN_KEYS & props.keys()
    assert len(props.keys() - SERVER_KEYS) < MAX_PROPERTIES
    assert props["mp_processing_time_ms"] == ctx.received_ms
    if ctx.api_host:
        assert props["$mp_api_endpoint"] == ctx.api_host
    if ctx.endpoint.is_import:
        assert props["$import"] is True
    if event.lib is not None:
        assert props["mp_lib"] == event.lib
    for key, value in props.items():
        assert len(key) <= MAX_STRING
        if key == "$mp_api_endpoint" and ctx.api_host:
            continue  # the Host header, added by the server
        check_tree(value)


def check_update(update: Any, *, group: bool, max_update_bytes: int) -> None:
    assert update.project_id in TOKENS.values()
    assert update.kind == ("group" if group else "user")
    identities = [update.group_key, update.group_id] if group else [update.distinct_id]
    for identity in identities:
        assert isinstance(identity, str)
        assert 0 < len(identity) <= MAX_STRING
        assert utf8(identity)
    if group:
        assert update.distinct_id is None
    else:
        assert update.group_key is None
        assert update.group_id is None
    assert update.operation in OPERATIONS
    assert type(update.time_ms) is int
    assert MIN_TIME_MS <= update.time_ms <= RECEIVED_MS
    size = len(update.value_json.encode()) + len(update.modifiers_json.encode())
    assert size < max_update_bytes
    value = orjson.loads(update.value_json)
    modifiers = orjson.loads(update.modifiers_json)
    assert isinstance(modifiers, dict)
    assert set(modifiers) <= set(KEPT_MODIFIERS)
    for item in modifiers.values():
        check_tree(item)
    if update.operation == "$delete":
        assert value is None
        return
    if update.operation == "$unset":
        assert isinstance(value, list)
        assert len(value) < MAX_COLLECTION
        assert all(isinstance(name, str) and len(name) <= MAX_STRING for name in value)
        return
    assert isinstance(value, dict)
    assert len(value) < MAX_COLLECTION
    for key, item in value.items():
        assert len(key) <= MAX_STRING
        check_tree(item)
        if update.operation == "$add":
            assert type(item) in (int, float)
        if update.operation == "$union":
            assert isinstance(item, list)


# -- decode --------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(body=gzip_body(), limit=st.one_of(st.integers(0, 3000), st.just(BODY_LIMIT)))
def test_gunzip_returns_the_payload_or_raises_our_error(
    body: tuple[bytes, bytes | None, bool], limit: int
) -> None:
    """payload.read_body's Content-Encoding: gzip/zlib members, bombs, truncated, corrupt."""
    _tally()
    data, payload, truncated = body
    try:
        out = gunzip(data, limit)
    except PayloadTooLarge:
        assert payload is None or len(payload) > limit
        return
    except PayloadError:
        assert payload is None, "a valid gzip/zlib body was refused"
        return
    assert not truncated, "a truncated stream was accepted"
    assert len(out) <= limit
    if payload is not None:
        assert out == payload


@settings(FUZZ, max_examples=200)
@given(
    query=st.one_of(
        FORM_GARBAGE,
        st.binary(max_size=30),
        CLEAN_FORM.map(lambda d: urllib.parse.urlencode(d).encode()),
    ),
    body=BODY,
    content_type=CONTENT_TYPE,
)
def test_parse_params_returns_text_params_or_raises_our_error(
    query: bytes, body: bytes, content_type: str
) -> None:
    """Form garbage, invalid UTF-8 and %-escapes, JSON bodies, any Content-Type."""
    _tally()
    params = ours(lambda: parse_params(query, body, content_type))
    if params is None:
        return
    assert isinstance(params, RequestParams)
    for key, value in params.params.items():
        assert isinstance(key, str)
        assert isinstance(value, str)
        assert utf8(key)
        assert utf8(value)
    assert params.json_body is None or params.json_body == body
    assert first_significant_byte(body) in ("", "[", "{") or params.json_body is None


@settings(FUZZ, max_examples=50)
@given(query=CLEAN_FORM, body=CLEAN_FORM)
def test_parse_params_round_trips_a_form(query: dict[str, str], body: dict[str, str]) -> None:
    _tally()
    encoded_body = urllib.parse.urlencode(body).encode()
    params = parse_params(
        urllib.parse.urlencode(query).encode(), encoded_body, "application/x-www-form-urlencoded"
    )
    assert params.params == {**query, **body}
    assert params.json_body is None


@settings(FUZZ, max_examples=200)
@given(value=DATA_VALUE)
def test_decode_data_returns_a_list_or_raises_our_error(value: str | None) -> None:
    """JSON or base64 (with the SDKs' quirks, and junk) in a data parameter."""
    _tally()
    events = ours(lambda: decode_data(value))
    assert events is None or isinstance(events, list)


@settings(FUZZ, max_examples=50)
@given(
    payload=st.one_of(
        st.lists(CLEAN_JSON, max_size=4), st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=4)
    ),
    variant=BASE64_VARIANT,
)
def test_decode_data_round_trips_base64_and_json(payload: Any, variant: str) -> None:
    _tally()
    wire = orjson.dumps(payload)
    expected = as_list(orjson.loads(wire))
    assert decode_data(_base64(wire, variant)) == expected
    assert decode_data(wire.decode()) == expected


@settings(FUZZ, max_examples=150)
@given(body=st.one_of(WIRE_JSON, NDJSON, mangled(NDJSON)))
def test_decode_import_body_returns_a_list_or_raises_our_error(body: bytes) -> None:
    """JSON arrays, objects and NDJSON, mangled, deeply nested, not UTF-8."""
    _tally()
    events = ours(lambda: decode_import_body(body))
    assert events is None or isinstance(events, list)


@settings(FUZZ, max_examples=50)
@given(
    events=st.lists(st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=4), min_size=1, max_size=4),
    sep=st.sampled_from([b"\n", b"\r\n", b"\n\n"]),
)
def test_decode_import_body_round_trips_array_and_ndjson(
    events: list[dict[str, Any]], sep: bytes
) -> None:
    _tally()
    expected = orjson.loads(orjson.dumps(events))
    assert decode_import_body(orjson.dumps(events)) == expected
    assert decode_import_body(sep.join(orjson.dumps(e) for e in events) + sep) == expected


@settings(FUZZ, max_examples=150)
@given(raw=WIRE_JSON)
def test_loads_and_as_list_return_or_raise_our_error(raw: bytes) -> None:
    """The JSON parser itself, and first_significant_byte's sniffing."""
    _tally()
    assert first_significant_byte(raw) in ("", *raw[:256].decode("latin-1"))
    value = ours(lambda: loads(raw))
    if value is not None:
        ours(lambda: as_list(value))


# -- validate ----------------------------------------------------------------------------
def _one_at_a_time(raw: list[Any], run: Callable[[list[Any]], Any]) -> list[Any]:
    """Each input validated on its own: what the batch must agree with."""
    return [run([item]) for item in raw]


@settings(FUZZ, max_examples=250)
@given(raw=st.lists(RAW_EVENT, max_size=6), ctx=CONTEXT)
def test_validate_events_accounts_for_every_event(raw: list[Any], ctx: RequestContext) -> None:
    """Any raw values, on /track and both /import dialects: no exception, one outcome per
    input, well-formed events, sendable rejections, batch = its events one at a time."""
    _tally()
    before = repr(raw)
    outcome = validate_events(raw, ctx, resolve)
    assert repr(raw) == before, "validation must not change its input"
    assert isinstance(outcome, Outcome)
    # Every input is exactly one of: an event, ignored ($ignore), a rejection.
    assert len(outcome.events) + outcome.ignored + len(outcome.rejections) == len(raw)
    assert outcome.accepted == len(outcome.events) + outcome.ignored
    check_rejections(outcome.rejections, len(raw))
    for event in outcome.events:
        check_event(event, ctx)
    # One bad event never spoils its batch: the batch is the concatenation of its parts.
    singles = _one_at_a_time(raw, lambda one: validate_events(one, ctx, resolve))
    expected_events = [e for s in singles for e in s.events]
    assert [e._replace(insert_id="") for e in outcome.events] == [
        e._replace(insert_id="") for e in expected_events
    ]
    assert outcome.ignored == sum(s.ignored for s in singles)
    assert outcome.rejections == [
        Rejection(i, r.insert_id, r.field, r.message)
        for i, s in enumerate(singles)
        for r in s.rejections
    ]
    encode_events(outcome.events, received_ms=ctx.received_ms, endpoint="track")


@settings(FUZZ, max_examples=200)
@given(
    raw=st.lists(RAW_UPDATE, max_size=6),
    group=st.booleans(),
    max_update_bytes=MAX_UPDATE_BYTES,
)
def test_validate_updates_accounts_for_every_update(
    raw: list[Any], group: bool, max_update_bytes: int
) -> None:
    """The same for /engage and /groups updates."""
    _tally()

    def run(updates: list[Any]) -> ProfileOutcome:
        return validate_updates(
            updates,
            group=group,
            received_ms=RECEIVED_MS,
            resolve_token=resolve,
            max_update_bytes=max_update_bytes,
        )

    before = repr(raw)
    outcome = run(raw)
    assert repr(raw) == before, "validation must not change its input"
    assert len(outcome.updates) + len(outcome.rejections) == len(raw)
    check_rejections(outcome.rejections, len(raw))
    for update in outcome.updates:
        check_update(update, group=group, max_update_bytes=max_update_bytes)
    singles = _one_at_a_time(raw, run)
    assert outcome.updates == [u for s in singles for u in s.updates]
    assert outcome.rejections == [
        Rejection(i, r.insert_id, r.field, r.message)
        for i, s in enumerate(singles)
        for r in s.rejections
    ]
    encode_updates(outcome.updates, received_ms=RECEIVED_MS)


# -- the web layer's composition: bytes in, journal records and replies out --------------------
def _client_payload(query: bytes, body: bytes, content_type: str) -> list[Any]:
    """What client.client_endpoint decodes: a JSON body itself, else the data parameter."""
    params = parse_params(query, body, content_type)
    if params.json_body is not None:
        return as_list(loads(params.json_body))
    return decode_data(params.params.get("data"))


def _replies(accepted: int, rejections: list[Rejection], total: int) -> None:
    """Build the replies a client would get (verbose /track, strict /import)."""
    if rejections:
        track_reply(
            TrackMode(verbose=True), ok=accepted > 0, error=summarize_rejections(rejections, total)
        )
        import_partial(accepted, rejections)


@settings(FUZZ, max_examples=120)
@given(
    query=st.one_of(st.just(b""), st.just(b"verbose=1&ip=1"), FORM_GARBAGE),
    body=st.one_of(
        BODY,
        EVENTS_JSON,
        st.builds(_form_with_data, st.builds(_base64, EVENTS_JSON, BASE64_VARIANT), CLEAN_FORM),
    ),
    content_type=CONTENT_TYPE,
    gzipped=st.booleans(),
    ctx=TRACK_CONTEXT,
    group=st.booleans(),
)
def test_track_and_engage_pipeline(
    query: bytes, body: bytes, content_type: str, gzipped: bool, ctx: RequestContext, group: bool
) -> None:
    """client.client_endpoint without the I/O: gunzip, parse_params, loads/decode_data,
    then /track's and /engage's validation, journal records and replies."""
    if gzipped:
        assert ours(lambda: gunzip(gzip.compress(body, mtime=0), BODY_LIMIT)) == body
    raw = ours(lambda: _client_payload(query, body, content_type))
    _tally()
    if raw is None:
        return
    outcome = validate_events(raw, ctx, resolve)
    encode_events(outcome.events, received_ms=ctx.received_ms, endpoint="track")
    _replies(outcome.accepted, outcome.rejections, len(raw))
    updates = validate_updates(
        raw,
        group=group,
        received_ms=RECEIVED_MS,
        resolve_token=resolve,
        max_update_bytes=BODY_LIMIT,
    )
    encode_updates(updates.updates, received_ms=RECEIVED_MS)
    _replies(len(updates.updates), updates.rejections, len(raw))


@settings(FUZZ, max_examples=120)
@given(
    body=st.one_of(WIRE_JSON, NDJSON, EVENTS_JSON, FORM_BODY),
    form=st.booleans(),
    ctx=IMPORT_CONTEXT,
)
def test_import_pipeline(body: bytes, form: bool, ctx: RequestContext) -> None:
    """imports.handle_import without the I/O: a JSON/NDJSON body or a legacy form."""
    if form:
        raw = ours(
            lambda: decode_data(
                parse_params(b"", body, "application/x-www-form-urlencoded").params.get("data")
            )
        )
    else:
        raw = ours(lambda: decode_import_body(body))
    _tally()
    if raw is None:
        return
    outcome = validate_events(raw, ctx, lambda _token: IMPORT_PROJECT)
    encode_events(outcome.events, received_ms=ctx.received_ms, endpoint="import")
    _replies(outcome.accepted, outcome.rejections, len(raw))


# -- the profile fold ----------------------------------------------------------------------
NUMBER = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
)
FOLD_VALUE: dict[str, st.SearchStrategy[Any]] = {
    "$set": st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=3),
    "$set_once": st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=3),
    "$add": st.dictionaries(CLEAN_KEY, NUMBER, max_size=3),
    "$union": st.dictionaries(CLEAN_KEY, st.lists(CLEAN_JSON, max_size=3), max_size=3),
    "$append": st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=3),
    "$remove": st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=3),
    "$unset": st.lists(CLEAN_KEY, max_size=3),
    "$delete": st.none(),
}
MODIFIERS = st.fixed_dictionaries(
    {},
    optional={
        "$ignore_time": st.one_of(
            st.sampled_from([True, "true", "TRUE", 1, 1.0, False, "yes"]), CLEAN_JSON
        ),
        "$time": CLEAN_JSON,
        "$ignore_alias": CLEAN_JSON,
    },
)
FOLD_STEP = st.tuples(
    st.sampled_from(OPERATIONS).flatmap(lambda op: st.tuples(st.just(op), FOLD_VALUE[op])),
    MODIFIERS,
    st.integers(MIN_TIME_MS, RECEIVED_MS),
)
PROFILE = st.one_of(st.none(), st.dictionaries(CLEAN_KEY, CLEAN_JSON, max_size=4))


def _ignores_time(modifiers: dict[str, Any]) -> bool:
    flag = modifiers.get("$ignore_time")
    return flag is True or flag == 1 or (isinstance(flag, str) and flag.lower() == "true")


def check_fold(
    before: Any, operation: str, value: Any, modifiers: dict[str, Any], time_ms: int
) -> Any:
    """One apply_update, with its contract checked; returns the stored (round-tripped) result."""
    before_copy, value_copy = copy.deepcopy(before), copy.deepcopy(value)
    after = apply_update(before, operation, value, modifiers, time_ms)
    assert before == before_copy, "the input profile must not change"
    assert value == value_copy, "the update's value must not change"
    if operation == "$delete" or (before is None and operation in ("$unset", "$remove")):
        assert after is None
        return None
    assert isinstance(after, dict)
    assert after is not before
    stored = orjson.loads(orjson.dumps(after))
    assert stored == after, "the store keeps exactly what the fold returned"
    if not _ignores_time(modifiers):
        assert isinstance(after[LAST_SEEN], str)
        assert after[LAST_SEEN] >= last_seen_text(time_ms)
    if operation in ("$set", "$set_once", "$union", "$remove", "$unset"):
        assert apply_update(after, operation, value, modifiers, time_ms) == after, "idempotent"
    return stored


@settings(FUZZ, max_examples=200)
@given(profile=PROFILE, steps=st.lists(FOLD_STEP, min_size=1, max_size=4))
def test_apply_update_folds_to_a_storable_profile(
    profile: dict[str, Any] | None,
    steps: list[tuple[tuple[str, Any], dict[str, Any], int]],
) -> None:
    """apply_update's contract (profile_ops.py, storage/duckdb.py): an operation of
    OPERATIONS with the value shape validate_updates produces, modifiers and a time."""
    _tally()
    current: Any = profile
    for (operation, value), modifiers, time_ms in steps:
        current = check_fold(current, operation, value, modifiers, time_ms)


@settings(FUZZ, max_examples=100)
@given(profile=PROFILE, raw=st.lists(RAW_UPDATE, max_size=6), group=st.booleans())
def test_validated_updates_fold_round_trip(
    profile: dict[str, Any] | None, raw: list[Any], group: bool
) -> None:
    """validate_updates → journal JSON → apply_update → store JSON, as the loader does."""
    _tally()
    outcome = validate_updates(
        raw,
        group=group,
        received_ms=RECEIVED_MS,
        resolve_token=resolve,
        max_update_bytes=BODY_LIMIT,
    )
    current: Any = profile
    for update in outcome.updates:
        current = check_fold(
            current,
            update.operation,
            orjson.loads(update.value_json),
            orjson.loads(update.modifiers_json),
            update.time_ms,
        )


# -- focused properties ----------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(value=st.one_of(TIME_VALUE, JSON_VALUE))
def test_parse_time_ms_returns_milliseconds_or_none(value: Any) -> None:
    _tally()
    parsed = parse_time_ms(value)
    assert parsed is None or type(parsed) is int


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


IP_CONTEXT = st.builds(
    RequestContext,
    endpoint=st.just(Endpoint.TRACK),
    received_ms=st.just(RECEIVED_MS),
    api_host=st.just("h"),
    client_ip=st.sampled_from([None, "198.51.100.4", "2001:db8::1"]),
)


@settings(FUZZ, max_examples=150)
@given(ip=st.one_of(IP_VALUE, ZONED_IPV6, st.just(None)), ctx=IP_CONTEXT)
def test_track_derives_a_distinct_id_from_the_address(ip: Any, ctx: RequestContext) -> None:
    """Spec §3: /track with ip=1 and no distinct_id: "$ip:" + a hash of the address
    (properties.ip when it is an address, else the peer); without ip=1, ""."""
    raw = {"event": "e", "properties": {"token": "tok", "ip": ip}}
    _tally()
    outcome = validate_events([raw], ctx, resolve)
    (event,) = outcome.events
    if not ctx.client_ip:
        assert event.distinct_id == ""
        return
    assert re.fullmatch(r"\$ip:[0-9a-f]{32}", event.distinct_id)
    if not (isinstance(ip, str) and _is_address(ip)):
        peer = hashlib.sha256(ctx.client_ip.encode()).hexdigest()[:32]
        assert event.distinct_id == f"$ip:{peer}"


# -- regressions ---------------------------------------------------------------------------
# Bugs the properties above found, each pinned by a focused property whose explicit
# @example is the minimal failing input (hypothesis's shrink, minimised further by hand).
NOT_UTF8 = st.builds(  # text with at least one lone surrogate
    lambda head, surrogate, tail: head + surrogate + tail,
    st.text(ANY_CHAR, max_size=3),
    SURROGATE,
    st.text(ANY_CHAR, max_size=3),
)
HUGE_INT = st.builds(
    lambda digits, sign: sign * 10**digits, st.integers(309, 4299), st.sampled_from([1, -1])
)

# Bug 1: validate.parse_time_ms() called math.isfinite() on an int, which raises
# OverflowError past a double's range (|n| >= 2**1024 - 2**970). Such numbers reach it
# through decode.loads()'s stdlib fallback (orjson refuses them; json.loads keeps up to
# 4300 digits). Minimal: {"event":"e","properties":{"token":"tok","time":N}} with N the
# integer 10**309 written out (a 1 and 309 zeros) raised OverflowError out of
# validate_events(); an /engage update with "$time": N the same out of validate_updates().


@settings(FUZZ, max_examples=50)
@example(time_value=10**309, key="time", ctx=RequestContext(Endpoint.TRACK, RECEIVED_MS, ""))
@given(time_value=HUGE_INT, key=st.sampled_from(["time", "$time"]), ctx=CONTEXT)
def test_bug_1_event_time_past_a_double(time_value: int, key: str, ctx: RequestContext) -> None:
    _tally()
    raw = {"event": "e", "properties": {"token": "tok", "distinct_id": "u", key: time_value}}
    outcome = validate_events([raw], ctx, resolve)
    assert len(outcome.events) + len(outcome.rejections) == 1
    assert all(r.field == f"properties.{key}" for r in outcome.rejections)


@settings(FUZZ, max_examples=50)
@example(time_value=10**309, group=False)
@given(time_value=HUGE_INT, group=st.booleans())
def test_bug_1_update_time_past_a_double(time_value: int, group: bool) -> None:
    _tally()
    raw = {
        "$token": "tok",
        "$distinct_id": "u",
        "$group_key": "k",
        "$group_id": "g",
        "$time": time_value,
        "$set": {},
    }
    outcome = validate_updates(
        [raw],
        group=group,
        received_ms=RECEIVED_MS,
        resolve_token=resolve,
        max_update_bytes=BODY_LIMIT,
    )
    assert len(outcome.updates) + len(outcome.rejections) == 1


# Bug 2: on /track with ip=1 and no distinct_id, a properties.ip that is an IPv6 address
# whose zone id holds a lone surrogate passed ipaddress.ip_address() (zone ids are free
# text) and then address.encode() in validate._distinct_id() raised UnicodeEncodeError.
# Minimal: {"event":"e","properties":{"token":"tok","ip":"::%\ud800"}} with a client_ip.


@settings(FUZZ, max_examples=50)
@example(ip="::%\ud800", client_ip="198.51.100.4")
@given(ip=ZONED_IPV6, client_ip=st.sampled_from(["198.51.100.4", "2001:db8::1"]))
def test_bug_2_ip_with_a_zone_id_that_is_not_utf8(ip: str, client_ip: str) -> None:
    _tally()
    ctx = RequestContext(Endpoint.TRACK, RECEIVED_MS, "", client_ip=client_ip)
    outcome = validate_events(
        [{"event": "e", "properties": {"token": "tok", "ip": ip}}], ctx, resolve
    )
    assert len(outcome.events) + len(outcome.rejections) == 1
    for event in outcome.events:
        assert re.fullmatch(r"\$ip:[0-9a-f]{32}", event.distinct_id)


# Bug 3: profiles._identity() did not check for lone surrogates, so validate_updates()
# accepted a $distinct_id, $group_key or $group_id that is not UTF-8 (validate.py refuses
# that in an event's distinct_id) and journal.records.encode_updates() then raised
# TypeError in the /engage or /groups handler. Minimal:
# {"$token":"tok","$distinct_id":"\ud800","$set":{}}.


@settings(FUZZ, max_examples=50)
@example(identity="\ud800", key="$distinct_id")
@given(
    identity=NOT_UTF8,
    key=st.sampled_from(["$distinct_id", "$group_key", "$group_id"]),
)
def test_bug_3_update_identity_that_is_not_utf8(identity: str, key: str) -> None:
    _tally()
    raw = {"$token": "tok", "$distinct_id": "u", "$group_key": "k", "$group_id": "g", "$set": {}}
    raw[key] = identity
    outcome = validate_updates(
        [raw],
        group=key != "$distinct_id",
        received_ms=RECEIVED_MS,
        resolve_token=resolve,
        max_update_bytes=BODY_LIMIT,
    )
    for update in outcome.updates:
        for text in (update.distinct_id, update.group_key, update.group_id):
            assert text is None or utf8(text), f"accepted an identity that is not UTF-8: {text!r}"
    encode_updates(outcome.updates, received_ms=RECEIVED_MS)


# Bug 4: a Rejection's field quoted the raw property name, lone surrogates and all, so
# the reply reporting it (responses.import_partial, verbose track_reply) raised TypeError
# in orjson.dumps(). Minimal: {"event":"e","properties":{"token":"tok","\ud800":1e999}}
# gave field "properties.\ud800"; {"$token":"tok","$distinct_id":"u","$add":{"\ud800":"x"}}
# gave "$add.\ud800".
BAD_VALUE = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, 10**309, "x"]),
    WIDE,
    NESTED,
    st.builds(_nest, st.just(1), st.just(["{", "{", "{", "{"])),
)


@settings(FUZZ, max_examples=50)
@example(key="\ud800", value=math.inf)
@given(key=NOT_UTF8, value=BAD_VALUE)
def test_bug_4_event_rejection_names_a_key_that_is_not_utf8(key: str, value: Any) -> None:
    _tally()
    raw = {"event": "e", "properties": {"token": "tok", key: value}}
    outcome = validate_events([raw], RequestContext(Endpoint.TRACK, RECEIVED_MS, ""), resolve)
    for rejection in outcome.rejections:
        assert utf8(rejection.field), f"unsendable rejection field {rejection.field!r}"
        import_partial(0, [rejection])


@settings(FUZZ, max_examples=50)
@example(key="\ud800", operation="$add", value="x")
@given(
    key=NOT_UTF8,
    operation=st.sampled_from(["$set", "$add", "$union", "$append"]),
    value=BAD_VALUE,
)
def test_bug_4_update_rejection_names_a_key_that_is_not_utf8(
    key: str, operation: str, value: Any
) -> None:
    _tally()
    raw = {"$token": "tok", "$distinct_id": "u", operation: {key: value}}
    outcome = validate_updates(
        [raw],
        group=False,
        received_ms=RECEIVED_MS,
        resolve_token=resolve,
        max_update_bytes=BODY_LIMIT,
    )
    for rejection in outcome.rejections:
        assert utf8(rejection.field), f"unsendable rejection field {rejection.field!r}"
        import_partial(0, [rejection])


# Bug 5: max_event_bytes ("Largest JSON size of one event"; the rejection says "event is
# N bytes of JSON") was compared with len(properties_json), a count of characters, so
# non-ASCII text passed the limit in bytes (up to 4x); max_update_bytes the same.
# Minimal: max_event_bytes=100 and {"event":"e","properties":{"token":"tok","a":"é"*28}}
# was accepted with 74 characters, 102 bytes, of properties_json.


NON_ASCII = st.one_of(  # 2 to 4 bytes each in UTF-8, no surrogates
    st.characters(min_codepoint=0x80, max_codepoint=0xD7FF), st.characters(min_codepoint=0x10000)
)


@settings(FUZZ, max_examples=50)
@example(text="é" * 28, limit=100)
@given(
    text=st.text(NON_ASCII, min_size=1, max_size=255),
    limit=st.integers(50, 1500),
)
def test_bug_5_event_size_limit_counts_characters_not_bytes(text: str, limit: int) -> None:
    _tally()
    ctx = RequestContext(Endpoint.TRACK, RECEIVED_MS, "", max_event_bytes=limit)
    outcome = validate_events(
        [{"event": "e", "properties": {"token": "tok", "a": text}}], ctx, resolve
    )
    for event in outcome.events:
        assert len(event.properties_json.encode()) < limit, "accepted past max_event_bytes"
