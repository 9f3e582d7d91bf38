"""Raw /engage and /groups updates → normalized profile updates, or rejections (spec §5).

Pure, like validate.py. An update names its profile (``$distinct_id``, or
``$group_key`` + ``$group_id``), carries exactly one operation, and may carry modifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from trackhouse.ingest.validate import (
    MAX_COLLECTION,
    MAX_STRING,
    MIN_TIME_MS,
    Invalid,
    Rejection,
    TokenResolver,
    clean_object,
    has_surrogates,
    parse_time_ms,
    project_for_token,
)

OPERATIONS = ("$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete")
# The modifiers that change what an update does; they are kept with it. $ip,
# $latitude and $longitude only feed geolocation, which trackhouse does not do, so they
# are dropped rather than stored (an address is personal data); so are the SDKs' other
# top-level keys ($device_id, $user_id ...).
KEPT_MODIFIERS = ("$time", "$ignore_time", "$ignore_alias")


class ProfileUpdate(NamedTuple):
    project_id: int
    kind: str  # "user" | "group"
    distinct_id: str | None
    group_key: str | None
    group_id: str | None
    operation: str
    value_json: str
    modifiers_json: str  # the KEPT_MODIFIERS the update carried
    time_ms: int


@dataclass(slots=True)
class ProfileOutcome:
    updates: list[ProfileUpdate]
    rejections: list[Rejection]


def validate_updates(
    raw_updates: list[Any],
    *,
    group: bool,
    received_ms: int,
    resolve_token: TokenResolver,
    max_update_bytes: int,
) -> ProfileOutcome:
    outcome = ProfileOutcome([], [])
    for index, raw in enumerate(raw_updates):
        try:
            update = _normalize(raw, group, received_ms, resolve_token)
            size = len(update.value_json.encode()) + len(update.modifiers_json.encode())
            if size >= max_update_bytes:
                raise Invalid(
                    "update", f"update is {size} bytes of JSON; the limit is {max_update_bytes}"
                )
            outcome.updates.append(update)
        except Invalid as bad:
            outcome.rejections.append(Rejection(index, None, bad.field, bad.message))
    return outcome


def _identity(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Invalid(key, f"{key}, missing or empty")
    text = value if isinstance(value, str) else str(value)
    if not text:
        raise Invalid(key, f"{key}, missing or empty")
    if has_surrogates(text):
        raise Invalid(key, f"{key} is not valid UTF-8")
    return text[:MAX_STRING]


def _normalize(
    raw: Any, group: bool, received_ms: int, resolve_token: TokenResolver
) -> ProfileUpdate:
    if not isinstance(raw, dict):
        raise Invalid("update", "each update must be a JSON object")
    project_id = project_for_token(raw.get("$token"), "$token", "$token", resolve_token)
    if group:
        distinct_id = None
        group_key: str | None = _identity(raw, "$group_key")
        group_id: str | None = _identity(raw, "$group_id")
    else:
        distinct_id = _identity(raw, "$distinct_id")
        group_key = group_id = None
    operations = [op for op in OPERATIONS if op in raw]
    if len(operations) != 1:
        found = ", ".join(operations) or "none"
        raise Invalid(
            "operation", f"an update needs exactly one of {', '.join(OPERATIONS)} (found: {found})"
        )
    operation = operations[0]
    value = _checked_value(operation, raw[operation])
    time_ms = received_ms
    if "$time" in raw:
        parsed = parse_time_ms(raw["$time"])
        if parsed is None:
            raise Invalid("$time", "$time must be seconds or milliseconds since the epoch")
        if parsed < MIN_TIME_MS:
            raise Invalid("$time", "$time is before 1971-01-01")
        time_ms = min(parsed, received_ms)
    modifiers = clean_object({k: raw[k] for k in KEPT_MODIFIERS if k in raw}, 0, "update")
    try:
        value_json = orjson.dumps(value).decode()
        modifiers_json = orjson.dumps(modifiers).decode()
    except TypeError:
        raise Invalid(operation, "string is not valid UTF-8") from None
    return ProfileUpdate(
        project_id,
        "group" if group else "user",
        distinct_id,
        group_key,
        group_id,
        operation,
        value_json,
        modifiers_json,
        time_ms,
    )


def _checked_value(operation: str, value: Any) -> Any:
    """The operation's value, within §6's limits (long strings truncated), or Invalid."""
    if operation == "$delete":
        return None  # the SDKs send "" or null; the value means nothing
    if operation == "$unset":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid(operation, "$unset takes a list of property names")
        if len(value) >= MAX_COLLECTION:
            raise Invalid(operation, f"$unset names fewer than {MAX_COLLECTION} properties")
        return [name[:MAX_STRING] for name in value]
    if not isinstance(value, dict):
        raise Invalid(operation, f"{operation} takes an object of properties")
    if len(value) >= MAX_COLLECTION:
        raise Invalid(operation, f"{operation} names fewer than {MAX_COLLECTION} properties")
    if operation == "$add":
        for name, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                raise Invalid(f"$add.{name}", "$add takes numbers only")
    if operation == "$union":
        for name, items in value.items():
            if not isinstance(items, list):
                raise Invalid(f"$union.{name}", "$union takes a list for each property")
    return clean_object(value, 0, operation)
