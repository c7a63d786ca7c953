"""Actors for bench.runtime: a pinger and a ponger that talk only through the supervisor's routing."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from actors.runtime.base import FleetletActor
from messages.codec import message


@message
@dataclass(frozen=True)
class BenchStart:
    count: int
    path: str


@message
@dataclass(frozen=True)
class BenchPing:
    seq: int
    sent_at: float


@message
@dataclass(frozen=True)
class BenchPong:
    seq: int
    sent_at: float


class Pinger(FleetletActor):
    def on_BenchStart(self, msg: BenchStart) -> None:
        self.count, self.path, self.samples = msg.count, msg.path, []
        self.publish(BenchPing(0, time.perf_counter()))

    def on_BenchPong(self, msg: BenchPong) -> None:
        self.samples.append((time.perf_counter() - msg.sent_at) * 1000)
        if len(self.samples) < self.count:
            self.publish(BenchPing(msg.seq + 1, time.perf_counter()))
        else:
            with open(self.path, "w") as fh:
                json.dump(self.samples, fh)


class Ponger(FleetletActor):
    def on_BenchPing(self, msg: BenchPing) -> None:
        self.publish(BenchPong(msg.seq, msg.sent_at))
