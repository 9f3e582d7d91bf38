"""``where`` expressions: parse_where + compile_where, run against a real DuckDB table.

Every expected answer below is worked out by hand from ROWS, not by a second
implementation of the language.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import orjson
import pytest

from trackhouse.errors import PayloadError
from trackhouse.query.where import MAX_DEPTH, MAX_LENGTH, MAX_LIST, WhereError, parse_where
from trackhouse.storage.duckdb_where import compile_where

# id -> JSON text of the properties column.
ROWS: dict[int, str] = {
    1: orjson.dumps(
        {
            "name": "alice",
            "age": 30,
            "score": 9.5,
            "active": True,
            "plan": None,
            "tags": ["a", "b"],
            "nested": {"a": {"b": {"c": "deep"}}},
            "nums": [1, 2, 3],
            "a/b": "slash",
            "t~x": "tilde",
            "sp ace": "spaced",
            'q"k': "quoted",
        }
    ).decode(),
    2: orjson.dumps(
        {
            "name": "bob",
            "age": 25,
            "score": 7,
            "active": False,
            "tags": ["b", "c"],
            "nested": {"a": {"b": {"c": 3}}},
            "nums": [2.5, 7.0],
            "a~1b": "trap",
        }
    ).decode(),
    3: orjson.dumps(
        {
            "name": "carol",
            "age": "30",
            "score": -1.25,
            "active": "true",
            "plan": "pro",
            "tags": [],
            "nested": {"a": {"b": {}}},
        }
    ).decode(),
    4: orjson.dumps(
        {
            "name": 'O\'Brien "Bob"; DROP TABLE t; --',
            "age": 41,
            "plan": "free",
            "tags": ["x;y", "--", "/*"],
            "note": "/* comment */ SELECT 1",
        }
    ).decode(),
    # Written by hand, with spaces and \u escapes (a surrogate pair for 😀).
    5: r'{"name": "Zo\u00eb", "city": "Z\u00fcrich", "emoji": "\ud83d\ude00", "age": 1,'
    r' "active": 1, "tags": "abc", "nested": "flat"}',
    6: orjson.dumps(
        {
            "name": "dave",
            "age": 30.0,
            "active": True,
            "tags": ["a", 1, True, None, {"k": "a"}],
            "plan": "pro",
        }
    ).decode(),
    7: orjson.dumps(
        {
            "name": "line\nbreak",
            "age": None,
            "tab": "a\\b",
            "or": "and",
            "properties": "x",
            "tags": ["ctl\u001f"],
        }
    ).decode(),
    8: "{}",
}
ALL = sorted(ROWS)


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t (id INTEGER, properties VARCHAR)")
    connection.executemany("INSERT INTO t VALUES (?, ?)", list(ROWS.items()))
    yield connection
    connection.close()


def _intact(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute("SELECT id, properties FROM t ORDER BY id").fetchall()
    assert dict(rows) == ROWS


def matching(con: duckdb.DuckDBPyConnection, text: str) -> list[int]:
    """The ids of the rows the expression selects; the table is checked untouched after."""
    compiled = compile_where(parse_where(text), "properties")
    sql = f"SELECT id FROM t WHERE {compiled.sql} ORDER BY id"  # noqa: S608
    result = [int(row[0]) for row in con.execute(sql, compiled.params).fetchall()]
    _intact(con)
    return result


def case(text: str, expected: list[int]) -> object:
    return pytest.param(text, expected, id=text[:60])


def test_where_error_is_a_payload_error() -> None:
    assert issubclass(WhereError, PayloadError)
    with pytest.raises(PayloadError):
        parse_where("")


# -- operators ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case('properties["name"] == "alice"', [1]),
        case('properties["name"] != "alice"', [2, 3, 4, 5, 6, 7, 8]),
        case('properties["age"] == 30', [1, 6]),
        case('properties["age"] == "30"', [3]),
        case('properties["age"] != 30', [2, 3, 4, 5, 7, 8]),
        case('properties["age"] < 30', [2, 5]),
        case('properties["age"] > 30', [4]),
        case('properties["age"] <= 30', [1, 2, 5, 6]),
        case('properties["age"] >= 30', [1, 4, 6]),
        case('properties["score"] > -2', [1, 2, 3]),
        case('properties["score"] < 0', [3]),
        case('properties["score"] == 7.0', [2]),
        case('properties["score"] >= 9.5', [1]),
        case('properties["name"] < "bob"', [1, 4, 5]),
        case('properties["name"] >= "dave"', [6, 7]),
        case('properties["plan"] == "pro" and properties["age"] == 30', [6]),
        case('properties["plan"] == "free" or properties["name"] == "bob"', [2, 4]),
        case('not properties["plan"] == "pro"', [1, 2, 4, 5, 7, 8]),
        case('not not properties["name"] == "bob"', [2]),
        case('not (properties["age"] > 20 and properties["age"] < 35)', [3, 4, 5, 7, 8]),
    ],
)
def test_comparisons_and_logic(
    con: duckdb.DuckDBPyConnection, text: str, expected: list[int]
) -> None:
    assert matching(con, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case('properties["active"] == true', [1, 6]),
        case('properties["active"] == false', [2]),
        case('properties["active"] != true', [2, 3, 4, 5, 7, 8]),
        case('properties["active"] == 1', [5]),
        case('properties["active"] == "true"', [3]),
        case('properties["plan"] == null', [1, 2, 5, 7, 8]),
        case('properties["plan"] != null', [3, 4, 6]),
        case('properties["age"] == null', [7, 8]),
        case('defined(properties["plan"])', [3, 4, 6]),
        case('not defined(properties["plan"])', [1, 2, 5, 7, 8]),
        case('defined(properties["age"])', [1, 2, 3, 4, 5, 6]),
    ],
)
def test_booleans_and_null(con: duckdb.DuckDBPyConnection, text: str, expected: list[int]) -> None:
    assert matching(con, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case('properties["plan"] in ["pro", "free"]', [3, 4, 6]),
        case('properties["age"] in [25, 41, "30"]', [2, 3, 4]),
        case('properties["plan"] in [null]', [1, 2, 5, 7, 8]),
        case('properties["active"] in [true, 1]', [1, 5, 6]),
        case('properties["plan"] in []', []),
        case('properties["plan"] not in ["pro", "free"]', [1, 2, 5, 7, 8]),
        case('properties["plan"] not in []', ALL),
        case('"b" in properties["tags"]', [1, 2, 5]),
        case('"a" in properties["tags"]', [1, 5, 6]),
        case('1 in properties["tags"]', [6]),
        case('true in properties["tags"]', [6]),
        case('"1" in properties["tags"]', []),
        case('"--" in properties["tags"]', [4]),
        case('"/*" in properties["tags"]', [4]),
        case('"x" in properties["tags"]', []),
        case('"x" not in properties["tags"]', ALL),
        case('2 in properties["nums"]', [1]),
        case('2.5 in properties["nums"]', [2]),
        case('"li" in properties["name"]', [1, 7]),
        case('"ob" in properties["name"]', [2, 4]),
        case('"DROP TABLE" in properties["name"]', [4]),
        case('"ë" in properties["name"]', [5]),
        case('"\\n" in properties["name"]', [7]),
        case('"" in properties["name"]', [1, 2, 3, 4, 5, 6, 7]),
        case('"alice" in properties["age"]', []),
        case('"30" in properties["age"]', [3]),
    ],
)
def test_in_and_contains(con: duckdb.DuckDBPyConnection, text: str, expected: list[int]) -> None:
    assert matching(con, text) == expected


# -- literals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case("properties['name'] == 'alice'", [1]),
        case("""properties["name"] == 'O\\'Brien "Bob"; DROP TABLE t; --'""", [4]),
        case('properties["name"] == "O\'Brien \\"Bob\\"; DROP TABLE t; --"', [4]),
        case('properties["name"] == "line\\nbreak"', [7]),
        case("properties['name'] == 'line\\nbreak'", [7]),
        case('properties["tab"] == "a\\\\b"', [7]),
        case('properties["name"] == "Zo\\u00eb"', [5]),
        case('properties["city"] == "Z\\u00FCrich"', [5]),
        case('properties["name"] == "Zoë"', [5]),
        case('properties["emoji"] == "😀"', [5]),
        case('properties["a\\/b"] == "slash"', [1]),
        case('properties["tags"][0] == "ctl\\u001f"', [7]),
        case('properties["score"] == -1.25', [3]),
        case('properties["score"] == 9.50', [1]),
        case('properties["score"] > .5', [1, 2]),
        case('properties["age"] == 3e1', [1, 6]),
        case('properties["age"] >= 4.1E1', [4]),
        case('properties["age"] > 4.1e+1', []),
        case('properties["age"] == 30.0', [1, 6]),
    ],
)
def test_literals(con: duckdb.DuckDBPyConnection, text: str, expected: list[int]) -> None:
    assert matching(con, text) == expected


# -- paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case('properties["nested"]["a"]["b"]["c"] == "deep"', [1]),
        case('properties["nested"]["a"]["b"]["c"] == 3', [2]),
        case('"ee" in properties["nested"]["a"]["b"]["c"]', [1]),
        case('defined(properties["nested"]["a"]["b"]["c"])', [1, 2]),
        case('defined(properties["nested"]["a"]["b"])', [1, 2, 3]),
        case('properties["nested"]["a"] == null', [4, 5, 6, 7, 8]),
        case('properties["tags"][0] == "a"', [1, 6]),
        case('properties["tags"][1] == "c"', [2]),
        case('properties["nums"][2] == 3', [1]),
        case('properties["nums"][1] == 7', [2]),
        case('properties["tags"][0] == null', [3, 5, 8]),
        case('defined(properties["tags"][3])', []),
        case('defined(properties["tags"][4])', [6]),
        case('properties["tags"][4]["k"] == "a"', [6]),
        case('properties["a/b"] == "slash"', [1]),
        case('properties["a~1b"] == "trap"', [2]),
        case('properties["a/b"] == "trap"', []),
        case('properties["a~1b"] == "slash"', []),
        case('properties["t~x"] == "tilde"', [1]),
        case('properties["sp ace"] == "spaced"', [1]),
        case('properties["q\\"k"] == "quoted"', [1]),
        case('properties[\'q"k\'] == "quoted"', [1]),
        case('properties["or"] == "and"', [7]),
        case('properties["properties"] == "x"', [7]),
    ],
)
def test_property_paths(con: duckdb.DuckDBPyConnection, text: str, expected: list[int]) -> None:
    assert matching(con, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case('properties["nope"] == "x"', []),
        case('properties["nope"] != "x"', ALL),
        case('properties["nope"] == null', ALL),
        case('properties["nope"] != null', []),
        case('properties["nope"] < 5', []),
        case('not properties["nope"] < 5', ALL),
        case('properties["nope"] in ["x", 1]', []),
        case('"x" in properties["nope"]', []),
        case('properties["nope"]["deeper"] == 1', []),
    ],
)
def test_missing_properties(con: duckdb.DuckDBPyConnection, text: str, expected: list[int]) -> None:
    assert matching(con, text) == expected


# -- precedence and flipped comparisons ------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a or (b and c); (a or b) and c would be []
        case(
            'properties["name"] == "alice" or properties["plan"] == "pro" and properties["age"] == 25',
            [1],
        ),
        case(
            'properties["plan"] == "pro" and properties["age"] == 25 or properties["name"] == "alice"',
            [1],
        ),
        case(
            '(properties["name"] == "alice" or properties["plan"] == "pro") and properties["age"] == 25',
            [],
        ),
        # (not a) and b; not (a and b) would be [1, 2, 3, 4, 5, 7, 8]
        case('not properties["plan"] == "pro" and properties["age"] == 30', [1]),
        case(
            'not (properties["plan"] == "pro" and properties["age"] == 30)', [1, 2, 3, 4, 5, 7, 8]
        ),
        case(
            'properties["name"] == "bob" or properties["plan"] == "pro" and properties["age"] == 30'
            ' or properties["name"] == "alice"',
            [1, 2, 6],
        ),
    ],
)
def test_precedence(con: duckdb.DuckDBPyConnection, text: str, expected: list[int]) -> None:
    assert matching(con, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case('30 == properties["age"]', [1, 6]),
        case('30 < properties["age"]', [4]),
        case('30 > properties["age"]', [2, 5]),
        case('30 >= properties["age"]', [1, 2, 5, 6]),
        case('25 <= properties["age"]', [1, 2, 4, 6]),
        case('"alice" != properties["name"]', [2, 3, 4, 5, 6, 7, 8]),
        case('null == properties["plan"]', [1, 2, 5, 7, 8]),
        case('"bob" > properties["name"]', [1, 4, 5]),
    ],
)
def test_literal_on_the_left(
    con: duckdb.DuckDBPyConnection, text: str, expected: list[int]
) -> None:
    assert matching(con, text) == expected


# -- long and deep, within the limits ----------------------------------------------------------
def test_a_flat_chain_of_300_or_terms(con: duckdb.DuckDBPyConnection) -> None:
    text = " or ".join(f'properties["age"] == {i}' for i in range(300))
    assert len(text) <= MAX_LENGTH
    assert matching(con, text) == [1, 2, 4, 5, 6]


def test_a_flat_chain_of_300_and_terms(con: duckdb.DuckDBPyConnection) -> None:
    text = " and ".join(f'properties["age"] != {i}' for i in range(300))
    assert matching(con, text) == [3, 7, 8]


def test_nesting_at_the_limit(con: duckdb.DuckDBPyConnection) -> None:
    test = 'properties["name"] == "bob"'
    assert matching(con, "(" * MAX_DEPTH + test + ")" * MAX_DEPTH) == [2]
    assert matching(con, "not " * MAX_DEPTH + test) == [2]  # an even number of nots
    assert matching(con, "not (" * (MAX_DEPTH // 2) + test + ")" * (MAX_DEPTH // 2)) == [
        1,
        3,
        4,
        5,
        6,
        7,
        8,
    ]


def test_a_list_at_the_limit(con: duckdb.DuckDBPyConnection) -> None:
    values = ", ".join(str(i) for i in range(100, 100 + MAX_LIST - 1))
    assert matching(con, f'properties["age"] in [{values}, 41]') == [4]


def test_an_expression_at_the_length_limit(con: duckdb.DuckDBPyConnection) -> None:
    head = 'properties["name"] != "'
    text = head + "x" * (MAX_LENGTH - len(head) - 1) + '"'
    assert len(text) == MAX_LENGTH
    assert matching(con, text) == ALL


# -- injection ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        case("properties[\"name\"] == \"x' OR '1'='1\"", []),
        case('properties["name"] == "alice\\" or \\"1\\" == \\"1"', []),
        case('properties["x\') OR 1=1 --"] == 1', []),
        case('properties["name"] == "\'; DROP TABLE t; --"', []),
        case('"\'; DELETE FROM t; --" in properties["name"]', []),
        case('properties["note"] == "/* comment */ SELECT 1"', [4]),
        case('properties["name"] != "x\'); DROP TABLE t; --"', ALL),
        case('properties["name"] in ["a\'; DROP TABLE t; --", "/* */", "?"]', []),
        case('properties["$.name"] == "alice"', []),
        case('properties["name"] == "?" or properties["?"] == "alice"', []),
        case("properties['name'] == 'alice' or properties['name'] == 'x\\u0027 OR 1=1'", [1]),
        case('properties["name"] == "\\u0000alice"', []),
    ],
)
def test_injection_attempts_are_plain_values(
    con: duckdb.DuckDBPyConnection, text: str, expected: list[int]
) -> None:
    assert matching(con, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        'properties["name"] == "a"; DROP TABLE t',
        'properties["name"] == "a" -- comment',
        'properties["name"] == "a" /* x */',
        'properties["name"] == "a" OR 1=1',
        'properties["name"] == "a" or 1 == 1',
        "properties[\"name\"] == 'a' UNION SELECT 1",
        "1; DROP TABLE t",
        'properties["name"]) OR (1 == 1',
    ],
)
def test_injection_attempts_that_do_not_parse(con: duckdb.DuckDBPyConnection, text: str) -> None:
    with pytest.raises(WhereError):
        matching(con, text)
    _intact(con)


def test_the_table_survives_every_query(con: duckdb.DuckDBPyConnection) -> None:
    # Runs after the tests above in this module (same connection): all rows still there.
    row = con.execute("SELECT count(*) FROM t").fetchone()
    assert row == (len(ROWS),)
    _intact(con)


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "where is empty"),
        ("   \n ", "where is empty"),
        ('properties["name"] == "abc', "unexpected character '\"' at position 22"),
        ("properties['name'] == 'abc", 'unexpected character "\'" at position 22'),
        (
            'properties["a"]',
            r'properties\["a"\] alone is not a condition.*defined\(properties\["a"\]\)',
        ),
        ('properties["a"] and properties["b"] == 1', "alone is not a condition"),
        ('"x"', "a value alone is not a condition"),
        ("[1, 2]", "a value alone is not a condition"),
        ('properties["a"] == properties["b"]', "compares a property with a literal value"),
        ('"x" == "y"', "compares a property with a literal value"),
        ('properties["a"] < true', "< needs a number or a string, not true"),
        ('properties["a"] >= null', ">= needs a number or a string, not null"),
        ("< true", "unexpected '<' at position 0"),
        ('properties["a"] == yes', "unexpected 'yes' at position 19"),
        ("foo", "unexpected 'foo' at position 0"),
        ('properties["a"] == 1 AND properties["b"] == 2', "unexpected 'AND' at position 21"),
        ('properties["a"] == 1 2', "unexpected '2' at position 21"),
        ('properties["a"] == 1)', "unexpected '\\)' at position 20"),
        ('properties["a"] == 1 properties["b"] == 2', "unexpected 'properties' at position 21"),
        ('properties["a"] ==', "ends too early"),
        ('properties["a"] == 1 and', "ends too early"),
        ('(properties["a"] == 1', "expected '\\)' but found|ends too early"),
        ("properties", "ends too early"),
        ("properties[a] == 1", "a property name must be a quoted string, not 'a'"),
        ("properties[-1] == 1", "a property name must be a quoted string, not '-1'"),
        ('properties["a"] in "x"', "use value in properties"),
        ('properties["a"] in properties["b"]', "use value in properties"),
        ('defined("a")', "defined\\(\\) takes a property"),
        ('properties["a"] in [properties["b"]]', "a list holds literal values only"),
        ('properties["a"] in [1 2]', "expected ',' or ']' in a list"),
        ('properties["a"] == 1e999', "1e999 is not a finite number"),
        ('properties["a"] == "\\q"', "unknown escape \\\\q"),
        ('properties["a"] == "\\u12"', "unknown escape \\\\u"),
        ('properties["a"] = 1', "unexpected character '=' at position 16"),
    ],
)
def test_bad_expressions(text: str, message: str) -> None:
    with pytest.raises(WhereError, match=message):
        parse_where(text)


def test_too_long() -> None:
    text = 'properties["a"] == "' + "x" * MAX_LENGTH + '"'
    with pytest.raises(WhereError, match=f"where is {len(text)} characters; the limit is 10000"):
        parse_where(text)


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_DEPTH + 1) + 'properties["a"] == 1' + ")" * (MAX_DEPTH + 1),
        "not " * (MAX_DEPTH + 1) + 'properties["a"] == 1',
        "not (" * (MAX_DEPTH // 2 + 1) + 'properties["a"] == 1' + ")" * (MAX_DEPTH // 2 + 1),
        # far past the limit: refused, not a RecursionError
        "(" * 3000 + 'properties["a"] == 1' + ")" * 3000,
        "not " * 2400 + 'properties["a"] == 1',
    ],
    ids=["parens", "nots", "mixed", "parens-3000", "nots-2400"],
)
def test_too_deep(text: str) -> None:
    with pytest.raises(WhereError, match="nested more than 50 levels deep"):
        parse_where(text)


def test_list_too_long() -> None:
    values = ", ".join(["1"] * (MAX_LIST + 1))
    with pytest.raises(WhereError, match="a list holds at most 1000 values"):
        parse_where(f'properties["a"] in [{values}]')


# -- huge numbers: refused or compared, never a crash ---------------------------------------
def _ids_or_where_error(con: duckdb.DuckDBPyConnection, text: str) -> list[int] | None:
    try:
        return matching(con, text)
    except WhereError:
        return None


def test_integer_literal_beyond_double_range(con: duckdb.DuckDBPyConnection) -> None:
    assert _ids_or_where_error(con, 'properties["age"] == 1' + "0" * 400) in ([], None)


def test_integer_literal_beyond_64_bits_in_list_property(con: duckdb.DuckDBPyConnection) -> None:
    assert _ids_or_where_error(con, '18446744073709551616 in properties["nums"]') in ([], None)


@pytest.mark.parametrize(
    "literal", ["18446744073709551616", "-9223372036854775809", "99999999999999999999999"]
)
def test_integer_literal_beyond_64_bits_in_comparisons(
    con: duckdb.DuckDBPyConnection, literal: str
) -> None:
    assert _ids_or_where_error(con, f'properties["age"] == {literal}') in ([], None)
    assert _ids_or_where_error(con, f'properties["age"] in [{literal}, 41]') in ([4], None)


# -- edge cases that once failed ---------------------------------------------------------------
def test_number_in_list_property_compares_as_a_number(con: duckdb.DuckDBPyConnection) -> None:
    # Once compared as JSON text: 7.0 (stored "7.0") was not 7.
    assert matching(con, 'properties["nums"][1] == 7') == [2]
    assert matching(con, '7 in properties["nums"]') == [2]
    assert matching(con, '7.0 in properties["nums"]') == [2]
    assert matching(con, '1.0 in properties["nums"]') == [1]
    assert matching(con, '"7" in properties["nums"]') == []


def test_control_character_in_list_property(con: duckdb.DuckDBPyConnection) -> None:
    # Once compared as JSON text: orjson writes \u001f, DuckDB \u001F.
    assert matching(con, '"ctl\\u001f" in properties["tags"]') == [7]


def test_null_in_list_property(con: duckdb.DuckDBPyConnection) -> None:
    # Once never true: a JSON null element became SQL NULL.
    assert matching(con, 'null in properties["tags"]') == [6]
    assert matching(con, 'null not in properties["tags"]') == [1, 2, 3, 4, 5, 7, 8]


def test_surrogate_pair_escape_is_one_character(con: duckdb.DuckDBPyConnection) -> None:
    # Once two lone surrogates, which DuckDB refused as a parameter.
    assert matching(con, 'properties["emoji"] == "\\ud83d\\ude00"') == [5]
    assert matching(con, '"\\uD83D\\uDE00" in properties["emoji"]') == [5]


def test_lone_surrogate_escape_is_a_where_error() -> None:
    # Once reached DuckDB, which raised InvalidInputException.
    with pytest.raises(WhereError):
        parse_where('properties["emoji"] == "\\ud83d"')
    with pytest.raises(WhereError):
        parse_where('properties["emoji"] == "\\ude00x"')


def test_integer_literal_over_4300_digits(con: duckdb.DuckDBPyConnection) -> None:
    # Once a ValueError from int() (Python's 4300-digit limit).
    assert _ids_or_where_error(con, 'properties["age"] == ' + "1" * 5000) in ([], None)
    assert _ids_or_where_error(con, 'properties["age"] < ' + "1" * 5000) in ([1, 2, 4, 5, 6], None)
