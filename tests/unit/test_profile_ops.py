"""The pure profile fold: what each /engage and /groups operation does to a profile."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from trackhouse.ingest.profile_ops import apply_update

T = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z
T_TEXT = "2023-11-14T22:13:20"
IGNORE: dict[str, Any] = {"$ignore_time": True}


def fold(profile: dict[str, Any] | None, operation: str, value: Any) -> dict[str, Any] | None:
    """One update that leaves $last_seen alone, so results are exact dicts."""
    return apply_update(profile, operation, value, IGNORE, T)


# -- $set, $set_once ------------------------------------------------------------------
def test_set_overwrites_and_adds() -> None:
    profile = {"a": 1, "b": "x"}
    assert fold(profile, "$set", {"a": 2, "c": [1]}) == {"a": 2, "b": "x", "c": [1]}


def test_set_on_no_profile_creates_one() -> None:
    assert fold(None, "$set", {"a": 1}) == {"a": 1}


def test_set_once_after_set_keeps_existing_and_sets_missing() -> None:
    profile = fold(None, "$set", {"a": 1})
    assert fold(profile, "$set_once", {"a": 9, "b": 2}) == {"a": 1, "b": 2}


# -- $add ------------------------------------------------------------------------------
def test_add_negative_and_float_amounts() -> None:
    after = fold({"n": 10, "f": 1.5}, "$add", {"n": -3, "f": 0.25})
    assert after == {"n": 7, "f": 1.75}
    assert after is not None
    assert type(after["n"]) is int


def test_add_to_a_missing_property_starts_from_zero() -> None:
    assert fold({}, "$add", {"m": 2, "k": -1.5}) == {"m": 2, "k": -1.5}


def test_add_to_a_non_number_leaves_it_and_applies_the_rest() -> None:
    profile = {"s": "x", "b": True, "l": [1], "o": {"x": 1}, "z": None, "n": 1}
    after = fold(profile, "$add", {"s": 1, "b": 1, "l": 1, "o": 1, "z": 1, "n": 1})
    assert after == {"s": "x", "b": True, "l": [1], "o": {"x": 1}, "z": None, "n": 2}


# -- $union ---------------------------------------------------------------------------
def test_union_deduplicates_against_existing_and_within_the_list() -> None:
    after = fold({"l": ["a", "b"]}, "$union", {"l": ["b", "c", "c", "a", "d"]})
    assert after == {"l": ["a", "b", "c", "d"]}


def test_union_creates_a_missing_property() -> None:
    assert fold({}, "$union", {"l": ["x", "x", "y"]}) == {"l": ["x", "y"]}


def test_union_leaves_a_non_list_alone() -> None:
    profile = {"s": "x", "n": 1, "z": None, "o": {"a": 1}}
    after = fold(profile, "$union", {"s": ["y"], "n": [1], "z": [1], "o": [1], "new": [2]})
    assert after == {"s": "x", "n": 1, "z": None, "o": {"a": 1}, "new": [2]}


def test_union_uses_json_equality() -> None:
    after = fold(
        {"l": [1]},
        "$union",
        {"l": [True, "1", 1, {"a": 1, "b": 2}, {"b": 2, "a": 1}, [1, 2], [2, 1], [1, 2]]},
    )
    assert after == {"l": [1, True, "1", {"a": 1, "b": 2}, [1, 2], [2, 1]]}


def test_union_json_equality_inside_nested_values() -> None:
    after = fold({"l": [{"a": [1, {"x": True}]}]}, "$union", {"l": [{"a": [1, {"x": 1}]}]})
    assert after == {"l": [{"a": [1, {"x": True}]}, {"a": [1, {"x": 1}]}]}
    same = fold({"l": [{"a": {"y": 1, "x": 2}}]}, "$union", {"l": [{"a": {"x": 2, "y": 1}}]})
    assert same == {"l": [{"a": {"y": 1, "x": 2}}]}


def test_union_true_does_not_match_one_already_there() -> None:
    assert fold({"l": [True]}, "$union", {"l": [1, "true"]}) == {"l": [True, 1, "true"]}


# -- $append ----------------------------------------------------------------------------
def test_append_to_a_missing_property_makes_a_one_element_list() -> None:
    assert fold({}, "$append", {"l": "x"}) == {"l": ["x"]}


def test_append_to_a_list_adds_one_element_even_a_list() -> None:
    assert fold({"l": [1]}, "$append", {"l": [2, 3]}) == {"l": [1, [2, 3]]}
    assert fold({"l": [1]}, "$append", {"l": 1}) == {"l": [1, 1]}


def test_append_to_a_scalar_leaves_it() -> None:
    profile: dict[str, Any] = {"s": "x", "z": None, "l": []}
    after = fold(profile, "$append", {"s": "y", "z": "y", "l": "y"})
    assert after == {"s": "x", "z": None, "l": ["y"]}


# -- $remove, $unset, $delete -------------------------------------------------------------
def test_remove_takes_out_every_equal_occurrence() -> None:
    profile = {"l": [1, "1", True, 1, {"a": 1, "b": 2}, 1]}
    assert fold(profile, "$remove", {"l": 1}) == {"l": ["1", True, {"a": 1, "b": 2}]}
    assert fold(profile, "$remove", {"l": {"b": 2, "a": 1}}) == {"l": [1, "1", True, 1, 1]}


def test_remove_ignores_missing_and_non_list_properties() -> None:
    profile = {"s": "xyz", "n": 1, "z": None}
    assert fold(profile, "$remove", {"s": "x", "n": 1, "z": None, "missing": 1}) == profile


def test_unset_removes_named_properties_and_ignores_missing_ones() -> None:
    assert fold({"a": 1, "b": 2, "c": 3}, "$unset", ["a", "c", "missing"]) == {"b": 2}


def test_unset_or_remove_on_no_profile_creates_none() -> None:
    assert apply_update(None, "$unset", ["a"], {}, T) is None
    assert apply_update(None, "$remove", {"l": 1}, {}, T) is None


def test_delete_returns_none() -> None:
    assert apply_update({"a": 1}, "$delete", None, {}, T) is None
    assert apply_update(None, "$delete", None, {}, T) is None


def test_delete_then_set_makes_a_fresh_profile() -> None:
    gone = apply_update({"a": 1, "$last_seen": "2020-01-01T00:00:00"}, "$delete", None, {}, T)
    assert apply_update(gone, "$set", {"b": 2}, {}, T) == {"b": 2, "$last_seen": T_TEXT}
    assert fold(gone, "$set", {"b": 2}) == {"b": 2}


# -- $last_seen ---------------------------------------------------------------------------
def test_last_seen_is_the_utc_second_of_the_update() -> None:
    assert apply_update({}, "$set", {"a": 1}, {}, T) == {"a": 1, "$last_seen": T_TEXT}
    # milliseconds are dropped, not rounded
    after = apply_update({}, "$set", {}, {}, 1_700_000_000_999)
    assert after == {"$last_seen": T_TEXT}
    assert apply_update({}, "$set", {}, {}, 0) == {"$last_seen": "1970-01-01T00:00:00"}


@pytest.mark.parametrize(
    ("operation", "value"),
    [
        ("$set", {"a": 1}),
        ("$set_once", {"a": 1}),
        ("$add", {"n": 1}),
        ("$union", {"l": [1]}),
        ("$append", {"l": 1}),
        ("$remove", {"l": 1}),
        ("$unset", ["a"]),
    ],
)
def test_every_operation_moves_last_seen(operation: str, value: Any) -> None:
    after = apply_update({"$last_seen": "2020-01-01T00:00:00"}, operation, value, {}, T)
    assert after is not None
    assert after["$last_seen"] == T_TEXT


@pytest.mark.parametrize("flag", [True, "true", "True", 1])
def test_ignore_time_leaves_last_seen_alone(flag: object) -> None:
    profile = {"$last_seen": "2020-01-01T00:00:00"}
    after = apply_update(profile, "$set", {"a": 1}, {"$ignore_time": flag}, T)
    assert after == {"$last_seen": "2020-01-01T00:00:00", "a": 1}
    assert apply_update({}, "$set", {"a": 1}, {"$ignore_time": flag}, T) == {"a": 1}


@pytest.mark.parametrize("flag", [False, "false", 0, None, "yes"])
def test_ignore_time_false_sets_last_seen(flag: object) -> None:
    after = apply_update({}, "$set", {"a": 1}, {"$ignore_time": flag}, T)
    assert after == {"a": 1, "$last_seen": T_TEXT}


def test_last_seen_never_moves_backwards() -> None:
    later = {"$last_seen": "2030-01-01T00:00:00"}
    assert apply_update(later, "$set", {"a": 1}, {}, T) == {
        "$last_seen": "2030-01-01T00:00:00",
        "a": 1,
    }
    assert apply_update({"$last_seen": T_TEXT}, "$set", {}, {}, T - 1000) == {"$last_seen": T_TEXT}


def test_a_non_text_last_seen_is_replaced() -> None:
    assert apply_update({"$last_seen": 5}, "$set", {}, {}, T) == {"$last_seen": T_TEXT}


# -- purity --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operation", "value"),
    [
        ("$set", {"l": [9], "d": {"y": 2}}),
        ("$set_once", {"new": 1}),
        ("$add", {"n": 1}),
        ("$union", {"l": [2, 3]}),
        ("$append", {"l": 2}),
        ("$remove", {"l": 1}),
        ("$unset", ["n", "l"]),
        ("$delete", None),
    ],
)
def test_the_input_profile_is_not_mutated(operation: str, value: Any) -> None:
    profile: dict[str, Any] = {
        "l": [1, 2],
        "n": 1,
        "d": {"x": [1]},
        "$last_seen": "2020-01-01T00:00:00",
    }
    snapshot = copy.deepcopy(profile)
    value_snapshot = copy.deepcopy(value)
    after = apply_update(profile, operation, value, {}, T)
    assert profile == snapshot
    assert value == value_snapshot
    assert after is not profile
    # Folding again on the result leaves the first result alone too.
    if after is not None:
        first = copy.deepcopy(after)
        apply_update(after, operation, value, {}, T + 5000)
        assert after == first
