"""Messages of the actor runtime itself: configuration, liveness, supervision and status.

Delivery rule shared by every message type (:func:`coalesce_key`): a class whose newer instance makes an
older one useless declares ``coalesce`` (the fields that say "the same thing", possibly none) and, when
two types speak of the same thing, ``coalesce_as`` (a shared group name). The supervisor keeps at most
one such message per key held for a restarting child and at most one queued towards a busy child; a
message type without ``coalesce`` is never superseded.
"""
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
    pid: int  # the root supervisor's process: run.py tells "slow" (alive, busy) from "dead" by it


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
    state: str  # starting | running | crashed (exiting) | restarting | failed (cooling down) | stopped
    restarts: int
    last_error: str | None
    held_messages: int
    superseded: int  # held or queued messages replaced by a newer one of the same key (nothing lost)
    dropped: int  # held messages dropped past the hold limit (never for a child that escalates)
    figures: JSONObject  # the child's latest Figures (actors.runtime.figures), {} before its first


@message
@dataclass(frozen=True)
class StatusReply:
    state: str  # running | escalated
    reason: str | None
    children: tuple[ChildStatus, ...]
    version: str  # the running agent's, which may differ from the CLI's after an upgrade


@message
@dataclass(frozen=True)
class Figures:
    """A child's figures of its own work, sent to the supervisor when they changed (the newest wins), which
    hands them on with its status (actors.runtime.figures)."""
    name: str
    figures: JSONObject


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


@message
@dataclass(frozen=True)
class Handled:
    """A child's note that it has handled a routed message of coalescing ``key``: the supervisor may send the
    next one of that key (it queues at most one per key towards a child, so a blocked child never makes the
    supervisor's own sends pile up)."""
    name: str
    key: tuple[str, ...]


@message
@dataclass(frozen=True)
class Returned:
    """What reached a child after it crashed, handed back unhandled: the supervisor holds it for the restarted
    child (a crash never swallows a message the child had not started on)."""
    name: str
    raw: bytes


def coalesce_key(msg: object) -> tuple[str, ...] | None:
    """The key under which a newer message of this kind supersedes an older one; None: never superseded."""
    fields: tuple[str, ...] | None = getattr(type(msg), "coalesce", None)
    if fields is None:
        return None
    group: str = getattr(type(msg), "coalesce_as", type(msg).__name__)
    return (group, *(str(getattr(msg, name)) for name in fields))
