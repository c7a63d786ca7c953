"""OTP-style restart intensity, as a pure function; the delay is the shared backoff (messages.transport.backoff)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from messages.transport.backoff import backoff_delay


@dataclass(frozen=True)
class RestartPolicy:
    base_delay: float
    max_delay: float
    intensity: int  # restarts allowed within `period`
    period: float

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "RestartPolicy":
        """From the checked `supervisor` section (a parsed TOML table: its values' types are its schema's)."""
        return cls(section["restart_base_delay"], section["restart_max_delay"],
                   section["intensity"], section["period"])


@dataclass(frozen=True)
class RestartDecision:
    history: tuple[float, ...]  # restart times still inside the period, this one included
    delay: float | None  # None: the limit is reached


def decide_restart(policy: RestartPolicy, history: tuple[float, ...], now: float) -> RestartDecision:
    """A child died at ``now``: how long to wait before restarting it, or None past the limit."""
    recent = tuple(t for t in history if now - t < policy.period) + (now,)
    if len(recent) > policy.intensity:
        return RestartDecision(recent, None)
    delay = backoff_delay(len(recent), policy.base_delay, policy.max_delay)  # no jitter: a local child, no herd
    return RestartDecision(recent, delay)
