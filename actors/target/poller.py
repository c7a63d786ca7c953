"""The poller: fetches the device's target state from the cloud and hands a new, valid one to persistence.

`GET /api/v1/device/{uuid}/target-state` with `If-None-Match`, at the configured interval with jitter, with
exponential backoff after errors, and at once on `PollNow`. The ETag sent is the one of the last document
seen (stored or rejected) as the store has it, so a message lost in a crash costs a refetch, never a target.
An invalid document, or one that breaks the device owner's policy (`actors.target.policy`), is rejected as a
whole (persistence stores and reports the reason); the last good target stays in force.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import messages
from actors.runtime.base import FleetletActor
from actors.runtime.logformat import context
from actors.target.policy import (
    POLICY_REASON_PREFIX,
    POLICY_USES,
    Policy,
    PolicyRefused,
    enforce_policy,
    on_this_host,
    policy_from_config,
)
from conf.schema import fraction, positive, setting
from messages.bus.outbox import ClearError, RecordError
from messages.bus.target import PollNow, TargetStateFetched, TargetStateRejected
from messages.codec import MAX_MESSAGE_BYTES
from messages.protocol.target_state import (
    InvalidTargetState,
    parse_target_state,
    to_json,
)
from messages.transport.backoff import backoff_ceiling, jittered
from messages.transport.http import CloudClient, CloudError, Response
from store import Store, TargetRecord, TargetRejection, newer_rejection

MAX_ETAG_LENGTH = 256  # an ETag is a short token; a longer one is a broken or hostile server


@dataclass(frozen=True)
class PollerSettings:
    interval: float = setting(60.0, rule=positive)  # seconds between polls
    jitter: float = setting(0.1, rule=fraction)  # each delay is cut by a random share of at most this
    backoff_min: float = setting(2.0, rule=positive)  # delay after the first failure; doubles with each further one
    backoff_max: float = setting(300.0, rule=positive)
    min_gap: float = setting(1.0, rule=positive)  # least time between PollNow polls: a flood of notices is one poll


# -- pure core -------------------------------------------------------------------------------------------


def poll_delay(settings: PollerSettings, failures: int, fraction: float) -> float:
    """Seconds until the next poll: the interval, or the backoff after `failures`, less a `jitter` share picked
    by `fraction` in [0, 1] (messages.transport.backoff), so a fleet's polls spread and none waits longer."""
    if failures == 0:
        ceiling = settings.interval
    else:
        ceiling = backoff_ceiling(failures, settings.backoff_min, settings.backoff_max)
    return jittered(ceiling, fraction, settings.jitter)


def known_etag(target: TargetRecord | None, rejection: TargetRejection | None,
               recheck_policy: bool = False) -> str | None:
    """The ETag of the newest document seen: the cloud answers 304 while it still serves that one. With
    `recheck_policy` (the first poll of a start: the owner may have changed the policy), a document the policy
    refused counts as not seen, so it is fetched and judged again."""
    if recheck_policy and rejection is not None and rejection.reason.startswith(POLICY_REASON_PREFIX):
        rejection = None
    if newer_rejection(target, rejection):
        assert rejection is not None  # newer_rejection says there is one
        return rejection.etag
    return None if target is None else target.etag


def interpret(response: Response, stored: TargetRecord | None, now: float,
              policy: Policy) -> TargetStateFetched | TargetStateRejected | None:
    """What a 200 or 304 answer means: a new target to store, a rejected one, or nothing new."""
    if response.status == 304:
        return None
    etag = response.headers.get("etag")
    if etag is not None and len(etag) > MAX_ETAG_LENGTH:
        return TargetStateRejected(None, f"the ETag is longer than {MAX_ETAG_LENGTH} characters", now)
    try:
        target = parse_target_state(response.body)
        enforce_policy(target, policy)
    except (InvalidTargetState, PolicyRefused) as exc:
        return TargetStateRejected(etag, exc.reason, now)
    except Exception as exc:  # noqa: BLE001 - a parser bug must reject the document, not crash the poller
        return TargetStateRejected(etag, f"document: cannot be validated ({type(exc).__name__}: {exc})"[:500], now)
    document = to_json(target)  # as sent: the policy in force when it is applied decides its bind address
    if stored is not None and (etag == stored.etag if etag else document == stored.document):
        return None
    fetched = TargetStateFetched(document, etag, now)
    try:
        size = len(messages.encode(fetched))
    except messages.MessageError as exc:  # e.g. an integer serviceId beyond 64 bits
        return TargetStateRejected(etag, f"document: cannot be stored ({exc})", now)
    if size > MAX_MESSAGE_BYTES:
        return TargetStateRejected(etag, f"document: {size} bytes once normalised, more than can be stored", now)
    return fetched


# -- actor -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollDue:
    """Timer payload: poll now, if no newer poll was scheduled since (`generation`)."""
    generation: int


class Poller(FleetletActor):
    Settings = PollerSettings
    uses = ("device.uuid", "device.token", "cloud", "store", *POLICY_USES)
    options: PollerSettings
    store: Store  # opened in started(); stopping() may come before it
    policy_rechecked = False  # a target the policy refused is judged again once per start (see known_etag)

    def started(self) -> None:
        self.client = CloudClient.from_config(self.config)
        self.policy = policy_from_config(self.config, on_this_host)
        self.uuid = self.config["device"]["uuid"]
        self.store = Store.open(self.config["store"]["path"], readonly=True)
        self.failures = 0
        self.generation = 0  # wakeups cannot be cancelled: only the newest scheduled poll runs
        self.last_poll: float | None = None
        self.error_shown = True  # unknown after a restart: the first success clears any recorded error
        self._schedule(0.0)

    def stopping(self) -> None:
        if "store" in vars(self):
            self.store.close()

    def on_PollNow(self, msg: PollNow) -> None:
        since = float("inf") if self.last_poll is None else time.monotonic() - self.last_poll
        self.log.debug("poll now (%s)", msg.reason)
        self._schedule(max(0.0, self.options.min_gap - since))

    def on_timer(self, payload: object) -> None:
        if isinstance(payload, PollDue) and payload.generation == self.generation:
            self._poll()

    def _schedule(self, delay: float) -> None:
        self.generation += 1
        self.after(delay, PollDue(self.generation))

    def _poll(self) -> None:
        self.last_poll = time.monotonic()
        stored = self.store.load_target()
        etag = known_etag(stored, self.store.last_target_rejection(), recheck_policy=not self.policy_rechecked)
        try:
            response = self.client.get_target(self.uuid, etag, ok=(200, 304))
            self.policy_rechecked = True
        except CloudError as exc:
            self.figures.count("fleetlet_polls", outcome="error" if exc.status is None else str(exc.status))
            if exc.status == 404:  # an answer: no target for this device yet; keep the interval to get it soon
                self.failures = 0
                self._record(f"the cloud has no target state for this device yet ({exc})")
            else:
                self.failures += 1
                self._record(f"cannot fetch the target state: {exc}")
        except Exception as exc:  # noqa: BLE001 - whatever the network or the server does is a failed poll
            self.figures.count("fleetlet_polls", outcome="error")
            self.failures += 1
            self._record(f"cannot fetch the target state: {type(exc).__name__}: {exc}"[:500])
        else:
            self.figures.count("fleetlet_polls", outcome=str(response.status))
            outcome = interpret(response, stored, time.time(), self.policy)
            if outcome is not None:
                self.publish(outcome)
            if isinstance(outcome, TargetStateRejected):
                self.log.warning("rejected the target state %s: %s", outcome.etag, outcome.reason)
                self.failures += 1  # garbage is backed off like an error; persistence records the reason
            else:
                self._succeeded(outcome)
        self._schedule(poll_delay(self.options, self.failures, random.random()))

    def _record(self, reason: str) -> None:
        self.log.warning("%s", reason)
        self.publish(RecordError("poller", "fetch", reason, time.time()))
        self.error_shown = True

    def _succeeded(self, fetched: TargetStateFetched | None) -> None:
        if fetched is not None:
            self.log.info("new target state %s", fetched.etag, extra=context(etag=fetched.etag))
        self.failures = 0
        if self.error_shown:
            self.publish(ClearError("poller", "fetch"))
            self.error_shown = False
