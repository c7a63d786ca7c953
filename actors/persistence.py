"""The persistence actor: the one writer of the agent's store.

On every (re)start it re-announces what is durable (the target state, pending reports) and says it
restarted (StoreReopened), so the senders recompute what they had enqueued from the store: a message lost
in a crash of any actor, this one included, costs a repeat, never data.
"""
from __future__ import annotations

import time

from actors.runtime.base import FleetletActor
from messages.bus.outbox import (
    AckReport,
    ClearError,
    EnqueueReport,
    RecordError,
    ReportQueued,
    StoreReopened,
)
from messages.bus.shadow import ShadowDocumentSeen
from messages.bus.target import (
    RestartServices,
    RestartsRecorded,
    ServicesRestarted,
    TargetRejectionStored,
    TargetStateFetched,
    TargetStateRejected,
    TargetStateStored,
)
from store import Store


class Persistence(FleetletActor):
    uses = ("store",)
    store: Store  # set in started(); stopping() may come before it

    def started(self) -> None:
        section = self.config["store"]
        self.store = Store.open(section["path"], synchronous=section["synchronous"])
        target = self.store.load_target()
        if target is not None:
            self.publish(TargetStateStored(target.etag, target.received_at, target.seq))
        for channel in self.store.pending_channels():
            self._announce(channel)
        self.publish(StoreReopened())

    def stopping(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    def _announce(self, channel: str) -> None:
        pending = self.store.pending_report(channel)
        if pending is not None:
            self.publish(ReportQueued(channel, pending.report_id, pending.patch))

    def on_TargetStateFetched(self, msg: TargetStateFetched) -> None:
        seq = self.store.save_target(msg.document, msg.etag, msg.fetched_at)
        self.store.clear_error("target", "rejected")
        self.publish(TargetStateStored(msg.etag, time.time(), seq))

    def on_TargetStateRejected(self, msg: TargetStateRejected) -> None:
        seq = self.store.record_target_rejection(msg.etag, msg.reason, msg.at)
        self.store.record_error("target", "rejected", msg.reason, msg.at)
        self.publish(TargetRejectionStored(msg.etag, msg.reason, msg.at, seq))

    def on_RestartServices(self, msg: RestartServices) -> None:
        self.store.add_restarts(msg.app_id, msg.services, msg.reason)
        self.publish(RestartsRecorded(msg.app_id, msg.services, msg.reason))

    def on_ServicesRestarted(self, msg: ServicesRestarted) -> None:
        self.store.clear_restart(msg.app_id, msg.service_name)

    def on_ShadowDocumentSeen(self, msg: ShadowDocumentSeen) -> None:
        self.store.save_shadow(msg.thing_name, msg.shadow_name, msg.document, msg.version)

    def on_EnqueueReport(self, msg: EnqueueReport) -> None:
        self.store.enqueue_report(msg.channel, msg.patch)
        self._announce(msg.channel)

    def on_AckReport(self, msg: AckReport) -> None:
        self.store.ack_report(msg.channel, msg.report_id)
        self.store.save_accepted(msg.channel, msg.accepted_state)
        self._announce(msg.channel)  # a patch merged while the acked one was in flight

    def on_RecordError(self, msg: RecordError) -> None:
        self.store.record_error(msg.source, msg.key, msg.message, msg.at)

    def on_ClearError(self, msg: ClearError) -> None:
        self.store.clear_error(msg.source, msg.key)
