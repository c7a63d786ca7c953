"""Admin ports for test agents, outside the kernel's ephemeral port range.

thespian's admin binds a fixed port, and a restarted agent binds the same one again. A port from the
ephemeral range (what binding port 0 hands out) can meanwhile become the source port of any outgoing
connection on the machine; the admin then cannot bind it, and under load (many connections) a restart
failed with thespian's "not a valid or useable ActorSystem Admin". A device's admin port (19500) is
outside that range; a test agent's is too.
"""
from __future__ import annotations

import pathlib
import random

from actors.runtime.processes import port_bindable

EPHEMERAL_RANGE = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000  # below: ports that well-known services may claim


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(field) for field in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def outside(low: int, high: int) -> range:
    """The unprivileged ports the kernel never picks as source ports: below the range, else above it (pure)."""
    below, above = range(LOWEST, low), range(max(LOWEST, high + 1), 65536)
    return below if len(below) >= len(above) else above


def free_admin_port(choose=random.choice) -> int:
    """A port outside the ephemeral range that nothing holds now (random, so parallel sessions rarely meet)."""
    candidates = outside(*ephemeral_range())
    for _ in range(500):
        port = choose(candidates)
        if port_bindable(port):
            return port
    raise RuntimeError(f"no bindable port in {candidates}")
