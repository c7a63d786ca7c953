"""Merge patches (messages.protocol.patches): apply, diff and report_patch, the one contract both senders use."""
from __future__ import annotations

import copy
import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.shadow.sync import as_stored
from messages.protocol.json import json_equal
from messages.protocol.patches import apply_patch, compose, diff, report_patch, without_nulls

KEYS = st.sampled_from(["a", "b", "c"])
LEAVES = st.integers(-2, 2) | st.booleans() | st.text("xy", max_size=1) | st.lists(st.integers(0, 2) | st.none(),
                                                                                    max_size=2)
# What a receiver holds: objects without nulls (empty objects allowed: the cloud's device state keeps them).
STATES = st.recursive(LEAVES, lambda inner: st.dictionaries(KEYS, inner, max_size=3), max_leaves=10).filter(
    lambda value: isinstance(value, dict))
# What a sender has: nulls anywhere in objects mean "not there".
LATEST = st.recursive(LEAVES | st.none(), lambda inner: st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=10).filter(lambda value: isinstance(value, dict))


def end_state(held: dict, latest: dict) -> dict:
    """What report_patch promises the receiver ends with: latest's keys as latest has them, others kept."""
    result = {key: value for key, value in held.items() if key not in latest}
    result.update((key, without_nulls(value)) for key, value in latest.items() if value is not None)
    return result


def test_apply_patch_merges_objects_replaces_the_rest_and_deletes_on_null():
    state = {"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": "keep"}
    patch = {"a": {"x": None, "z": {"n": None, "m": 1}}, "b": [None, 3], "d": {}}
    assert apply_patch(state, patch) == {"a": {"y": [1, 2], "z": {"m": 1}}, "b": [None, 3], "c": "keep", "d": {}}
    assert apply_patch({"a": 5}, {"a": {"b": {"c": None}}}) == {"a": {"b": {}}}


@given(STATES, LATEST)
def test_property_apply_patch_modifies_nothing_and_shares_nothing(state, patch):
    before, patch_before = copy.deepcopy(state), copy.deepcopy(patch)
    result = apply_patch(state, patch)
    assert state == before and patch == patch_before
    for source in (state, patch):
        for value in source.values():
            if isinstance(value, (dict, list)):
                assert all(value is not held for held in result.values())


@settings(max_examples=300)
@given(STATES, LATEST)
def test_property_report_patch_brings_the_receiver_to_latest_for_its_keys_and_leaves_the_rest(held, latest):
    patch = report_patch(held, latest)
    after = apply_patch(held, patch)
    assert json_equal(after, end_state(held, latest))  # not ==, which takes true for 1
    assert report_patch(after, latest) == {}  # nothing is said twice
    assert set(patch) <= set(latest)  # keys latest does not have are never touched


@settings(max_examples=300)
@given(STATES, LATEST)
def test_property_report_patch_is_minimal(held, latest):
    patch = report_patch(held, latest)
    for key in patch:  # each top-level entry is needed: without it the receiver ends elsewhere
        smaller = {k: v for k, v in patch.items() if k != key}
        assert not json_equal(apply_patch(held, smaller), apply_patch(held, patch))
    assert all(value is not None or key in held for key, value in patch.items())  # no delete of nothing


@given(STATES)
def test_property_nothing_changed_is_an_empty_report(held):
    assert report_patch(held, held) == {} and diff(held, held) == {}
    assert report_patch(held, {}) == {}


def test_report_patch_examples():
    assert report_patch({"a": 1}, {"a": 1.0}) == {}  # numbers compare by value
    assert report_patch({"a": 1}, {"a": True}) == {"a": True}  # true is not 1 in JSON
    assert report_patch({"a": [1]}, {"a": [True]}) == {"a": [True]}  # nor inside arrays
    assert report_patch({"a": {"x": 1}}, {"a": {}}) == {"a": {"x": None}}
    assert report_patch({}, {"a": {"x": None}}) == {"a": {}}
    assert report_patch({"a": 1, "b": 2}, {"a": None}) == {"a": None}
    assert report_patch({"b": 2}, {"a": None}) == {}


@settings(max_examples=300)
@given(STATES, LATEST)
def test_property_diff_turns_one_state_into_the_other(held, latest):
    assert json_equal(apply_patch(held, diff(held, latest)), without_nulls(latest))


@settings(max_examples=200)
@given(STATES.map(as_stored).map(lambda state: {k: v for k, v in state.items() if v is not None}),
       st.dictionaries(KEYS, st.none() | LEAVES | st.dictionaries(KEYS, st.none() | LEAVES | st.just({}),
                                                                  max_size=2), max_size=3))
def test_property_a_shadow_answer_as_stored_ends_as_the_shadow_stores_it(held, answer):
    """The shadow side: an empty object or null is absent in a shadow, so the cloud ends without the key."""
    after = apply_patch(held, report_patch(held, as_stored(answer)))
    for key, value in answer.items():
        stored = as_stored({key: value})[key]
        assert after.get(key) == stored  # None: absent


@given(STATES, st.lists(LATEST, max_size=4))
def test_property_reports_composed_in_the_outbox_do_what_they_do_in_turn(held, sequence):
    patches, expected = [], held
    for latest in sequence:
        patch = report_patch(expected, latest)
        expected = apply_patch(expected, patch)
        patches.append(patch)
    combined = functools.reduce(lambda a, b: None if a is None else compose(a, b), patches, {})
    if combined is not None:
        assert apply_patch(held, combined) == expected
    assert functools.reduce(apply_patch, patches, held) == expected
