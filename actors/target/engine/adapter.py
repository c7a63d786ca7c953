"""Docker engine adapter (imperative shell): builds the current state from the engine's labels alone and
executes planner steps idempotently (creating what exists or removing what is gone succeeds).

Everything Fleetlet creates carries `io.fleetlet.managed=1` and `io.fleetlet.owner=<owner>`, and only
objects with both are read or removed, so two agents (or two tests) on one engine never touch each
other's containers, networks or volumes, and foreign containers are never touched at all.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from contextlib import contextmanager, suppress
from typing import Any, Callable, Iterator, assert_never

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container, _create_container_args
from docker.types import LogConfig, Mount
from docker.utils import parse_repository_tag

from actors.target.engine import preflight
from actors.target.engine.options import create_arguments, exposed_only
from actors.target.engine.pull_progress import PullFailed, PullState, fold
from actors.target.model import (
    ContainerInfo,
    Create,
    CreateNetwork,
    CreateVolume,
    EngineState,
    Pull,
    Remove,
    RemoveImage,
    RemoveNetwork,
    RemoveVolume,
    Resource,
    ResourceStep,
    Start,
    Step,
    Stop,
    describe_step,
)
from messages.bus.engine import EngineOptions
from messages.protocol.target_state import (
    HAND_OVER,
    Healthcheck,
    PortMapping,
    RegistryCredentials,
    Service,
    VolumeMount,
    config_field_hashes,
    config_hash,
    normalise_image,
)
from store import space

LABEL_MANAGED = "io.fleetlet.managed"
LABEL_OWNER = "io.fleetlet.owner"
LABEL_APP_ID = "io.fleetlet.app-id"
LABEL_SERVICE_NAME = "io.fleetlet.service-name"
LABEL_CONFIG_HASH = "io.fleetlet.config-hash"
LABEL_CONFIG_FIELDS = "io.fleetlet.config-fields"
LABEL_RESOURCE_NAME = "io.fleetlet.name"
# No underscore: it separates the owner from the rest of every object name.
OWNER_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}")
# Networks a container is attached to that are not its app's own (attached by hand): never a logical name.
FOREIGN_NETWORK_PREFIX = "docker:"
# The container list gives the exit code only in its status text: "Exited (137) 5 seconds ago", and
# "Restarting (1) 2 seconds ago" between two runs of a crash loop.
_MODE_NETWORKS = frozenset({"host", "none"})
_EXIT_STATUS = re.compile(r"(?:Exited|Restarting) \((-?\d{1,10})\)")  # bounded: int() of a long run raises
# ... and the health status likewise: "Up 3 seconds (healthy)", "Up 1 second (health: starting)".
_HEALTH_STATUS = re.compile(r".*\((healthy|unhealthy|health: starting)\)$")
# Update locks (balena's convention): a service with this label set to "true" gets its app's lock
# directory mounted at LOCK_MOUNT; while a file `updates.lock` is there, the agent defers stopping the app's
# services (actors.target.release).
LOCK_LABEL = "fleetlet.update-lock"
LOCK_MOUNT = "/tmp/fleetlet"
LOCK_FILE = "updates.lock"


class EngineError(Exception):
    """A step (or, with step None, reading the state) failed; `reason` says why."""

    def __init__(self, step: Step | None, reason: str) -> None:
        super().__init__(f"{describe_step(step)}: {reason}" if step else reason)
        self.step = step
        self.reason = reason


class EngineUnavailable(EngineError):
    """The Docker daemon cannot be reached."""


DEFAULT_OPTIONS = EngineOptions(timeout=30.0, stop_timeout=10, disk_reserve_mb=0, log_max_size="10m", log_max_files=3,
                                certs_dir="/etc/docker/certs.d")
PROGRESS_INTERVAL = 1.0  # seconds between a pull's progress callbacks
ProgressCallback = Callable[[PullState, int], None]  # the pull's state, the bytes it needs in all (0: unknown)


class DockerEngine:
    def __init__(self, owner: str, client_factory: Callable[..., docker.DockerClient] = docker.from_env,
                 options: EngineOptions = DEFAULT_OPTIONS) -> None:
        """`client_factory(timeout=...)` is called on first use, so the client is created in the process
        that uses it (never inherited across a fork). `options.timeout` bounds every API call; a stop may take
        `options.stop_timeout` more before the engine kills the container; `options.lock_dir` holds the apps'
        update-lock directories ("": no service gets one)."""
        if not OWNER_PATTERN.fullmatch(owner):
            raise ValueError(f"owner {owner!r} does not match {OWNER_PATTERN.pattern}")
        self.owner = owner
        self.options = options
        self.timeout = options.timeout
        self.stop_timeout = options.stop_timeout
        self.lock_dir = options.lock_dir
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def container_name(self, app_id: str, service_name: str) -> str:
        return f"{self.owner}_{app_id}_{service_name}"

    def lock_path(self, app_id: str) -> str:
        return lock_path(self.lock_dir, self.owner, app_id)

    def resource_name(self, app_id: str, name: str) -> str:
        return f"{self.owner}_{app_id}_{name}"

    def read_current(self) -> EngineState:
        """This owner's containers, networks and volumes, and every image present, from the engine alone."""
        with self._session(None) as client:
            owned = {"label": [f"{LABEL_MANAGED}=1", f"{LABEL_OWNER}={self.owner}"]}
            # By id, and by name for containers never started: the engine gives them no NetworkID yet.
            networks = {key: _resource(network.attrs.get("Labels") or {})
                        for network in client.networks.list(filters=owned) for key in (network.id, network.name)}
            volumes = frozenset(_resource(volume.attrs.get("Labels") or {})
                                for volume in client.volumes.list(filters=owned))
            containers = tuple(_with_details(client, _container_info(summary, networks))
                               for summary in client.api.containers(all=True, filters=owned))
            # Every container's image, whoever owns the container: an image in use is never removed.
            used = {summary.get("ImageID") for summary in client.api.containers(all=True)}
            images: set[str] = set()
            in_use: set[str] = set()
            # The raw list: the SDK's inspects every image, and one removed meanwhile (by anyone) would fail the read.
            for image in client.api.images():
                spelled = (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
                names = {normalise_image(name) for name in spelled if "<none>" not in name}
                images |= names
                if image.get("Id") in used:
                    in_use |= names
        return EngineState(containers=containers, images=frozenset(images), images_in_use=frozenset(in_use),
                           networks=frozenset(networks.values()), volumes=volumes)

    def execute(self, step: Step, login: RegistryCredentials | None = None,
                progress: ProgressCallback | None = None) -> None:
        """Run one step; raise `EngineError` (or `EngineUnavailable`) if it did not take effect. A pull uses
        `login` for its registry and reports its progress to `progress`."""
        with self._session(step) as client:
            match step:  # one case per step type: a new type without a handler fails type checking here
                case CreateNetwork():
                    self._create_network(client, step)
                case CreateVolume():
                    self._create_volume(client, step)
                case Pull():
                    self._pull(client, step, login, progress)
                case RemoveImage():
                    self._remove_image(client, step)
                case Create():
                    self._create(client, step)
                case Start():
                    self._start(client, step)
                case Stop():
                    self._stop(client, step)
                case Remove():
                    self._remove(client, step)
                case RemoveNetwork():
                    self._remove_network(client, step)
                case RemoveVolume():
                    self._remove_volume(client, step)
                case _:
                    assert_never(step)

    # --- steps -------------------------------------------------------------------------------------------

    def _create_network(self, client: docker.DockerClient, step: CreateNetwork) -> None:
        if self._owned_networks(client, step):
            return
        name = self.resource_name(step.app_id, step.resource)
        try:
            client.networks.create(name, driver="bridge", check_duplicate=True,
                                           labels=self._resource_labels(step))
        except APIError as error:
            if error.status_code == 409:
                raise EngineError(step, f"network name {name} is taken by a network Fleetlet does not own") from error
            raise

    def _create_volume(self, client: docker.DockerClient, step: CreateVolume) -> None:
        name = self.resource_name(step.app_id, step.resource)
        # The engine returns an existing volume of the same name instead of failing: check it is ours.
        volume = client.volumes.create(name, labels=self._resource_labels(step))
        if not self._is_owned(volume.attrs.get("Labels") or {}):
            raise EngineError(step, f"volume name {name} is taken by a volume Fleetlet does not own")

    def _pull(self, client: docker.DockerClient, step: Pull, login: RegistryCredentials | None,
              progress: ProgressCallback | None) -> None:
        """Pull through the streaming API, after the disk-space preflight. An image present is never pulled again
        (a device without network converges from what it has)."""
        try:
            client.images.get(step.image)
            return
        except NotFound:
            pass
        needed = self._preflight(client, step, login)
        repository, tag = parse_repository_tag(step.image)
        auth = None if login is None else {"username": login.username, "password": login.password}
        state, reported = PullState(), 0.0
        try:
            for event in client.api.pull(repository, tag, stream=True, decode=True, auth_config=auth):
                state = fold(state, event)
                if progress is not None and time.monotonic() - reported >= PROGRESS_INTERVAL:
                    progress(state, needed or state.size)
                    reported = time.monotonic()
        except PullFailed as failure:
            raise EngineError(step, str(failure)) from None
        if progress is not None:
            progress(state, needed or state.size)

    def _preflight(self, client: docker.DockerClient, step: Pull, login: RegistryCredentials | None) -> int:
        """The bytes the pull needs; EngineError if they do not fit on the engine's data root beside the reserve,
        or if the registry refuses (its reason: "unauthorized: ..."). 0 when the registry's answer cannot be had."""
        info = client.info()
        platform = (str(info.get("OSType") or "linux"), _architecture(str(info.get("Architecture") or "")))
        try:
            plan = preflight.fetch_plan(step.image, login, self.options.certs_dir, self.timeout, platform)
        except preflight.RegistryRefused as refused:
            raise EngineError(step, str(refused)) from None
        except (OSError, ValueError):
            # Unreachable, a CA dockerd finds elsewhere, an answer that is not JSON: the pull goes ahead unchecked
            # and, if the registry really is out of reach, fails with the engine's own reason.
            return 0
        present = {layer for image in client.api.images(all=True) for layer in _layers(client, image["Id"])}
        needed = preflight.needed_bytes(plan, present)
        no_room = space.refusal(needed, space.free_bytes(info.get("DockerRootDir") or "/var/lib/docker"),
                                self.options.disk_reserve_mb)
        if no_room:
            raise EngineError(step, no_room)
        return needed

    @staticmethod
    def _remove_image(client: docker.DockerClient, step: RemoveImage) -> None:
        """Untag (and, when it was the last name, delete) an image Fleetlet pulled; one a container uses, or gone,
        is left alone (the engine refuses with 409: never forced)."""
        try:
            client.images.remove(step.image, noprune=False)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code != 409:
                raise

    def _create(self, client: docker.DockerClient, step: Create) -> None:
        service = step.service
        config = service.config
        name = self.container_name(step.app_id, service.service_name)
        if config.update_strategy == HAND_OVER:  # it starts beside the old container: a name of its own
            name += f"_{config_hash(service)[:12]}"
        networks = [self.resource_name(step.app_id, network) for network in config.networks]
        labels = {**dict(config.labels), **self._owner_labels(step.app_id),
                  LABEL_SERVICE_NAME: service.service_name,
                  LABEL_CONFIG_HASH: config_hash(service),
                  LABEL_CONFIG_FIELDS: _encode_field_hashes(config_field_hashes(service))}
        aliases = [service.service_name]
        options = config.options
        ports = _port_bindings(config.ports)
        attachment = {"network": networks[0], "networking_config": {
            networks[0]: client.api.create_endpoint_config(aliases=aliases)}} if networks else {}
        try:
            container = _create_container(
                client,
                options.stop_grace_period,
                image=config.image,
                command=list(config.command) if config.command else None,
                name=name,
                labels=labels,
                environment=[f"{key}={value}" for key, value in config.environment],
                ports={**exposed_only(options, set(ports)), **ports},
                mounts=[self._mount(step.app_id, mount) for mount in config.volumes]
                + self._lock_mounts(step.app_id, service),
                healthcheck=_healthcheck(config.healthcheck),
                restart_policy=_restart_policy(config.restart),
                detach=True,
                **attachment,
                # Bounded logs by default. Not part of the config hash: changing the bound never recreates a
                # container. A service's own `logging` (hashed, as any option) replaces it.
                **{"log_config": LogConfig(type="local", config={"max-size": self.options.log_max_size,
                                                                 "max-file": str(self.options.log_max_files)}),
                   **create_arguments(options)},
            )
        except APIError as error:
            if error.status_code == 409:
                self._accept_existing(client, step, name, labels)
                return
            raise
        try:
            # The API version in use attaches a container to one network at create time; add the others.
            for network in networks[1:]:
                client.api.connect_container_to_network(container.id, network, aliases=aliases)
        except DockerException:
            with suppress(DockerException, requests.exceptions.RequestException):
                client.api.remove_container(container.id, force=True)
            raise

    def _lock_mounts(self, app_id: str, service: Service) -> list[Mount]:
        """The app's lock directory, for a service that opted in: the one bind mount the agent creates."""
        if not self.lock_dir or dict(service.config.labels).get(LOCK_LABEL) != "true":
            return []
        path = self.lock_path(app_id)
        os.makedirs(path, mode=0o755, exist_ok=True)
        return [Mount(target=LOCK_MOUNT, source=path, type="bind")]

    def _mount(self, app_id: str, mount: VolumeMount) -> Mount:
        if mount.is_bind:
            return Mount(target=mount.target, source=mount.volume, type="bind", read_only=mount.read_only)
        return Mount(target=mount.target, source=self.resource_name(app_id, mount.volume), type="volume",
                     read_only=mount.read_only)

    @staticmethod
    def _accept_existing(client: docker.DockerClient, step: Create, name: str, labels: dict[str, str]) -> None:
        """A container of that name exists: success if it is this very service and config, else an error."""
        existing = client.containers.get(name).labels
        identity = (LABEL_OWNER, LABEL_APP_ID, LABEL_SERVICE_NAME, LABEL_CONFIG_HASH)
        if any(existing.get(label) != labels[label] for label in identity):
            raise EngineError(step, f"container name {name} is taken by another container")

    @staticmethod
    def _start(client: docker.DockerClient, step: Start) -> None:
        try:
            client.api.start(step.container_id)
        except NotFound:
            raise EngineError(step, f"container {step.container_id[:12]} no longer exists") from None

    def _stop(self, client: docker.DockerClient, step: Stop) -> None:
        grace = step.service.config.options.stop_grace_period if step.service else None
        try:
            client.api.stop(step.container_id, timeout=self.stop_timeout if grace is None else grace)
        except NotFound:
            pass

    @staticmethod
    def _remove(client: docker.DockerClient, step: Remove) -> None:
        try:
            client.api.remove_container(step.container_id, force=True)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code != 409 or "already in progress" not in str(error):
                raise

    def _remove_network(self, client: docker.DockerClient, step: RemoveNetwork) -> None:
        for network in self._owned_networks(client, step):
            try:
                network.remove()
            except NotFound:
                pass

    def _remove_volume(self, client: docker.DockerClient, step: RemoveVolume) -> None:
        for volume in client.volumes.list(filters=self._resource_filter(step)):
            try:
                volume.remove()
            except NotFound:
                pass

    # --- helpers -----------------------------------------------------------------------------------------

    def _owned_networks(self, client: docker.DockerClient, step: ResourceStep) -> list:
        return client.networks.list(filters=self._resource_filter(step))

    def _resource_filter(self, step: ResourceStep) -> dict[str, list[str]]:
        return {"label": [f"{label}={value}" for label, value in self._resource_labels(step).items()]}

    def _owner_labels(self, app_id: str) -> dict[str, str]:
        return {LABEL_MANAGED: "1", LABEL_OWNER: self.owner, LABEL_APP_ID: app_id}

    def _resource_labels(self, step: ResourceStep) -> dict[str, str]:
        return {**self._owner_labels(step.app_id), LABEL_RESOURCE_NAME: step.resource}

    def _is_owned(self, labels: dict[str, str]) -> bool:
        return labels.get(LABEL_MANAGED) == "1" and labels.get(LABEL_OWNER) == self.owner

    @contextmanager
    def _session(self, step: Step | None) -> Iterator[docker.DockerClient]:
        """The client (created on first use) for one operation, with every failure turned into EngineError."""
        if self._client is None:
            try:
                self._client = self._client_factory(timeout=self.timeout)
            except DockerException as error:  # the SDK asks the daemon for its API version right away
                raise EngineUnavailable(step, f"Docker engine unavailable: {error}") from error
        try:
            yield self._client
        except requests.exceptions.ConnectionError as error:
            raise EngineUnavailable(step, f"Docker engine unreachable: {error}") from error
        except requests.exceptions.Timeout as error:
            raise EngineError(step, f"no answer from the Docker engine within {self.timeout:g} s") from error
        except APIError as error:
            raise EngineError(step, error.explanation or str(error)) from error
        except DockerException as error:
            raise EngineError(step, str(error)) from error


def _layers(client: docker.DockerClient, image_id: str) -> list[str]:
    """The diff ids of an image's layers; none for an image removed meanwhile (by anyone)."""
    try:
        return (client.api.inspect_image(image_id).get("RootFS") or {}).get("Layers") or []
    except NotFound:
        return []


def _architecture(engine_arch: str) -> str:
    """The engine's architecture (uname's spelling) as image manifests spell it."""
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(engine_arch, engine_arch)


def _resource(labels: dict[str, str]) -> Resource:
    return Resource(app_id=labels.get(LABEL_APP_ID, ""), name=labels.get(LABEL_RESOURCE_NAME, ""))


def _container_info(summary: dict, networks: dict[str, Resource]) -> ContainerInfo:
    """From the engine's container list, not from per-container inspects: an inspect waits for whatever
    runs on that container (a start, a stop), so reading would stall behind every step in flight."""
    labels = summary.get("Labels") or {}
    app_id = labels.get(LABEL_APP_ID, "")
    status = summary["State"]
    # "host" and "none" are a network_mode, not an attachment (no bridge container can join them)
    attached = {name: endpoint for name, endpoint in ((summary.get("NetworkSettings") or {}).get("Networks") or {}
                                                      ).items() if name not in _MODE_NETWORKS}
    exited = _EXIT_STATUS.match(summary.get("Status") or "")
    health = _HEALTH_STATUS.match(summary.get("Status") or "")
    return ContainerInfo(
        id=summary["Id"],
        name=(summary.get("Names") or [""])[0].lstrip("/"),
        app_id=app_id,
        service_name=labels.get(LABEL_SERVICE_NAME, ""),
        config_hash=labels.get(LABEL_CONFIG_HASH, ""),
        image=summary["Image"],
        status=status,
        exit_code=int(exited[1]) if exited and status in ("exited", "dead", "restarting") else None,
        health="" if health is None else health[1].removeprefix("health: "),
        networks=frozenset(_logical_network(name, endpoint.get("NetworkID", ""), app_id, networks)
                           for name, endpoint in attached.items()),
        field_hashes=_decode_field_hashes(labels.get(LABEL_CONFIG_FIELDS, "")),
    )


def lock_path(lock_dir: str, owner: str, app_id: str) -> str:
    """The host directory holding app `app_id`'s update lock (mounted into its opted-in services)."""
    return os.path.join(os.path.abspath(lock_dir), owner, app_id)


def _with_details(client: docker.DockerClient, info: ContainerInfo) -> ContainerInfo:
    """An unhealthy or crash-looping container, with what only an inspect says: the last health output and
    the restart count (inspected only then: an inspect waits for any step running on the container)."""
    if info.health != "unhealthy" and info.status != "restarting":
        return info
    try:
        attrs = client.api.inspect_container(info.id)
    except NotFound:
        return info
    state = attrs.get("State") or {}
    log = (state.get("Health") or {}).get("Log") or []
    output = str(log[-1].get("Output", "")).strip()[-300:] if log else ""
    count = attrs.get("RestartCount")
    return dataclasses.replace(info, health_output=output, restart_count=count if isinstance(count, int) else 0,
                               exit_code=info.exit_code if info.exit_code is not None else state.get("ExitCode"))


def _healthcheck(check: Healthcheck | None) -> dict[str, object] | None:
    """The engine's form of a health check (None: the image's own)."""
    if check is None:
        return None
    fields = {"interval": check.interval, "timeout": check.timeout, "retries": check.retries,
              "start_period": check.start_period}
    return {"test": list(check.test), **{name: value for name, value in fields.items() if value is not None}}


def _create_container(client: docker.DockerClient, stop_timeout: int | None, **kwargs: Any) -> Container:
    """`client.containers.create(**kwargs)`, plus the container's own stop timeout, which that method does not
    take: the same two calls it makes, with `stop_timeout` added to the second."""
    arguments = _create_container_args({**kwargs, "version": client.api.api_version})
    if stop_timeout is not None:
        arguments["stop_timeout"] = stop_timeout
    return client.containers.get(client.api.create_container(**arguments)["Id"])


def _restart_policy(restart: str) -> dict[str, Any]:
    name, _, retries = restart.partition(":")
    return {"Name": name, "MaximumRetryCount": int(retries)} if retries else {"Name": name}


def _logical_network(docker_name: str, network_id: str, app_id: str, networks: dict[str, Resource]) -> str:
    resource = networks.get(network_id) or networks.get(docker_name)
    if resource is not None and resource.app_id == app_id:
        return resource.name
    return FOREIGN_NETWORK_PREFIX + docker_name


def _port_bindings(ports: tuple[PortMapping, ...]) -> dict[str, list[tuple[str, int] | tuple[str] | int | None]]:
    bindings: dict[str, list[tuple[str, int] | tuple[str] | int | None]] = {}
    for mapping in ports:
        binding: tuple[str, int] | tuple[str] | int | None
        if mapping.host_ip:
            binding = (mapping.host_ip, mapping.host_port) if mapping.host_port else (mapping.host_ip,)
        else:
            binding = mapping.host_port  # None: the engine picks a free port
        bindings.setdefault(f"{mapping.container_port}/{mapping.protocol}", []).append(binding)
    return bindings


def _encode_field_hashes(hashes: dict[str, str]) -> str:
    return ",".join(f"{field}={digest}" for field, digest in sorted(hashes.items()))


def _decode_field_hashes(text: str) -> tuple[tuple[str, str], ...]:
    pairs = (part.partition("=") for part in text.split(",") if "=" in part)
    return tuple(sorted((field, digest) for field, _, digest in pairs))
