"""Messages of the two sync halves and of the persistence actor that stores what they must not lose.

The persistence actor is the only writer of the agent's store. Writers hand it a message and carry on;
what must survive a crash is re-announced by persistence when it (re)starts, and every actor recovers
its own state from the store (opened read-only) when it starts, so no correctness depends on a message
that a crash could lose.
"""
from __future__ import annotations

from dataclasses import dataclass

from messages.codec import message

# -- target state (containers) --------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class TargetStateFetched:
    """The poller fetched a new, valid target state; persistence stores it, then announces it."""
    document: dict
    etag: str | None
    fetched_at: float


@message
@dataclass(frozen=True)
class TargetStateRejected:
    """The cloud served a target state that failed validation: the last good one stays in force."""
    etag: str | None
    reason: str
    at: float


@message
@dataclass(frozen=True)
class TargetStateStored:
    """A target state is durable in the store: reconcile toward it (read it from the store)."""
    etag: str | None
    stored_at: float


@message
@dataclass(frozen=True)
class PollNow:
    """Poll the cloud's target state at once (a notice over MQTT, or an operator)."""
    reason: str


@message
@dataclass(frozen=True)
class CurrentState:
    """The device's current state as the reconciler read it from the engine, in report form."""
    state: dict
    at: float


@message
@dataclass(frozen=True)
class RestartServices:
    """Restart these services of an app (their configuration changed under them)."""
    app_id: str
    services: tuple[str, ...]
    reason: str


# -- shadow (configuration) -----------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class ShadowDelta:
    """Desired values that differ from reported, for the delta handlers to apply."""
    thing: str
    shadow: str  # "" for the classic shadow
    version: int
    delta: dict
    desired: dict


@message
@dataclass(frozen=True)
class ShadowApplied:
    """A handler's answer: the device's actual state for the keys it handled, and what it could not apply."""
    handler: str
    thing: str
    shadow: str
    version: int
    reported: dict
    failures: dict  # dotted key path -> reason


@message
@dataclass(frozen=True)
class ShadowDocumentSeen:
    """The last full shadow document the device knows (from a get or an accepted update)."""
    thing: str
    shadow: str
    document: dict
    version: int


# -- the persistence actor's outbox and records ---------------------------------------------------------


@message
@dataclass(frozen=True)
class EnqueueReport:
    """Merge a patch into a channel's pending report (sent merged once the link is back)."""
    channel: str
    patch: dict


@message
@dataclass(frozen=True)
class ReportPending:
    """A channel has a pending report; its sender sends it and acknowledges with AckReport."""
    channel: str
    report_id: int
    patch: dict


@message
@dataclass(frozen=True)
class AckReport:
    """The cloud accepted report ``report_id``; ``accepted_state`` is what the cloud now holds."""
    channel: str
    report_id: int
    accepted_state: dict


@message
@dataclass(frozen=True)
class RecordError:
    """Something the device cannot do, kept in the store and shown by ``run.py status``."""
    source: str
    key: str
    message: str
    at: float


@message
@dataclass(frozen=True)
class ClearError:
    source: str
    key: str
