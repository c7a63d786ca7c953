"""The cloud's pure parts: ETags, report merging, the EMQX view, request routing and what is published where."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.documents import (
    emqx_shadow_view,
    etag_matches,
    strong_etag,
)
from cloud.shadow_service import (
    ShadowAddress,
    _Accepted,
    accepted_publications,
    rejected_publications,
    route,
    subscription_topics,
)
from messages.protocol.json import canonical_text
from messages.protocol.patches import apply_patch
from messages.protocol.shadow_document import ShadowError

ETAG = strong_etag(canonical_text({"apps": {}}))


def test_the_etag_is_strong_and_depends_only_on_the_content():
    assert ETAG == strong_etag(canonical_text(json.loads('{ "apps" : {} }')))
    assert ETAG.startswith('"') and not ETAG.startswith('W/') and len(ETAG) == 66
    assert ETAG != strong_etag(canonical_text({"apps": {"1": {}}}))


@pytest.mark.parametrize("header, matches", [
    (ETAG, True), (f"W/{ETAG}", True), (f'"x", {ETAG}', True), ("*", True), ('"x"', False), ("", False),
    (ETAG[1:-1], False),
])
def test_if_none_match(header, matches):
    assert etag_matches(header, ETAG) is matches


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=3),
                           lambda inner: st.dictionaries(st.text(max_size=2), inner, max_size=3), max_leaves=8)
objects = st.dictionaries(st.text(max_size=2), json_values, max_size=4)


@settings(max_examples=150, deadline=None)
@given(objects, objects)
def test_a_report_merge_holds_no_null_and_keeps_what_it_did_not_touch(state, patch):
    state = apply_patch({}, state)  # a stored state never holds a null
    merged = apply_patch(state, patch)
    assert "null" not in json.dumps(merged)
    for key, value in patch.items():
        if value is None:
            assert key not in merged
        elif not (isinstance(value, dict) and isinstance(state.get(key), dict)):
            assert merged[key] == apply_patch({}, {"v": value}).get("v")
    for key in state.keys() - patch.keys():
        assert merged[key] == state[key]
    assert apply_patch(merged, patch) == merged  # applying a report twice changes nothing more


def test_the_emqx_view_is_flat_with_the_delta_and_an_iso_time():
    document = {"state": {"desired": {"t": 24, "mode": "eco"}, "reported": {"t": 21.5, "mode": "eco"}},
                "metadata": {}, "version": 5, "timestamp": 1_780_000_000}
    assert emqx_shadow_view(document) == {"reported": {"t": 21.5, "mode": "eco"}, "desired": {"t": 24, "mode": "eco"},
                                          "delta": {"t": 24}, "version": 5, "updatedAt": "2026-05-28T20:26:40Z"}


def test_request_topics_are_routed_and_bad_names_are_named():
    assert route("$aws/things/t-1/shadow/update") == ("aws", ShadowAddress("t-1"), "update")
    assert route("$aws/things/t-1/shadow/name/$cfg/get") == ("aws", ShadowAddress("t-1", "$cfg"), "get")
    assert route("$emqx/things/t:1/shadow/delete") == ("emqx", ShadowAddress("t:1"), "delete")
    with pytest.raises(ShadowError, match="Thing name"):
        route("$aws/things/t.1/shadow/update")
    with pytest.raises(ShadowError, match="Shadow name"):
        route(f"$aws/things/t/shadow/name/{'s' * 65}/update")
    assert len(subscription_topics()) == 9 and not any("#" in topic for topic in subscription_topics())


def test_changes_go_to_every_profile_that_sees_the_shadow_and_answers_to_the_asker_only():
    classic, named = ShadowAddress("t"), ShadowAddress("t", "n")
    update = _Accepted({"v": 1}, delta={"d": 1}, documents={"docs": 1})
    topics = [topic for topic, _ in accepted_publications(classic, "update", "emqx", update)]
    assert topics == ["$aws/things/t/shadow/update/accepted", "$emqx/things/t/shadow/update/accepted",
                      "$aws/things/t/shadow/update/delta", "$emqx/things/t/shadow/update/delta",
                      "$aws/things/t/shadow/update/documents", "$emqx/things/t/shadow/update/documents"]
    no_delta = _Accepted({"v": 1}, documents={"docs": 1})
    assert [t for t, _ in accepted_publications(named, "update", None, no_delta)] == \
        ["$aws/things/t/shadow/name/n/update/accepted", "$aws/things/t/shadow/name/n/update/documents"]
    assert accepted_publications(classic, "get", "emqx", _Accepted({"g": 1})) == \
        (("$emqx/things/t/shadow/get/accepted", {"g": 1}),)
    assert accepted_publications(classic, "get", None, _Accepted({"g": 1})) == ()  # HTTP: in the response
    assert [t for t, _ in accepted_publications(classic, "delete", None, _Accepted({"v": 2}))] == \
        ["$aws/things/t/shadow/delete/accepted", "$emqx/things/t/shadow/delete/accepted"]
    assert rejected_publications(named, "delete", "aws", {"code": 404}) == \
        (("$aws/things/t/shadow/name/n/delete/rejected", {"code": 404}),)
    assert rejected_publications(classic, "update", None, {"code": 400}) == ()
