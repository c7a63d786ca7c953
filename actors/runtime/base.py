"""The thin shell every Fleetlet actor shares.

Messages arrive as codec bytes and are decoded strictly before any handler sees them; a handler for
message type ``T`` is the method ``on_T``. A handler that raises crashes the actor on purpose ("let it
crash"): the supervisor restarts it with fresh state recovered from the store, instead of thespian's
default of retrying the message and carrying on with state that may be half-updated.

A crashed actor stops receiving at once: what the supervisor routed to it and it had not started on goes
back (``Returned``) and is held for the restarted instance. Only the message being handled when it crashed
is not retried, since it may be the cause (a poison message would crash every incarnation). A routed
message of a coalescing type is acknowledged (``Handled``) once handled, so the supervisor can send the next
one of its key (``actors.runtime.mailbox``).
"""
from __future__ import annotations

import datetime
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    DeadEnvelope,
    PoisonMessage,
    WakeupMessage,
)

import messages
from actors.runtime.figures import FLUSH_INTERVAL
from actors.runtime.figures import Figures as FigureBook
from actors.runtime.hardening import harden_actor_process
from conf.schema import parse
from messages.bus.runtime import (
    ActorCrashed,
    ActorReady,
    Configure,
    Figures,
    Handled,
    Ping,
    Pong,
    Returned,
    coalesce_key,
)
from messages.transport import usage


@dataclass(frozen=True)
class FlushFigures:
    """Timer payload of the shell: send the figures to the supervisor if they changed."""


@dataclass(frozen=True)
class NoSettings:
    """The settings of an actor that has none: any key in its table is refused."""


class FleetletActor(Actor):
    """Subclasses declare ``Settings`` (checked at configuration load, handed over as ``self.options``)
    and ``uses``, the global sections and keys they read (all they get as ``self.config``)."""
    Settings: type[object] = NoSettings
    uses: tuple[str, ...] = ()
    name = "unconfigured"
    config: dict[str, Any]  # set by Configure before started(): the slice of the configuration it `uses`
    options: object = NoSettings()  # subclasses narrow it to their `Settings` (`options: ReporterSettings`)
    supervisor: ActorAddress | None = None
    _hardened = False
    _crashed = False
    _figures: FigureBook | None = None
    _figures_sent: dict | None = None

    @property
    def figures(self) -> FigureBook:
        """This actor's figures of its own work (counts, durations): the metrics' source."""
        if self._figures is None:
            self._figures = FigureBook()
        return self._figures

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"fleetlet.{self.name}")

    # -- thespian entry point -------------------------------------------------------------------
    def receiveMessage(self, msg: object, sender: ActorAddress) -> None:
        if not self._hardened:
            harden_actor_process()
            self._hardened = True
        if self._crashed:
            self._hand_back(msg, sender)
            return
        if isinstance(msg, (bytes, bytearray)):
            raw = bytes(msg)
            try:
                typed = messages.decode(raw)
            except messages.MessageError as exc:
                self.log.error("rejected a message: %s", exc)
                return
            self._guard(self.dispatch, typed, raw, sender)
        elif isinstance(msg, WakeupMessage) and isinstance(msg.payload, FlushFigures):
            self._flush_figures()
        elif isinstance(msg, WakeupMessage):
            self._guard(self.on_timer, msg.payload)
        elif isinstance(msg, ChildActorExited):
            self._guard(self.on_child_exited, msg.childAddress)
        elif isinstance(msg, ActorExitRequest):
            self._guard(self.stopping)
        elif isinstance(msg, DeadEnvelope):
            self._guard(self.on_dead_letter, msg.deadAddress, msg.deadMessage)
        elif isinstance(msg, PoisonMessage):
            self.log.warning("a message this actor sent was not handled: %.200r", msg.poisonMessage)
        else:
            self.log.debug("ignored %s", type(msg).__name__)

    def dispatch(self, typed: object, raw: bytes, sender: ActorAddress) -> None:
        if isinstance(typed, Configure):
            self.name, self.config = typed.name, typed.config
            self.options = parse(self.Settings, typed.settings, f"actors.{self.name}.settings")
            self.supervisor = sender
            self.send(sender, messages.encode(ActorReady(self.name, os.getpid())))
            usage.reset()  # one actor a process: from here on, the bytes its links move are this actor's
            self.after(FLUSH_INTERVAL, FlushFigures())
            self.started()
            return
        if isinstance(typed, Ping):
            self.send(sender, messages.encode(Pong(typed.seq, typed.sent_at, self.name)))
            return
        handler: Callable[[object], None] | None = getattr(self, f"on_{type(typed).__name__}", None)
        if handler is None:
            self.unhandled(typed, raw, sender)
        else:
            handler(typed)
        key = coalesce_key(typed)
        if key is not None and sender == self.supervisor:
            self.send(sender, messages.encode(Handled(self.name, key)))

    def _flush_figures(self) -> None:
        snapshot = self.figures.snapshot()
        if snapshot != self._figures_sent and self.supervisor is not None:
            self.send(self.supervisor, messages.encode(Figures(self.name, snapshot)))
            self._figures_sent = snapshot
        self.after(FLUSH_INTERVAL, FlushFigures())

    def _hand_back(self, msg: object, sender: ActorAddress) -> None:
        """Exiting after a crash: a routed message not yet handled goes back to be held for the next instance."""
        if isinstance(msg, (bytes, bytearray)) and self.supervisor is not None and sender == self.supervisor:
            self.send(self.supervisor, messages.encode(Returned(self.name, bytes(msg))))

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """This class's rules on the configuration it uses, checked before boot; raises conf's ConfigError."""

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - any handler failure crashes the actor on purpose
            self.crash(exc)

    # -- for subclasses ---------------------------------------------------------------------------
    def started(self) -> None:
        """Called after each (re)start once configured: recover state, arm timers."""

    def stopping(self) -> None:
        """Called when the actor is asked to exit: release resources."""

    def on_timer(self, payload: object) -> None:
        """A timer set with :meth:`after` fired."""

    def on_child_exited(self, address: ActorAddress) -> None:
        """A child actor (a worker) exited."""

    def on_dead_letter(self, address: ActorAddress, message: object) -> None:
        """A message sent to an actor that had died (only for actors that handle dead letters)."""

    def unhandled(self, typed: object, raw: bytes, sender: ActorAddress) -> None:
        self.log.warning("no handler for %s", type(typed).__name__)

    def publish(self, msg: object) -> None:
        """Hand a message to the supervisor, which routes it to every subscriber of its type."""
        if self.supervisor is None:
            raise RuntimeError(f"{self.name}: publish before Configure")
        self.send(self.supervisor, messages.encode(msg))

    def after(self, seconds: float, payload: object) -> None:
        self.wakeupAfter(datetime.timedelta(seconds=max(0.0, seconds)), payload=payload)

    def crash(self, exc: BaseException) -> None:
        """Report the failure to the supervisor, which asks this actor to exit and restarts it.

        The exit request comes from the supervisor, not from this actor itself: everything the supervisor
        sent before it arrives first and is handed back (``Returned``), so nothing routed here is lost.
        """
        self._crashed = True
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.log.error("crashed: %s\n%s", detail, traceback.format_exc())
        if self.supervisor is not None:
            self.send(self.supervisor, messages.encode(ActorCrashed(self.name, detail[:2000])))
        else:
            self.send(self.myAddress, ActorExitRequest())
