"""The ``where`` expressions of the export and profile query APIs, compiled to SQL.

A documented subset of Mixpanel's expression language::

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | test
    test     := operand [("==" | "!=" | "<" | ">" | "<=" | ">=") operand]
              | operand ["not"] "in" operand
    operand  := property | literal | list | "defined" "(" property ")" | "(" expr ")"
    property := "properties" ("[" string-or-index "]")+
    literal  := "string" | 'string' | number | true | false | null
    list     := "[" literal ("," literal)* "]"

Semantics, chosen to be unsurprising where Mixpanel's docs are silent:

- A comparison needs a property on one side and a literal on the other. It is true
  only when the property holds a value of the literal's type (a string is never equal
  to a number); a missing property compares false, so ``!=`` on it is true.
- ``== null`` is true when the property is missing or null; ``defined(p)`` is the
  opposite.
- ``p in [a, b]`` is membership in a literal list; ``"x" in p`` is true when the list
  property ``p`` holds ``"x"``, or the string property ``p`` contains ``"x"``.

This module only parses, into a small tree that is the store contract's filter; each
store compiles the tree to its own SQL (storage/duckdb_where.py), where every name and
value the user wrote becomes a bound parameter. Length, depth and list sizes are
bounded here, so no input can exhaust the parser or the compilers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from trackhouse.errors import PayloadError

MAX_LENGTH = 10_000
MAX_DEPTH = 50
MAX_LIST = 1_000

Value = str | int | float | bool | None

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


class WhereError(PayloadError):
    """The expression is not in the supported language; the message says where."""


# ---- the tree (the store contract's filter) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """``properties[path] op value``; op is one of == < > <= >= (!= is Not(==))."""

    path: tuple[str, ...]
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class Member:
    """``properties[path] in [values]``."""

    path: tuple[str, ...]
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Contains:
    """``value in properties[path]``: list membership, or substring of a string."""

    path: tuple[str, ...]
    value: Value


@dataclass(frozen=True, slots=True)
class Defined:
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Not:
    inner: Expr


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


Expr = Compare | Member | Contains | Defined | Not | And | Or


def parse_where(text: str) -> Expr:
    if len(text) > MAX_LENGTH:
        raise WhereError(f"where is {len(text)} characters; the limit is {MAX_LENGTH}")
    if not text.strip():
        raise WhereError("where is empty")
    parser = _Parser(_tokens(text))
    result = parser.expression(0)
    if parser.peek() is not None:
        raise parser.error("unexpected")
    return result


# ---- parsing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    at: int


@dataclass(frozen=True, slots=True)
class _Property:
    path: tuple[str, ...]

    @property
    def name(self) -> str:
        return "properties" + "".join(f'["{key}"]' for key in self.path)


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Value


@dataclass(frozen=True, slots=True)
class _List:
    values: tuple[Value, ...]


_Operand = _Property | _Literal | _List | Expr


def _tokens(text: str) -> list[_Token]:
    tokens = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise WhereError(f"where: unexpected character {text[at]!r} at position {at}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), at))
        at = match.end()
    return tokens


def _unquote(token: _Token) -> str:
    body = token.text[1:-1]
    out = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = body[i + 1]
        if escape == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            i += 2
        else:
            raise WhereError(f"where: unknown escape \\{escape} in the string at {token.at}")
    text = "".join(out)
    try:
        # \ud83d\ude00 is one character written as a surrogate pair, as in JSON.
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise WhereError(f"where: the string at {token.at} has a lone surrogate escape") from None


def _number(text: str) -> int | float:
    if re.fullmatch(r"-?\d{1,20}", text) and -(2**63) <= (whole := int(text)) < 2**64:
        return whole  # JSON integers stored are 64-bit; larger ones are compared as floats
    number = float(text)  # any length: Python's float() has no digit limit
    if not math.isfinite(number):
        raise WhereError(f"where: {text} is not a finite number")
    return number


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, ahead: int = 0) -> _Token | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def at(self, text: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token is not None and token.text == text and token.kind != "string"

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise WhereError("where: the expression ends too early")
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        if not self.at(text):
            raise self.error(f"expected {text!r} but found")
        self.pos += 1

    def error(self, what: str) -> WhereError:
        token = self.peek()
        if token is None:
            return WhereError("where: the expression ends too early")
        return WhereError(f"where: {what} {token.text!r} at position {token.at}")

    def expression(self, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise WhereError(f"where is nested more than {MAX_DEPTH} levels deep")
        items = [self._and(depth)]
        while self.at("or"):
            self.pos += 1
            items.append(self._and(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self, depth: int) -> Expr:
        items = [self._not(depth)]
        while self.at("and"):
            self.pos += 1
            items.append(self._not(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def _not(self, depth: int) -> Expr:
        if self.at("not"):
            self.pos += 1
            if depth >= MAX_DEPTH:
                raise WhereError(f"where is nested more than {MAX_DEPTH} levels deep")
            return Not(self._not(depth + 1))
        return self._test(depth)

    def _test(self, depth: int) -> Expr:
        left = self._operand(depth)
        token = self.peek()
        if token is not None and token.kind == "op":
            self.pos += 1
            return _compare(left, token.text, self._operand(depth))
        if self.at("in"):
            self.pos += 1
            return _in(left, self._operand(depth))
        if self.at("not") and self.at("in", 1):
            self.pos += 2
            return Not(_in(left, self._operand(depth)))
        if isinstance(left, _Property):
            raise WhereError(
                f"where: {left.name} alone is not a condition; "
                f"compare it with a value or use defined({left.name})"
            )
        if isinstance(left, _Literal | _List):
            raise WhereError("where: a value alone is not a condition")
        return left

    def _operand(self, depth: int) -> _Operand:
        token = self.take()
        if token.kind == "string":
            return _Literal(_unquote(token))
        if token.kind == "number":
            return _Literal(_number(token.text))
        if token.text == "(":
            inner = self.expression(depth + 1)
            self.expect(")")
            return inner
        if token.text == "[":
            return self._list()
        if token.text in ("true", "false"):
            return _Literal(token.text == "true")
        if token.text == "null":
            return _Literal(None)
        if token.text == "properties":
            return self._property()
        if token.text == "defined":
            self.expect("(")
            if not self.at("properties"):
                raise self.error("defined() takes a property, not")
            self.pos += 1
            prop = self._property()
            self.expect(")")
            return Defined(prop.path)
        self.pos -= 1
        raise self.error("unexpected")

    def _property(self) -> _Property:
        if not self.at("["):
            raise self.error('expected properties["name"], found')
        path: list[str] = []
        while self.at("["):
            self.pos += 1
            key = self.take()
            if key.kind == "string":
                path.append(_unquote(key))
            elif key.kind == "number" and key.text.isdigit():
                path.append(key.text)  # a list index
            else:
                self.pos -= 1
                raise self.error("a property name must be a quoted string, not")
            self.expect("]")
        return _Property(tuple(path))

    def _list(self) -> _List:
        values: list[Value] = []
        if self.at("]"):
            self.pos += 1
            return _List(())
        while True:
            token = self.take()
            if token.kind == "string":
                values.append(_unquote(token))
            elif token.kind == "number":
                values.append(_number(token.text))
            elif token.text in ("true", "false", "null"):
                values.append(None if token.text == "null" else token.text == "true")
            else:
                self.pos -= 1
                raise self.error("a list holds literal values only, not")
            if len(values) > MAX_LIST:
                raise WhereError(f"where: a list holds at most {MAX_LIST} values")
            if self.at("]"):
                self.pos += 1
                return _List(tuple(values))
            if not self.at(","):
                raise self.error("expected ',' or ']' in a list, found")
            self.pos += 1


def _compare(left: _Operand, op: str, right: _Operand) -> Expr:
    if isinstance(left, _Literal) and isinstance(right, _Property):
        left, right, op = right, left, _FLIPPED[op]
    if not (isinstance(left, _Property) and isinstance(right, _Literal)):
        raise WhereError(
            f'where: {op} compares a property with a literal value (e.g. properties["plan"] == "pro")'
        )
    value = right.value
    if op == "!=":
        return Not(Compare(left.path, "==", value))
    if op != "==" and (isinstance(value, bool) or value is None):
        shown = "null" if value is None else str(value).lower()
        raise WhereError(f"where: {op} needs a number or a string, not {shown}")
    return Compare(left.path, op, value)


def _in(left: _Operand, right: _Operand) -> Expr:
    if isinstance(left, _Property) and isinstance(right, _List):
        return Member(left.path, right.values)
    if isinstance(left, _Literal) and isinstance(right, _Property):
        return Contains(right.path, left.value)
    raise WhereError('where: use value in properties["list"] or properties["name"] in [values]')
