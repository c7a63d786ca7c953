"""Actors and messages used only by the runtime's multi-actor tests, and the reader of what Recorder wrote."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from dataclasses import dataclass

from actors.runtime.base import FleetletActor
from messages.codec import message


@message
@dataclass(frozen=True)
class Probe:
    seq: int


@message
@dataclass(frozen=True)
class Boom:
    reason: str


@message
@dataclass(frozen=True)
class Quit:
    code: int


@dataclass(frozen=True)
class RecorderSettings:
    path: str


class Recorder(FleetletActor):
    """Appends every message it receives, with its own pid, to the JSON-lines file in settings.path."""
    Settings = RecorderSettings

    def unhandled(self, typed, raw: bytes, sender) -> None:
        row = {"actor": self.name, "pid": os.getpid(), "type": type(typed).__name__,
               **dataclasses.asdict(typed)}
        with open(self.options.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def complete_lines(data: bytes) -> list[str]:
    """The lines of ``data`` that end in a newline (pure).

    A test reads the file while the Recorder, another process, may be halfway through appending a row:
    whatever follows the last newline is still being written, so it is left for the next read.
    """
    return data[:data.rfind(b"\n") + 1].decode().split("\n")[:-1]  # not splitlines(): U+2028 is no row end


def recorded_rows(path) -> list[dict]:
    """The rows a Recorder has finished appending to ``path`` so far; none before the file exists."""
    try:
        data = pathlib.Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in complete_lines(data)]


class Crasher(FleetletActor):
    """Raises on every Boom: the supervisor must restart it with backoff, then hit the limit."""

    def on_Boom(self, msg: Boom) -> None:
        raise RuntimeError(f"boom: {msg.reason}")


class FragileRecorder(Recorder):
    """A Recorder whose Boom handler works a moment (the probes sent after it queue up meanwhile), then raises."""

    def on_Boom(self, msg: Boom) -> None:
        time.sleep(0.3)  # work in progress, not synchronisation: the test waits on what is recorded
        raise RuntimeError(f"boom: {msg.reason}")


@dataclass(frozen=True)
class StuckSettings:
    path: str  # where it records each PollNow it handles
    release: str  # it stays blocked in its first PollNow until this file exists


class Stuck(FleetletActor):
    """Blocks in its first PollNow until released, as a poller stuck on a cloud trickling its answer."""
    Settings = StuckSettings

    def on_PollNow(self, msg) -> None:
        with open(self.options.path, "a") as fh:
            fh.write(json.dumps({"actor": self.name, "pid": os.getpid(), "reason": msg.reason}) + "\n")
        deadline = time.monotonic() + 60
        while not os.path.exists(self.options.release) and time.monotonic() < deadline:
            time.sleep(0.05)


class Idle(FleetletActor):
    """A bystander whose pid must not change while others die; Quit makes it leave through os._exit."""

    def on_Quit(self, msg: Quit) -> None:
        os._exit(msg.code)
