"""Bytes each link has sent and received in this process, for the metrics (a fleet owner pays for them).

One actor runs per process, so a process-wide tally is that actor's; the actor shell hands it on with its
figures (``actors.runtime.figures``). Counted where the bytes cross: the HTTP client (request and answer as
written and read, head included) and the MQTT link (each packet's topic and payload).
"""
from __future__ import annotations

from collections import Counter

_BYTES: Counter[tuple[str, str]] = Counter()


def count(link: str, direction: str, size: int) -> None:
    """``link``: "http" or "mqtt"; ``direction``: "sent" or "received"."""
    _BYTES[link, direction] += size


def reset() -> None:
    """Start this process's tally from zero: a forked actor inherits its parent's counts, which are not its own."""
    _BYTES.clear()


def totals() -> dict[tuple[str, str], int]:
    return dict(_BYTES)
