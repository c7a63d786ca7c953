"""The target state's data model: frozen dataclasses holding an already validated, normalised document.

Every value here came through `parse_target_state`, so consumers (planner, engine adapter, cloud) can compare
them with `==` and hash them without re-checking anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_NETWORK = "default"
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
DOWNLOAD_THEN_KILL = "download-then-kill"
KILL_THEN_DOWNLOAD = "kill-then-download"
UPDATE_STRATEGIES = (DOWNLOAD_THEN_KILL, KILL_THEN_DOWNLOAD)
PROTOCOLS = ("tcp", "udp", "sctp")


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
    """A named, app-scoped volume mounted at `target` (bind mounts of host paths are not accepted)."""

    target: str
    volume: str
    read_only: bool = False

    def spec(self) -> str:
        return f"{self.volume}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True)
class ServiceConfig:
    image: str
    ports: tuple[PortMapping, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()  # sorted by name
    volumes: tuple[VolumeMount, ...] = ()
    networks: tuple[str, ...] = (DEFAULT_NETWORK,)
    command: tuple[str, ...] | None = None  # None: the image's default command
    depends_on: tuple[str, ...] = ()
    running: bool = True
    restart: str = "always"
    labels: tuple[tuple[str, str], ...] = ()  # sorted by name
    update_strategy: str = DOWNLOAD_THEN_KILL


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
    # The document's optional "registries": (registry host, login) sorted by host, as Azure IoT Edge's
    # registryCredentials. See `registries.credentials_for`.
    registries: tuple[tuple[str, RegistryCredentials], ...] = ()

    def app(self, app_id: str) -> App | None:
        return next((app for app in self.apps if app.app_id == app_id), None)
