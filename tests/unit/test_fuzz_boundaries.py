"""Hypothesis against every parser at a boundary: nothing but the declared error comes out, and whatever is
accepted can be carried on (issue 14: of 2,656 fuzzed listener effects, 600 crashed the listener).

Hostile values on purpose: integers of any size, floats including inf and nan, strings with lone surrogates,
as JSON text (json.dumps spells them 1e999-like, Infinity, "\\ud800"), and raw bytes."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conf
import messages
from actors.shadow.app_config import ConfigFileRefused, read_config
from actors.shadow.payloads import Document, PayloadError, parse_emqx_view, parse_payload
from actors.shadow.sync import Publish, Recovered, ShadowSync
from messages.bus.shadow import ShadowDeltaApplied, ShadowDeltaUpdated
from messages.protocol import json as strict_json
from messages.protocol.target_state import InvalidTargetState, parse_target_state
from tests.unit.test_shadow_sync import SETTINGS

hostile_leaf = (st.integers() | st.integers(2**63 - 2, 2**64 + 2) | st.floats() | st.text(max_size=6)
                | st.sampled_from(["\ud800", "a\udfffb", "\x00"]) | st.booleans() | st.none())
hostile = st.recursive(hostile_leaf, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=10)
OPERATIONS = ["update/delta", "get/accepted", "get/rejected", "update/accepted", "update/rejected"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def as_payload(value) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: a lone surrogate goes out as its escape


def shadow_bodies():
    state = st.fixed_dictionaries({}, optional={"desired": hostile, "reported": hostile, "delta": hostile})
    return st.fixed_dictionaries({}, optional={
        "state": state | hostile, "version": st.integers(-2, 2**64 + 2) | hostile, "clientToken": st.just("t-1"),
        "code": st.integers(300, 700), "message": hostile})


def carried(effects) -> None:
    """Every effect crosses its next boundary: JSON to the broker, the codec to the bus."""
    for effect in effects:
        if isinstance(effect, Publish):
            strict_json.encode(effect.payload)
        elif hasattr(effect, "__dataclass_fields__") and type(effect).__name__ in messages.registered():
            messages.decode(messages.encode(effect))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(OPERATIONS), shadow_bodies()), max_size=6))
def test_property_whatever_the_broker_delivers_every_listener_effect_can_be_carried(deliveries):
    sync = ShadowSync("dev", "", SETTINGS, ("app",), "t-", Recovered())
    carried(sync.link_up(0.0))
    for now, (operation, body) in enumerate(deliveries, start=1):
        try:
            incoming = parse_payload(operation, as_payload(body), SETTINGS.limits)
        except PayloadError:
            carried(sync.receive_malformed(1, "bad", float(now)))
            continue
        effects = sync.receive(incoming, float(now))
        carried(effects)
        for delta in [e for e in effects if isinstance(e, ShadowDeltaUpdated)]:  # the handler answers with it
            carried(sync.on_applied(ShadowDeltaApplied("app", "dev", "", delta.version, delta.delta, {}), now + 0.5))
        carried(sync.tick(now + 0.9))


@FUZZ
@given(hostile, st.text(max_size=8))
def test_property_the_emqx_read_is_a_document_or_a_payload_error(body, token):
    try:
        decoded = strict_json.decode(as_payload(body))
    except strict_json.JSONRefused:
        return
    try:
        document = parse_emqx_view(decoded, token)
    except PayloadError:
        return
    assert isinstance(document, Document)
    strict_json.check_value({"desired": document.desired, "reported": document.reported})


@FUZZ
@given(st.binary(max_size=200) | hostile.map(as_payload))
def test_property_the_target_state_parser_raises_only_invalid_target_state(raw):
    try:
        parse_target_state(raw)
    except InvalidTargetState:
        pass


TOML_PIECES = st.sampled_from(["[device]", "[mqtt]", "[actors.x]", "uuid = ", "port = ", "\"a\"", "1e999", "inf",
                               "nan", "99999999999999999999999", "[", "]", "{", "}", "=", "\n", "\x00", "\ufeff",
                               "\"\\ud800\"", "0o777", "true", "class = \"os.system\"", "settings = {x=1}"])


@FUZZ
@given(st.lists(TOML_PIECES, max_size=12).map("".join) | st.binary(max_size=64).map(lambda b: b.decode("latin-1")))
def test_property_a_configuration_file_loads_or_raises_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("conf") / "agent.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        conf.load("agent", str(path))
    except conf.ConfigError:
        pass


@FUZZ
@given(st.binary(max_size=200) | hostile.map(as_payload))
def test_property_an_application_config_file_reads_as_an_object_or_is_refused(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("app") / "app.json"
    path.write_bytes(data)
    try:
        content = read_config(str(path))
    except ConfigFileRefused:
        return
    assert isinstance(content, dict)
    strict_json.check_value(content)


@pytest.mark.parametrize("value", [2**64, 2**63, -(2**63) - 1, float("inf"), float("nan"), "\ud800"])
def test_each_hostile_value_in_a_delta_is_dropped_at_the_broker_boundary(value):
    with pytest.raises(PayloadError):
        parse_payload("update/delta", as_payload({"state": {"level": value}, "version": 1}), SETTINGS.limits)


@pytest.mark.parametrize("raw", [
    b'{"state": {"level": 1e999}, "version": 1}', b'{"state": {}, "version": 18446744073709551616}',
    b'{"state": {"a": 1, "a": 2}, "version": 1}', b'{"state": {"s": "\\ud800"}, "version": 1}'])
def test_each_hostile_spelling_of_a_delta_is_dropped_at_the_broker_boundary(raw):
    with pytest.raises(PayloadError):
        parse_payload("update/delta", raw, SETTINGS.limits)


TOPIC_PIECES = st.sampled_from(["$aws", "$emqx", "things", "shadow", "name", "update", "get", "delete", "accepted",
                                "delta", "+", "#", "", "a" * 200, "x.y", "\x00", "\ud800", "é"])


@FUZZ
@given(st.lists(TOPIC_PIECES, max_size=9).map("/".join) | st.text(max_size=40))
def test_property_a_topic_routes_or_raises_shadow_error(topic):
    from cloud.shadow_algebra import ShadowError
    from cloud.shadow_service import route
    from messages.protocol.shadow_topics import parse_shadow_topic
    parsed = parse_shadow_topic(topic)
    assert parsed is None or len(parsed) == 4
    try:
        route(topic)
    except ShadowError:
        pass


@FUZZ
@given(st.text(st.sampled_from("abcdemqtport.=[]{}\"' 0123456789e+-_\\\ud800"), max_size=30))
def test_property_a_set_override_loads_or_raises_config_error(override):
    try:
        conf.load("agent", None, [override])
    except conf.ConfigError:
        pass


@FUZZ
@given(st.text(max_size=60) | hostile.map(json.dumps))
def test_property_the_store_reads_back_only_strict_json_objects(text):
    from store import StoreValueError
    from store.values import decode_object
    try:
        value = decode_object(text, "document")
    except StoreValueError:
        return
    strict_json.check_value(value)
