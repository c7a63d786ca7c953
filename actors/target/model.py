"""The target side's data model: what the engine holds (`EngineState`), and what the planner decides (`Step`,
`Verdict`).

`EngineState` is rebuilt from the engine's labels alone and never remembered across reads, which is what lets
the planner be level-triggered. (The bus message announcing the device's state in report form is
`messages.bus.target.CurrentState`; this is the engine's raw view, planned from.)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from messages.protocol.target_state import Service

Key = tuple[str, str | None]  # (app id, service name); None: the app's housekeeping

ACTIVE_STATUSES = frozenset({"running", "restarting", "paused"})  # a process exists: stop before removing


class Action(str, Enum):
    CREATE_NETWORK = "create_network"
    CREATE_VOLUME = "create_volume"
    PULL = "pull"
    CREATE = "create"
    START = "start"
    STOP = "stop"
    REMOVE = "remove"
    REMOVE_NETWORK = "remove_network"
    REMOVE_VOLUME = "remove_volume"


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    app_id: str
    service_name: str
    config_hash: str
    image: str
    status: str  # docker's: created, running, paused, restarting, removing, exited, dead
    exit_code: int | None = None
    networks: frozenset[str] = frozenset()  # logical names of the app's networks it is attached to
    field_hashes: tuple[tuple[str, str], ...] = ()  # per-field hashes it was created with (explanations only)


@dataclass(frozen=True, order=True)
class Resource:
    """A network or volume of an app, by its logical name."""

    app_id: str
    name: str


@dataclass(frozen=True)
class EngineState:
    containers: tuple[ContainerInfo, ...] = ()
    images: frozenset[str] = frozenset()  # normalised names (tags and digests) present in the engine
    networks: frozenset[Resource] = frozenset()
    volumes: frozenset[Resource] = frozenset()


@dataclass(frozen=True)
class Step:
    action: Action
    app_id: str
    service_name: str | None  # the service the step is for; None for app housekeeping (orphan removal)
    reason: str
    service: Service | None = None  # the target service (create needs its config)
    container_id: str | None = None  # start, stop, remove
    resource: str | None = None  # network or volume name
    image: str | None = None  # pull

    @property
    def key(self) -> Key:
        """What a failed step marks as failed (see `plan`'s `failed_services`)."""
        return self.app_id, self.service_name


@dataclass(frozen=True)
class Verdict:
    """Where one service (or one app's housekeeping) stands: its steps for this batch, or why it has none."""

    app_id: str
    service_name: str | None
    status: str  # converged | pending | waiting | failed | removing
    reason: str
    steps: tuple[Step, ...] = ()


def describe_step(step: Step) -> str:
    """A step in a few words, for logs, errors and the plan CLI: "pull busybox:1", "create 1/web"."""
    subject = step.image if step.action is Action.PULL else "/".join(
        part for part in (step.app_id, step.resource or step.service_name) if part)
    return f"{step.action.value} {subject}"


def containers_by_key(containers: Iterable[ContainerInfo]) -> dict[Key, list[ContainerInfo]]:
    """The containers of each service, in the order given (a service may have several: duplicates, leftovers)."""
    grouped: dict[Key, list[ContainerInfo]] = defaultdict(list)
    for container in containers:
        grouped[container.app_id, container.service_name].append(container)
    return grouped
