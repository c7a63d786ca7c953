"""The reporter: sends the device's current state to the cloud (`PATCH /api/v1/device/state`).

Only what changed since what the cloud holds (or will hold once the queued reports are sent) is reported,
as a merge patch; nothing when nothing changed; at most one new report per `throttle` seconds. Reports go
through persistence's outbox first, so an unsent one survives a restart: persistence announces it
(ReportQueued), the reporter sends it and acknowledges it (AckReport) with the state the cloud now holds;
the bookkeeping is `actors.outbox.OutboxSender`, shared with the shadows.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from actors.outbox import OutboxSender
from actors.runtime.base import FleetletActor
from conf.schema import positive, setting
from fleetlet_version import __version__
from messages.bus.outbox import (
    ClearError,
    RecordError,
    ReportQueued,
    StoreReopened,
)
from messages.bus.target import CurrentStateObserved, TargetRejectionStored, TargetStateStored
from messages.protocol import json as strict_json
from messages.transport.backoff import backoff_delay
from messages.transport.http import CloudClient, CloudError
from store import Store, TargetRejection

CHANNEL = "device-state"


@dataclass(frozen=True)
class ReporterSettings:
    throttle: float = setting(5.0, rule=positive)  # seconds between two reports at least: changes in between merge
    retry_min: float = setting(2.0, rule=positive)  # a failed send is retried after this, doubling up to retry_max
    retry_max: float = setting(300.0, rule=positive)


# -- pure core -------------------------------------------------------------------------------------------


def target_section(etag: str | None, stored_seq: int | None,
                   rejection: TargetRejection | None) -> dict[str, object]:
    """The report's `target_state`: the ETag in force, and the rejected document's reason while it is newer
    (in store order: `stored_seq` is the store sequence number of the target in force, None without one)."""
    section: dict[str, object] = {"status": "none" if stored_seq is None else "accepted"}
    if etag is not None:
        section["etag"] = etag
    if rejection is not None and (stored_seq is None or rejection.seq > stored_seq):
        section["status"] = "rejected"
        section["rejected"] = {"reason": rejection.reason, "at": rejection.at,
                               **({} if rejection.etag is None else {"etag": rejection.etag})}
    return section


def retry_delay(settings: ReporterSettings, failures: int, fraction: float) -> float:
    """Seconds before resending after `failures`: a fleet's reports hit one cloud, so they are jittered."""
    return backoff_delay(failures, settings.retry_min, settings.retry_max, fraction)


# -- actor -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlushDue:
    """Timer payload: the throttle is over, report what changed."""


@dataclass(frozen=True)
class RetryDue:
    """Timer payload: the backoff after a failed send is over, send the pending report again."""


class Reporter(FleetletActor):
    Settings = ReporterSettings
    uses = ("device.uuid", "device.token", "cloud", "store")
    options: ReporterSettings

    def started(self) -> None:
        self.client = CloudClient.from_config(self.config)
        self.uuid = self.config["device"]["uuid"]
        with Store.open(self.config["store"]["path"], readonly=True) as store:
            self.sender = OutboxSender(CHANNEL, store.load_accepted(CHANNEL) or {}, store.pending_report(CHANNEL))
            target = store.load_target()
            self.rejection = store.last_target_rejection()
        self.target: tuple[str | None, int | None] = (None, None) if target is None else (target.etag, target.seq)
        # The version goes out once, and again only after an upgrade: patches carry only what changed.
        self.latest: dict[str, object] = {"agent_version": __version__, "target_state": self._target_section()}
        self.failures = 0
        self.error_shown = True  # unknown after a restart: the first success clears any recorded error
        self.retry_scheduled = False
        self.flush_scheduled = False
        self.last_report: float | None = None
        self._request_flush()
        if self.sender.pending is not None:
            self._send()

    # -- what to report -----------------------------------------------------------------------------

    def on_CurrentStateObserved(self, msg: CurrentStateObserved) -> None:
        self.latest.update(msg.state)
        self._request_flush()

    def on_TargetStateStored(self, msg: TargetStateStored) -> None:
        self.target = (msg.etag, msg.seq)
        self._target_changed()

    def on_TargetRejectionStored(self, msg: TargetRejectionStored) -> None:
        self.rejection = TargetRejection(msg.etag, msg.reason, msg.at, msg.seq)
        self._target_changed()

    def _target_changed(self) -> None:
        self.latest["target_state"] = self._target_section()
        self._request_flush()

    def _target_section(self) -> dict[str, object]:
        return target_section(*self.target, self.rejection)

    def _request_flush(self) -> None:
        if self.flush_scheduled:
            return
        self.flush_scheduled = True
        wait = 0.0 if self.last_report is None else self.last_report + self.options.throttle - time.monotonic()
        self.after(wait, FlushDue())

    def _flush(self) -> None:
        self.flush_scheduled = False
        enqueue = self.sender.report(self.latest)
        if enqueue is not None:
            self.publish(enqueue)
            self.last_report = time.monotonic()

    def on_StoreReopened(self, msg: StoreReopened) -> None:
        """Persistence restarted: count as reported only what the store holds, and report the rest again."""
        with Store.open(self.config["store"]["path"], readonly=True) as store:
            ack_again = self.sender.resync(store.pending_report(CHANNEL))
        if ack_again is not None:
            self.publish(ack_again)
        self._request_flush()

    # -- sending ------------------------------------------------------------------------------------

    def on_ReportQueued(self, msg: ReportQueued) -> None:
        if msg.channel != CHANNEL:
            return
        self.sender.announced(msg.report_id, msg.patch)
        if not self.retry_scheduled:
            self._send()

    def on_timer(self, payload: object) -> None:
        if isinstance(payload, FlushDue):
            self._flush()
        elif isinstance(payload, RetryDue):
            self.retry_scheduled = False
            self._send()

    def _send(self) -> None:
        report = self.sender.take()
        if report is None:
            return  # nothing pending (an announcement of what was already sent)
        try:
            self.client.report_state({self.uuid: report.patch}, ok=(200, 204))
        except Exception as exc:  # noqa: BLE001 - whatever the network or the server does is a failed send
            self.sender.lost()
            self.failures += 1
            cause = exc if isinstance(exc, CloudError) else f"{type(exc).__name__}: {exc}"
            reason = f"cannot send the state report: {cause}"[:500]
            self.log.warning("%s (failure %d)", reason, self.failures)
            self.publish(RecordError("reporter", "send", reason, time.time()))
            self.error_shown = True
            self.retry_scheduled = True
            self.after(retry_delay(self.options, self.failures, random.random()), RetryDue())
            return
        self.figures.count("fleetlet_reports")
        self.figures.count("fleetlet_report_bytes", len(strict_json.encode(report.patch)))
        self.publish(self.sender.accepted())
        self.failures = 0
        if self.error_shown:
            self.publish(ClearError("reporter", "send"))
            self.error_shown = False
