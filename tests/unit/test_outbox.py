"""The sender side of the durable outbox (actors.outbox.OutboxSender), against a model of persistence."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.outbox import OutboxSender
from messages.bus.outbox import AckReport, EnqueueReport
from messages.protocol.patches import apply_patch, compose, without_nulls
from store import PendingReport

KEYS = st.sampled_from(["a", "b"])
VALUES = st.none() | st.integers(0, 2) | st.dictionaries(KEYS, st.none() | st.integers(0, 2), max_size=2)
LATEST = st.dictionaries(KEYS, VALUES, max_size=2)


class Persistence:
    """The store's outbox as the persistence actor keeps it: a new patch merges into the newest pending
    report under a new id when one patch can say both, and the oldest pending report is announced."""

    def __init__(self):
        self.entries: list[PendingReport] = []
        self.next_id = 1

    def enqueue(self, patch: dict) -> None:
        merged = compose(self.entries[-1].patch, patch) if self.entries else None
        if merged is not None:
            self.entries.pop()
        self.entries.append(PendingReport(self.next_id, merged if merged is not None else patch))
        self.next_id += 1

    def ack(self, report_id: int) -> None:
        self.entries = [entry for entry in self.entries if entry.report_id != report_id]

    def announce(self, sender: OutboxSender) -> None:
        if self.entries:
            sender.announced(*self.entries[0])


def test_a_report_is_enqueued_sent_and_acknowledged():
    sender = OutboxSender("c", {"a": 1}, None)
    assert sender.report({"a": 1}) is None  # nothing changed
    assert sender.report({"a": 2, "b": None}) == EnqueueReport("c", {"a": 2})
    assert sender.expected == {"a": 2} and sender.acked == {"a": 1}
    assert sender.take() is None  # not announced by persistence yet
    sender.announced(7, {"a": 2})
    assert sender.take() == PendingReport(7, {"a": 2})
    assert sender.take() is None  # one in flight at a time
    assert sender.accepted() == AckReport("c", 7, {"a": 2})
    assert sender.pending is None and sender.in_flight is None
    sender.announced(7, {"a": 2})  # a late announcement of what was answered
    assert sender.pending is None


def test_recovered_pending_report_is_part_of_what_the_receiver_will_hold():
    sender = OutboxSender("c", {"a": 1}, PendingReport(3, {"b": 2}))
    assert sender.expected == {"a": 1, "b": 2}
    assert sender.report({"b": 2}) is None  # queued already: not said twice
    sender.receiver_holds({"a": 5})  # a read: authoritative, with the pending report still to come
    assert sender.acked == {"a": 5} and sender.expected == {"a": 5, "b": 2}


def test_a_lost_answer_sends_the_same_report_again_and_a_refused_one_is_dropped():
    sender = OutboxSender("c", {}, PendingReport(1, {"a": 1}))
    first = sender.take()
    sender.lost()
    assert sender.take() == first
    assert sender.refused() == AckReport("c", 1, {})  # the receiver holds what it held
    assert sender.pending is None and sender.take() is None


def test_a_newer_announcement_while_one_is_in_flight_waits_for_its_turn():
    sender = OutboxSender("c", {}, PendingReport(1, {"a": 1}))
    sender.take()
    sender.announced(1, {"a": 1})  # the one in flight: nothing new
    sender.announced(2, {"b": 2})
    assert sender.accepted() == AckReport("c", 1, {"a": 1})
    assert sender.take() == PendingReport(2, {"b": 2})


def test_a_receiver_that_lost_everything_gets_a_complete_report():
    sender = OutboxSender("c", {"a": 1}, None)
    sender.receiver_lost()
    assert sender.report({"a": 1}) == EnqueueReport("c", {"a": 1})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(LATEST.map(lambda latest: ("report", latest)),
                          st.sampled_from([("send",), ("accept",), ("lose",)])), max_size=25))
def test_property_whatever_the_order_the_receiver_ends_with_the_latest_state_and_nothing_pending(events):
    persistence, receiver, sender, truth = Persistence(), {}, OutboxSender("c", {}, None), {}
    for event in events:
        if event[0] == "report":
            truth = {**{key: value for key, value in truth.items() if key not in event[1]},
                     **{key: without_nulls(value) for key, value in event[1].items() if value is not None}}
            enqueue = sender.report(event[1])
            if enqueue is not None:
                persistence.enqueue(enqueue.patch)
                persistence.announce(sender)
        elif event[0] == "send":
            sender.take()
        elif event[0] == "accept" and sender.in_flight is not None:
            receiver = apply_patch(receiver, sender.in_flight.patch)
            ack = sender.accepted()
            assert ack.accepted_state == receiver
            persistence.ack(ack.report_id)
            persistence.announce(sender)
        elif event[0] == "lose":
            sender.lost()
    while (report := sender.in_flight or sender.take()) is not None:  # the link comes back for good
        receiver = apply_patch(receiver, report.patch)
        persistence.ack(sender.accepted().report_id)
        persistence.announce(sender)
    assert persistence.entries == []
    assert receiver == sender.acked == sender.expected == truth


def test_a_report_enqueued_but_never_stored_is_said_again_after_a_resync():
    sender = OutboxSender("c", {"a": 0}, None)
    assert sender.report({"a": 1, "b": 2}).patch == {"a": 1, "b": 2}
    assert sender.report({"a": 1, "b": 2}) is None  # counted as said...
    assert sender.resync(None) is None  # ...until the store shows it never arrived
    assert sender.report({"a": 1, "b": 2}).patch == {"a": 1, "b": 2}


def test_a_resync_keeps_what_the_store_holds_pending_and_ignores_what_was_answered():
    sender = OutboxSender("c", {}, None)
    sender.report({"a": 1})
    assert sender.resync(PendingReport(3, {"a": 1})) is None
    assert sender.report({"a": 1}) is None and sender.take() == PendingReport(3, {"a": 1})
    sender.accepted()
    # The store still shows what was answered: its acknowledgement is queued or was lost. Say it again.
    again = sender.resync(PendingReport(3, {"a": 1}))
    assert again == AckReport("c", 3, {"a": 1})
    assert sender.pending is None and sender.expected == {"a": 1}


def test_a_resync_never_takes_back_what_the_receiver_acknowledged_after_the_store_last_heard():
    # Found by the reporter's restart test: the store reopened while the acknowledgement of the report just
    # sent was still on its way, and taking the store's older accepted state made the next report's
    # acknowledgement overwrite the receiver's state without what the first report had said.
    sender = OutboxSender("c", {}, PendingReport(1, {"apps": {"1": "running"}, "v": 1}))
    sender.take()
    sender.accepted()
    again = sender.resync(PendingReport(1, {"apps": {"1": "running"}, "v": 1}))  # the store has not seen the ack
    assert again == AckReport("c", 1, {"apps": {"1": "running"}, "v": 1})
    assert sender.report({"apps": {"1": "running"}, "v": 1}) is None  # nothing new: the receiver holds it
    enqueue = sender.report({"apps": {"1": "running"}, "v": 2})
    assert enqueue is not None and enqueue.patch == {"v": 2}
