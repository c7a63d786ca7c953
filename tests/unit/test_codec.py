"""The message codec: every registered message round-trips; nothing else decodes."""
from __future__ import annotations

import dataclasses
import typing

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import messages
import tests.support.probe_actors  # noqa: F401  (registers the test messages too)
from messages.bus.outbox import EnqueueReport
from messages.bus.shadow import ShadowDocumentSeen
from messages.codec import MessageError, decode, encode, message

json_leaf = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def strategy_for(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        return st.one_of(*(strategy_for(arg) for arg in typing.get_args(hint)))
    if hint is type(None):
        return st.none()
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(-2**63, 2**63 - 1)
    if hint is float:
        return st.floats(allow_nan=False)
    if hint is str:
        return st.text(max_size=20)
    if hint is bytes:
        return st.binary(max_size=20)
    if hint is dict or origin is dict:
        return st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy_for(arg) for arg in args))
    if dataclasses.is_dataclass(hint):
        return instances_of(hint)
    raise AssertionError(f"no strategy for {hint}")


def instances_of(cls):
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)})


ALL_MESSAGES = st.sampled_from(sorted(messages.registered().items())).flatmap(lambda item: instances_of(item[1]))


@settings(max_examples=300)
@given(ALL_MESSAGES)
def test_every_registered_message_round_trips(msg):
    assert decode(encode(msg)) == msg


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_message_error(buf):
    try:
        decode(buf)
    except MessageError:
        pass


@settings(max_examples=300)
@given(ALL_MESSAGES, st.data())
def test_truncated_or_mutated_buffers_raise_only_message_error(msg, data):
    buf = bytearray(encode(msg))
    cut = data.draw(st.integers(0, len(buf) - 1))
    try:
        decode(bytes(buf[:cut]))
    except MessageError:
        pass
    index = data.draw(st.integers(0, len(buf) - 1))
    buf[index] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(buf))
    except MessageError:
        pass


def test_unknown_tag_missing_extra_and_wrong_types_are_named():
    def raw(tag, version, body):
        return msgpack.packb([tag, version, body], use_bin_type=True)

    with pytest.raises(MessageError, match="unknown message type 'Nope'"):
        decode(raw("Nope", 1, {}))
    with pytest.raises(MessageError, match=r"Ping: missing field\(s\) \['sent_at'\]"):
        decode(raw("Ping", 1, {"seq": 1}))
    with pytest.raises(MessageError, match=r"unexpected field\(s\) \['extra'\]"):
        decode(raw("Ping", 1, {"seq": 1, "sent_at": 0.0, "extra": 1}))
    with pytest.raises(MessageError, match="Ping.seq: expected int, got bool"):
        decode(raw("Ping", 1, {"seq": True, "sent_at": 0.0}))
    with pytest.raises(MessageError, match="schema version 2"):
        decode(raw("Ping", 2, {"seq": 1, "sent_at": 0.0}))
    with pytest.raises(MessageError, match="header"):
        decode(msgpack.packb({"Ping": 1}))
    with pytest.raises(MessageError, match="expected bytes"):
        decode("not bytes")
    with pytest.raises(MessageError, match="exceeds the limit"):
        decode(b"\x00" * (messages.codec.MAX_MESSAGE_BYTES + 1))


def test_only_registered_frozen_dataclasses_encode_or_register():
    @dataclasses.dataclass(frozen=True)
    class Stranger:
        x: int

    with pytest.raises(MessageError, match="not a registered message"):
        encode(Stranger(1))
    with pytest.raises(TypeError, match="frozen"):
        message(dataclasses.dataclass(type("Mutable", (), {"__annotations__": {"x": int}})))
    with pytest.raises(TypeError, match="not supported"):
        message(dataclasses.dataclass(frozen=True)(type("Sets", (), {"__annotations__": {"x": set}})))


# -- encode checks what decode checks: a sender gets MessageError, never OverflowError/UnicodeEncodeError ------


@pytest.mark.parametrize("msg", [
    ShadowDocumentSeen("t", "", {"state": {"desired": {"level": 2**64}}}, 1),  # issue 14: msgpack OverflowError
    ShadowDocumentSeen("t", "", {"state": {"desired": {"level": 2**63}}}, 1),  # msgpack packs it; SQLite cannot
    ShadowDocumentSeen("t", "", {}, 2**64),  # a version beyond 64 bits
    ShadowDocumentSeen("t", "", {"state": {"desired": {"s": "\ud800"}}}, 1),  # UnicodeEncodeError
    ShadowDocumentSeen("t\ud800", "", {}, 1),
    EnqueueReport("c", {"x": float("inf")}),  # 1e999: JSON cannot spell it
    EnqueueReport("c", {"x": {1, 2}}),  # a set is no JSON value
    ShadowDocumentSeen("t", "", {}, "1"),  # type: ignore[arg-type]  # a field of the wrong type
])
def test_encode_refuses_what_decode_would_refuse_with_message_error(msg):
    with pytest.raises(MessageError):
        encode(msg)


hostile_leaf = (st.integers() | st.floats() | st.text() | st.binary(max_size=4) | st.none() | st.booleans()
                | st.frozensets(st.integers(), max_size=2))
hostile_json = st.recursive(hostile_leaf, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3), max_leaves=8)


@settings(max_examples=300)
@given(st.text(max_size=4), st.text(max_size=4), hostile_json, st.integers())
def test_property_encode_raises_only_message_error_and_what_it_encodes_decodes(thing, name, document, version):
    msg = ShadowDocumentSeen(thing, name, {"state": document}, version)
    try:
        buf = encode(msg)
    except MessageError:
        return
    assert decode(buf) == msg
