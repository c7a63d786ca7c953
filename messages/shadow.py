"""Messages of the shadow listener's own plumbing (the handler contract is ShadowDelta / ShadowApplied in sync)."""
from __future__ import annotations

from dataclasses import dataclass

from messages.codec import message


@message
@dataclass(frozen=True)
class ShadowInboxReady:
    """The listener's MQTT thread put something in its inbox: drain it now.

    A doorbell, not a carrier: what arrived waits in the inbox, so a lost doorbell costs only the
    delay until the listener's next poll.
    """
