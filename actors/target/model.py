"""The target side's data model: what the engine holds (`EngineState`), and what the planner decides (`Step`,
`Verdict`).

`EngineState` is rebuilt from the engine's labels alone and replaced by every read, never patched from memory,
which is what lets the planner be level-triggered. (The bus message announcing the device's state in report form is
`messages.bus.target.CurrentStateObserved`; this is the engine's raw view, planned from.)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Iterable, Mapping, assert_never

from messages.protocol.target_state import Service, TargetState

Key = tuple[str, str | None]  # (app id, service name); None: the app's housekeeping
ServiceKey = tuple[str, str]  # (app id, service name) of a service: a container always belongs to one

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
    REMOVE_IMAGE = "remove_image"


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
    health: str = ""  # docker's health status: "" (no health check), starting, healthy, unhealthy
    health_output: str = ""  # the last health check's output (read for an unhealthy or restarting container)
    restart_count: int = 0  # the engine's restarts of it (read for an unhealthy or restarting container)


@dataclass(frozen=True, order=True)
class Resource:
    """A network or volume of an app, by its logical name."""

    app_id: str
    name: str


@dataclass(frozen=True)
class OrphanedVolumes:
    """What decides when a volume of an app that left the target is removed (volumes hold data: never at once).

    ``since`` is when each such volume was first seen orphaned (wall-clock seconds, kept in the store by the
    reconciler, so a restart does not reset the clock), ``now`` the time of the plan and ``grace`` the
    reconciler's volume_grace. A volume goes once orphaned for ``grace`` seconds, or at once when the target
    lists its app in ``purge_volumes``. One not in ``since`` counts as orphaned from ``now``. The default
    (grace 0) removes at once: for callers that keep no clock.
    """

    now: float = 0.0
    grace: float = 0.0
    since: Mapping[Resource, float] = field(default_factory=dict)

    def due(self, target: TargetState, volume: Resource) -> bool:
        return volume.app_id in target.purge_volumes or self.now - self.since.get(volume, self.now) >= self.grace


def orphaned_volumes(target: TargetState, current: EngineState) -> frozenset[Resource]:
    """The volumes whose app is not in the target: their grace period runs."""
    return frozenset(volume for volume in current.volumes if target.app(volume.app_id) is None)


def orphan_clock(since: Mapping[Resource, float], orphaned: frozenset[Resource], now: float) -> dict[Resource, float]:
    """When each orphaned volume was first seen so: the known time, or ``now`` for one seen for the first time.
    A volume no longer orphaned (its app is back, or it is gone) leaves the clock."""
    return {volume: since.get(volume, now) for volume in orphaned}


def orphans_to_json(since: Mapping[Resource, float]) -> dict[str, float]:
    """``{"app/volume": seconds}``: how the store keeps the clock (names never hold a slash)."""
    return {f"{volume.app_id}/{volume.name}": at for volume, at in sorted(since.items(), key=lambda item: item[0])}


def orphans_from_json(value: object) -> dict[Resource, float]:
    """What orphans_to_json wrote; anything else is an empty clock (each volume then waits a whole grace)."""
    if not isinstance(value, dict):
        return {}
    clock = {}
    for key, at in value.items():
        app_id, slash, name = key.partition("/")
        if slash and isinstance(at, (int, float)) and not isinstance(at, bool):
            clock[Resource(app_id, name)] = float(at)
    return clock


@dataclass(frozen=True)
class EngineState:
    containers: tuple[ContainerInfo, ...] = ()
    images: frozenset[str] = frozenset()  # normalised names (tags and digests) present in the engine
    images_in_use: frozenset[str] = frozenset()  # those of images any container uses (Fleetlet's or not)
    networks: frozenset[Resource] = frozenset()
    volumes: frozenset[Resource] = frozenset()


@dataclass(frozen=True)
class _Step:
    """What every step has: whose it is and why. The action is the class (see `Step`), so each carries exactly
    the arguments its action needs, and a `match` on the classes is checked for exhaustiveness."""

    action: ClassVar[Action]
    app_id: str
    service_name: str | None  # the service the step is for; None for app housekeeping (orphan removal)
    reason: str

    @property
    def key(self) -> Key:
        """What a failed step marks as failed (see `plan`'s `failed_services`)."""
        return self.app_id, self.service_name


@dataclass(frozen=True)
class ResourceStep(_Step):
    """A step on one of the app's networks or volumes, by its logical name."""

    resource: str


@dataclass(frozen=True)
class ContainerStep(_Step):
    """A step on an existing container; `service` is the target service when the container is its keeper
    (None for duplicates, leftovers of removed services and restarts)."""

    container_id: str
    service: Service | None = None


@dataclass(frozen=True)
class CreateNetwork(ResourceStep):
    action = Action.CREATE_NETWORK


@dataclass(frozen=True)
class CreateVolume(ResourceStep):
    action = Action.CREATE_VOLUME


@dataclass(frozen=True)
class RemoveNetwork(ResourceStep):
    action = Action.REMOVE_NETWORK


@dataclass(frozen=True)
class RemoveVolume(ResourceStep):
    action = Action.REMOVE_VOLUME


@dataclass(frozen=True)
class Pull(_Step):
    action = Action.PULL
    image: str
    service: Service | None = None  # the service needing it


@dataclass(frozen=True)
class RemoveImage(_Step):
    """Cleanup after a converged pass (`actors.target.images`), never planned by the planner."""
    action = Action.REMOVE_IMAGE
    image: str


@dataclass(frozen=True)
class Create(_Step):
    action = Action.CREATE
    service: Service  # the container is created from its config


@dataclass(frozen=True)
class Start(ContainerStep):
    action = Action.START


@dataclass(frozen=True)
class Stop(ContainerStep):
    action = Action.STOP


@dataclass(frozen=True)
class Remove(ContainerStep):
    action = Action.REMOVE


Step = (CreateNetwork | CreateVolume | Pull | Create | Start | Stop | Remove | RemoveNetwork | RemoveVolume
        | RemoveImage)
STEP_TYPES: dict[Action, type[Step]] = {kind.action: kind for kind in (
    CreateNetwork, CreateVolume, Pull, Create, Start, Stop, Remove, RemoveNetwork, RemoveVolume, RemoveImage)}


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
    match step:
        case Pull() | RemoveImage():
            subject = step.image
        case ResourceStep():
            subject = f"{step.app_id}/{step.resource}"
        case Create() | ContainerStep():
            subject = "/".join(part for part in (step.app_id, step.service_name) if part)
        case _:
            assert_never(step)
    return f"{step.action.value} {subject}"


def containers_by_key(containers: Iterable[ContainerInfo]) -> dict[ServiceKey, list[ContainerInfo]]:
    """The containers of each service, in the order given (a service may have several: duplicates, leftovers)."""
    grouped: dict[ServiceKey, list[ContainerInfo]] = defaultdict(list)
    for container in containers:
        grouped[container.app_id, container.service_name].append(container)
    return grouped
