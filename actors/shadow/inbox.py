"""The hand-over from the shadow listener's MQTT thread to the listener actor.

The thread never delivers message by message into the actor (thespian lost sends from a thread under
bursts): it parses what arrives, files it here, coalesced (newest delta version wins) and bounded, and
rings a doorbell only when the inbox turns non-empty. The actor takes everything at once, on the doorbell
or on its next poll, so a lost doorbell costs a poll interval, never a message.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable, Iterable

from actors.shadow.payloads import (
    Delta,
    Incoming,
    PayloadError,
    PayloadLimits,
    parse_payload,
    subscriptions,
)
from messages.protocol.api import poll_now_topic
from messages.protocol.shadow_topics import parse_shadow_topic, shadow_topics

MAX_RESPONSES = 256  # answers held between two drains; more means a flood, and the oldest go
POLL_NOW_REASON = "poll-now notice over MQTT"


@dataclasses.dataclass(frozen=True)
class Batch:
    epoch: int  # connections that got every subscription acknowledged, so far
    ready: bool  # the link is up and subscribed now
    responses: tuple[tuple[str, Incoming], ...]  # (shadow name, answer to one of our requests), in order
    deltas: tuple[tuple[str, Delta], ...]  # the newest delta per shadow
    malformed: tuple[tuple[str, int, str], ...]  # (shadow name, count, last reason)
    poll_now: str | None
    link_failure: str | None = None  # None: no news; "": connected since; else why the last attempt failed


class Inbox:
    def __init__(self, thing: str, profile: str, names: Iterable[str], token_prefix: str,
                 limits: PayloadLimits, uuid: str, ring: Callable[[], None]):
        self._routes: dict[str, tuple[str, str]] = {}  # topic -> (shadow name, operation)
        for name in names:
            for topic in subscriptions(profile, shadow_topics(profile, thing, name)):
                parsed = parse_shadow_topic(topic)
                assert parsed is not None  # shadow_topics built it
                self._routes[topic] = (name, parsed[3])
        self.poll_now_topic = poll_now_topic(uuid)
        self._token_prefix, self._limits, self._ring = token_prefix, limits, ring
        self._lock = threading.Lock()
        self._rung = False
        self._epoch, self._ready = 0, False
        self._responses: collections.deque = collections.deque(maxlen=MAX_RESPONSES)
        self._deltas: dict[str, Delta] = {}
        self._malformed: dict[str, tuple[int, str]] = {}
        self._poll_now: str | None = None
        self._link_failure: str | None = None

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the link subscribes to."""
        return (*self._routes, self.poll_now_topic)

    # -- filled from other threads --------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes) -> None:
        """One MQTT message (the link thread)."""
        route = self._routes.get(topic)
        if route is None:
            if topic == self.poll_now_topic:  # whatever it carries: the poller rate-limits its polls
                self._file(self._note_poll_now)
            return
        name, operation = route
        try:
            incoming = parse_payload(operation, payload, self._limits)
        except PayloadError as exc:
            problem = f"{topic}: {exc}"  # `exc` is unbound once the except block ends; the lambda runs later
            self._file(lambda: self._count_malformed(name, problem))
            return
        if isinstance(incoming, Delta):
            self._file(lambda: self._keep_newest(name, incoming))
        elif incoming.client_token is not None and incoming.client_token.startswith(self._token_prefix):
            self.put_response(name, incoming)
        # else: an answer to another client's request on the same topic

    def put_response(self, name: str, incoming: Incoming) -> None:
        """An answer to one of our requests (the link thread, or the HTTPS read's thread)."""
        self._file(lambda: self._responses.append((name, incoming)))

    def link_changed(self, ready: bool) -> None:
        def change():
            self._epoch += 1 if ready else 0
            self._ready = ready
            if ready:
                self._link_failure = ""
        self._file(change)

    def link_failed(self, reason: str) -> None:
        """A connection attempt failed (the link thread): the latest reason wins."""
        def change():
            self._link_failure = reason
        self._file(change)

    def _note_poll_now(self) -> None:
        self._poll_now = POLL_NOW_REASON

    def _keep_newest(self, name: str, delta: Delta) -> None:
        held = self._deltas.get(name)
        if held is None or delta.version >= held.version:
            self._deltas[name] = delta

    def _count_malformed(self, name: str, reason: str) -> None:
        count, _ = self._malformed.get(name, (0, ""))
        self._malformed[name] = (count + 1, reason)

    def _file(self, change: Callable[[], None]) -> None:
        with self._lock:
            change()
            ring, self._rung = not self._rung, True
        if ring:
            self._ring()

    # -- drained by the actor ---------------------------------------------------------------------------------
    def take(self) -> Batch:
        with self._lock:
            batch = Batch(self._epoch, self._ready, tuple(self._responses), tuple(self._deltas.items()),
                          tuple((name, count, reason) for name, (count, reason) in self._malformed.items()),
                          self._poll_now, self._link_failure)
            self._responses.clear()
            self._deltas, self._malformed, self._poll_now, self._link_failure = {}, {}, None, None
            self._rung = False
        return batch
