"""The target state's data model: frozen dataclasses holding an already validated, normalised document.

Every value here came through `parse_target_state`, so consumers (planner, engine adapter, cloud) can compare
them with `==` and hash them without re-checking anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_NETWORK = "default"
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")  # and "on-failure:N" (N retries at most)
DOWNLOAD_THEN_KILL = "download-then-kill"
KILL_THEN_DOWNLOAD = "kill-then-download"
# The new container starts beside the old one, which stops once the new one is ready (the new one goes if it never is).
HAND_OVER = "hand-over"
# The old container goes before the new image is pulled (kill-then-download; the image cleanup frees the disk).
DELETE_THEN_DOWNLOAD = "delete-then-download"
UPDATE_STRATEGIES = (DOWNLOAD_THEN_KILL, KILL_THEN_DOWNLOAD, HAND_OVER, DELETE_THEN_DOWNLOAD)
PROTOCOLS = ("tcp", "udp", "sctp")
# compose's `depends_on` conditions. The agent starts a service once each dependency's up-to-date container
# runs (or, as a one-shot, has exited 0): that is what both service_started and service_completed_successfully
# mean to it, so the latter is normalised to the former; service_healthy also waits for the health check to pass.
SERVICE_STARTED = "service_started"
SERVICE_HEALTHY = "service_healthy"
SERVICE_COMPLETED_SUCCESSFULLY = "service_completed_successfully"
DEPENDENCY_CONDITIONS = (SERVICE_STARTED, SERVICE_HEALTHY, SERVICE_COMPLETED_SUCCESSFULLY)


class InvalidTargetState(ValueError):
    """The document was rejected; `reason` names the offending path and what is wrong with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    protocol: str = "tcp"
    host_port: int | None = None  # None: the engine picks a free host port
    host_ip: str = ""  # "": all interfaces

    def spec(self) -> str:
        container = f"{self.container_port}/{self.protocol}"
        host = "" if self.host_port is None else str(self.host_port)
        if self.host_ip:
            ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
            return f"{ip}:{host}:{container}"
        return f"{host}:{container}" if host else container


@dataclass(frozen=True, order=True)
class VolumeMount:
    """A named, app-scoped volume mounted at `target`, or a bind mount of a host path (`volume` is then an
    absolute path: names never start with "/", so the spec and the hash of named volumes did not change)."""

    target: str
    volume: str
    read_only: bool = False

    @property
    def is_bind(self) -> bool:
        return self.volume.startswith("/")

    def spec(self) -> str:
        return f"{self.volume}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True)
class Healthcheck:
    """compose's `healthcheck`, normalised: durations in nanoseconds (the engine's unit), None for the
    image's or engine's default. `test` is ("NONE",) when disabled (`disable: true`), which also turns off a
    health check the image declares."""

    test: tuple[str, ...]  # ("CMD", arg, ...), ("CMD-SHELL", command) or ("NONE",)
    interval: int | None = None
    timeout: int | None = None
    retries: int | None = None
    start_period: int | None = None

    @property
    def disabled(self) -> bool:
        return self.test == ("NONE",)


@dataclass(frozen=True)
class ContainerOptions:
    """The options beyond the original fields (`options` parses them), normalised; each default means "as
    the engine does without it"."""

    entrypoint: tuple[str, ...] | None = None  # None: the image's
    working_dir: str | None = None
    user: str | None = None  # "user" or "user:group", names or ids
    hostname: str | None = None
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (name, address), sorted
    dns: tuple[str, ...] = ()  # addresses, in the order given (it is the order of lookup)
    tmpfs: tuple[tuple[str, str], ...] = ()  # (container path, mount options), sorted
    read_only: bool = False
    init: bool = False
    stop_signal: str | None = None  # "SIGTERM": the name, whatever spelling came in
    stop_grace_period: int | None = None  # whole seconds
    shm_size: int | None = None  # bytes
    ulimits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard), sorted
    sysctls: tuple[tuple[str, str], ...] = ()  # sorted
    cpus: int | None = None  # in billionths of a CPU (the engine's NanoCpus)
    mem_limit: int | None = None  # bytes
    mem_reservation: int | None = None  # bytes
    pids_limit: int | None = None  # None: unlimited (compose's 0 and -1)
    logging: tuple[str, tuple[tuple[str, str], ...]] | None = None  # (driver, sorted options)
    cap_add: tuple[str, ...] = ()  # without the CAP_ prefix, upper case, sorted
    cap_drop: tuple[str, ...] = ()
    devices: tuple[tuple[str, str, str], ...] = ()  # (host path, container path, permissions in rwm order)
    privileged: bool = False
    network_mode: str | None = None  # None: the app's networks
    pid: str | None = None
    ipc: str | None = None
    security_opt: tuple[str, ...] = ()  # sorted
    expose: tuple[str, ...] = ()  # "80/tcp", sorted by port then protocol

    def set_options(self) -> dict[str, Any]:
        """The options not at their default, by name."""
        return {field.name: getattr(self, field.name) for field in fields(self)
                if getattr(self, field.name) != field.default}


@dataclass(frozen=True)
class ServiceConfig:
    image: str
    ports: tuple[PortMapping, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()  # sorted by name
    volumes: tuple[VolumeMount, ...] = ()
    networks: tuple[str, ...] = (DEFAULT_NETWORK,)
    command: tuple[str, ...] | None = None  # None: the image's default command
    depends_on: tuple[tuple[str, str], ...] = ()  # (service name, SERVICE_STARTED or SERVICE_HEALTHY), by name
    running: bool = True
    restart: str = "always"
    labels: tuple[tuple[str, str], ...] = ()  # sorted by name
    update_strategy: str = DOWNLOAD_THEN_KILL
    healthcheck: Healthcheck | None = None  # None: the image's own, if any
    options: ContainerOptions = ContainerOptions()  # compose's further fields, flat in the document

    @property
    def dependency_names(self) -> tuple[str, ...]:
        """The services this one depends on, sorted, whatever the condition."""
        return tuple(name for name, _ in self.depends_on)


@dataclass(frozen=True)
class Service:
    service_name: str
    config: ServiceConfig
    service_id: int | str | None = None


@dataclass(frozen=True)
class App:
    app_id: str
    app_name: str
    services: tuple[Service, ...]  # sorted by name

    def service(self, name: str) -> Service | None:
        return next((service for service in self.services if service.service_name == name), None)


@dataclass(frozen=True)
class RegistryCredentials:
    """A login for one registry host (the document's "registries"). The password is never in a repr, a log
    line, a report or the plan: only the engine worker pulling from that host receives it."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class TargetState:
    apps: tuple[App, ...] = ()  # sorted by id
    # The document's optional "purge_volumes": ids of apps whose volumes go as soon as the app has left the
    # target (and its containers are gone), instead of after the reconciler's volume_grace. Sorted.
    purge_volumes: tuple[str, ...] = ()
    # The document's optional "override_lock": an app holding its update lock longer than the agent's
    # update.lock_timeout is updated anyway.
    override_lock: bool = False
    # The document's optional "registries": (registry host, login) sorted by host, as Azure IoT Edge's
    # registryCredentials. See `registries.credentials_for`.
    registries: tuple[tuple[str, RegistryCredentials], ...] = ()

    def app(self, app_id: str) -> App | None:
        return next((app for app in self.apps if app.app_id == app_id), None)
