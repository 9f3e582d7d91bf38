"""`where` on the raw export (GET /api/2.0/export and `trackhouse export --where`),
end to end: one server, two projects, thirty hand-designed events in each.

Every expected answer is a list of $insert_ids written by hand from EVENTS below, in
export order (time, then $insert_id: e01 is the oldest, e30 the newest). Project B holds
look-alike copies of project A's events (same $insert_ids, same properties, plus
"copy": true) and a few events of its own (b01..b03): an answer for project A that holds
a duplicate id, a b-id or a "copy" property has read another project's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.serverproc import Reply, Server, basic, cli, import_events, request

SECRET_A, TOKEN_A = "where-secret-a", "where-token-a"
SECRET_B, TOKEN_B = "where-secret-b", "where-token-b"

# Event times are BASE + n seconds for e{n}; e30 is BASE + 30.5 s (sent in ms).
BASE = int(time.time()) - 600
FROM_DATE = (dt.datetime.fromtimestamp(BASE, dt.UTC).date() - dt.timedelta(days=1)).isoformat()
TO_DATE = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()

PLAN_INJECTION = "pro' OR 1=1 --"
DISTINCT_INJECTION = "x' OR '1'='1"
EVENT_INJECTION = "Signup' OR 1=1 --"
KEY_INJECTION = "'; DROP TABLE events; --"
UNICODE_PLAN = "ünïcødé ✓ 日本 🎉"
ESCAPED_PLAN = "line1\nline2\ttab\\"

# n -> (event name, distinct_id, properties other than time/distinct_id/$insert_id).
EVENTS: dict[int, tuple[str, str, dict[str, Any]]] = {
    1: (
        "Purchase",
        "u1",
        {
            "plan": "pro",
            "price": 10,
            "amount": 10.5,
            "ok": True,
            "tags": ["a", "b"],
            "nest": {"l1": {"l2": {"l3": "deep"}}},
            "note": None,
        },
    ),
    2: (
        "Purchase",
        "u2",
        {
            "plan": "free",
            "price": 0,
            "amount": -0.5,
            "ok": False,
            "tags": ["b"],
            "nest": {"l1": {"l2": {"l3": 1}}},
        },
    ),
    3: (
        "Signup",
        "u3",
        {"plan": "Pro", "price": "10", "ok": "true", "tags": [], "nest": {"l1": {"l2": "flat"}}},
    ),
    4: ("View", "u4", {"plan": PLAN_INJECTION, "price": -3, "tags": ["pro"]}),
    5: ("View", "u5", {"plan": 'say "hi"', "price": 2.5}),
    6: ("View", "u6", {"plan": "a;b", "comment": "-- not a comment", "nul": "a\x00b"}),
    7: ("View", "u7", {"plan": "/* c */ pro"}),
    8: ("View", "u8", {"plan": "DROP TABLE events", KEY_INJECTION: "key injection"}),
    9: ("View", "u9", {"plan": UNICODE_PLAN}),
    10: ("Signup", "u10", {"price": 1000.0}),
    11: ("Signup", "u11", {}),
    12: ("Signup", "u12", {"plan": None, "price": None}),
    13: ("View", "u13", {"plan": "", "price": 10.0}),
    14: ("View", "u14", {"price": -1000000, "amount": -0.001}),
    15: ("View", "u15", {"tags": ["a", 1, True, None, 2.5]}),
    16: ("View", "u16", {"tags": "a,b"}),
    17: ("View", "u17", {"nest": {"l1": {"l2": {"l3": "deep", "n": [1, 2]}}}, "tags": [{"x": 1}]}),
    18: (
        "View",
        "u18",
        {
            "a/b": "slash",
            "t~x": "tilde",
            'we"ird': "quote key",
            "ключ": "юникод",
            "": "empty key",
            "*": "star",
        },
    ),
    19: ("View", "u19", {"plan": "PRO", "ok": 1}),
    20: ("View", DISTINCT_INJECTION, {"plan": "pro"}),
    21: (EVENT_INJECTION, "u21", {"plan": "pro"}),
    22: ("日本語イベント", "u22", {"plan": "free"}),
    23: ("View", "u23", {"price": "abc", "ok": None}),
    24: ("View", "u24", {"grid": [[1, 2], [3]], "tags": ["A"]}),
    25: ("View", "u25", {"plan": "pro", "nest": {"l1": "string not object"}}),
    26: ("Purchase", "u26", {"plan": "pro", "price": 99.99, "tags": ["a"]}),
    27: ("View", "u27", {"plan": ESCAPED_PLAN}),
    28: ("View", "u28", {"plan": " pro "}),
    29: ("View", "u1", {"plan": "free", "price": 5}),
    30: ("Purchase", "u30", {"plan": "pro", "price": 10}),
}
ALL = [f"e{n:02d}" for n in EVENTS]

# Project B's own events, built to match many of the filters below.
B_ONLY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "b01": ("Purchase", "u1", {"plan": "pro", "price": 10, "ok": True, "tags": ["a", "b"]}),
    "b02": ("View", DISTINCT_INJECTION, {"plan": PLAN_INJECTION, "nest": {"l1": {"l2": {}}}}),
    "b03": (EVENT_INJECTION, "u3", {"plan": "DROP TABLE events", KEY_INJECTION: "key injection"}),
}


def event_json(n: int, copy: bool = False) -> dict[str, Any]:
    name, distinct_id, props = EVENTS[n]
    time_value: int = (BASE + n) * 1000 + 500 if n == 30 else BASE + n
    extra = {"copy": True} if copy else {}
    return {
        "event": name,
        "properties": {
            "time": time_value,
            "distinct_id": distinct_id,
            "$insert_id": f"e{n:02d}",
            **props,
            **extra,
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("where") / "data"
    cli(data_dir, "projects", "create", "a", "--id", "1", "--token", TOKEN_A, "--secret", SECRET_A)
    cli(data_dir, "projects", "create", "b", "--id", "2", "--token", TOKEN_B, "--secret", SECRET_B)
    srv = Server(data_dir).start()
    import_events(srv, SECRET_A, [event_json(n) for n in EVENTS])
    b_events = [event_json(n, copy=True) for n in EVENTS]
    for index, (insert_id, (name, distinct_id, props)) in enumerate(B_ONLY.items()):
        b_time = BASE + 40 + index
        b_props = {"time": b_time, "distinct_id": distinct_id, "$insert_id": insert_id, **props}
        b_events.append({"event": name, "properties": b_props})
    import_events(srv, SECRET_B, b_events)
    srv.wait_loaded()
    yield srv
    srv.kill()


def export_reply(server: Server, secret: str = SECRET_A, **params: str) -> Reply:
    query = urllib.parse.urlencode({"from_date": FROM_DATE, "to_date": TO_DATE, **params})
    return request(
        server, "GET", f"/api/2.0/export?{query}", None, {"Authorization": basic(secret)}
    )


def lines(reply: Reply) -> list[dict[str, Any]]:
    assert reply.status == 200, reply
    assert reply.content_type.startswith("text/plain"), reply
    return [json.loads(line) for line in reply.body.splitlines()]


def insert_ids(server: Server, secret: str = SECRET_A, **params: str) -> list[str]:
    """The export's $insert_ids in order; project A's answers are checked for rows of B."""
    found = lines(export_reply(server, secret, **params))
    if secret == SECRET_A:
        assert not [e for e in found if "copy" in e["properties"]], found
    return [e["properties"]["$insert_id"] for e in found]


def expect(ids: str) -> list[str]:
    """ "01 20 b01" -> ["e01", "e20", "b01"]: bare numbers are e-ids."""
    return [w if w.startswith("b") else f"e{int(w):02d}" for w in ids.split()]


def all_but(ids: str) -> list[str]:
    excluded = set(expect(ids))
    return [i for i in ALL if i not in excluded]


@dataclass(frozen=True)
class Case:
    where: str
    expected: list[str]

    def __str__(self) -> str:
        return self.where


P = 'properties["plan"]'
PRICE = 'properties["price"]'
OK = 'properties["ok"]'
TAGS = 'properties["tags"]'
L3 = 'properties["nest"]["l1"]["l2"]["l3"]'
DID = 'properties["distinct_id"]'
IID = 'properties["$insert_id"]'
T = 'properties["time"]'

CASES = [
    # == and != on strings, exact and case sensitive; a missing or null plan is != "pro".
    Case(f'{P} == "pro"', expect("01 20 21 25 26 30")),
    Case(f"{P} == 'pro'", expect("01 20 21 25 26 30")),
    Case(f'"pro" == {P}', expect("01 20 21 25 26 30")),
    Case(f'{P} != "pro"', all_but("01 20 21 25 26 30")),
    Case(f'{P} == "PRO"', expect("19")),
    Case(f'{P} == ""', expect("13")),
    Case(f'{P} == " pro "', expect("28")),
    Case(f'{P} == "nobody"', []),
    # Ordering comparisons on strings (byte order: "P" < "p" < "s" < "ü").
    Case(f'{P} > "p"', expect("01 04 05 09 20 21 25 26 30")),
    Case(f'{P} <= "DROP TABLE events"', expect("07 08 13 28")),
    # Numbers: ints and floats compare as numbers, never with strings or booleans.
    Case(f"{PRICE} == 10", expect("01 13 30")),
    Case(f"{PRICE} == 10.0", expect("01 13 30")),
    Case(f"{PRICE} == 1e1", expect("01 13 30")),
    Case(f'{PRICE} == "10"', expect("03")),
    Case(f"{PRICE} != 10", all_but("01 13 30")),
    Case(f"{PRICE} > 5", expect("01 10 13 26 30")),
    Case(f"{PRICE} >= 5", expect("01 10 13 26 29 30")),
    Case(f"5 < {PRICE}", expect("01 10 13 26 30")),
    Case(f"{PRICE} < 0", expect("04 14")),
    Case(f"{PRICE} <= 0", expect("02 04 14")),
    Case(f"{PRICE} < -5", expect("14")),
    Case(f"{PRICE} == -1000000", expect("14")),
    Case(f"{PRICE} == -1e6", expect("14")),
    Case(f"{PRICE} >= -3 and {PRICE} < 3", expect("02 04 05")),
    Case(f"{PRICE} == .25e1", expect("05")),
    Case(f"{PRICE} < 99999999999999999999999999", expect("01 02 04 05 10 13 14 26 29 30")),
    Case(f"{PRICE} > -1e300", expect("01 02 04 05 10 13 14 26 29 30")),
    Case(f"{PRICE} > 99.98 and {PRICE} < 99.995", expect("26")),
    Case(f'{PRICE} > "a"', expect("23")),
    Case('properties["amount"] < 0', expect("02 14")),
    Case('properties["amount"] == -0.001', expect("14")),
    # Booleans are their own type: not "true", not 1.
    Case(f"{OK} == true", expect("01")),
    Case(f"{OK} == false", expect("02")),
    Case(f"{OK} != true", all_but("01")),
    Case(f"{OK} != false", all_but("02")),
    Case(f'{OK} == "true"', expect("03")),
    Case(f"{OK} == 1", expect("19")),
    Case(f"{OK} in [true, 1]", expect("01 19")),
    Case(f"{OK} == null", all_but("01 02 03 19")),
    # Missing properties: == false and == true are false, != is true, == null is true.
    Case('properties["missing"] == false', []),
    Case('properties["missing"] == true', []),
    Case('properties["missing"] != true', ALL),
    Case('properties["missing"] != "x"', ALL),
    Case('properties["missing"] == null', ALL),
    Case('properties["missing"] > 0', []),
    Case('properties["missing"] < "z"', []),
    Case('defined(properties["missing"])', []),
    Case('not defined(properties["missing"])', ALL),
    Case('properties["note"] == null', ALL),
    Case('defined(properties["note"])', []),
    Case('properties["$import"] == true', ALL),
    # null and defined(): a null value is not defined.
    Case(f"{P} == null", expect("10 11 12 14 15 16 17 18 23 24")),
    Case(f"{P} != null", all_but("10 11 12 14 15 16 17 18 23 24")),
    Case(f"defined({P})", all_but("10 11 12 14 15 16 17 18 23 24")),
    Case(f"not defined({P})", expect("10 11 12 14 15 16 17 18 23 24")),
    Case(f"defined({PRICE}) and {PRICE} == null", []),
    # in / not in a literal list.
    Case(f'{P} in ["free", "Pro"]', expect("02 03 22 29")),
    Case(f'{P} not in ["free", "Pro"]', all_but("02 03 22 29")),
    Case(f'{P} in ["pro"]', expect("01 20 21 25 26 30")),
    Case(f"{P} in []", []),
    Case(f"{P} not in []", ALL),
    Case(f'{PRICE} in [0, 2.5, "10"]', expect("02 03 05")),
    Case(f"{P} in [null]", expect("10 11 12 14 15 16 17 18 23 24")),
    # "x" in a list property (membership) or a string property (substring).
    Case(f'"a" in {TAGS}', expect("01 15 16 26")),
    Case(f'"b" in {TAGS}', expect("01 02 16")),
    Case(f'"A" in {TAGS}', expect("24")),
    Case(f'"pro" in {TAGS}', expect("04")),
    Case(f"1 in {TAGS}", expect("15")),
    Case(f"2.5 in {TAGS}", expect("15")),
    Case(f"true in {TAGS}", expect("15")),
    Case(f"null in {TAGS}", expect("15")),
    Case(f"1.0 in {TAGS}", expect("15")),
    Case('2.0 in properties["nest"]["l1"]["l2"]["n"]', expect("17")),
    Case(f"false in {TAGS}", []),
    Case(f'"1" in {TAGS}', []),
    Case(f'"a" not in {TAGS}', all_but("01 15 16 26")),
    Case(f'not "a" in {TAGS}', all_but("01 15 16 26")),
    Case(f'"," in {TAGS}', expect("16")),
    Case(f'"pro" in {P}', expect("01 04 07 20 21 25 26 28 30")),
    Case(f'"DROP" in {P}', expect("08")),
    Case(f'"日本" in {P}', expect("09")),
    Case(f'"%" in {P}', []),
    Case(f'"_" in {P}', []),
    Case(f'"" in {P}', all_but("10 11 12 14 15 16 17 18 23 24")),
    Case(f"1 in {PRICE}", []),
    # List elements by index.
    Case(f'{TAGS}[0] == "a"', expect("01 15 26")),
    Case(f'{TAGS}["0"] == "b"', expect("02")),
    Case(f"{TAGS}[1] == 1", expect("15")),
    Case(f"{TAGS}[3] == null", ALL),
    Case(f"defined({TAGS}[3])", []),
    Case(f"defined({TAGS}[0])", expect("01 02 04 15 17 24 26")),
    Case(f'{TAGS}[0]["x"] == 1', expect("17")),
    Case('properties["grid"][1][0] == 3', expect("24")),
    Case(f"defined({TAGS})", expect("01 02 03 04 15 16 17 24 26")),
    # Nested objects, three levels down.
    Case(f'{L3} == "deep"', expect("01 17")),
    Case(f"{L3} == 1", expect("02")),
    Case(f'{L3} != "deep"', all_but("01 17")),
    Case('properties["nest"]["l1"]["l2"] == "flat"', expect("03")),
    Case('defined(properties["nest"]["l1"]["l2"])', expect("01 02 03 17")),
    Case('defined(properties["nest"]["l1"])', expect("01 02 03 17 25")),
    Case('"string" in properties["nest"]["l1"]', expect("25")),
    Case('2 in properties["nest"]["l1"]["l2"]["n"]', expect("17")),
    Case('properties["nest"]["l1"]["l2"]["n"][1] == 2', expect("17")),
    Case(f'{L3}["l4"] == null', ALL),
    Case('properties["l1"] == null', ALL),
    # Property names that mean something in JSON pointers, SQL or the language itself.
    Case('properties["a/b"] == "slash"', expect("18")),
    Case('properties["a"]["b"] == "slash"', []),
    Case('properties["t~x"] == "tilde"', expect("18")),
    Case('properties["we\\"ird"] == "quote key"', expect("18")),
    Case("properties['we\"ird'] == 'quote key'", expect("18")),
    Case('properties["ключ"] == "юникод"', expect("18")),
    Case('properties["*"] == "star"', expect("18")),
    Case('properties[""] == "empty key"', expect("18")),
    Case(f'properties["{KEY_INJECTION}"] == "key injection"', expect("08")),
    Case('properties["\' OR 1=1 --"] == null', ALL),
    # The column fields: distinct_id, $insert_id and time (seconds).
    Case(f'{DID} == "u1"', expect("01 29")),
    Case(f'{DID} != "u1"', all_but("01 29")),
    Case(f'"u1" in {DID}', expect("01 10 11 12 13 14 15 16 17 18 19 29")),
    Case(f'{DID} in ["u2", "u3", "nope"]', expect("02 03")),
    Case(f'{DID} > "u5"', expect("06 07 08 09 20")),
    Case(f"{DID} == 1", []),
    Case(f"{DID} == null", []),
    Case(f"defined({DID})", ALL),
    Case(f'{DID} == "{DISTINCT_INJECTION}"', expect("20")),
    Case(f"{DID} == \"x' OR '1'='1\" or {DID} == \"u2\"", expect("02 20")),
    Case(f'{IID} == "e05"', expect("05")),
    Case(f'{IID} in ["e01", "e30", "b01"]', expect("01 30")),
    Case(f'{IID} >= "e28"', expect("28 29 30")),
    Case(f'"e1" in {IID}', expect("10 11 12 13 14 15 16 17 18 19")),
    Case(f'{IID} == "b01"', []),
    Case(f"defined({IID}) and {IID} != null", ALL),
    Case(f"{T} >= {BASE + 10} and {T} < {BASE + 13}", expect("10 11 12")),
    Case(f"{T} < {BASE + 2}", expect("01")),
    Case(f"{T} == {BASE + 5}", expect("05")),
    Case(f"{T} > {BASE + 29}", expect("30")),
    # time is whole seconds, as export prints it: BASE + 30.5 s is BASE + 30.
    Case(f"{T} == {BASE + 30}", expect("30")),
    Case(f"{T} > {BASE + 30} and {T} < {BASE + 31}", []),
    Case(f"{T} == {BASE + 30.5}", []),
    Case(f"{T} in [{BASE + 3}, {BASE + 7}]", expect("03 07")),
    Case(f'{T} == "{BASE + 5}"', []),
    Case(f"{T} < {BASE}", []),
    # and / or / not, precedence (not > and > or) and parentheses.
    Case(f'{P} == "pro" and {PRICE} == 10', expect("01 30")),
    Case(f'{P} == "pro" or {PRICE} == 10', expect("01 13 20 21 25 26 30")),
    Case(f'not ({P} == "pro" or {PRICE} == 10)', all_but("01 13 20 21 25 26 30")),
    Case(f'not {P} == "pro" and not {PRICE} == 10', all_but("01 13 20 21 25 26 30")),
    Case(f'{P} == "free" or {P} == "pro" and {PRICE} == 10', expect("01 02 22 29 30")),
    Case(f'({P} == "free" or {P} == "pro") and {PRICE} == 10', expect("01 30")),
    Case(f'({P} == "free" or {P} == "Pro") and not {OK} == false', expect("03 22 29")),
    Case(f'not not {P} == "pro"', expect("01 20 21 25 26 30")),
    Case(f'{P} == "pro" and ({PRICE} > 50 or {DID} == "{DISTINCT_INJECTION}")', expect("20 26")),
    Case(f'(((({P} == "pro"))))', expect("01 20 21 25 26 30")),
    Case(f"{OK} == true or {OK} == false or {OK} == null", all_but("03 19")),
    Case(f'{P} == "pro" and not {P} == "pro"', []),
    Case(f'{P} == "pro" or not {P} == "pro"', ALL),
    Case(f"{PRICE} > 0 and {PRICE} < 9", expect("05 29")),
    # Injection attempts inside string literals: each is only a value to compare with.
    Case(f'{P} == "{PLAN_INJECTION}"', expect("04")),
    Case(f"{P} == 'pro\\' OR 1=1 --'", expect("04")),
    Case(f'{P} == "pro\\u0027 OR 1=1 --"', expect("04")),
    Case(f'{P} == "say \\"hi\\""', expect("05")),
    Case(f"{P} == 'say \"hi\"'", expect("05")),
    Case(f'{P} == "a;b"', expect("06")),
    Case('properties["comment"] == "-- not a comment"', expect("06")),
    Case(f'{P} == "/* c */ pro"', expect("07")),
    Case(f'{P} == "DROP TABLE events"', expect("08")),
    Case(f'{P} == "{UNICODE_PLAN}"', expect("09")),
    Case(f'{P} == "\\u00fcn\\u00efc\\u00f8d\\u00e9 \\u2713 \\u65e5\\u672c 🎉"', expect("09")),
    Case(f'{P} == "line1\\nline2\\ttab\\\\"', expect("27")),
    Case(f'{P} == "line1\\nline2\\ttab\\\\" or {P} == "line1"', expect("27")),
    Case(f"{P} == \"' OR ''='\"", []),
    Case(f'{P} == "\\" OR \\"\\"=\\""', []),
    Case(f"{P} == \"pro' OR '1'='1\"", []),
    Case(f'{P} == "pro\\"; DROP TABLE events; --"', []),
    Case(f'{P} == "pro\') OR 1=1; --"', []),
    Case(f'{P} == "%"', []),
    Case(f'{P} == "pro%"', []),
    Case(f'{P} in ["{PLAN_INJECTION}", "a;b", "\' OR 1=1 --"]', expect("04 06")),
    Case(f'"{PLAN_INJECTION}" in {P}', expect("04")),
    Case(f'"\' OR 1=1" in {P}', expect("04")),
    Case('"\'" in properties["plan"]', expect("04")),
    Case(f'"\\"" in {P}', expect("05")),
    Case(f'";" in {P}', expect("06")),
    Case('"--" in properties["comment"]', expect("06")),
    Case(f'"/*" in {P}', expect("07")),
    Case(f'"\\\\" in {P}', expect("27")),
    Case(f'"\\n" in {P}', expect("27")),
    Case('properties["nul"] == "a\\u0000b"', expect("06")),
    Case('"\\u0000" in properties["nul"]', expect("06")),
    Case('"\\u0000" in properties["plan"]', []),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_where_returns_exactly_the_right_events(server: Server, case: Case) -> None:
    assert insert_ids(server, where=case.where) == case.expected


def test_every_case_expects_events_in_export_order() -> None:
    """The expected lists are in (time, $insert_id) order: e01..e30."""
    for case in CASES:
        assert case.expected == sorted(set(case.expected)), case


def test_without_where_each_project_reads_its_own_events(server: Server) -> None:
    assert insert_ids(server) == ALL
    assert insert_ids(server, where="") == ALL  # an empty where is no filter
    b_lines = lines(export_reply(server, SECRET_B))
    assert [e["properties"]["$insert_id"] for e in b_lines] == [*ALL, "b01", "b02", "b03"]
    assert all(e["properties"].get("copy") for e in b_lines[:30])


B_CASES = [
    Case(f'{P} == "pro"', [*expect("01 20 21 25 26 30"), "b01"]),
    Case(f'{P} == "{PLAN_INJECTION}"', expect("04 b02")),
    Case(f'{DID} == "{DISTINCT_INJECTION}"', expect("20 b02")),
    Case(f'properties["{KEY_INJECTION}"] == "key injection"', expect("08 b03")),
    Case('properties["copy"] == true', ALL),
    Case('defined(properties["nest"]["l1"]["l2"])', expect("01 02 03 17 b02")),
    Case(f'{IID} in ["e01", "b01"]', expect("01 b01")),
    Case(f"{T} >= {BASE + 40}", expect("b01 b02 b03")),
]


@pytest.mark.parametrize("case", B_CASES, ids=str)
def test_the_other_project_answers_from_its_own_rows(server: Server, case: Case) -> None:
    assert insert_ids(server, SECRET_B, where=case.where) == case.expected


def test_a_project_never_sees_rows_only_the_other_has(server: Server) -> None:
    assert insert_ids(server, where=f'{IID} in ["b01", "b02", "b03"]') == []
    assert insert_ids(server, where='properties["copy"] == true') == []
    assert insert_ids(server, where=f"{T} >= {BASE + 40}") == []
    assert insert_ids(server, where=f'{P} == "pro"', limit="100") == expect("01 20 21 25 26 30")


EVENT_CASES = [
    (["Purchase"], f'{P} == "pro"', None, expect("01 26 30")),
    (["Signup"], f"not defined({P})", None, expect("10 11 12")),
    (["Signup"], f'{P} == "pro"', None, []),
    ([EVENT_INJECTION], f'{P} == "pro"', None, expect("21")),
    (["Signup' OR 1=1"], f'{P} == "pro"', None, []),
    (["View", "日本語イベント"], f'{P} == "free"', None, expect("22 29")),
    (["View"], f'"a" in {TAGS}', None, expect("15 16")),
    (["Purchase", "View"], f"{PRICE} >= 10", None, expect("01 13 26 30")),
    (["Nope"], f'{P} == "pro"', None, []),
    (None, f'{P} == "pro"', "1", expect("01")),
    (None, f'{P} == "pro"', "2", expect("01 20")),
    (None, f'{P} != "pro"', "3", expect("02 03 04")),
    (["Purchase"], f'{P} == "pro"', "2", expect("01 26")),
    (["View"], f'"a" in {TAGS}', "1", expect("15")),
    (["Purchase"], 'properties["missing"] == null', "100000", expect("01 02 26 30")),
]


@pytest.mark.parametrize(("events", "where", "limit", "expected"), EVENT_CASES)
def test_where_with_event_names_and_limit(
    server: Server,
    events: list[str] | None,
    where: str,
    limit: str | None,
    expected: list[str],
) -> None:
    params = {"where": where}
    if events is not None:
        params["event"] = json.dumps(events)
    if limit is not None:
        params["limit"] = limit
    assert insert_ids(server, **params) == expected
    assert len(insert_ids(server, SECRET_B, **params)) >= len(expected)


def test_where_on_time_is_in_seconds_even_when_the_export_prints_ms(server: Server) -> None:
    found = lines(export_reply(server, where=f"{T} >= {BASE + 29}", time_in_ms="true"))
    assert [e["properties"]["$insert_id"] for e in found] == expect("29 30")
    assert [e["properties"]["time"] for e in found] == [
        (BASE + 29) * 1000,
        (BASE + 30) * 1000 + 500,
    ]
    found = lines(export_reply(server, where=f"{T} >= {BASE + 29}"))
    assert [e["properties"]["time"] for e in found] == [BASE + 29, BASE + 30]


def test_where_on_the_printed_time_finds_the_event(server: Server) -> None:
    assert insert_ids(server, where=f"{T} == {BASE + 30}") == expect("30")


def test_a_non_bmp_character_as_a_surrogate_pair_escape(server: Server) -> None:
    """JSON writes 🎉 as \\ud83c\\udf89; the where language's escapes are JSON's."""
    assert insert_ids(server, where=f'"\\ud83c\\udf89" in {P}') == expect("09")
    assert insert_ids(
        server,
        where=f'{P} == "\\u00fcn\\u00efc\\u00f8d\\u00e9 \\u2713 \\u65e5\\u672c \\uD83C\\uDF89"',
    ) == expect("09")


# Whole where texts that are not the language (SQL, injections, broken syntax, limits):
# each is refused with a 400 whose plain-text body names the problem.
BAD_WHERES = [
    ("1=1", "unexpected character '='"),
    ("1 == 1", "compares a property with a literal"),
    ("true", "a value alone is not a condition"),
    ('"pro"', "a value alone is not a condition"),
    (P, "alone is not a condition"),
    ("properties", "expression ends too early"),
    (f'{P} == "pro" OR 1=1', "unexpected character '='"),
    (f'{P} == "pro" OR {P} == "free"', "unexpected 'OR'"),
    (f'{P} == "pro" || 1', "unexpected character '|'"),
    (f'{P} == "pro"; DROP TABLE events', "unexpected character ';'"),
    (f'{P} == "pro" -- comment', "unexpected character '-'"),
    (f'{P} == "pro" /* x */', "unexpected character '/'"),
    (f'{P} = "pro"', "unexpected character '='"),
    ("') OR ('1'='1", "a value alone is not a condition"),
    ('" OR ""="', "a value alone is not a condition"),
    (f"{P} == 'pro'' OR 1=1 --", 'unexpected character "\'"'),
    (f'{P} == "pro") OR (1=1', "unexpected character '='"),
    (f'{P} == "pro") or ({P} == "x"', "unexpected ')'"),
    ("SELECT * FROM events", "unexpected character '*'"),
    ("SELECT plan FROM events", "unexpected 'SELECT'"),
    ("DROP TABLE events", "unexpected 'DROP'"),
    (f'{P} == "pro" UNION SELECT 1', "unexpected 'UNION'"),
    ('event == "Purchase"', "unexpected 'event'"),
    ('properties[plan] == "pro"', "a property name must be a quoted string"),
    ('properties.plan == "pro"', "unexpected character '.'"),
    (f'{P} == "pro" and', "expression ends too early"),
    (f"{P} ==", "expression ends too early"),
    ("not", "expression ends too early"),
    ("(", "expression ends too early"),
    (f'({P} == "pro"', "ends too early"),
    (f'{P} == "pro")', "unexpected ')'"),
    (f'{P} == "unterminated', "unexpected character '\"'"),
    (f"{P} == 'unterminated", 'unexpected character "\'"'),
    (f'{P} == "\\q"', "unknown escape \\q"),
    (f"{PRICE} == 1e999", "not a finite number"),
    (f'{P} == "\\ud83c"', "lone surrogate escape"),
    (f"{PRICE} < true", "needs a number or a string, not true"),
    (f"{PRICE} >= null", "needs a number or a string, not null"),
    (f"{P} == {PRICE}", "compares a property with a literal"),
    ('defined("plan")', "defined() takes a property"),
    (f'{P} in "pro"', 'use value in properties["list"]'),
    (f'["pro"] in {P}', 'use value in properties["list"]'),
    (f"{P} in [{P}]", "a list holds literal values only"),
    (f'{P} in ["a" "b"]', "expected ',' or ']'"),
    ("   ", "where is empty"),
    ("(" * 60 + f'{P} == "pro"' + ")" * 60, "nested more than 50 levels"),
    ("not " * 60 + f'{P} == "pro"', "nested more than 50 levels"),
    (f"{P} in [{', '.join(['1'] * 1001)}]", "a list holds at most 1000 values"),
    (f'{P} == "{"x" * 10_000}"', "the limit is 10000"),
    (f'{P} == "pro" \x00', "unexpected character '\\x00'"),
]


@pytest.mark.parametrize(("where", "message"), BAD_WHERES, ids=[w[:60] for w, _ in BAD_WHERES])
def test_bad_where_is_a_400_naming_the_problem(server: Server, where: str, message: str) -> None:
    reply = export_reply(server, where=where)
    assert reply.status == 400, reply
    assert reply.content_type.startswith("text/plain"), reply
    text = reply.body.decode()
    assert text.startswith("where"), text
    assert message in text, text


def test_nothing_was_changed_by_the_injection_attempts(server: Server) -> None:
    assert insert_ids(server) == ALL
    assert len(lines(export_reply(server, SECRET_B))) == 33
    status = request(server, "GET", "/healthz")
    assert status.status == 200


def run_export_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "trackhouse",
            "export",
            "--from",
            FROM_DATE,
            "--to",
            TO_DATE,
            *args,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )


CLI_CASES = [
    (f'{P} == "{PLAN_INJECTION}"', [], expect("04")),
    (f'"a" in {TAGS} or {L3} == "deep"', [], expect("01 15 16 17 26")),
    (f'{DID} == "{DISTINCT_INJECTION}"', [], expect("20")),
    (f'{P} == "{UNICODE_PLAN}"', [], expect("09")),
    (f'{P} == "pro"', ["--event", "Purchase", "--event", EVENT_INJECTION], expect("01 21 26 30")),
    (f'{P} != "pro"', ["--limit", "2"], expect("02 03")),
    (f"{T} >= {BASE + 29}", ["--time-in-ms"], expect("29 30")),
]


def api_params(where: str, extra: list[str]) -> dict[str, str]:
    """The export API's parameters for `trackhouse export --where WHERE *extra`."""
    params = {"where": where}
    events = [extra[i + 1] for i, arg in enumerate(extra) if arg == "--event"]
    if events:
        params["event"] = json.dumps(events)
    if "--limit" in extra:
        params["limit"] = extra[extra.index("--limit") + 1]
    if "--time-in-ms" in extra:
        params["time_in_ms"] = "true"
    return params


def cli_ids(out: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["properties"]["$insert_id"] for line in out.stdout.splitlines()]


@pytest.mark.parametrize(("where", "extra", "expected"), CLI_CASES)
def test_cli_export_where_matches_the_api(
    server: Server, where: str, extra: list[str], expected: list[str]
) -> None:
    out_a = run_export_cli(server.data_dir, "--project", "1", "--where", where, *extra)
    assert cli_ids(out_a) == expected
    assert out_a.stdout == lines_body(export_reply(server, SECRET_A, **api_params(where, extra)))
    out_b = run_export_cli(server.data_dir, "--project", "2", "--where", where, *extra)
    assert len(cli_ids(out_b)) >= len(expected)  # its copies, and maybe its own events
    assert out_b.stdout == lines_body(export_reply(server, SECRET_B, **api_params(where, extra)))


def lines_body(reply: Reply) -> bytes:
    assert reply.status == 200, reply
    return reply.body


def test_cli_export_bad_where(server: Server) -> None:
    out = run_export_cli(server.data_dir, "--project", "1", "--where", f'{P} == "pro"; DROP')
    assert out.returncode == 2
    assert b"unexpected character ';'" in out.stderr
    assert out.stdout == b""


def test_cli_export_where_without_a_server(tmp_path: Path) -> None:
    """The same filters on the data directory itself once the server is gone (the CLI
    compiles and runs the where in its own process)."""
    data_dir = tmp_path / "data"
    cli(data_dir, "projects", "create", "a", "--id", "1", "--token", TOKEN_A, "--secret", SECRET_A)
    cli(data_dir, "projects", "create", "b", "--id", "2", "--token", TOKEN_B, "--secret", SECRET_B)
    srv = Server(data_dir).start()
    try:
        import_events(srv, SECRET_A, [event_json(n) for n in EVENTS])
        import_events(srv, SECRET_B, [event_json(n, copy=True) for n in EVENTS])
        srv.wait_loaded()
        api = [
            lines_body(export_reply(srv, SECRET_A, **api_params(where, extra)))
            for where, extra, _ in CLI_CASES
        ]
    finally:
        srv.stop()
    assert srv.process is not None
    assert srv.process.returncode is not None
    for (where, extra, expected), api_body in zip(CLI_CASES, api, strict=True):
        out = run_export_cli(data_dir, "--project", "1", "--where", where, *extra)
        assert cli_ids(out) == expected
        assert out.stdout == api_body
    refused = run_export_cli(data_dir, "--project", "1", "--where", "1=1")
    assert refused.returncode == 2
    assert b"unexpected character '='" in refused.stderr
