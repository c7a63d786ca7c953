"""The supervisor's per-child mailbox: held while down, coalesced, bounded, one per key in flight."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import messages
from actors.runtime.mailbox import Mailbox
from messages.bus.outbox import ClearError, EnqueueReport, RecordError
from messages.bus.runtime import coalesce_key
from messages.bus.shadow import ShadowDeltaUpdated
from messages.bus.target import PollNow


def test_a_newer_message_of_a_key_replaces_the_held_one_and_others_keep_their_order():
    box = Mailbox(limit=10)
    box.hold(("PollNow",), b"poll 1")
    box.hold(None, b"report 1")
    box.hold(("PollNow",), b"poll 2")
    box.hold(None, b"report 2")
    assert box.restart() == [b"report 1", b"poll 2", b"report 2"]
    assert box.superseded == 1 and box.dropped == 0


def test_past_the_limit_the_oldest_is_dropped_and_counted_unless_the_child_keeps_all():
    box, keeper = Mailbox(limit=2), Mailbox(limit=2, keep_all=True)
    for raw in (b"a", b"b", b"c"):
        box.hold(None, raw)
        keeper.hold(None, raw)
    assert box.restart() == [b"b", b"c"] and box.dropped == 1
    assert keeper.restart() == [b"a", b"b", b"c"] and keeper.dropped == 0


def test_one_message_per_key_in_flight_the_newest_waits_for_the_handled_note():
    box = Mailbox(limit=10)
    key = ("PollNow",)
    assert box.offer(key, b"1") == b"1"
    assert box.offer(key, b"2") is None
    assert box.offer(key, b"3") is None
    assert box.offer(None, b"plain") == b"plain"  # a message without a key is never held back
    assert box.handled(key) == b"3" and box.superseded == 1
    assert box.handled(key) is None
    assert box.offer(key, b"4") == b"4"  # nothing in flight any more


def test_what_waited_behind_a_dead_childs_message_is_held_for_its_next_start():
    box = Mailbox(limit=10)
    key = ("CurrentStateObserved",)
    box.offer(key, b"old")
    box.offer(key, b"new")
    box.child_down()
    assert box.restart() == [b"new"]
    assert box.offer(key, b"newer") is None  # the one sent at the restart is in flight


def test_coalescing_keys_say_what_a_newer_message_supersedes():
    assert coalesce_key(PollNow("a")) == coalesce_key(PollNow("b"))
    assert coalesce_key(RecordError("poller", "fetch", "x", 1.0)) == coalesce_key(ClearError("poller", "fetch"))
    assert coalesce_key(RecordError("poller", "fetch", "x", 1.0)) != coalesce_key(ClearError("poller", "other"))
    assert coalesce_key(EnqueueReport("device-state", {"a": 1})) is None  # a report is never superseded
    assert coalesce_key(ShadowDeltaUpdated("t", "", 1, {}, {})) is None  # nor a delta (it holds only what changed)
    for cls in messages.registered().values():  # a declared key names real fields
        for name in getattr(cls, "coalesce", ()):
            assert name in cls.__dataclass_fields__, (cls.__name__, name)


events = st.lists(st.one_of(
    st.tuples(st.just("hold"), st.sampled_from([None, ("a",), ("b",)]), st.integers(0, 1000)),
    st.tuples(st.just("offer"), st.sampled_from([None, ("a",), ("b",)]), st.integers(0, 1000)),
    st.tuples(st.just("handled"), st.sampled_from([("a",), ("b",)]), st.just(0)),
    st.tuples(st.just("down"), st.none(), st.just(0)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 5), st.booleans())
def test_nothing_is_lost_but_what_is_superseded_or_counted_as_dropped(script, limit, keep_all):
    """Every message offered or held is, in the end, delivered, superseded or counted as dropped; the hold
    never exceeds its limit unless the child keeps all; at most one per key is in flight."""
    box = Mailbox(limit=limit, keep_all=keep_all)
    given_count = delivered = 0
    for action, key, value in script:
        raw = f"{key}:{value}:{given_count}".encode()
        if action == "hold":
            given_count += 1
            box.hold(key, raw)
        elif action == "offer":
            given_count += 1
            if box.offer(key, raw) is not None:
                delivered += 1
        elif action == "handled":
            if box.handled(key) is not None:
                delivered += 1
        else:
            box.child_down()
        assert keep_all or len(box.held) <= limit
    delivered += len(box.restart())
    assert given_count == delivered + box.superseded + box.dropped
