"""The device-shadow algebra: AWS IoT rules, payloads and topics, with worked examples and properties."""
from __future__ import annotations

import copy
import json
from functools import reduce

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cloud.shadow_algebra import (
    DEFAULT_LIMITS,
    Limits,
    apply_update,
    delete_document,
    error_payload,
    get_accepted,
    internal_failure,
    parse_request,
    shadow_not_found,
    too_many_requests,
)
from messages.protocol.shadow_document import (
    ShadowError,
    changed_fields,
    compute_delta,
    is_stale,
)
from messages.protocol.shadow_topics import (
    OPERATIONS,
    parse_shadow_topic,
    shadow_topics,
    validate_shadow_name,
    validate_thing_name,
)

NOW = 1_700_000_000
ROOMY = Limits(max_state_bytes=30 * 1024)


def update(document, state, now=NOW, limits=DEFAULT_LIMITS, **fields):
    return apply_update(document, {"state": state, **fields}, now, limits)


def rejection(payload: bytes, **kwargs) -> tuple[int, str]:
    with pytest.raises(ShadowError) as caught:
        parse_request(payload, **kwargs)
    return caught.value.code, caught.value.message


def nested(levels: int, leaf) -> dict:
    """A section ``{"1": {"2": ... {"<levels>": leaf}}}``: ``levels`` levels of keys (objects)."""
    return reduce(lambda inner, level: {str(level): inner}, range(levels, 0, -1), leaf)


# --- names -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "Thing-1:b_2", "x" * 128])
def test_valid_thing_names(name):
    assert validate_thing_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 129, "a/b", "a b", "$a", "a#", "é", "٣", "a\n", None, 5])
def test_invalid_thing_names(name):
    with pytest.raises(ShadowError) as caught:
        validate_thing_name(name)
    assert caught.value.code == 400


@pytest.mark.parametrize("name", ["s", "$config", "a:b_c-d", "x" * 64])
def test_valid_shadow_names(name):
    assert validate_shadow_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a/b", "a+b", "a b", None])
def test_invalid_shadow_names(name):
    with pytest.raises(ShadowError):
        validate_shadow_name(name)


# --- errors and limits -------------------------------------------------------------------------------

def test_error_payload_echoes_the_client_token_only_when_given():
    err = ShadowError(409, "Version conflict")
    assert error_payload(err, None, NOW) == {"code": 409, "message": "Version conflict", "timestamp": NOW}
    assert error_payload(err, "tok", NOW)["clientToken"] == "tok"


def test_error_payload_falls_back_to_the_token_the_error_carries():
    err = ShadowError(400, "Invalid version", client_token="carried")
    assert error_payload(err, None, NOW)["clientToken"] == "carried"
    assert error_payload(err, "explicit", NOW)["clientToken"] == "explicit"


def test_service_errors_use_the_aws_codes_and_texts():
    assert (shadow_not_found("lamp").code, shadow_not_found("lamp").message) == (
        404, "No shadow exists with name: 'lamp'")
    assert too_many_requests().code == 429
    assert (internal_failure().code, internal_failure().message) == (500, "Internal service failure")


def test_limits_default_to_the_aws_quotas():
    assert (DEFAULT_LIMITS.max_state_bytes, DEFAULT_LIMITS.max_depth,
            DEFAULT_LIMITS.max_client_token_bytes) == (8192, 6, 64)


@pytest.mark.parametrize("kwargs", [{"max_state_bytes": 30721}, {"max_state_bytes": 0},
                                    {"max_depth": 0}, {"max_payload_bytes": 0}])
def test_limits_refuse_values_aws_does_not_allow(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)


def test_limits_accept_the_30_kib_ceiling():
    assert Limits(max_state_bytes=30720).max_state_bytes == 30720


# --- parse_request -------------------------------------------------------------------------------------

BAD_REQUESTS = [
    (b"{", "Invalid JSON"),
    (b"", "Invalid JSON"),
    (b"[]", "Invalid JSON"),
    (b'"state"', "Invalid JSON"),
    (b'{"state": {"desired": {"a": NaN}}}', "Invalid JSON"),
    (b'{"state": {"desired": {"a": Infinity}}}', "Invalid JSON"),
    (b'{"state": {"desired": {"a": -Infinity}}}', "Invalid JSON"),
    (b'{"state": {"desired": {"a": 1e400}}}', "Invalid JSON: state.desired.a: inf is not a finite number"),
    (b'{"state": {"desired": {"level": 18446744073709551616}}}',  # issue 14: restart-looped the agent
     "Invalid JSON: state.desired.level: an integer outside the signed 64-bit range"),
    (b'{"state": {"reported": {"a": [1, 9223372036854775808]}}}',
     "Invalid JSON: state.reported.a[1]: an integer outside the signed 64-bit range"),
    (b'{"state": {"desired": {"a": ' + b"9" * 5000 + b"}}}", "Invalid JSON"),
    (b'{"state": {"desired": {"a": 1, "a": 2}}}', "Invalid JSON"),
    (b'{"state": {"desired": {"a": "\\ud800"}}}', "Invalid JSON: state.desired.a: a string holds a lone surrogate"),
    (b'\xef\xbb\xbf{"state": {}}', "Invalid JSON"),
    (b"[" * 100_000, "Invalid JSON"),
    (b'{"desired": {"a": 1}}', "Missing required node: state"),
    (b'{"state": 1}', "State node must be an object"),
    (b'{"state": []}', "State node must be an object"),
    (b'{"state": {"desired": 1}}', "Desired node must be an object"),
    (b'{"state": {"desired": [1]}}', "Desired node must be an object"),
    (b'{"state": {"reported": "on"}}', "Reported node must be an object"),
    (b'{"state": {"delta": {"a": 1}}}', "State contains an invalid node"),
    (b'{"state": {"colour": {"a": 1}}}', "State contains an invalid node"),
    (b'{"state": {"desired": {"colors": [null, "RED", "GREEN"]}}}', "State contains an invalid node"),
    (b'{"state": {"reported": {"a": {"b": [[1, null]]}}}}', "State contains an invalid node"),
    (b'{"state": {}, "version": 0}', "Invalid version"),
    (b'{"state": {}, "version": -3}', "Invalid version"),
    (b'{"state": {}, "version": 1.0}', "Invalid version"),
    (b'{"state": {}, "version": "1"}', "Invalid version"),
    (b'{"state": {}, "version": true}', "Invalid version"),
    (b'{"state": {}, "version": null}', "Invalid version"),
    (b'{"state": {}, "version": 9223372036854775808}', "Invalid version"),
    (b'{"state": {}, "clientToken": 5}', "Invalid clientToken"),
    (b'{"state": {}, "clientToken": null}', "Invalid clientToken"),
    (b'{"state": {}, "clientToken": "' + b"x" * 65 + b'"}', "Invalid clientToken"),
    ('{"state": {}, "clientToken": "' + "é" * 33 + '"}', "Invalid clientToken"),  # 66 bytes
]


@pytest.mark.parametrize("payload, message", BAD_REQUESTS)
def test_bad_requests_are_rejected_with_the_aws_message(payload, message):
    if isinstance(payload, str):
        payload = payload.encode()
    assert rejection(payload) == (400, message)


def test_non_utf8_is_an_unsupported_encoding():
    assert rejection(b'{"state": {"desired": {"a": "\xff"}}}') == (
        415, "Unsupported documented encoding; supported encoding is UTF-8")


def test_size_is_checked_before_parsing():
    payload = b'{"state": {"desired": {"a": "' + b"x" * 200 + b'"}}}'
    assert rejection(payload, limits=Limits(max_payload_bytes=100)) == (
        413, "The payload exceeds the maximum size allowed")
    assert rejection(b"{" * 200, limits=Limits(max_payload_bytes=100))[0] == 413


def test_six_levels_within_a_section_are_accepted_and_seven_rejected():
    for section in ("desired", "reported"):
        six = json.dumps({"state": {section: nested(6, "The Beatles")}}).encode()
        assert parse_request(six)["state"][section] == nested(6, "The Beatles")
        seven = json.dumps({"state": {section: nested(7, "The Beatles")}}).encode()
        assert rejection(seven) == (400, "JSON contains too many levels of nesting; maximum is 6")


def test_an_array_counts_as_a_level():
    assert rejection(json.dumps({"state": {"desired": nested(6, [1])}}).encode())[0] == 400
    assert parse_request(json.dumps({"state": {"desired": nested(5, [1])}}).encode())


def test_the_nesting_message_states_the_configured_limit():
    one, two = (json.dumps({"state": {"desired": nested(levels, 1)}}).encode() for levels in (1, 2))
    assert parse_request(one, limits=Limits(max_depth=1))
    assert rejection(two, limits=Limits(max_depth=1)) == (
        400, "JSON contains too many levels of nesting; maximum is 1")


def test_a_valid_update_keeps_only_the_known_fields():
    payload = ('{"state": {"desired": {"color": {"r": 10}, "engine": "ON"}}, "version": 7,'
               ' "clientToken": "' + "é" * 32 + '", "timestamp": 5, "metadata": {}}').encode()
    assert parse_request(payload) == {"state": {"desired": {"color": {"r": 10}, "engine": "ON"}},
                                      "version": 7, "clientToken": "é" * 32}


def test_state_null_clears_both_sections():
    assert parse_request(b'{"state": null}') == {"state": {"desired": None, "reported": None}}


def test_a_readable_client_token_rides_on_later_errors():
    with pytest.raises(ShadowError) as caught:
        parse_request(b'{"clientToken": "abc", "state": {"desired": 1}}')
    assert caught.value.client_token == "abc"
    with pytest.raises(ShadowError) as caught:
        parse_request(b'{"clientToken": 5, "state": {"desired": 1}}')
    assert (caught.value.message, caught.value.client_token) == ("Invalid clientToken", None)


@pytest.mark.parametrize("payload, expected", [
    (b"", {}),
    (b" \n", {}),
    (b"{}", {}),
    (b'{"clientToken": "t"}', {"clientToken": "t"}),
    (b'{"version": 3, "state": 5}', {"version": 3}),
])
def test_get_and_delete_bodies_may_be_empty(payload, expected):
    assert parse_request(payload, require_state=False) == expected


def test_get_and_delete_bodies_are_still_validated():
    assert rejection(b"[1]", require_state=False) == (400, "Invalid JSON")
    assert rejection(b'{"version": 0}', require_state=False) == (400, "Invalid version")


# --- apply_update ----------------------------------------------------------------------------------

def test_first_update_creates_version_1_with_metadata():
    outcome = update(None, {"desired": {"color": {"r": 10}, "engine": "ON"}})
    assert outcome.document == {
        "state": {"desired": {"color": {"r": 10}, "engine": "ON"}},
        "metadata": {"desired": {"color": {"r": {"timestamp": NOW}}, "engine": {"timestamp": NOW}}},
        "version": 1, "timestamp": NOW}


def test_aws_request_and_report_example_converges():
    """The AWS 'interacting with shadows' flow: an app sets desired, the device reports it."""
    requested = update(None, {"desired": {"color": {"r": 10}, "engine": "ON"}})
    assert requested.delta["state"] == {"color": {"r": 10}, "engine": "ON"}
    reported = update(requested.document, {"reported": {"color": {"r": 10}, "engine": "ON"}}, NOW + 5)
    assert reported.delta is None
    assert reported.document["version"] == 2
    assert "delta" not in get_accepted(reported.document, None, NOW + 6)["state"]


def test_merge_is_recursive_for_objects():
    doc = update(None, {"reported": {"lights": {"color": "RED", "level": 3}, "engine": "ON"}}).document
    doc = update(doc, {"reported": {"lights": {"color": "GREEN"}}}, NOW + 1).document
    assert doc["state"]["reported"] == {"lights": {"color": "GREEN", "level": 3}, "engine": "ON"}
    assert doc["metadata"]["reported"] == {
        "lights": {"color": {"timestamp": NOW + 1}, "level": {"timestamp": NOW}},
        "engine": {"timestamp": NOW}}


def test_arrays_replace_whole_with_an_array_of_timestamps():
    """AWS 'Arrays' example: ["RED", "GREEN", "BLUE"] updated with ["RED"] becomes ["RED"]."""
    doc = update(None, {"desired": {"colors": ["RED", "GREEN", "BLUE"]}}).document
    doc = update(doc, {"desired": {"colors": ["RED"]}}, NOW + 1).document
    assert doc["state"]["desired"] == {"colors": ["RED"]}
    assert doc["metadata"]["desired"] == {"colors": [{"timestamp": NOW + 1}]}


def test_metadata_of_an_array_mirrors_its_elements():
    doc = update(None, {"desired": {"ports": [{"host": 80, "tags": ["a"]}, 5], "none": []}}).document
    assert doc["metadata"]["desired"] == {
        "ports": [{"host": {"timestamp": NOW}, "tags": [{"timestamp": NOW}]}, {"timestamp": NOW}],
        "none": []}


def test_a_value_of_another_type_replaces_and_its_metadata_follows():
    doc = update(None, {"desired": {"a": {"b": 1}, "c": 2}}).document
    doc = update(doc, {"desired": {"a": 5, "c": {"d": [1]}}}, NOW + 1).document
    assert doc["state"]["desired"] == {"a": 5, "c": {"d": [1]}}
    assert doc["metadata"]["desired"] == {"a": {"timestamp": NOW + 1}, "c": {"d": [{"timestamp": NOW + 1}]}}


def test_null_deletes_a_key_and_its_metadata():
    doc = update(None, {"desired": {"engine": "ON", "color": "RED"}}).document
    doc = update(doc, {"desired": {"engine": None}}, NOW + 1).document
    assert doc["state"] == {"desired": {"color": "RED"}}
    assert doc["metadata"] == {"desired": {"color": {"timestamp": NOW}}}


def test_objects_and_sections_left_empty_are_pruned():
    doc = update(None, {"desired": {"a": {"b": {"c": 1}}}, "reported": {"x": 1}}).document
    doc = update(doc, {"desired": {"a": {"b": {"c": None}}}}, NOW + 1).document
    assert doc["state"] == {"reported": {"x": 1}}
    assert doc["metadata"] == {"reported": {"x": {"timestamp": NOW}}}


def test_empty_objects_in_a_request_store_nothing():
    doc = update(None, {"desired": {"a": {}, "b": {"c": None}}, "reported": {}}).document
    assert doc["state"] == {} and doc["metadata"] == {}


def test_desired_null_removes_the_section():
    """AWS 'Empty sections' example: report and remove desired in one request."""
    doc = update(None, {"desired": {"color": "red"}}).document
    outcome = update(doc, {"reported": {"color": "red"}, "desired": None}, NOW + 1)
    assert outcome.document["state"] == {"reported": {"color": "red"}}
    assert set(outcome.document["metadata"]) == {"reported"}
    assert outcome.delta is None


def test_state_null_empties_the_shadow_without_deleting_it():
    doc = update(None, {"desired": {"a": 1}, "reported": {"b": 2}}).document
    request = parse_request(b'{"state": null}')
    emptied = apply_update(doc, request, NOW + 1, DEFAULT_LIMITS).document
    assert emptied == {"state": {}, "metadata": {}, "version": 2, "timestamp": NOW + 1}


def test_every_accepted_update_increments_the_version_even_a_no_op():
    doc = update(None, {"reported": {"a": 1}}).document
    same = update(doc, {"reported": {"a": 1}}, NOW + 1).document
    empty = update(same, {}, NOW + 2).document
    assert [doc["version"], same["version"], empty["version"]] == [1, 2, 3]
    assert empty["state"] == doc["state"]


def test_version_conflict_follows_the_aws_optimistic_locking_example():
    doc = {"state": {"desired": {"colors": ["RED", "GREEN", "BLUE"]}},
           "metadata": {"desired": {"colors": [{"timestamp": 1}] * 3}}, "version": 10, "timestamp": 1}
    with pytest.raises(ShadowError) as caught:
        update(doc, {"desired": {"colors": ["BLUE"]}}, version=9, clientToken="426bfd96")
    assert (caught.value.code, caught.value.message, caught.value.client_token) == (
        409, "Version conflict", "426bfd96")
    accepted = update(doc, {"desired": {"colors": ["BLUE"]}}, version=10).document
    assert (accepted["state"], accepted["version"]) == ({"desired": {"colors": ["BLUE"]}}, 11)


def test_a_version_on_a_shadow_that_does_not_exist_conflicts():
    with pytest.raises(ShadowError) as caught:
        update(None, {"desired": {"a": 1}}, version=1)
    assert caught.value.code == 409


def test_a_recreated_shadow_continues_from_the_deleted_version():
    request = {"state": {"desired": {"a": 1}}, "version": 4}
    assert apply_update(None, request, NOW, deleted_version=4).document["version"] == 5


def test_state_over_the_limit_is_rejected_with_413():
    limits = Limits(max_state_bytes=100)
    fits = update(None, {"desired": {"a": "x" * 92}}, limits=limits).document  # {"a":"…"} is 100 bytes
    with pytest.raises(ShadowError) as caught:
        update(fits, {"reported": {"b": 1}}, limits=limits, clientToken="t")
    assert (caught.value.code, caught.value.message, caught.value.client_token) == (
        413, "The payload exceeds the maximum size allowed", "t")


def test_metadata_does_not_count_toward_the_size():
    limits = Limits(max_state_bytes=1000)
    many = {f"k{i}": i for i in range(60)}  # metadata is far larger than the state here
    assert update(None, {"desired": many}, limits=limits).document["state"]["desired"] == many


def test_update_accepted_echoes_only_the_request_with_its_metadata():
    doc = update(None, {"desired": {"a": 1, "b": {"c": 2}}}).document
    outcome = update(doc, {"desired": {"b": {"c": None}, "d": [1, 2]}}, NOW + 1, clientToken="tok")
    assert outcome.accepted == {
        "state": {"desired": {"b": {"c": None}, "d": [1, 2]}},
        "metadata": {"desired": {"b": {"c": {"timestamp": NOW + 1}},
                                 "d": [{"timestamp": NOW + 1}, {"timestamp": NOW + 1}]}},
        "version": 2, "timestamp": NOW + 1, "clientToken": "tok"}


def test_no_client_token_field_without_a_client_token():
    outcome = update(None, {"desired": {"a": 1}})
    assert all("clientToken" not in payload
               for payload in (outcome.accepted, outcome.delta, outcome.documents))


def test_update_delta_carries_desired_metadata_of_its_leaves_and_the_causing_token():
    doc = update(None, {"desired": {"temp": 20, "mode": {"fan": "on", "heat": "off"}}}).document
    outcome = update(doc, {"reported": {"temp": 18, "mode": {"fan": "on"}}}, NOW + 9, clientToken="dev")
    assert outcome.delta == {
        "state": {"temp": 20, "mode": {"heat": "off"}},
        "metadata": {"temp": {"timestamp": NOW}, "mode": {"heat": {"timestamp": NOW}}},
        "version": 2, "timestamp": NOW + 9, "clientToken": "dev"}


def test_update_documents_carries_previous_and_current():
    doc = update(None, {"reported": {"a": 1}}).document
    outcome = update(doc, {"reported": {"a": 2}}, NOW + 1, clientToken="c")
    assert outcome.documents == {
        "previous": {"state": {"reported": {"a": 1}}, "metadata": {"reported": {"a": {"timestamp": NOW}}},
                     "version": 1},
        "current": {"state": {"reported": {"a": 2}}, "metadata": {"reported": {"a": {"timestamp": NOW + 1}}},
                    "version": 2},
        "timestamp": NOW + 1, "clientToken": "c"}


def test_update_documents_of_a_new_shadow_has_an_empty_previous():
    assert update(None, {"reported": {"a": 1}}).documents["previous"] == {"state": {}, "metadata": {}}


def test_apply_update_does_not_touch_its_inputs():
    doc = update(None, {"desired": {"a": {"b": [1]}}, "reported": {"a": {"b": [2]}}}).document
    request = {"state": {"desired": {"a": {"b": None, "c": [3]}}}, "clientToken": "t"}
    before = copy.deepcopy((doc, request))
    outcome = apply_update(doc, request, NOW + 1)
    outcome.accepted["state"]["desired"]["a"]["c"].append(4)
    assert (doc, request) == before
    assert outcome.document["state"]["desired"]["a"]["c"] == [3]


# --- compute_delta -------------------------------------------------------------------------------

def test_delta_keeps_the_full_path_to_each_differing_leaf():
    desired = {"lights": {"color": {"r": 255, "g": 255, "b": 255}}}
    reported = {"lights": {"color": {"r": 255, "g": 0, "b": 255}}}
    assert compute_delta(desired, reported) == {"lights": {"color": {"g": 255}}}


def test_delta_example_from_the_aws_shadow_docs():
    desired = {"color": "RED", "state": "STOP"}
    reported = {"color": "GREEN", "engine": "ON"}
    assert compute_delta(desired, reported) == {"color": "RED", "state": "STOP"}


@pytest.mark.parametrize("desired, reported, delta", [
    ({"a": 1}, {"a": 1.0}, {}),
    ({"a": True}, {"a": 1}, {"a": True}),
    ({"a": 0}, {"a": False}, {"a": 0}),
    ({"a": [1, 2]}, {"a": [1, 2]}, {}),
    ({"a": [1, 2]}, {"a": [1, 2, 3]}, {"a": [1, 2]}),
    ({"a": [{"x": 1}]}, {"a": [{"x": 1.0}]}, {}),
    ({"a": {"b": 1}}, {"a": 5}, {"a": {"b": 1}}),
    ({"a": 5}, {"a": {"b": 1}}, {"a": 5}),
    ({"a": "1"}, {"a": 1}, {"a": "1"}),
    ({}, {"only": "reported"}, {}),
    (None, {"a": 1}, {}),
    ({"a": {"b": 1}}, None, {"a": {"b": 1}}),
])
def test_delta_rules(desired, reported, delta):
    assert compute_delta(desired, reported) == delta


# --- get, delete -----------------------------------------------------------------------------------

def test_get_accepted_is_the_full_document_with_its_delta():
    doc = update(None, {"desired": {"a": 1, "b": 2}}).document
    doc = update(doc, {"reported": {"a": 1, "c": 3}}, NOW + 1).document
    assert get_accepted(doc, "g", NOW + 2) == {
        "state": {"desired": {"a": 1, "b": 2}, "reported": {"a": 1, "c": 3}, "delta": {"b": 2}},
        "metadata": doc["metadata"], "version": 2, "timestamp": NOW + 2, "clientToken": "g"}


def test_get_accepted_of_an_empty_shadow():
    doc = update(None, {}).document
    assert get_accepted(doc, None, NOW) == {"state": {}, "metadata": {}, "version": 1, "timestamp": NOW}


def test_delete_accepted_carries_version_timestamp_and_token():
    doc = update(None, {"reported": {"a": 1}}).document
    assert delete_document(doc, {"clientToken": "d"}, NOW + 1, "lamp") == {
        "version": 1, "timestamp": NOW + 1, "clientToken": "d"}
    assert delete_document(doc, {"version": 1}, NOW + 1, "lamp") == {"version": 1, "timestamp": NOW + 1}


def test_deleting_a_missing_shadow_is_404_naming_it():
    with pytest.raises(ShadowError) as caught:
        delete_document(None, {"clientToken": "d"}, NOW, "lamp")
    assert (caught.value.code, caught.value.message, caught.value.client_token) == (
        404, "No shadow exists with name: 'lamp'", "d")


def test_delete_honours_the_version():
    doc = update(None, {"reported": {"a": 1}}).document
    with pytest.raises(ShadowError) as caught:
        delete_document(doc, {"version": 2}, NOW, "lamp")
    assert caught.value.code == 409


# --- device side -------------------------------------------------------------------------------------

@pytest.mark.parametrize("held, incoming, stale", [(None, 1, False), (5, 4, True), (5, 5, False),
                                                   (5, 6, False)])
def test_only_an_older_version_is_stale(held, incoming, stale):
    assert is_stale(held, incoming) is stale


@pytest.mark.parametrize("previous, actual, changes", [
    ({"a": 1}, {"a": 1}, {}),
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
    ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": 3}}, {"a": {"y": 3}}),
    ({"a": {"x": 1}}, {"a": 7}, {"a": 7}),
    ({"a": 7}, {"a": {"x": 1}}, {"a": {"x": 1}}),
    ({"a": [1, 2]}, {"a": [1]}, {"a": [1]}),
    ({"a": 1}, {"a": 1.0}, {}),
    ({"a": 1}, {"a": True}, {"a": True}),
    (None, {"a": 1}, {"a": 1}),
    ({"a": 1}, {}, {"a": None}),
    ({"a": 1}, {"a": None, "b": {}}, {"a": None}),
])
def test_changed_fields(previous, actual, changes):
    assert changed_fields(previous, actual) == changes


# --- topics ------------------------------------------------------------------------------------------

def test_classic_named_and_emqx_topics():
    assert shadow_topics("aws", "lamp").update_delta == "$aws/things/lamp/shadow/update/delta"
    assert shadow_topics("aws", "lamp", "cfg").get_accepted == "$aws/things/lamp/shadow/name/cfg/get/accepted"
    assert shadow_topics("emqx", "lamp").delete == "$emqx/things/lamp/shadow/delete"


@pytest.mark.parametrize("profile, shadow_name", [("aws", ""), ("aws", "$cfg"), ("emqx", "")])
def test_every_topic_parses_back(profile, shadow_name):
    topics = shadow_topics(profile, "lamp-1", shadow_name)
    for operation in OPERATIONS:
        topic = getattr(topics, operation.replace("/", "_"))
        assert parse_shadow_topic(topic) == (profile, "lamp-1", shadow_name, operation)


def test_topics_refuse_bad_profiles_and_names():
    with pytest.raises(ValueError):
        shadow_topics("azure", "lamp")
    with pytest.raises(ValueError):
        shadow_topics("emqx", "lamp", "cfg")
    with pytest.raises(ShadowError):
        shadow_topics("aws", "a/b")
    with pytest.raises(ShadowError):
        shadow_topics("aws", "lamp", "c+d")


@pytest.mark.parametrize("topic", [
    "$aws/things/lamp/shadow/#", "$aws/things/lamp/shadow/update/", "$aws/things/lamp/shadow/patch",
    "$aws/things/lamp/shadow", "aws/things/lamp/shadow/get", "$aws/things/lamp/jobs/get",
    "$aws/things/a b/shadow/get", "$aws/things/lamp/shadow/name/c+d/get", "$emqx/things/l/shadow/name/c/get",
    "$aws/things/lamp/shadow/name/update", "$aws/things/lamp/shadow/get\n", "",
])
def test_other_topics_are_not_shadow_topics(topic):
    assert parse_shadow_topic(topic) is None


# --- properties ---------------------------------------------------------------------------------------

keys = st.text(alphabet="abc", min_size=1, max_size=2)
scalars = (st.booleans() | st.integers(-3, 3) | st.floats(-2, 2, allow_nan=False, width=16)
           | st.text(alphabet="xy", max_size=2))


def values(null: st.SearchStrategy) -> st.SearchStrategy:
    """JSON values for a state; ``null`` is where an object member may be null (never an array item)."""
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(keys, inner | null, max_size=3), max_leaves=8)


states = st.dictionaries(keys, values(st.nothing()), max_size=4)
patches = st.dictionaries(keys, values(st.none()) | st.none(), max_size=4)
requests = st.fixed_dictionaries({}, optional={section: patches | st.none() for section in ("desired", "reported")})


@st.composite
def documents(draw):
    document = update(None, {"desired": draw(states), "reported": draw(states)}, NOW, ROOMY).document
    for offset, state in enumerate(draw(st.lists(requests, max_size=3)), start=1):
        document = update(document, state, NOW + offset, ROOMY).document
    return document


def leaves(value, path=()):
    """(path, value) of every leaf of nested objects; arrays are leaves."""
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from leaves(child, path + (key,))
    else:
        yield path, value


def at(value, path):
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return KeyError
        value = value[key]
    return value


def mirrors(state, metadata) -> bool:
    if isinstance(state, dict):
        return (isinstance(metadata, dict) and state.keys() == metadata.keys() and len(state) > 0
                and all(mirrors(state[key], metadata[key]) for key in state))
    if isinstance(state, list):
        return isinstance(metadata, list) and len(state) == len(metadata) and all(
            mirrors_value(item, meta) for item, meta in zip(state, metadata, strict=True))
    return (isinstance(metadata, dict) and metadata.keys() == {"timestamp"}
            and isinstance(metadata["timestamp"], int))


def mirrors_value(item, metadata) -> bool:
    """Inside arrays, objects are values: empty ones are kept and mirrored as empty."""
    if isinstance(item, dict):
        return isinstance(metadata, dict) and item.keys() == metadata.keys() and all(
            mirrors_value(item[key], metadata[key]) for key in item)
    return mirrors(item, metadata)


@settings(max_examples=60, deadline=None)
@given(documents())
def test_property_metadata_mirrors_state_and_nothing_empty_is_stored(document):
    assert set(document["state"]) == set(document["metadata"]) <= {"desired", "reported"}
    for section, state in document["state"].items():
        assert mirrors(state, document["metadata"][section])


@settings(max_examples=60, deadline=None)
@given(documents())
def test_property_reporting_desired_empties_the_delta(document):
    desired = document["state"].get("desired")
    assume(desired)
    outcome = update(document, {"reported": desired}, NOW + 10, ROOMY)
    assert outcome.delta is None
    assert "delta" not in get_accepted(outcome.document, None, NOW + 11)["state"]


@settings(max_examples=60, deadline=None)
@given(st.lists(requests, min_size=1, max_size=6))
def test_property_version_strictly_increases(sequence):
    document, versions = None, []
    for state in sequence:
        document = update(document, state, NOW, ROOMY).document
        versions.append(document["version"])
    assert versions == list(range(1, len(sequence) + 1))


@settings(max_examples=60, deadline=None)
@given(documents(), st.data())
def test_property_null_deletes(document, data):
    section = data.draw(st.sampled_from(sorted(document["state"]) or ["desired"]))
    existing = document["state"].get(section, {})
    path = data.draw(st.sampled_from([path for path, _ in leaves(existing) if path] or [("missing",)]))
    result = update(document, {section: reduce(lambda inner, key: {key: inner}, reversed(path), None)},
                    NOW + 10, ROOMY).document
    assert at(result["state"].get(section, {}), path) is KeyError
    assert at(result["metadata"].get(section, {}), path) is KeyError


@settings(max_examples=60, deadline=None)
@given(documents(), keys, st.lists(values(st.nothing()), max_size=4))
def test_property_arrays_replace_whole(document, key, array):
    result = update(document, {"desired": {key: array}}, NOW + 10, ROOMY).document
    assert result["state"]["desired"][key] == array
    assert len(result["metadata"]["desired"][key]) == len(array)


@settings(max_examples=60, deadline=None)
@given(documents())
def test_property_delta_is_exactly_the_differing_desired_leaves(document):
    desired = document["state"].get("desired", {})
    reported = document["state"].get("reported", {})
    delta = compute_delta(desired, reported)
    delta_paths = {path for path, _ in leaves(delta)} if delta else set()
    for path, value in leaves(delta) if delta else ():
        assert at(desired, path) == value  # a desired path, with the desired value
    for path, value in leaves(desired) if desired else ():
        if path not in delta_paths:
            assert at(reported, path) is not KeyError  # in sync: reported holds the same value
            assert compute_delta({"v": value}, {"v": at(reported, path)}) == {}


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.none(), documents()), requests)
def test_property_merge_is_idempotent_apart_from_version(document, state):
    once = update(document, state, NOW + 10, ROOMY)
    twice = update(once.document, state, NOW + 10, ROOMY)
    assert twice.document == {**once.document, "version": once.document["version"] + 1}
    for payload in (once.accepted, once.delta, once.documents, twice.accepted):
        json.dumps(payload, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(states, st.dictionaries(keys, values(st.none()) | st.none(), max_size=4))
def test_property_changed_fields_turn_previous_into_actual(previous, actual):
    document = update(None, {"reported": previous}, NOW, ROOMY).document
    patch = changed_fields(document["state"].get("reported", {}), actual)
    reported = update(document, {"reported": patch}, NOW + 1, ROOMY).document["state"].get("reported", {})
    assert changed_fields(reported, actual) == {}
    assert changed_fields(actual, reported) == {}


hostile_text = st.text(alphabet='{}[]":,0123456789.eE-+ \\nultrfasNIy\u00e9\ud800', max_size=80)
json_values = st.recursive(st.none() | scalars | st.integers() | st.floats(),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["state", "desired", "reported", "delta",
                                                              "version", "clientToken", "a"]) | keys,
                                             inner, max_size=4), max_leaves=20)


def parse_or_reject(payload: bytes, require_state: bool) -> None:
    """Parse, and apply what parses: nothing but a ShadowError may come out."""
    try:
        request = parse_request(payload, require_state=require_state)
        if require_state:
            apply_update(None, request, NOW)
    except ShadowError as err:
        assert err.code in (400, 409, 413, 415)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120) | hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
       st.booleans())
def test_property_parse_request_only_raises_shadow_errors_on_random_bytes(payload, require_state):
    parse_or_reject(payload, require_state)


update_bodies = st.fixed_dictionaries({"state": st.fixed_dictionaries(
    {}, optional={"desired": json_values, "reported": json_values})},
    optional={"version": json_values, "clientToken": json_values})


@settings(max_examples=150, deadline=None)
@given(json_values | update_bodies, st.booleans())
def test_property_parse_request_only_raises_shadow_errors_on_random_json(body, require_state):
    parse_or_reject(json.dumps(body).encode(), require_state)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000), st.sampled_from(['{"a":', "[", '{"a":[']))
def test_property_any_nesting_depth_is_a_shadow_error(depth, opener):
    closer = {'{"a":': "}", "[": "]", '{"a":[': "]}"}[opener]
    payload = '{"state":{"desired":' + opener * depth + "1" + closer * depth + "}}"
    parse_or_reject(payload.encode(), True)
