"""The figures an actor keeps of its own work (counts, durations), for the metrics on the local API.

The actor that owns a figure keeps it; its shell sends a snapshot to the supervisor when it changed, at
most every ``FLUSH_INTERVAL`` seconds (``Figures``, coalesced: the newest wins), and the supervisor hands
the latest of every child on with its status, which is how they reach the API. A restarted actor starts
from zero again, which is what a Prometheus counter of a restarted process does.

A snapshot: ``{family: [[labels, value], ...]}``; a duration observed is two families, ``NAME_sum`` and
``NAME_count`` (a Prometheus summary).
"""
from __future__ import annotations

from messages.transport import usage

FLUSH_INTERVAL = 2.0
LINK_BYTES = "fleetlet_link_bytes"


class Figures:
    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def count(self, family: str, amount: float = 1, **labels: str) -> None:
        key = (family, tuple(sorted(labels.items())))
        self._values[key] = self._values.get(key, 0) + amount

    def observe(self, family: str, seconds: float, **labels: str) -> None:
        self.count(f"{family}_sum", seconds, **labels)
        self.count(f"{family}_count", 1, **labels)

    def snapshot(self) -> dict[str, list]:
        values = dict(self._values)
        for (link, direction), size in usage.totals().items():
            values[LINK_BYTES, (("direction", direction), ("link", link))] = size
        out: dict[str, list] = {}
        for (family, labels), value in sorted(values.items()):
            out.setdefault(family, []).append([dict(labels), value])
        return out
