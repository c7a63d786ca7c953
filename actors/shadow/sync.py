"""The device side of the shadow protocol as pure code: what the broker delivers, parsed strictly, and
one state machine per shadow that decides what to send and what to tell the other actors.

No I/O and no clock: every call gets ``now`` and returns effects for the listener actor to carry out:
:class:`Publish` (an MQTT publish, QoS 1), :class:`ReadOverHttp` (the EMQX-profile read) and bus
messages (:mod:`messages.sync`) to publish through the supervisor.

The rules (design notes, section 4): read the whole shadow after the subscriptions are acknowledged
(again after every reconnect); drop a message whose version is lower than the one held; hand deltas to
the handlers one at a time, coalescing those that arrive meanwhile (newest version wins); report only
changed fields of the *actual* state; match answers by clientToken; time out and retry; answer a 409
with a fresh read and a retry, at most ``conflict_retries`` times with a version.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from actors.outbox import OutboxSender
from actors.shadow.payloads import (
    Accepted,
    Delta,
    Document,
    Incoming,
    PayloadLimits,
    Rejected,
)
from conf.agent import MqttSection, ShadowSection
from conf.schema import parse
from messages.bus.outbox import AckReport, ClearError, EnqueueReport, RecordError
from messages.bus.shadow import ShadowDeltaApplied, ShadowDeltaUpdated, ShadowDocumentSeen
from messages.protocol.json import canonical_bytes
from messages.protocol.patches import apply_patch
from messages.protocol.shadow_document import (
    compute_delta,
    is_stale,
    stored_form,
)
from messages.protocol.shadow_topics import shadow_topics
from messages.transport.backoff import backoff_delay
from store import PendingReport

MALFORMED_RECORD_INTERVAL = 10.0  # seconds between two store records of malformed input on one shadow
UNHANDLED_KEYS_SHOWN = 10  # keys named in the one "unhandled" record; the rest are counted
_LEGACY_UNHANDLED = "no handler applies this key"  # what agents before the "unhandled" row recorded per key
# Seconds between two reads the protocol asks for itself (after a refused report, a stale delta, a store
# restart): the version held may be wrong (a spoofed far-future delta), and only a read puts it right, but a
# flood of stale deltas must not become a flood of reads.
REREAD_MIN_INTERVAL = 1.0


def as_stored(reported: dict[str, Any]) -> dict[str, Any]:
    """A handler's answer as the shadow will store it, for ``report_patch``: each top-level key is the
    device's truth for that key, None (also for what prunes to nothing) when the device does not have it."""
    return {key: stored_form(value) for key, value in reported.items()}


@dataclasses.dataclass(frozen=True)
class SyncSettings:
    profile: str
    names: tuple[str, ...]
    report_timeout: float
    read_timeout: float
    apply_timeout: float
    conflict_retries: int
    report_version: bool
    retry_min: float
    retry_max: float
    limits: PayloadLimits

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SyncSettings":
        """The [shadow] and [mqtt] sections, checked by their declared schema; ConfigError names the key."""
        shadow = parse(ShadowSection, config["shadow"], "shadow")
        mqtt = parse(MqttSection, config["mqtt"], "mqtt")
        return cls(shadow.profile, shadow.names, shadow.report_timeout, shadow.read_timeout, shadow.apply_timeout,
                   shadow.conflict_retries, shadow.report_version, mqtt.reconnect_min, mqtt.reconnect_max,
                   PayloadLimits(max_bytes=shadow.max_payload))


@dataclasses.dataclass(frozen=True)
class Recovered:
    """What the store holds for one shadow when the listener (re)starts."""
    desired: dict[str, Any] = dataclasses.field(default_factory=dict)
    reported: dict[str, Any] = dataclasses.field(default_factory=dict)  # as the cloud last accepted it
    version: int | None = None
    outbox: tuple[int, dict[str, Any]] | None = None  # the pending report: (report_id, patch)
    errors: dict[str, Any] = dataclasses.field(default_factory=dict)  # error key -> message, as recorded


@dataclasses.dataclass(frozen=True)
class Publish:
    """An MQTT publish, QoS 1, of ``payload`` as JSON."""
    topic: str
    payload: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ReadOverHttp:
    """Read the shadow over HTTPS; the answer comes back as a Document or Rejected carrying ``client_token``."""
    thing_name: str
    client_token: str


# What the state machine asks its shell to do: a publish, an HTTPS read, or a bus message to publish.
Effect = (Publish | ReadOverHttp | ShadowDeltaUpdated | ShadowDocumentSeen | EnqueueReport | AckReport | RecordError
          | ClearError)


@dataclasses.dataclass
class _Request:
    client_token: str
    deadline: float


@dataclasses.dataclass
class _Apply:
    version: int
    delta: dict[str, Any]
    waiting: set[str]
    deadline: float
    covered: set[str] = dataclasses.field(default_factory=set)  # top-level keys some handler answered for
    retried: bool = False


def channel_of(thing_name: str, shadow_name: str) -> str:
    """The outbox channel (and error source) of one shadow."""
    return f"shadow:{thing_name}/{shadow_name}"


class ShadowSync:
    """One shadow (``shadow_name`` CLASSIC_SHADOW is the classic one) of one thing, from the device's side.

    ``handlers`` names who answers every ShadowDeltaUpdated with a ShadowDeltaApplied: the actors subscribed to
    ShadowDeltaUpdated and the configured handler functions. Error keys in the store: ``desired.<path>`` for a
    value the device cannot apply, ``unhandled`` (one record for every desired key no handler applies),
    ``read``, ``report``, ``input`` and ``handler:<name>`` for the protocol.

    The local copy of desired is bounded: a delta that would grow it past the payload limit (only a run of
    spoofed or buggy deltas can: the cloud's whole shadow fits in one payload) is dropped, recorded, and the
    shadow read again, whose document replaces the copy.
    """

    def __init__(self, thing_name: str, shadow_name: str, settings: SyncSettings, handlers: Iterable[str],
                 token_prefix: str, recovered: Recovered = Recovered()):
        self.thing_name, self.shadow_name, self.settings = thing_name, shadow_name, settings
        self.channel = channel_of(thing_name, shadow_name)
        self.topics = shadow_topics(settings.profile, thing_name, shadow_name)
        self.handlers = frozenset(handlers)
        self._token_prefix, self._tokens = token_prefix, 0
        self.desired, self.held = recovered.desired, recovered.version
        # The report in flight is sender.in_flight; self.report is its request (token, deadline).
        self.sender = OutboxSender(self.channel, recovered.reported,
                                   None if recovered.outbox is None else PendingReport(*recovered.outbox))
        self.errors = dict(recovered.errors)
        self.exists: bool | None = None  # unknown until a read
        self.link_ready = False
        self.read: _Request | None = None
        self.read_needed = False
        self.read_failures, self.read_not_before = 0, 0.0
        self.reread_at = 0.0  # the earliest a read the protocol asks for itself may start (1 s after the last)
        self.newest_since_read: int | None = None
        self.report: _Request | None = None
        self.report_failures, self.report_not_before = 0, 0.0
        self.conflicts = 0
        self.apply: _Apply | None = None
        self.pending: Delta | None = None
        self.stale_dropped = 0
        self.malformed = 0
        self.malformed_recorded_at: float | None = None
        self.unhandled: set[str] = set()  # desired top-level keys no handler applied
        self._out: list[Effect] = []

    # -- events -----------------------------------------------------------------------------------------
    def start(self, now: float) -> list[Effect]:
        """After a (re)start, before any link: the handlers apply the whole desired state of the local copy
        (idempotent; it restores what the device lost, and reports only what differs)."""
        for key in [key for key, message in self.errors.items() if message == _LEGACY_UNHANDLED]:
            self._clear(key)  # an older agent's row per key: now the one "unhandled" row
        if self.desired:
            self._dispatch(self.held or 0, self.desired, now)
        return self._flush()

    def link_up(self, now: float) -> list[Effect]:
        """Connected and every subscription acknowledged: read the whole shadow."""
        self.link_ready, self.read_needed = True, True
        self.read_failures, self.read_not_before = 0, now
        self._progress(now)
        return self._flush()

    def link_down(self) -> list[Effect]:
        """Answers to what is in flight may never come: read and resend after the next connection."""
        self.link_ready, self.read = False, None
        self._report_lost()
        return self._flush()

    def receive(self, incoming: Incoming, now: float) -> list[Effect]:
        if isinstance(incoming, Delta):
            self._on_delta(incoming, now)
        elif isinstance(incoming, Document):
            self._on_document(incoming, now)
        elif isinstance(incoming, Accepted):
            self._on_accepted(incoming, now)
        elif isinstance(incoming, Rejected):
            self._on_rejected(incoming, now)
        else:
            raise TypeError(f"not a shadow message: {type(incoming).__name__}")
        self._progress(now)
        return self._flush()

    def receive_malformed(self, count: int, reason: str, now: float) -> list[Effect]:
        """Dropped input: recorded at most every MALFORMED_RECORD_INTERVAL s, so a flood costs no writes."""
        self.malformed += count
        if self.malformed_recorded_at is None or now - self.malformed_recorded_at >= MALFORMED_RECORD_INTERVAL:
            self.malformed_recorded_at = now
            self._record("input", f"dropped {self.malformed} malformed message(s); last: {reason}", now, force=True)
            self.malformed = 0
        return self._flush()

    def on_applied(self, msg: ShadowDeltaApplied, now: float) -> list[Effect]:
        """A handler's answer: report what changed, surface what it could not apply."""
        enqueue = self.sender.report(as_stored(msg.reported))
        if enqueue is not None:
            self._out.append(enqueue)
        failed = {f"desired.{path}": str(reason) for path, reason in msg.failures.items()}
        for key, reason in failed.items():
            self._record(key, reason, now)
        answered = set(msg.reported) | {path.split(".", 1)[0] for path in msg.failures}
        for key in [k for k in self.errors if k.startswith("desired.") and k not in failed]:
            if key[len("desired."):].split(".", 1)[0] in answered:
                self._clear(key)
        self._clear(f"handler:{msg.handler}")
        self._answered(msg.handler, msg.version, answered, now)
        return self._flush()

    def on_handler_failed(self, handler: str, version: int, reason: str, now: float) -> list[Effect]:
        """A handler function raised or answered nonsense: it has answered, for no key."""
        self._record(f"handler:{handler}", reason, now)
        self._answered(handler, version, set(), now)
        return self._flush()

    def on_report_pending(self, report_id: int, patch: dict[str, Any], now: float) -> list[Effect]:
        """Persistence announces the channel's oldest pending report (after a merge, under a new id)."""
        self.sender.announced(report_id, patch)
        self._progress(now)
        return self._flush()

    def store_reopened(self, pending: PendingReport | None, now: float) -> list[Effect]:
        """Persistence restarted: a report enqueued before may not be durable, and a document it was told of may
        not be stored. Take the outbox from the store and read the shadow again, which reports what differs."""
        ack_again = self.sender.resync(pending)
        if ack_again is not None:
            self._out.append(ack_again)
        self._reread(now)
        self._progress(now)
        return self._flush()

    def tick(self, now: float) -> list[Effect]:
        """Time passes: time out reads, reports and applies, and send what is due."""
        if self.read is not None and now >= self.read.deadline:
            self.read = None
            self._read_failed(f"no answer to the read within {self.settings.read_timeout:g} s", now)
        if self.report is not None and now >= self.report.deadline:
            self._report_lost()
            self._report_failed(f"no answer to the report within {self.settings.report_timeout:g} s", now)
        if self.apply is not None and now >= self.apply.deadline:
            if self.apply.retried:
                self._finish_apply(now)
            else:  # a handler that died while applying has been restarted by now: ask once more
                self.apply.retried, self.apply.deadline = True, now + self.settings.apply_timeout
                self._out.append(self._delta_message(self.apply.version, self.apply.delta))
        self._progress(now)
        return self._flush()

    # -- inbound ------------------------------------------------------------------------------------------
    def _on_delta(self, delta: Delta, now: float) -> None:
        if is_stale(self.held, delta.version):
            self.stale_dropped += 1
            self._reread(now)  # a late duplicate, or the version held is wrong (spoofed): only a read can tell
            return
        desired = apply_patch(self.desired, delta.state)
        size = len(canonical_bytes(desired))
        if size > self.settings.limits.max_bytes:
            self._record("input", f"dropped the delta of version {delta.version}: desired would hold {size} "
                                  f"bytes, more than {self.settings.limits.max_bytes}; reading the shadow", now)
            self.read_needed = True
            return
        self.held, self.exists = delta.version, True  # a delta comes from an existing shadow
        if self.read is not None:
            self.newest_since_read = max(self.newest_since_read or 0, delta.version)
        self.desired = desired
        self._remember()
        self._dispatch(delta.version, delta.state, now)

    def _on_document(self, doc: Document, now: float) -> None:
        if self.read is None or doc.client_token != self.read.client_token:
            return  # someone else's read, or one we gave up on
        self.read, self.read_failures, self.exists = None, 0, True
        self._clear("read")
        if self.newest_since_read is not None and doc.version < self.newest_since_read:
            return  # a delta newer than this document arrived meanwhile; the read is done all the same
        # A read is authoritative even below the version held: the cloud may have lost or reset the shadow.
        self.held = doc.version
        self.desired = doc.desired
        self.sender.receiver_holds(doc.reported)
        self._remember()
        self._clear_errors_not_desired(now)
        delta = compute_delta(self.desired, self.sender.acked)
        if delta:
            self._dispatch(doc.version, delta, now)

    def _on_accepted(self, accepted: Accepted, now: float) -> None:
        if self.report is None or accepted.client_token != self.report.client_token:
            return
        self.report = None
        ack = self.sender.accepted()
        self.exists, self.conflicts, self.report_failures = True, 0, 0
        if self.held is not None and accepted.version > self.held + 1:
            self.read_needed = True  # an update we saw nothing of (a desired key deleted): read it
        if not is_stale(self.held, accepted.version):
            self.held = accepted.version
        self._clear("report")
        self._remember()
        self._out.append(ack)

    def _on_rejected(self, rejected: Rejected, now: float) -> None:
        what = f"{rejected.code} {rejected.message}".strip()
        if self.read is not None and rejected.client_token == self.read.client_token:
            self.read = None
            if rejected.code == 404:
                self._shadow_missing(now)
            else:
                self._read_failed(f"the read was rejected: {what}", now)
        elif self.report is not None and rejected.client_token == self.report.client_token:
            if rejected.code == 409:
                self._report_lost()
                self.conflicts += 1
                self.read_needed = True
                if self.conflicts > self.settings.conflict_retries:
                    self._record("report", f"{self.conflicts} version conflicts in a row; "
                                           "reporting without a version", now)
            elif rejected.code in (400, 413):
                # Resending would be rejected forever: drop this report, keep the reason, and read the shadow:
                # the refusal may come from a wrong view (a version held from a spoofed delta).
                self.report, refused = None, self.sender.in_flight
                assert refused is not None  # a report's request exists only while the report is in flight
                self._record("report", f"the cloud refused a report for good ({what}): "
                                       f"{json.dumps(refused.patch)[:300]}", now)
                self._out.append(self.sender.refused())
                self._reread(now)
            else:
                self._report_lost()
                self.read_needed = self.read_needed or rejected.code == 404
                self._report_failed(f"the report was rejected: {what}", now)

    def _shadow_missing(self, now: float) -> None:
        """404: create the shadow from the device's actual state, which the handlers report in full."""
        self.read_failures, self.exists, self.held = 0, False, None
        self.desired = {}
        self.sender.receiver_lost()
        self._clear("read")
        self._dispatch(0, {}, now)

    # -- applying ------------------------------------------------------------------------------------------
    def _delta_message(self, version: int, delta: dict[str, Any]) -> ShadowDeltaUpdated:
        return ShadowDeltaUpdated(self.thing_name, self.shadow_name, version, delta, self.desired)

    def _dispatch(self, version: int, delta: dict[str, Any], now: float) -> None:
        if self.apply is not None:  # one apply at a time; what arrives meanwhile is coalesced
            if self.pending is None or version >= self.pending.version:
                self.pending = Delta(version, delta)
            return
        self.apply = _Apply(version, delta, set(self.handlers), now + self.settings.apply_timeout)
        self._out.append(self._delta_message(version, delta))
        if not self.handlers:
            self._finish_apply(now)

    def _answered(self, handler: str, version: int, keys: set[str], now: float) -> None:
        apply = self.apply
        if apply is not None and version == apply.version and handler in apply.waiting:
            apply.waiting.discard(handler)
            apply.covered |= keys
            if not apply.waiting:
                self._finish_apply(now)

    def _finish_apply(self, now: float) -> None:
        apply, self.apply = self.apply, None
        assert apply is not None  # called only while an apply is under way
        if apply.waiting:
            for handler in sorted(apply.waiting):
                self._record(f"handler:{handler}", f"did not answer the delta of version {apply.version} "
                                                   f"within {self.settings.apply_timeout:g} s", now)
        else:
            self.unhandled = (self.unhandled | set(apply.delta)) - apply.covered
        self._clear_errors_not_desired(now)
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self._dispatch(pending.version, pending.state, now)

    # -- sending -------------------------------------------------------------------------------------------
    def _progress(self, now: float) -> None:
        if not self.link_ready:
            return
        if self.read_needed and self.read is None and now >= self.read_not_before:
            self.read_needed, self.newest_since_read = False, None
            self.reread_at = now + REREAD_MIN_INTERVAL
            self.read = _Request(self._token(), now + self.settings.read_timeout)
            if self.settings.profile == "aws":
                self._out.append(Publish(self.topics.get, {"clientToken": self.read.client_token}))
            else:
                self._out.append(ReadOverHttp(self.thing_name, self.read.client_token))
        if self.read or self.read_needed or self.report or now < self.report_not_before:
            return
        report = self.sender.take()
        if report is None:
            return
        self.report = _Request(self._token(), now + self.settings.report_timeout)
        payload: dict[str, Any] = {"state": {"reported": report.patch}, "clientToken": self.report.client_token}
        if (self.settings.report_version and self.exists and self.held is not None
                and self.conflicts <= self.settings.conflict_retries):
            payload["version"] = self.held
        self._out.append(Publish(self.topics.update, payload))

    def _reread(self, now: float) -> None:
        """Ask for a read of the whole shadow, at most one per REREAD_MIN_INTERVAL."""
        if self.read_needed or self.read is not None:
            return
        self.read_needed = True
        self.read_not_before = max(self.read_not_before, self.reread_at)

    def _report_lost(self) -> None:
        """The report in flight will get no answer we act on: send it again when due."""
        self.report = None
        self.sender.lost()

    def _read_failed(self, reason: str, now: float) -> None:
        self.read_failures += 1
        self.read_needed = True
        self.read_not_before = now + self._backoff(self.read_failures)
        self._record("read", reason, now)

    def _report_failed(self, reason: str, now: float) -> None:
        self.report_failures += 1
        self.report_not_before = now + self._backoff(self.report_failures)
        if self.report_failures > 1:  # one lost answer is routine; a second in a row is worth a record
            self._record("report", reason, now)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.settings.retry_min, self.settings.retry_max)

    def _token(self) -> str:
        self._tokens += 1
        return f"{self._token_prefix}{self._tokens}"

    # -- what the other actors are told -------------------------------------------------------------------
    def _remember(self) -> None:
        if self.held is not None:
            document = {"state": {"desired": self.desired, "reported": self.sender.acked}, "version": self.held}
            self._out.append(ShadowDocumentSeen(self.thing_name, self.shadow_name, document, self.held))

    def _record(self, key: str, message: str, now: float, force: bool = False) -> None:
        if force or self.errors.get(key) != message:
            self.errors[key] = message
            self._out.append(RecordError(self.channel, key, message, now))

    def _clear(self, key: str) -> None:
        if self.errors.pop(key, None) is not None:
            self._out.append(ClearError(self.channel, key))

    def _clear_errors_not_desired(self, now: float) -> None:
        """A value that is no longer desired is no longer a problem."""
        for key in [k for k in self.errors if k.startswith("desired.")]:
            if not _has_path(self.desired, key[len("desired."):].split(".")):
                self._clear(key)
        self.unhandled &= set(self.desired)
        if self.unhandled:
            keys = sorted(self.unhandled)
            shown = ", ".join(keys[:UNHANDLED_KEYS_SHOWN]) + (", ..." if len(keys) > UNHANDLED_KEYS_SHOWN else "")
            self._record("unhandled", f"no handler applies {len(keys)} desired key(s): {shown}", now)
        else:
            self._clear("unhandled")

    def _flush(self) -> list[Effect]:
        out, self._out = self._out, []
        return out


def _has_path(document: dict[str, Any], path: list[str]) -> bool:
    node = document
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
