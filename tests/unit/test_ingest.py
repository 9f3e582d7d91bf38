"""The pure ingest core and the settings object, without a server."""

from __future__ import annotations

import base64
import gzip
import json
import random
import time
import urllib.parse
from dataclasses import fields
from pathlib import Path

import orjson
import pytest

from trackhouse.errors import ConfigError, PayloadError, PayloadTooLarge
from trackhouse.ingest.decode import decode_data, decode_import_body, gunzip, parse_params
from trackhouse.ingest.profiles import validate_updates
from trackhouse.ingest.validate import Endpoint, RequestContext, parse_time_ms, validate_events
from trackhouse.settings import Settings, load_settings

NOW_MS = int(time.time() * 1000)


def ctx(endpoint: Endpoint = Endpoint.TRACK, **kw: object) -> RequestContext:
    return RequestContext(endpoint=endpoint, received_ms=NOW_MS, api_host="h", **kw)  # type: ignore[arg-type]


def resolve(token: str) -> int | None:
    return 7 if token == "tok" else None


# -- decode ---------------------------------------------------------------------------
def test_base64_with_spaces_for_plus_and_no_padding() -> None:
    payload = orjson.dumps([{"event": "e", "properties": {"s": "~~~>>>???"}}])
    text = base64.b64encode(payload).decode().rstrip("=")
    assert "+" in text or "/" in text
    assert decode_data(text.replace("+", " ")) == orjson.loads(payload)


def test_url_safe_base64_and_plain_json_object() -> None:
    payload = orjson.dumps({"event": "e"})
    assert decode_data(base64.urlsafe_b64encode(payload).decode()) == [{"event": "e"}]
    assert decode_data('  {"event":"e"}') == [{"event": "e"}]


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_data(value: str | None) -> None:
    with pytest.raises(PayloadError, match="data, missing or empty"):
        decode_data(value)


def test_text_plain_beacon_body_is_a_form() -> None:
    params = parse_params(b"verbose=1", b"data=abc&ip=1", "text/plain;charset=UTF-8")
    assert params.params == {"verbose": "1", "data": "abc", "ip": "1"}
    assert params.json_body is None


def test_json_body_is_the_payload_and_body_wins_over_query() -> None:
    assert (
        parse_params(b"", b' [{"event":"e"}]', "application/json").json_body == b' [{"event":"e"}]'
    )
    assert (
        parse_params(b"data=q", b"data=b", "application/x-www-form-urlencoded").params["data"]
        == "b"
    )


def test_gzip_bomb_is_refused_without_inflating() -> None:
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge):
        gunzip(bomb, 1024 * 1024)


def test_truncated_gzip() -> None:
    with pytest.raises(PayloadError, match="truncated"):
        gunzip(gzip.compress(b"[1,2,3]" * 100)[:-12], 1 << 20)


def test_ndjson_and_bad_line() -> None:
    assert decode_import_body(b'{"event":"a"}\n{"event":"b"}\n') == [{"event": "a"}, {"event": "b"}]
    with pytest.raises(PayloadError, match="NDJSON line 2"):
        decode_import_body(b'{"event":"a"}\n{"event":\n')


def test_deep_nesting_is_a_payload_error_not_a_crash() -> None:
    with pytest.raises(PayloadError, match="nested too deeply"):
        decode_data("[" * 100_000)


# -- validate -------------------------------------------------------------------------
def test_seconds_and_milliseconds() -> None:
    assert parse_time_ms(1795322847.405) == 1795322847405
    assert parse_time_ms(1795322847405) == 1795322847405
    assert parse_time_ms("1795322847") == 1795322847000
    assert parse_time_ms(True) is None


def test_track_defaults_truncation_and_columns() -> None:
    out = validate_events(
        [
            {
                "event": "e",
                "properties": {"token": "tok", "ip": "1.2.3.4", "s": "x" * 300, "y" * 300: 1},
            }
        ],
        ctx(),
        resolve,
    )
    (event,) = out.events
    assert event.project_id == 7
    assert event.time_ms == NOW_MS
    props = orjson.loads(event.properties_json)
    assert "token" not in props
    assert "ip" not in props
    assert props["s"] == "x" * 255
    assert "y" * 255 in props


def test_future_time_on_track_becomes_arrival_and_old_time_is_refused() -> None:
    future = validate_events(
        [{"event": "e", "properties": {"token": "tok", "time": NOW_MS + 10**7}}], ctx(), resolve
    )
    assert future.events[0].time_ms == NOW_MS
    old = validate_events(
        [{"event": "e", "properties": {"token": "tok", "time": NOW_MS - 6 * 86_400_000}}],
        ctx(),
        resolve,
    )
    assert old.rejections[0].field == "properties.time"


def test_one_bad_event_does_not_spoil_the_batch() -> None:
    out = validate_events(
        [
            {"event": "ok", "properties": {"token": "tok"}},
            {"event": "", "properties": {"token": "tok"}},
            {"event": "x", "properties": {"token": "nope"}},
            "not an object",
            {"event": "ignored", "properties": {"token": "tok", "$ignore": True}},
        ],
        ctx(),
        resolve,
    )
    assert [e.name for e in out.events] == ["ok"]
    assert [(r.index, r.field) for r in out.rejections] == [
        (1, "event"),
        (2, "properties.token"),
        (3, "event"),
    ]
    assert out.ignored == 1
    assert out.accepted == 2


def test_copies_without_insert_id_share_a_derived_id_only_when_timed() -> None:
    event = {"event": "e", "properties": {"distinct_id": "u", "time": 1795322847}}
    a = validate_events([event], ctx(Endpoint.IMPORT_LEGACY, project_id=1), resolve).events[0]
    b = validate_events([event], ctx(Endpoint.IMPORT_LEGACY, project_id=1), resolve).events[0]
    assert a.insert_id == b.insert_id
    untimed = {"event": "e", "properties": {"token": "tok"}}
    c, d = validate_events([untimed, untimed], ctx(), resolve).events
    assert c.insert_id != d.insert_id


def test_invalid_utf8_names_the_property() -> None:
    bad = '{"event":"e","properties":{"token":"tok","good":"x","bad":"\udcff"}}'
    out = validate_events([json.loads(bad)], ctx(), resolve)
    assert out.rejections[0].field == "properties.bad"


def test_profile_updates() -> None:
    out = validate_updates(
        [
            {
                "$token": "tok",
                "$distinct_id": "u",
                "$set": {"a": 1},
                "$ip": "1.2.3.4",
                "$ignore_time": True,
                "$device_id": "d",
            },
            {"$token": "tok", "$distinct_id": "u", "$set": {}, "$add": {"n": 1}},
            {"$token": "tok", "$distinct_id": "u", "$add": {"n": "x"}},
            {"$token": "tok", "$distinct_id": "u", "$unset": "a"},
            {"$distinct_id": "u", "$set": {}},
        ],
        group=False,
        received_ms=NOW_MS,
        resolve_token=resolve,
        max_update_bytes=1 << 20,
    )
    assert len(out.updates) == 1
    # Only what changes the result is kept: no address, no SDK bookkeeping.
    assert orjson.loads(out.updates[0].modifiers_json) == {"$ignore_time": True}
    assert [r.field for r in out.rejections] == ["operation", "$add.n", "$unset", "$token"]


# -- settings --------------------------------------------------------------------------
def test_every_setting_is_documented() -> None:
    for f in fields(Settings):
        assert len(f.metadata.get("help", "")) > 10, f.name


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('port = 9001\nlog_level = "debug"\n')
    settings = load_settings(
        {"log_level": "error"}, config_file=config, environ={"TRACKHOUSE_PORT": "9002"}
    )
    assert settings.port == 9002
    assert settings.log_level == "error"
    with pytest.raises(ConfigError):
        load_settings({}, environ={"TRACKHOUSE_JOURNAL_FSYNC": "maybe"})
    with pytest.raises(ConfigError):
        load_settings({"trusted_proxies": "not-an-ip"}, environ={})


@pytest.mark.parametrize(
    "form",
    [
        "data=abc",
        "data=a%2Bb%2fc%3D%3d",
        "data=a%2Bb&verbose=1&ip=1",
        "a=1&b=&c",
        "data=a+b",
        "x=%20y",
        "x=%C3%A9",
        "&&a=1&&",
        "data=",
        "=v",
        "a=1&a=2",
        "a%2B=1",
        "a+b=1",
        "data=%2B%25",
        "data=%",
        "data=%2",
    ],
)
def test_form_bodies_decode_as_parse_qsl_does(form: str) -> None:
    """The fast path for base64 forms (decode._parse_simple_form) and the general one
    must agree on every body, including the ones the fast path hands over."""
    expected = dict(urllib.parse.parse_qsl(form, keep_blank_values=True))
    assert parse_params(b"", form.encode(), "application/x-www-form-urlencoded").params == expected


def test_base64_form_bodies_decode_as_parse_qsl_does() -> None:
    rng = random.Random(7)
    for size in range(0, 3000, 7):
        data = base64.b64encode(rng.randbytes(size)).decode()
        form = urllib.parse.urlencode({"data": data, "verbose": "1"})
        decoded = parse_params(b"", form.encode(), "application/x-www-form-urlencoded").params
        assert decoded == {"data": data, "verbose": "1"}
