"""The shadow listener's shell: an effect that cannot cross its boundary is recorded and skipped, and the
effects after it are still carried out (issue 14: one such effect restart-looped the listener)."""
from __future__ import annotations

import messages
from actors.shadow.listener import ShadowListener
from actors.shadow.sync import Publish, Recovered, ShadowSync
from messages.bus.outbox import EnqueueReport, RecordError
from messages.bus.shadow import ShadowDocumentSeen
from tests.unit.test_shadow_sync import SETTINGS


class Link:
    def __init__(self):
        self.sent = []

    def publish(self, topic, payload: bytes):
        self.sent.append((topic, payload))


def test_an_unencodable_effect_is_recorded_and_skipped_and_the_rest_goes_on():
    listener, published = ShadowListener(), []
    listener.publish = lambda msg: published.append(messages.decode(messages.encode(msg)))  # as the shell does
    listener.link = Link()
    sync = ShadowSync("dev", "", SETTINGS, ("app",), "t-", Recovered())
    listener._carry_out(sync, [
        ShadowDocumentSeen("dev", "", {"state": {"desired": {"level": 2**64}}}, 3),  # msgpack: OverflowError
        Publish("t/update", {"state": {"reported": {"x": float("inf")}}}),  # JSON cannot spell it
        ShadowDocumentSeen("dev", "", {"state": {"desired": {"s": "\ud800"}}}, 3),  # UnicodeEncodeError
        EnqueueReport(sync.channel, {"x": 1}),
        Publish("t/update", {"state": {"reported": {"x": 1}}}),
    ])
    records = [msg for msg in published if isinstance(msg, RecordError)]
    assert [(r.source, r.key) for r in records] == [(sync.channel, "unencodable")] * 3
    assert "ShadowDocumentSeen" in records[0].message and "Publish" in records[1].message
    assert [msg for msg in published if isinstance(msg, EnqueueReport)] == [EnqueueReport(sync.channel, {"x": 1})]
    assert listener.link.sent == [("t/update", b'{"state":{"reported":{"x":1}}}')]
