"""The root supervisor: starts the configured children, restarts them OTP-style and routes messages.

Children publish typed messages to the supervisor, which forwards them to every child subscribed to
that type. Routing through the supervisor is what keeps a restarted child (a new address) reachable:
while a child is down, what is addressed to it is held and delivered once it is back
(``actors.runtime.mailbox``: coalescing, bounds, at most one message per key in flight to a busy child).

Restart policy (OTP ``one_for_one``, on purpose not ``one_for_all``): a child that dies is restarted alone,
with backoff. At its intensity limit a child does what its ``on_limit`` says: ``cooldown`` (the default)
marks it failed and retries it after ``supervisor.cooldown`` seconds while every other child runs on;
``escalate`` (persistence, the store's one writer, which every actor depends on) stops the tree, and run.py
restarts it whole. No child is ever restarted because a sibling failed, unless that sibling is the one
they all depend on: the siblings of a failing reconciler or poller did nothing wrong, and each actor
recovers its own state from the store, so a restart of theirs would only cost time.

The supervisor's own mailbox must stay short so that run.py's status asks are answered at once: it never
blocks on a child (sends are asynchronous and at most one per key is queued to each child) and does no
work besides routing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from thespian.actors import ActorExitRequest, InvalidActorSpecification

import messages
from actors.runtime.base import FleetletActor
from actors.runtime.mailbox import Mailbox
from actors.runtime.restart import RestartPolicy, decide_restart
from conf.actors import check_actors, config_slice
from conf.schema import ConfigError
from fleetlet_version import __version__
from messages.bus.runtime import (
    ActorCrashed,
    ActorReady,
    Boot,
    Booted,
    BootFailed,
    ChildStatus,
    Configure,
    Figures,
    GetStatus,
    Handled,
    Ping,
    Returned,
    StatusReply,
    coalesce_key,
)

GLOBAL_NAME = "fleetlet-supervisor"


@dataclass
class Child:
    name: str
    cls: str
    subscribes: frozenset[str]
    config: dict  # the part of the configuration its class uses
    settings: dict
    on_limit: str
    address: object = None
    dead_address: object = None  # where sends that fail as dead letters were going
    pid: int | None = None
    state: str = "starting"
    restarts: int = 0
    history: tuple[float, ...] = ()
    last_error: str | None = None
    generation: int = 0  # wakeups cannot be cancelled: a stale restart timer carries an old generation
    mailbox: Mailbox = field(default_factory=lambda: Mailbox(1))  # boot gives it the configured limit
    figures: dict = field(default_factory=dict)  # its latest Figures

    def status(self) -> ChildStatus:
        box = self.mailbox
        return ChildStatus(self.name, self.cls, self.pid, self.state, self.restarts,
                           self.last_error, len(box.held), box.superseded, box.dropped, self.figures)


@dataclass(frozen=True)
class RestartDue:
    """Timer payload: restart the child `name`, unless it died or was restarted since (`generation`)."""
    name: str
    generation: int


class Supervisor(FleetletActor):
    name = "supervisor"
    policy: RestartPolicy  # set by Boot, before any child exists (only children's deaths read it)

    def __init__(self) -> None:
        super().__init__()
        self.children: dict[str, Child] = {}
        self.escalated: str | None = None
        self.section: dict = {}

    # -- boot ---------------------------------------------------------------------------------------
    def on_Boot(self, msg: Boot, sender) -> None:
        if self.children:  # a second Boot (a retried ask) must not start a second set
            self.send(sender, messages.encode(Booted(tuple(self.children), os.getpid())))
            return
        try:  # conf.load checked this already; a configuration built in code is checked here
            classes = check_actors(msg.config)
        except ConfigError as exc:
            self.send(sender, messages.encode(BootFailed(str(exc))))
            return
        self.handleDeadLetters(startHandling=True)
        self.section = msg.config["supervisor"]
        self.policy = RestartPolicy.from_config(self.section)
        for name, cls in classes.items():
            entry = msg.config["actors"][name]
            on_limit = entry.get("on_limit") or self.section["on_limit"]
            self.children[name] = Child(
                name, entry["class"], frozenset(entry.get("subscribes", [])),
                config_slice(msg.config, cls.uses), entry.get("settings", {}), on_limit,
                mailbox=Mailbox(self.section["hold_limit"], keep_all=on_limit == "escalate"))
        for child in self.children.values():
            self._start(child)
        self.send(sender, messages.encode(Booted(tuple(self.children), os.getpid())))

    def _start(self, child: Child) -> None:
        try:
            child.address = self.createActor(child.cls)
        except InvalidActorSpecification as exc:
            child.last_error = f"cannot start {child.cls}: {exc}"
            self._died(child)
            return
        child.state, child.pid = "starting", None
        self.send(child.address, messages.encode(Configure(child.name, child.config, child.settings)))
        for raw in child.mailbox.restart():  # thespian keeps per-pair order: these arrive after Configure
            self.send(child.address, raw)

    # -- messages from children and from run.py ------------------------------------------------------
    def dispatch(self, typed, raw: bytes, sender) -> None:
        handler = getattr(self, f"on_{type(typed).__name__}", None)
        if handler is not None:
            handler(typed, sender)
        elif isinstance(typed, Ping):
            super().dispatch(typed, raw, sender)
        else:
            self.route(typed, raw)

    def on_ActorReady(self, msg: ActorReady, sender) -> None:
        child = self.children.get(msg.name)
        if child is not None and child.address == sender:
            child.pid, child.state = msg.pid, "running"

    def on_ActorCrashed(self, msg: ActorCrashed, sender) -> None:
        """The child crashed and waits for our exit request: everything we sent it before that request reaches
        it first (thespian keeps per-pair order) and comes back as Returned; what is routed later is held."""
        child = self.children.get(msg.name)
        if child is not None and child.address == sender:
            child.last_error = msg.error
            if child.state in ("starting", "running"):
                child.state = "crashed"
        self.send(sender, ActorExitRequest())

    def on_Returned(self, msg: Returned, sender) -> None:
        """What the crashed child received and did not handle: held for its next start."""
        child = self.children.get(msg.name)
        if child is not None:
            self._deliver(child, msg.raw, self._key_of(msg.raw))

    def on_Handled(self, msg: Handled, sender) -> None:
        child = self.children.get(msg.name)
        if child is None or child.address != sender:
            return
        waiting = child.mailbox.handled(msg.key)
        if waiting is not None:
            self.send(child.address, waiting)

    def on_Figures(self, msg: Figures, sender) -> None:
        child = self.children.get(msg.name)
        if child is not None and child.address == sender:
            child.figures = msg.figures

    def on_GetStatus(self, msg: GetStatus, sender) -> None:
        state = "escalated" if self.escalated else "running"
        reply = StatusReply(state, self.escalated, tuple(c.status() for c in self.children.values()), __version__)
        self.send(sender, messages.encode(reply))

    def route(self, typed: object, raw: bytes) -> None:
        type_name, key = type(typed).__name__, coalesce_key(typed)
        for child in self.children.values():
            if type_name in child.subscribes:
                self._deliver(child, raw, key)

    def _deliver(self, child: Child, raw: bytes, key: tuple[str, ...] | None) -> None:
        box = child.mailbox
        if child.address is not None and child.state in ("starting", "running"):
            now = box.offer(key, raw)
            if now is not None:
                self.send(child.address, now)
            return
        dropped = box.dropped
        box.hold(key, raw)
        if box.dropped > dropped:
            self.log.warning("%s: hold limit reached, dropped the oldest held message (%d so far)",
                             child.name, box.dropped)

    @staticmethod
    def _key_of(raw: bytes) -> tuple[str, ...] | None:
        try:
            return coalesce_key(messages.decode(raw))
        except messages.MessageError:
            return None

    # -- supervision --------------------------------------------------------------------------------
    def on_child_exited(self, address) -> None:
        for child in self.children.values():
            if child.address is not None and child.address == address:
                self._died(child)
                return

    def on_dead_letter(self, address, message) -> None:
        """A message sent to a child between its death and our notice of it: hold it for the new one."""
        if not isinstance(message, (bytes, bytearray)):
            return
        raw = bytes(message)
        for child in self.children.values():
            if child.address is not None and child.address == address:
                child.mailbox.hold(self._key_of(raw), raw)  # its exit notice is on the way; restart flushes this
                return
            if child.dead_address is not None and child.dead_address == address:
                self._deliver(child, raw, self._key_of(raw))
                return

    def _died(self, child: Child) -> None:
        child.dead_address = child.address or child.dead_address
        child.address, child.pid = None, None
        child.mailbox.child_down()
        if self.escalated or child.state == "stopped":
            return
        decision = decide_restart(self.policy, child.history, time.monotonic())
        child.history = decision.history
        child.generation += 1
        if decision.delay is not None:
            child.state = "restarting"
            self.after(decision.delay, RestartDue(child.name, child.generation))
        elif child.on_limit == "cooldown":
            child.state = "failed"
            self.log.error("%s keeps dying (%s); retrying in %.0f s", child.name, child.last_error,
                           self.section["cooldown"])
            self.after(self.section["cooldown"], RestartDue(child.name, child.generation))
        else:
            self._escalate(f"{child.name} exceeded {self.policy.intensity} restarts in "
                           f"{self.policy.period:g} s; last error: {child.last_error}")

    def on_timer(self, payload: object) -> None:
        if not isinstance(payload, RestartDue):
            return
        child = self.children.get(payload.name)
        if child is None or child.generation != payload.generation or self.escalated:
            return
        if child.state == "failed":
            child.history = ()  # after a cooldown the child gets a fresh intensity budget
        child.restarts += 1
        self._start(child)

    def _escalate(self, reason: str) -> None:
        """Stop every child; run.py sees the escalated status and exits for the service manager."""
        self.escalated = reason
        self.log.critical("escalating: %s", reason)
        for child in self.children.values():
            if child.address is not None:
                self.send(child.address, ActorExitRequest())
            child.state = "stopped"

    def stopping(self) -> None:
        for child in self.children.values():
            child.state = "stopped"
