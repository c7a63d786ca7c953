"""Messages of the actor runtime itself: configuration, liveness, supervision and status."""
from __future__ import annotations

from dataclasses import dataclass

from messages.codec import message
from messages.protocol.json import JSONObject


@message
@dataclass(frozen=True)
class Configure:
    """First message a child receives after every (re)start: who it is, the part of the configuration its
    class ``uses`` (no secret it does not name), and its settings table, as checked at load."""
    name: str
    config: JSONObject
    settings: JSONObject


@message
@dataclass(frozen=True)
class ActorReady:
    """A child's answer to Configure: it runs, in this process."""
    name: str
    pid: int


@message
@dataclass(frozen=True)
class ActorCrashed:
    """A child's handler raised: the child exits right after sending this, the supervisor restarts it."""
    name: str
    error: str


@message
@dataclass(frozen=True)
class Boot:
    """From run.py to the root supervisor: start the children the configuration lists."""
    config: JSONObject


@message
@dataclass(frozen=True)
class Booted:
    children: tuple[str, ...]


@message
@dataclass(frozen=True)
class BootFailed:
    """The configuration names an actor that cannot be loaded or an unknown message type."""
    reason: str


@message
@dataclass(frozen=True)
class GetStatus:
    pass


@dataclass(frozen=True)
class ChildStatus:
    name: str
    cls: str
    pid: int | None
    state: str  # starting | running | restarting | failed | stopped
    restarts: int
    last_error: str | None
    held_messages: int


@message
@dataclass(frozen=True)
class StatusReply:
    state: str  # running | escalated
    reason: str | None
    children: tuple[ChildStatus, ...]
    version: str  # the running agent's, which may differ from the CLI's after an upgrade


@message
@dataclass(frozen=True)
class Ping:
    """Round-trip probe; any actor answers with Pong to whoever sent it (benchmarks, health checks)."""
    seq: int
    sent_at: float


@message
@dataclass(frozen=True)
class Pong:
    seq: int
    sent_at: float
    responder: str
