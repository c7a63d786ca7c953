"""Authenticated frames: only a body MACed under the run's key is unpickled; length prefixes are bounded."""
from __future__ import annotations

import os
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.runtime import frames
from actors.runtime.frames import (
    MAC_BYTES,
    MAX_FRAME_BYTES,
    MAX_PREFIX_DIGITS,
    BoundedReceiveBuffer,
    FrameCodec,
    FrameRejected,
    announced_size,
)
from tests.support.intruder import Marker

KEY = bytes(range(32))
values = st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
                      lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=20)


def frame(body: bytes) -> bytes:
    return b"%d>" % len(body) + body


@given(values)
def test_what_the_run_sends_it_reads_back(value):
    codec = FrameCodec(KEY)
    assert codec.loads(codec.dumps(value)) == value


@given(values, st.data())
def test_any_changed_byte_is_refused(value, data):
    body = bytearray(FrameCodec(KEY).dumps(value))
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FrameRejected):
        FrameCodec(KEY).loads(bytes(body))


@given(values, st.binary(min_size=32, max_size=32).filter(lambda key: key != KEY))
def test_another_runs_frame_is_refused(value, other_key):
    with pytest.raises(FrameRejected):
        FrameCodec(KEY).loads(FrameCodec(other_key).dumps(value))


def test_a_bare_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    for payload in (pickle.dumps(Marker(str(marker))), b"\0" * MAC_BYTES + pickle.dumps(Marker(str(marker))), b""):
        with pytest.raises(FrameRejected):
            FrameCodec(KEY).loads(payload)
    assert not marker.exists()


@given(st.integers(MAC_BYTES + 1, MAX_FRAME_BYTES), st.binary(max_size=8))
def test_a_sound_prefix_announces_its_size(size, rest):
    assert announced_size(b"%d>" % size + rest) == size


@given(st.integers(0, 10 ** MAX_PREFIX_DIGITS - 1))
def test_digits_without_the_mark_wait_for_more(size):
    assert announced_size(str(size).encode()) is None


@pytest.mark.parametrize("prefix", [
    b"9" * (MAX_PREFIX_DIGITS + 1),  # thespian buffers these without end
    b"99999999999999999999>",  # twenty digits: accepted by thespian
    b"%d>" % (MAX_FRAME_BYTES + 1),
    b"%d>" % MAC_BYTES,  # too short to hold a MAC and a body
    b">", b"+5>", b" 50>", b"1_000>", b"-1>", b"\xd9\xa5>", b"abc",
])
def test_a_bad_prefix_is_refused_before_anything_is_buffered(prefix):
    with pytest.raises(FrameRejected):
        announced_size(prefix)
    with pytest.raises(FrameRejected):
        BoundedReceiveBuffer(FrameCodec(KEY).loads).addMore(prefix)


def test_the_buffer_reads_a_good_frame_even_byte_by_byte():
    codec = FrameCodec(KEY)
    buffer = BoundedReceiveBuffer(codec.loads)
    for byte in frame(codec.dumps(("address", b"message"))):
        buffer.addMore(bytes([byte]))
    assert buffer.isDone() and buffer.completed() == (("address", b"message"), b"")


def test_a_complete_frame_with_a_bad_mac_is_dropped_and_counted(tmp_path):
    marker = tmp_path / "marker"
    buffer = BoundedReceiveBuffer(FrameCodec(KEY).loads)
    before = frames.rejected_count()
    buffer.addMore(frame(os.urandom(MAC_BYTES) + pickle.dumps(Marker(str(marker)))))
    assert buffer.isDone() and buffer.completed() is None
    assert frames.rejected_count() == before + 1
    assert not marker.exists()


@given(st.binary(max_size=300), st.lists(st.integers(1, 64), max_size=20))
def test_bytes_from_anyone_else_never_reach_pickle(data, cuts):
    unpickled = []
    codec = FrameCodec(KEY)
    original, frames.pickle.loads = frames.pickle.loads, lambda body: unpickled.append(body)
    try:
        buffer = BoundedReceiveBuffer(codec.loads)
        chunks = [data[sum(cuts[:i]):sum(cuts[:i + 1])] for i in range(len(cuts))] + [data[sum(cuts):]]
        try:
            for chunk in filter(None, chunks):
                if buffer.isDone():
                    break
                buffer.addMore(chunk)
            buffer.completed()
        except FrameRejected:
            pass
    finally:
        frames.pickle.loads = original
    assert unpickled == []


@given(values, st.lists(st.integers(1, 64), min_size=1, max_size=30))
def test_a_frame_of_the_run_arrives_whole_however_it_is_cut(value, cuts):
    codec = FrameCodec(KEY)
    data = frame(codec.dumps(value))
    buffer, at, turn = BoundedReceiveBuffer(codec.loads), 0, 0
    while not buffer.isDone():  # as the transport reads: never more than the buffer asks for
        size = min(cuts[turn % len(cuts)], buffer.remainingAmount())
        buffer.addMore(data[at:at + size])
        at, turn = at + size, turn + 1
    assert buffer.completed() == (value, b"") and at == len(data)
