"""The sender side of the durable outbox, for both halves: the reporter's HTTP reports and each shadow's
MQTT reports. Pure bookkeeping: no I/O, no clock, no retry policy (each caller has its own link).

Persistence keeps a channel's unsent reports and announces the oldest (ReportQueued, again under a new
id when a later patch was merged into it). The sender sends that one, at most one at a time, and once
the receiver accepts it, acknowledges it (AckReport) with what the receiver now holds. New reports are
computed against ``expected``, what the receiver will hold once everything queued has arrived, so a change
is said once, and never contradicts a queued report that has not gone out yet.
"""
from __future__ import annotations

from messages.bus.outbox import AckReport, EnqueueReport
from messages.protocol.patches import apply_patch, report_patch
from store import PendingReport


class OutboxSender:
    """One channel's sender. ``acked`` is what the receiver holds (as last acknowledged or read),
    ``pending`` the oldest unsent report persistence announced, ``in_flight`` the one sent and not yet
    answered (the same report as ``pending``, or an older one that a newer announcement replaced)."""

    def __init__(self, channel: str, acked: dict, pending: PendingReport | None):
        self.channel = channel
        self.acked = acked
        self.pending = pending
        self.in_flight: PendingReport | None = None
        self.acked_up_to = 0  # report ids only grow: an announcement at or below this one was answered
        self.expected = self._expected()

    def _expected(self) -> dict:
        return apply_patch(self.acked, self.pending.patch) if self.pending else self.acked

    # -- what to report ------------------------------------------------------------------------------
    def report(self, latest: dict) -> EnqueueReport | None:
        """The report that brings the receiver to ``latest`` (see ``report_patch``), or None if nothing
        changed; ``expected`` then includes it."""
        patch = report_patch(self.expected, latest)
        if not patch:
            return None
        self.expected = apply_patch(self.expected, patch)
        return EnqueueReport(self.channel, patch)

    def announced(self, report_id: int, patch: dict) -> None:
        """ReportQueued: persistence's oldest unsent report for this channel."""
        if report_id <= self.acked_up_to or (self.in_flight is not None and self.in_flight.report_id == report_id):
            return  # an announcement of what was already answered, or of what is on its way
        self.pending = PendingReport(report_id, patch)

    # -- sending --------------------------------------------------------------------------------------
    def take(self) -> PendingReport | None:
        """The report to send now, marked in flight; None while one is in flight or none is pending."""
        if self.in_flight is not None or self.pending is None:
            return None
        self.in_flight = self.pending
        return self.in_flight

    def accepted(self) -> AckReport:
        """The receiver applied the report in flight: it now holds ``acked``."""
        self.acked = apply_patch(self.acked, self._in_flight().patch)
        return self._done()

    def refused(self) -> AckReport:
        """The receiver refused the report in flight for good: it is dropped, the receiver holds what it held."""
        return self._done()

    def lost(self) -> None:
        """No answer, or one that asks for a resend: the pending report goes again (``take``)."""
        self.in_flight = None

    def _in_flight(self) -> PendingReport:
        if self.in_flight is None:
            raise RuntimeError(f"{self.channel}: an answer with no report in flight")
        return self.in_flight

    def _done(self) -> AckReport:
        report, self.in_flight = self._in_flight(), None
        self.acked_up_to = report.report_id
        if self.pending is not None and self.pending.report_id == report.report_id:
            self.pending = None
        return AckReport(self.channel, report.report_id, self.acked)

    # -- what the receiver holds -----------------------------------------------------------------------
    def receiver_holds(self, state: dict) -> None:
        """A read of the receiver's whole state: it is authoritative, with the pending report still to come."""
        self.acked = state
        self.expected = self._expected()

    def resync(self, pending: PendingReport | None) -> AckReport | None:
        """Persistence restarted: take its outbox (``pending``, the oldest stored report) as the truth for what
        is queued. ``expected`` no longer counts a report that was enqueued but never stored, so the next
        ``report`` says it again (a duplicate of one that was stored is harmless: merge patches are idempotent).
        ``acked`` stays: only this sender learns what the receiver holds, and the store's copy may lag behind
        it (an AckReport still queued, or lost in the crash). A stored report this sender has already had
        answered is such a lag: the AckReport returned says it again (persistence takes it twice harmlessly)."""
        if pending is not None and pending.report_id <= self.acked_up_to:
            self.pending = None
            self.expected = self._expected()
            return AckReport(self.channel, pending.report_id, self.acked)
        self.pending = pending
        self.expected = self._expected()
        return None

    def receiver_lost(self) -> None:
        """The receiver has nothing (a shadow that does not exist): the next report says everything."""
        self.acked, self.expected = {}, {}
