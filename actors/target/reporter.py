"""The reporter: sends the device's current state to the cloud (`PATCH /api/v1/device/state`).

Only what changed since what the cloud holds (or will hold once the queued reports are sent) is reported,
as a merge patch; nothing when nothing changed; at most one new report per `throttle` seconds. Reports go
through persistence's outbox first, so an unsent one survives a restart: persistence announces it
(ReportPending), the reporter sends it and acknowledges it (AckReport) with the state the cloud now holds.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from actors.runtime.base import FleetletActor
from conf.schema import positive, setting
from messages.bus.outbox import (
    AckReport,
    ClearError,
    EnqueueReport,
    RecordError,
    ReportPending,
)
from messages.bus.target import CurrentState, TargetStateRejected, TargetStateStored
from messages.protocol.patches import apply_patch
from messages.transport.backoff import backoff_delay
from messages.transport.http import CloudClient, CloudError
from store import PendingReport, Store, TargetRejection

CHANNEL = "device-state"
_ABSENT = object()


@dataclass(frozen=True)
class ReporterSettings:
    throttle: float = setting(5.0, rule=positive)  # seconds between two reports at least: changes in between merge
    retry_min: float = setting(2.0, rule=positive)  # a failed send is retried after this, doubling up to retry_max
    retry_max: float = setting(300.0, rule=positive)


# -- pure core -------------------------------------------------------------------------------------------


def report_patch(held: dict, latest: dict) -> dict:
    """The merge patch that turns `held` into `latest` for the sections `latest` has.

    A top-level section `latest` does not have yet (the current state before the reconciler's first
    read) is left as the cloud holds it, never deleted. Reports hold no nulls: null means "delete".
    """
    patch = {}
    for key, value in latest.items():
        change = _difference(held.get(key, _ABSENT), value)
        if change is not _ABSENT:
            patch[key] = change
    return patch


def _difference(old, new):
    """The patch value turning `old` into `new`, or _ABSENT when they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        change = {key: None for key in old if key not in new}
        for key, value in new.items():
            nested = _difference(old.get(key, _ABSENT), value)
            if nested is not _ABSENT:
                change[key] = nested
        return change or _ABSENT
    return _ABSENT if old is not _ABSENT and old == new and type(old) is type(new) else new


def target_section(etag: str | None, stored_at: float | None, rejection: TargetRejection | None) -> dict:
    """The report's `target_state`: the ETag in force, and the rejected document's reason while it is newer."""
    section = {"status": "none" if stored_at is None else "accepted"}
    if etag is not None:
        section["etag"] = etag
    if rejection is not None and (stored_at is None or rejection.at > stored_at):
        section["status"] = "rejected"
        section["rejected"] = {"reason": rejection.reason, "at": rejection.at,
                               **({} if rejection.etag is None else {"etag": rejection.etag})}
    return section


def retry_delay(settings: ReporterSettings, failures: int, fraction: float) -> float:
    """Seconds before resending after `failures`: a fleet's reports hit one cloud, so they are jittered."""
    return backoff_delay(failures, settings.retry_min, settings.retry_max, fraction)


# -- actor -----------------------------------------------------------------------------------------------


class Reporter(FleetletActor):
    Settings = ReporterSettings
    uses = ("device.uuid", "device.token", "cloud", "store")
    options: ReporterSettings

    def started(self) -> None:
        self.client = CloudClient.from_config(self.config)
        self.uuid = self.config["device"]["uuid"]
        with Store.open(self.config["store"]["path"], readonly=True) as store:
            self.accepted = store.load_accepted(CHANNEL) or {}
            self.outbox: PendingReport | None = store.pending_report(CHANNEL)
            target = store.load_target()
            self.rejection = store.last_target_rejection()
        self.target = (None, None) if target is None else (target.etag, target.received_at)
        # What the cloud will hold once the queued report is sent: new patches are computed against it.
        self.expected = apply_patch(self.accepted, self.outbox.patch) if self.outbox else self.accepted
        self.latest = {"target_state": target_section(*self.target, self.rejection)}
        self.acked_up_to = 0
        self.failures = 0
        self.error_shown = True  # unknown after a restart: the first success clears any recorded error
        self.retry_scheduled = False
        self.flush_scheduled = False
        self.last_report: float | None = None
        self._request_flush()
        if self.outbox is not None:
            self._send()

    # -- what to report -----------------------------------------------------------------------------

    def on_CurrentState(self, msg: CurrentState) -> None:
        self.latest.update(msg.state)
        self._request_flush()

    def on_TargetStateStored(self, msg: TargetStateStored) -> None:
        self.target = (msg.etag, msg.stored_at)
        self._target_changed()

    def on_TargetStateRejected(self, msg: TargetStateRejected) -> None:
        self.rejection = TargetRejection(msg.etag, msg.reason, msg.at)
        self._target_changed()

    def _target_changed(self) -> None:
        self.latest["target_state"] = target_section(*self.target, self.rejection)
        self._request_flush()

    def _request_flush(self) -> None:
        if self.flush_scheduled:
            return
        self.flush_scheduled = True
        wait = 0.0 if self.last_report is None else self.last_report + self.options.throttle - time.monotonic()
        self.after(wait, ("flush",))

    def _flush(self) -> None:
        self.flush_scheduled = False
        patch = report_patch(self.expected, self.latest)
        if patch:
            self.publish(EnqueueReport(CHANNEL, patch))
            self.expected = apply_patch(self.expected, patch)
            self.last_report = time.monotonic()

    # -- sending ------------------------------------------------------------------------------------

    def on_ReportPending(self, msg: ReportPending) -> None:
        if msg.channel != CHANNEL or msg.report_id <= self.acked_up_to:
            return  # another channel's, or an announcement of what was already sent
        self.outbox = PendingReport(msg.report_id, msg.patch)
        if not self.retry_scheduled:
            self._send()

    def on_timer(self, payload) -> None:
        if payload == ("flush",):
            self._flush()
        elif payload == ("retry",):
            self.retry_scheduled = False
            if self.outbox is not None:
                self._send()

    def _send(self) -> None:
        report = self.outbox
        try:
            self.client.report_state({self.uuid: report.patch}, ok=(200, 204))
        except CloudError as exc:
            self.failures += 1
            reason = f"cannot send the state report: {exc}"
            self.log.warning("%s (failure %d)", reason, self.failures)
            self.publish(RecordError("reporter", "send", reason, time.time()))
            self.error_shown = True
            self.retry_scheduled = True
            self.after(retry_delay(self.options, self.failures, random.random()), ("retry",))
            return
        self.accepted = apply_patch(self.accepted, report.patch)
        self.acked_up_to = report.report_id
        self.outbox = None
        self.publish(AckReport(CHANNEL, report.report_id, self.accepted))
        self.failures = 0
        if self.error_shown:
            self.publish(ClearError("reporter", "send"))
            self.error_shown = False
