"""What each /engage and /groups operation does to a profile (spec §5).

Pure: a profile is a dict of properties (or None when there is none), and
:func:`apply_update` returns the next one. Every store folds updates through this one
function, in journal order, so DuckDB and ClickHouse agree on every result.

Where an operation meets a property of the wrong kind, it leaves the property alone,
as Mixpanel does (its SDK docs: "if the property exists and is not list-valued, the
append will be ignored"); the rest of the update still applies.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import orjson

Profile = dict[str, Any]

LAST_SEEN = "$last_seen"
_ONLY_TAKE_AWAY = ("$unset", "$remove")


def apply_update(
    profile: Profile | None, operation: str, value: Any, modifiers: dict[str, Any], time_ms: int
) -> Profile | None:
    """The profile after one update; None means the profile does not exist (deleted)."""
    if operation == "$delete":
        return None
    if profile is None and operation in _ONLY_TAKE_AWAY:
        return None  # nothing to take from: no profile holding only $last_seen
    props: Profile = dict(profile) if profile is not None else {}
    _OPERATIONS[operation](props, value)
    if not _truthy(modifiers.get("$ignore_time")):
        seen = last_seen_text(time_ms)
        current = props.get(LAST_SEEN)
        # An update may carry an older $time than one already applied: "last seen"
        # never moves backwards.
        if not isinstance(current, str) or current < seen:
            props[LAST_SEEN] = seen
    return props


def last_seen_text(time_ms: int) -> str:
    """Mixpanel's format for $last_seen: UTC, to the second, without a zone suffix."""
    moment = dt.datetime.fromtimestamp(time_ms // 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _truthy(flag: Any) -> bool:
    # The SDKs send true; hand-written clients send "true" or 1 as well.
    return flag is True or flag == 1 or (isinstance(flag, str) and flag.lower() == "true")


def _set(props: Profile, value: dict[str, Any]) -> None:
    props.update(value)


def _set_once(props: Profile, value: dict[str, Any]) -> None:
    for name, item in value.items():
        props.setdefault(name, item)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _add(props: Profile, value: dict[str, Any]) -> None:
    for name, amount in value.items():
        current = props.get(name, 0)
        if _is_number(current):
            total = current + amount
            if isinstance(total, int) and not -(2**63) <= total < 2**63:
                total = float(total)  # past 64 bits, a double (as Mixpanel keeps numbers)
            if isinstance(total, float) and not math.isfinite(total):
                continue  # past a double's range: JSON has no infinity; leave it as it was
            props[name] = total


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 and true are different values; key order does not matter."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict | list):
        return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            b, option=orjson.OPT_SORT_KEYS
        )
    return bool(a == b)


def _contains(items: list[Any], value: Any) -> bool:
    return any(_same(item, value) for item in items)


def _union(props: Profile, value: dict[str, list[Any]]) -> None:
    for name, additions in value.items():
        current = props.get(name)
        if current is None and name not in props:
            current = []
        if not isinstance(current, list):
            continue
        merged = list(current)
        for item in additions:
            if not _contains(merged, item):
                merged.append(item)
        props[name] = merged


def _append(props: Profile, value: dict[str, Any]) -> None:
    for name, item in value.items():
        if name not in props:
            props[name] = [item]
        elif isinstance(props[name], list):
            props[name] = [*props[name], item]


def _remove(props: Profile, value: dict[str, Any]) -> None:
    for name, item in value.items():
        current = props.get(name)
        if isinstance(current, list):
            props[name] = [kept for kept in current if not _same(kept, item)]


def _unset(props: Profile, value: list[str]) -> None:
    for name in value:
        props.pop(name, None)


_OPERATIONS: dict[str, Callable[[Profile, Any], None]] = {
    "$set": _set,
    "$set_once": _set_once,
    "$add": _add,
    "$union": _union,
    "$append": _append,
    "$remove": _remove,
    "$unset": _unset,
}
