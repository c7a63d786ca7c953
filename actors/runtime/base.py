"""The thin shell every Fleetlet actor shares.

Messages arrive as codec bytes and are decoded strictly before any handler sees them; a handler for
message type ``T`` is the method ``on_T``. A handler that raises crashes the actor on purpose ("let it
crash"): the supervisor restarts it with fresh state recovered from the store, instead of thespian's
default of retrying the message and carrying on with state that may be half-updated.
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
from actors.runtime.hardening import harden_actor_process
from conf.schema import parse
from messages.bus.runtime import ActorCrashed, ActorReady, Configure, Ping, Pong


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

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"fleetlet.{self.name}")

    # -- thespian entry point -------------------------------------------------------------------
    def receiveMessage(self, msg: object, sender: ActorAddress) -> None:
        if not self._hardened:
            harden_actor_process()
            self._hardened = True
        if self._crashed:
            return  # exiting; the restarted instance recovers from persisted state
        if isinstance(msg, (bytes, bytearray)):
            raw = bytes(msg)
            try:
                typed = messages.decode(raw)
            except messages.MessageError as exc:
                self.log.error("rejected a message: %s", exc)
                return
            self._guard(self.dispatch, typed, raw, sender)
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
        """Report the failure to the supervisor and exit; the supervisor restarts this actor."""
        self._crashed = True
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.log.error("crashed: %s\n%s", detail, traceback.format_exc())
        if self.supervisor is not None:
            self.send(self.supervisor, messages.encode(ActorCrashed(self.name, detail[:2000])))
        self.send(self.myAddress, ActorExitRequest())
