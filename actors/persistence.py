"""The persistence actor: the one writer of the agent's store.

On every (re)start it re-announces what is durable (the target state, pending reports) and says it
restarted (StoreReopened), so the senders recompute what they had enqueued from the store: a message lost
in a crash of any actor, this one included, costs a repeat, never data.

A write the store refuses never crashes it: content the store cannot hold (StoreValueError: an integer
of 2^63 or more, a non-finite float) and a full disk (StoreFull) are logged and recorded (when the disk
still takes the record) and the message is dropped, so the same message cannot crash it again at every
restart. What depends on the write is not announced: the poller fetches the target again, the listener
sends its document again. A corrupt store still crashes it: that needs an operator.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from actors.runtime.base import FleetletActor
from actors.target.holds import HOLDS_KEY, holds_in_force, update_holds
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
    IMAGE_LEDGER_KEY,
    ORPHANED_VOLUMES_KEY,
    RELEASE_KEY,
    HoldService,
    HoldsRecorded,
    ImageLedgerChanged,
    OrphanedVolumesSeen,
    ReleaseChanged,
    RestartServices,
    RestartsRecorded,
    ServicesRestarted,
    TargetRejectionStored,
    TargetStateFetched,
    TargetStateRejected,
    TargetStateStored,
)
from store import Store, StoreFull, StoreValueError, space


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

    def _store_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.config["store"]["path"]))

    def _announce(self, channel: str) -> None:
        pending = self.store.pending_report(channel)
        if pending is not None:
            self.publish(ReportQueued(channel, pending.report_id, pending.patch))

    def _write(self, what: str, write: Callable[[], object]) -> bool:
        """Run one write; False (recorded) when the store refused the content or the disk is full."""
        try:
            write()
        except (StoreValueError, StoreFull) as exc:
            reason = f"cannot store {what}: {exc}"[:500]
            self.log.error("%s", reason)
            try:
                self.store.record_error("persistence", what, reason, time.time())
            except StoreFull:
                pass  # already logged: a full disk takes no record either
            return False
        return True

    def on_TargetStateFetched(self, msg: TargetStateFetched) -> None:
        seqs: list[int] = []
        # The same check as before a pull: the store grows by about twice the document (the row, the WAL).
        needed = 2 * len(json.dumps(msg.document).encode())
        no_room = space.refusal(needed, space.free_bytes(self._store_dir()), self.config["store"]["disk_reserve_mb"])
        if no_room:
            reason = f"cannot store TargetStateFetched: {no_room}"
            self.log.error("%s", reason)
            self._write("RecordError", lambda: self.store.record_error("persistence", "TargetStateFetched", reason,
                                                                      time.time()))
            return

        def save() -> None:
            seqs.append(self.store.save_target(msg.document, msg.etag, msg.fetched_at))
            self.store.clear_error("target", "rejected")
        if self._write("TargetStateFetched", save):
            self.publish(TargetStateStored(msg.etag, time.time(), seqs[0]))

    def on_TargetStateRejected(self, msg: TargetStateRejected) -> None:
        seqs: list[int] = []

        def save() -> None:
            seqs.append(self.store.record_target_rejection(msg.etag, msg.reason, msg.at))
            self.store.record_error("target", "rejected", msg.reason, msg.at)
        if self._write("TargetStateRejected", save):
            self.publish(TargetRejectionStored(msg.etag, msg.reason, msg.at, seqs[0]))

    def on_RestartServices(self, msg: RestartServices) -> None:
        if self._write("RestartServices", lambda: self.store.add_restarts(msg.app_id, msg.services, msg.reason)):
            self.publish(RestartsRecorded(msg.app_id, msg.services, msg.reason))

    def on_ServicesRestarted(self, msg: ServicesRestarted) -> None:
        self._write("ServicesRestarted", lambda: self.store.clear_restart(msg.app_id, msg.service_name))

    def on_HoldService(self, msg: HoldService) -> None:
        target = self.store.load_target()
        etag = None if target is None else target.etag
        record = update_holds(self.store.get(HOLDS_KEY), etag, msg.app_id, msg.service_name, msg.stopped)
        if self._write("HoldService", lambda: self.store.put(HOLDS_KEY, record)):
            self.publish(HoldsRecorded(tuple(sorted(holds_in_force(record, etag))), etag))

    def on_ShadowDocumentSeen(self, msg: ShadowDocumentSeen) -> None:
        self._write("ShadowDocumentSeen", lambda: self.store.save_shadow(msg.thing_name, msg.shadow_name,
                                                                         msg.document, msg.version))

    def on_EnqueueReport(self, msg: EnqueueReport) -> None:
        if self._write("EnqueueReport", lambda: self.store.enqueue_report(msg.channel, msg.patch)):
            self._announce(msg.channel)

    def on_AckReport(self, msg: AckReport) -> None:
        def save() -> None:
            self.store.ack_report(msg.channel, msg.report_id)
            self.store.save_accepted(msg.channel, msg.accepted_state)
        if self._write("AckReport", save):
            self._announce(msg.channel)  # a patch merged while the acked one was in flight

    def on_OrphanedVolumesSeen(self, msg: OrphanedVolumesSeen) -> None:
        self._write("OrphanedVolumesSeen", lambda: self.store.put(ORPHANED_VOLUMES_KEY, msg.since))

    def on_ReleaseChanged(self, msg: ReleaseChanged) -> None:
        self._write("ReleaseChanged", lambda: self.store.put(RELEASE_KEY, msg.release))

    def on_ImageLedgerChanged(self, msg: ImageLedgerChanged) -> None:
        self._write("ImageLedgerChanged", lambda: self.store.put(IMAGE_LEDGER_KEY, msg.ledger))

    def on_RecordError(self, msg: RecordError) -> None:
        self._write("RecordError", lambda: self.store.record_error(msg.source, msg.key, msg.message, msg.at))

    def on_ClearError(self, msg: ClearError) -> None:
        self._write("ClearError", lambda: self.store.clear_error(msg.source, msg.key))
