"""Messages of the durable outbox and the error records, kept by the persistence actor for both sync halves.

The persistence actor is the only writer of the agent's store. Writers hand it a message and carry on;
what must survive a crash is re-announced by persistence when it (re)starts, and every actor recovers
its own state from the store (opened read-only) when it starts, so no correctness depends on a message
that a crash could lose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from messages.codec import message
from messages.protocol.json import JSONObject


@message
@dataclass(frozen=True)
class EnqueueReport:
    """Merge a patch into a channel's pending report (sent merged once the link is back)."""
    channel: str
    patch: JSONObject


@message
@dataclass(frozen=True)
class ReportQueued:
    """A channel has a pending report; its sender sends it and acknowledges with AckReport."""
    coalesce: ClassVar[tuple[str, ...]] = ("channel",)  # newer supersedes older (runtime.coalesce_key)
    channel: str
    report_id: int
    patch: JSONObject


@message
@dataclass(frozen=True)
class AckReport:
    """The cloud accepted report ``report_id``; ``accepted_state`` is what the cloud now holds."""
    channel: str
    report_id: int
    accepted_state: JSONObject


@message
@dataclass(frozen=True)
class RecordError:
    """Something the device cannot do, kept in the store and shown by ``run.py status``."""
    coalesce: ClassVar[tuple[str, ...]] = ("source", "key")  # newer supersedes older (runtime.coalesce_key)
    coalesce_as: ClassVar[str] = "error"  # errors: record and clear supersede each other
    source: str
    key: str
    message: str
    at: float


@message
@dataclass(frozen=True)
class ClearError:
    coalesce: ClassVar[tuple[str, ...]] = ("source", "key")  # newer supersedes older (runtime.coalesce_key)
    coalesce_as: ClassVar[str] = "error"  # errors: record and clear supersede each other
    source: str
    key: str


@message
@dataclass(frozen=True)
class StoreReopened:
    """Persistence (re)started: what a sender enqueued before may not be durable. Senders take their outbox
    from the store again (``OutboxSender.resync``) and report what differs; the shadows read again."""
    coalesce: ClassVar[tuple[str, ...]] = ()  # newer supersedes older
