"""Messages of the shadow conversation: the listener, its handlers, and what persistence keeps of it.

The handler contract is ShadowDeltaUpdated (to every handler) answered by ShadowDeltaApplied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from messages.codec import message


@message
@dataclass(frozen=True)
class ShadowDeltaUpdated:
    """Desired values that differ from reported, for the delta handlers to apply."""
    thing_name: str
    shadow_name: str  # "" for the classic shadow (messages.protocol.shadow_topics.CLASSIC_SHADOW)
    version: int
    delta: dict[str, Any]
    desired: dict[str, Any]


@message
@dataclass(frozen=True)
class ShadowDeltaApplied:
    """A handler's answer: the device's actual state for the keys it handled, and what it could not apply."""
    coalesce: ClassVar[tuple[str, ...]] = ("handler", "thing_name", "shadow_name")  # newer supersedes older
    handler: str
    thing_name: str
    shadow_name: str
    version: int
    reported: dict[str, Any]
    failures: dict[str, Any]  # dotted key path -> reason


@message
@dataclass(frozen=True)
class ShadowDocumentSeen:
    """The last full shadow document the device knows (from a get or an accepted update)."""
    coalesce: ClassVar[tuple[str, ...]] = ("thing_name", "shadow_name")  # newer supersedes older (runtime.coalesce_key)
    thing_name: str
    shadow_name: str
    document: dict[str, Any]
    version: int



@message
@dataclass(frozen=True)
class ShadowInboxFilled:
    """The listener's MQTT thread put something in its inbox: drain it now.

    A doorbell, not a carrier: what arrived waits in the inbox, so a lost doorbell costs only the
    delay until the listener's next poll.
    """
