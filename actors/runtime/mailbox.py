"""What the supervisor owes one child: messages held while it is down, and the one per key queued to it.

Pure bookkeeping (no actor, no clock), so its rules are tested alone:

- **Held while down.** A message routed to a child that is restarting (or crashed, or failed) is held and
  delivered, in order, once the child is back. A message whose type declares a coalescing key
  (``messages.bus.runtime.coalesce_key``) replaces the held one of the same key: newer supersedes older, so
  a burst of ``PollNow`` or ``CurrentStateObserved`` is one message, and nothing is lost by it.
- **Bounded.** Past ``limit`` held messages the oldest is dropped and counted (``dropped``, in status),
  except for a ``keep_all`` child: one the agent cannot run without (persistence, which escalates at its
  limit). Its messages are never dropped; its outage is bounded instead (a few restarts, then the whole
  agent restarts and every actor recomputes what it had sent from the store). Dropping for the others is
  safe by design: each recovers its state from the store and the engine, and what it is told again comes
  again (drift reports, shadow re-reads, re-asked deltas).
- **At most one per key in flight.** A coalescing message sent to a running child is "in flight" until the
  child says it has handled it (``Handled``); a newer one of the same key waits in its slot, replacing any
  older one waiting. A child blocked for a minute (a poller stuck on a slow cloud) thus has at most one
  message per key queued towards it, and the supervisor's own sends, status replies included, never pile
  up behind it (thespian blocks a sender whose transmit queue is full).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

Key = tuple[str, ...]


@dataclass
class Mailbox:
    limit: int
    keep_all: bool = False
    held: collections.deque[tuple[Key | None, bytes]] = field(default_factory=collections.deque)
    in_flight: dict[Key, bytes | None] = field(default_factory=dict)  # key -> the next one waiting, if any
    superseded: int = 0
    dropped: int = 0

    def hold(self, key: Key | None, raw: bytes) -> None:
        """Keep ``raw`` for the child's next start."""
        if key is not None:
            for index, (held_key, _) in enumerate(self.held):
                if held_key == key:
                    del self.held[index]
                    self.superseded += 1
                    break
        self.held.append((key, raw))
        while len(self.held) > self.limit and not self.keep_all:
            self.held.popleft()
            self.dropped += 1

    def offer(self, key: Key | None, raw: bytes) -> bytes | None:
        """The child runs: what to send it now (None: ``raw`` waits behind the one of its key in flight)."""
        if key is None:
            return raw
        if key in self.in_flight:
            if self.in_flight[key] is not None:
                self.superseded += 1
            self.in_flight[key] = raw
            return None
        self.in_flight[key] = None
        return raw

    def handled(self, key: Key) -> bytes | None:
        """The child handled the message of ``key`` in flight: the one waiting to go next, if any."""
        waiting = self.in_flight.pop(key, None)
        if waiting is not None:
            self.in_flight[key] = None
        return waiting

    def child_down(self) -> None:
        """The child died: what waited behind an in-flight message is held for the next start."""
        waiting, self.in_flight = self.in_flight, {}
        for key, raw in waiting.items():
            if raw is not None:
                self.hold(key, raw)

    def restart(self) -> list[bytes]:
        """The child starts again: everything held, in order, to send now (each key counted in flight)."""
        self.child_down()
        out = []
        while self.held:
            key, raw = self.held.popleft()
            if key is not None:
                self.in_flight[key] = None
            out.append(raw)
        return out
