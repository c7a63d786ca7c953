"""A pull's progress from the engine's event stream (pure): what the per-service progress and the stall
timeout are computed from.

The engine streams one JSON event per change of a layer: "Pulling fs layer", "Downloading" and "Extracting"
with ``progressDetail: {current, total}``, "Download complete", "Pull complete", "Already exists", "Retrying
in N seconds"; an ``error`` event ends a failed pull. Only bytes count as progress: a stream of retries
moves nothing, so a cut link shows as a stall.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

DONE_DOWNLOADING = frozenset({"Download complete", "Verifying Checksum", "Extracting", "Pull complete"})


@dataclass(frozen=True)
class Layer:
    downloaded: int = 0
    size: int = 0  # 0 while unknown
    extracted: int = 0


@dataclass(frozen=True)
class PullState:
    layers: Mapping[str, Layer] = field(default_factory=dict)

    @property
    def downloaded(self) -> int:
        return sum(layer.downloaded for layer in self.layers.values())

    @property
    def extracted(self) -> int:
        return sum(layer.extracted for layer in self.layers.values())

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers.values())


class PullFailed(Exception):
    """The stream's error event; the text is the engine's (the registry's reason: "unauthorized: ...")."""


def fold(state: PullState, event: Mapping[str, object]) -> PullState:
    """The state after one event; raises PullFailed on an error event. Unknown events change nothing."""
    if "error" in event:
        raise PullFailed(str(event["error"]))
    layer_id, status = event.get("id"), event.get("status")
    if not isinstance(layer_id, str) or not isinstance(status, str) or status.startswith(("Pulling from", "Digest")):
        return state
    layer = state.layers.get(layer_id, Layer())
    detail = event.get("progressDetail")
    current, total = _detail(detail if isinstance(detail, Mapping) else {})
    if status == "Downloading":
        layer = replace(layer, downloaded=max(layer.downloaded, current), size=total or layer.size)
    elif status == "Extracting":
        layer = replace(layer, downloaded=max(layer.size, layer.downloaded), extracted=max(layer.extracted, current))
    elif status in DONE_DOWNLOADING:
        layer = replace(layer, downloaded=max(layer.size, layer.downloaded))
        if status == "Pull complete":
            layer = replace(layer, extracted=max(layer.extracted, layer.size))
    elif status != "Pulling fs layer" and status != "Waiting":
        return state  # "Already exists", "Retrying in 5 seconds"...: no bytes
    return PullState({**state.layers, layer_id: layer})


def _detail(detail: Mapping[str, object]) -> tuple[int, int]:
    current, total = detail.get("current", 0), detail.get("total", 0)
    as_int = [value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
              for value in (current, total)]
    return as_int[0], as_int[1]


def percent(done: int, total: int) -> int:
    """Whole percent, never 100 before the end (a pull's total can grow as layers announce their size)."""
    if total <= 0:
        return 0
    return min(99, done * 100 // total)
