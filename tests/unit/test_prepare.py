"""prepare_import, the work an ingest worker does for one /import request: it gives what
the server process would compute itself, and everything it takes and gives (refusals
included) survives the pickle that carries it across the worker's pipe."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest

from trackhouse.errors import PayloadError, PayloadTooLarge, RateLimited, Unavailable
from trackhouse.ingest.validate import Endpoint, RequestContext, validate_events
from trackhouse.journal.records import encode_events
from trackhouse.live import message_for
from trackhouse.prepare import ImportJob, Job, prepare_import
from trackhouse.ratelimit import usage

NOW_MS = 1_790_000_000_000
CTX = RequestContext(Endpoint.IMPORT_STRICT, NOW_MS, "api.example", project_id=7)


def _events() -> list[dict[str, Any]]:
    good = [
        {
            "event": "e",
            "properties": {"time": NOW_MS - i, "distinct_id": "u", "$insert_id": f"i{i}"},
        }
        for i in range(5)
    ]
    bad = {"event": "e", "properties": {"time": NOW_MS, "distinct_id": "anon", "$insert_id": "x"}}
    ignored = {"event": "e", "properties": {"$ignore": True}}
    return [*good, bad, ignored]


def _job(
    body: bytes, *, live: bool = True, max_events: int = 2000, columnar: bool = False
) -> ImportJob:
    job = Job(CTX, max_events, frozenset({7}) if live else frozenset(), columnar)
    return ImportJob(job, body, None, False)


def _roundtrip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301


def test_it_gives_what_validating_in_the_server_gives() -> None:
    raw = _events()
    prepared = _roundtrip(prepare_import(_roundtrip(_job(orjson.dumps(raw)))))
    outcome = validate_events(orjson.loads(orjson.dumps(raw)), CTX, lambda _t: 7)
    assert prepared.total == 7
    assert prepared.accepted == outcome.accepted == 6  # five stored, one $ignore'd
    assert prepared.rejections == outcome.rejections
    assert [r.field for r in prepared.rejections] == ["properties.distinct_id"]
    assert prepared.record == encode_events(outcome.events, received_ms=NOW_MS, endpoint="import")
    assert prepared.live == {7: message_for(outcome.events, NOW_MS, "import")}
    assert prepared.usage == usage(outcome.events)
    assert prepared.usage[7][0] == 5


def test_no_live_message_unless_someone_watches_and_no_record_without_events() -> None:
    assert prepare_import(_job(orjson.dumps(_events()), live=False)).live == {}
    nothing = prepare_import(_job(b"[]"))
    assert (nothing.total, nothing.record, nothing.live, nothing.usage) == (0, None, {}, {})


@pytest.mark.parametrize(
    ("body", "max_events", "refusal"),
    [
        (b"[{", 2000, PayloadError),
        (b"42", 2000, PayloadError),
        (orjson.dumps([{"event": "e"}] * 3), 2, PayloadTooLarge),
    ],
)
def test_refusals_are_raised_as_the_server_raises_them(
    body: bytes, max_events: int, refusal: type[Exception]
) -> None:
    with pytest.raises(refusal) as raised:
        prepare_import(_job(body, max_events=max_events))
    copy = _roundtrip(raised.value)
    assert type(copy) is refusal
    assert str(copy) == str(raised.value)


def test_errors_keep_their_fields_across_the_pipe() -> None:
    assert _roundtrip(PayloadTooLarge("big", limit=5)).limit == 5
    assert _roundtrip(RateLimited("slow", retry_after=9)).retry_after == 9
    assert _roundtrip(Unavailable("down", retry_after=3)).retry_after == 3
