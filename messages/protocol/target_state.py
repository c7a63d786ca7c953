"""The cloud's target-state document: strict validation into frozen dataclasses, canonical form, config hash.

A document is rejected as a whole (`InvalidTargetState`, naming the path of the first bad field) so the agent
keeps running the last good one. Everything is normalised on the way in (image names, port specs, env order,
default network...) so that two spellings of the same configuration compare, serialise and hash the same.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any, Mapping

from messages.protocol import json as strict_json

MAX_DOCUMENT_BYTES = 1024 * 1024
NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
MAX_IMAGE_LENGTH = 255
_DOMAIN = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# Docker's reference grammar: [domain[:port]/]path[:tag][@digest]
IMAGE_PATTERN = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(?:@[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,})?"
)
MAX_APP_NAME_LENGTH = 256
RESERVED_LABEL_PREFIX = "io.fleetlet."
DEFAULT_NETWORK = "default"
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
DOWNLOAD_THEN_KILL = "download-then-kill"
KILL_THEN_DOWNLOAD = "kill-then-download"
UPDATE_STRATEGIES = (DOWNLOAD_THEN_KILL, KILL_THEN_DOWNLOAD)
PROTOCOLS = ("tcp", "udp", "sctp")

# Fields that define the container itself. `running`, `depends_on` and `update_strategy` only steer the
# planner, so changing them must never recreate a container: they are left out of the hash.
HASHED_FIELDS = ("image", "ports", "environment", "volumes", "networks", "command", "restart", "labels")

_PORT_PATTERN = re.compile(
    r"(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):(?P<ip_host>\d*):|(?P<host>\d+):)?"
    r"(?P<container>\d+)(?:/(?P<protocol>[a-z]+))?"
)
_DOCKER_HUB_PREFIXES = ("docker.io/", "index.docker.io/")


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
class TargetState:
    apps: tuple[App, ...] = ()  # sorted by id

    def app(self, app_id: str) -> App | None:
        return next((app for app in self.apps if app.app_id == app_id), None)


def parse_target_state(raw: bytes | bytearray | str | Mapping[str, Any]) -> TargetState:
    """Validate a whole document (JSON bytes/str or an already decoded dict); raise `InvalidTargetState`."""
    document = _check_size(_decode(raw) if isinstance(raw, (bytes, bytearray, str)) else raw)
    _require_object(document, "document", required=("apps",), optional=())
    apps = document["apps"]
    _require_mapping(apps, "apps")
    parsed = [_parse_app(key, value, f"apps.{key}") for key, value in apps.items()]
    return TargetState(apps=tuple(sorted(parsed, key=lambda app: app.app_id)))


def to_json(target: TargetState) -> dict:
    """The canonical document: every field explicit and normalised; `parse_target_state` of it is equal."""
    return {"apps": {app.app_id: _app_to_json(app) for app in target.apps}}


def config_hash(service: Service) -> str:
    """sha256 of the canonical container-defining config: stored as a label, compared to detect changes."""
    return hashlib.sha256(strict_json.canonical_bytes(_hashed_config(service.config))).hexdigest()


def config_field_hashes(service: Service) -> dict[str, str]:
    """A short hash per container-defining field, so a changed container can be explained ("ports changed")."""
    hashed = _hashed_config(service.config)
    return {name: hashlib.sha256(strict_json.canonical_bytes(hashed[name])).hexdigest()[:12] for name in HASHED_FIELDS}


def normalise_image(name: str) -> str:
    """Docker's familiar spelling, as the engine lists images: no docker.io/library prefix, a digest wins
    over a tag, ":latest" when there is neither."""
    for prefix in _DOCKER_HUB_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            name = name[len("library/"):] if name.startswith("library/") else name
            break
    repository, at, digest = name.partition("@")
    directory, slash, last_component = repository.rpartition("/")
    if at:
        return f"{directory}{slash}{last_component.partition(':')[0]}@{digest}"
    return name if ":" in last_component else f"{name}:latest"


# --- decoding ----------------------------------------------------------------------------------------------


def _decode(raw: bytes | bytearray | str) -> Any:
    try:
        return strict_json.decode(raw, max_bytes=MAX_DOCUMENT_BYTES)
    except strict_json.JSONTooLarge as error:
        raise InvalidTargetState(f"document: {error}") from None
    except strict_json.JSONNotUTF8 as error:
        raise InvalidTargetState(f"document: not UTF-8 ({error})") from None
    except strict_json.JSONTooDeep:
        raise InvalidTargetState("document: nested too deeply") from None
    except strict_json.JSONOutOfRange as error:  # worded as the poller words what the bus cannot carry
        raise InvalidTargetState(f"document: cannot be stored ({error})") from None
    except strict_json.JSONUnencodable as error:
        raise InvalidTargetState(f"document: not representable as JSON ({error})") from None
    except strict_json.JSONRefused as error:
        raise InvalidTargetState(f"document: not valid JSON ({error})") from None


def _check_size(document: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        # ensure_ascii=False: a lone surrogate (from a "\\ud800" escape) cannot be encoded and is refused
        size = len(json.dumps(document, allow_nan=False, ensure_ascii=False).encode())
    except RecursionError:
        raise InvalidTargetState("document: nested too deeply") from None
    except (TypeError, ValueError) as error:
        raise InvalidTargetState(f"document: not representable as JSON ({error})") from None
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidTargetState(f"document: {size} bytes exceeds the limit of {MAX_DOCUMENT_BYTES}")
    return document


# --- structure ---------------------------------------------------------------------------------------------


def _fail(path: str, problem: str) -> InvalidTargetState:
    return InvalidTargetState(f"{path}: {problem}")


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _require_mapping(value: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be an object, not {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, f"key {key!r} must be a string")


def _require_object(value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    _require_mapping(value, path)
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", "unknown field")
    missing = [key for key in required if key not in value]
    if missing:
        raise _fail(f"{path}.{missing[0]}", "required field is missing")


def _require_list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise _fail(path, f"must be an array, not {_type_name(value)}")
    return value


def _string(value: Any, path: str, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"must be a string, not {_type_name(value)}")
    if "\0" in value:
        raise _fail(path, "must not contain NUL characters")
    if max_length is not None and len(value) > max_length:
        raise _fail(path, f"longer than {max_length} characters")
    return value


def _name(value: Any, path: str) -> str:
    name = _string(value, path)
    if not NAME_PATTERN.fullmatch(name):
        raise _fail(path, f"{name!r} does not match {NAME_PATTERN.pattern}")
    return name


def _unique_names(values: Any, path: str) -> tuple[str, ...]:
    names = [_name(value, f"{path}[{index}]") for index, value in enumerate(_require_list(values, path))]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise _fail(path, f"{duplicates[0]!r} is listed twice")
    return tuple(sorted(names))


def _string_map(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    _require_mapping(value, path)
    return tuple(sorted((key, _string(item, f"{path}.{key}")) for key, item in value.items()))


# --- apps and services -------------------------------------------------------------------------------------


def _parse_app(key: str, value: Any, path: str) -> App:
    app_id = _name(key, path)
    _require_object(value, path, required=("services",), optional=("appId", "appName"))
    declared_id = value.get("appId", app_id)
    if isinstance(declared_id, bool) or not isinstance(declared_id, (int, str)) or str(declared_id) != app_id:
        raise _fail(f"{path}.appId", f"{declared_id!r} does not match its key {app_id!r}")
    app_name = _string(value.get("appName", ""), f"{path}.appName", MAX_APP_NAME_LENGTH)
    raw_services = _require_list(value["services"], f"{path}.services")
    services = [_parse_service(item, f"{path}.services[{index}]") for index, item in enumerate(raw_services)]
    names = [service.service_name for service in services]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise _fail(f"{path}.services[{index}].serviceName", f"duplicate service name {name!r}")
    by_name = {service.service_name: service for service in services}
    for index, service in enumerate(services):
        _check_dependencies(service, by_name, f"{path}.services[{index}].config.depends_on")
    _check_acyclic(by_name, f"{path}.services")
    return App(app_id=app_id, app_name=app_name, services=tuple(sorted(services, key=lambda s: s.service_name)))


def _parse_service(value: Any, path: str) -> Service:
    _require_object(value, path, required=("serviceName", "config"), optional=("serviceId", "imageName"))
    service_name = _name(value["serviceName"], f"{path}.serviceName")
    service_id = value.get("serviceId")
    if service_id is not None and (isinstance(service_id, bool) or not isinstance(service_id, (int, str))):
        raise _fail(f"{path}.serviceId", f"must be an integer or a string, not {_type_name(service_id)}")
    config = _parse_config(value["config"], f"{path}.config")
    if "imageName" in value and _image(value["imageName"], f"{path}.imageName") != config.image:
        raise _fail(f"{path}.imageName", f"{value['imageName']!r} differs from config.image {config.image!r}")
    return Service(service_name=service_name, config=config, service_id=service_id)


def _check_dependencies(service: Service, by_name: Mapping[str, Service], path: str) -> None:
    for dependency in service.config.depends_on:
        if dependency not in by_name:
            raise _fail(path, f"unknown service {dependency!r}")
        if service.config.running and not by_name[dependency].config.running:
            raise _fail(path, f"{dependency!r} has running: false, so this service could never start")


def _check_acyclic(by_name: Mapping[str, Service], path: str) -> None:
    """Peel off services whose dependencies are all peeled (iteratively: chains may be long); whatever
    remains sits on or behind a cycle, which is then walked to name it."""
    remaining = {name: set(service.config.depends_on) for name, service in by_name.items()}
    ready = [name for name, dependencies in remaining.items() if not dependencies]
    while ready:
        done = ready.pop()
        del remaining[done]
        for name, dependencies in remaining.items():
            if done in dependencies:
                dependencies.discard(done)
                if not dependencies:
                    ready.append(name)
    if remaining:
        chain = [min(remaining)]
        while chain.count(chain[-1]) < 2:
            chain.append(min(remaining[chain[-1]]))
        cycle = chain[chain.index(chain[-1]):]
        shown = " -> ".join(cycle if len(cycle) <= 9 else cycle[:8] + [f"... ({len(cycle) - 1} services)"])
        raise _fail(path, f"depends_on cycle {shown}")


# --- service config ----------------------------------------------------------------------------------------


def _parse_config(value: Any, path: str) -> ServiceConfig:
    _require_object(value, path, required=("image",), optional=tuple(
        field for field in ServiceConfig.__dataclass_fields__ if field != "image"))
    if "update_strategy" in value and value["update_strategy"] not in UPDATE_STRATEGIES:
        raise _fail(f"{path}.update_strategy", f"must be one of {', '.join(UPDATE_STRATEGIES)}")
    if "restart" in value and value["restart"] not in RESTART_POLICIES:
        raise _fail(f"{path}.restart", f"must be one of {', '.join(RESTART_POLICIES)}")
    running = value.get("running", True)
    if not isinstance(running, bool):
        raise _fail(f"{path}.running", f"must be a boolean, not {_type_name(running)}")
    networks = _unique_names(value.get("networks", []), f"{path}.networks")
    return ServiceConfig(
        image=_image(value["image"], f"{path}.image"),
        ports=_ports(value.get("ports", []), f"{path}.ports"),
        environment=_environment(value.get("environment", {}), f"{path}.environment"),
        volumes=_volumes(value.get("volumes", []), f"{path}.volumes"),
        networks=networks or (DEFAULT_NETWORK,),
        command=_command(value.get("command"), f"{path}.command"),
        depends_on=_unique_names(value.get("depends_on", []), f"{path}.depends_on"),
        running=running,
        restart=value.get("restart", "always"),
        labels=_labels(value.get("labels", {}), f"{path}.labels"),
        update_strategy=value.get("update_strategy", DOWNLOAD_THEN_KILL),
    )


def _image(value: Any, path: str) -> str:
    image = _string(value, path, MAX_IMAGE_LENGTH)
    if not IMAGE_PATTERN.fullmatch(image):
        raise _fail(path, f"{image!r} is not a valid image reference")
    return normalise_image(image)


def _ports(value: Any, path: str) -> tuple[PortMapping, ...]:
    mappings = [_port(item, f"{path}[{index}]") for index, item in enumerate(_require_list(value, path))]
    for index, mapping in enumerate(mappings):
        for earlier in mappings[:index]:
            if earlier == mapping:
                raise _fail(f"{path}[{index}]", f"duplicate port mapping {mapping.spec()!r}")
            if _same_host_binding(earlier, mapping):
                raise _fail(f"{path}[{index}]", f"host port {mapping.host_port}/{mapping.protocol} is bound twice")
    return tuple(sorted(mappings, key=lambda m: (m.container_port, m.protocol, m.host_port or 0, m.host_ip)))


def _same_host_binding(first: PortMapping, second: PortMapping) -> bool:
    return (first.host_port is not None and first.host_port == second.host_port
            and first.protocol == second.protocol
            and (first.host_ip == second.host_ip or "" in (first.host_ip, second.host_ip)))


def _port(value: Any, path: str) -> PortMapping:
    if isinstance(value, int) and not isinstance(value, bool):
        return PortMapping(container_port=_port_number(value, path))
    spec = _string(value, path)
    match = _PORT_PATTERN.fullmatch(spec)
    if not match:
        raise _fail(path, f"{spec!r} is not a port spec ([ip:][host:]container[/tcp|udp|sctp])")
    protocol = match["protocol"] or "tcp"
    if protocol not in PROTOCOLS:
        raise _fail(path, f"unknown protocol {protocol!r} in {spec!r}")
    host = match["host"] or match["ip_host"]
    return PortMapping(
        container_port=_port_number(int(match["container"]), path),
        protocol=protocol,
        host_port=_port_number(int(host), path) if host else None,
        host_ip=_host_ip(match["ip"], spec, path) if match["ip"] else "",
    )


def _port_number(number: int, path: str) -> int:
    if not 1 <= number <= 65535:
        raise _fail(path, f"port {number} is outside 1-65535")
    return number


def _host_ip(text: str, spec: str, path: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise _fail(path, f"invalid host address in {spec!r}") from None
    if (address.version == 6) != text.startswith("["):
        raise _fail(path, f"IPv6 host addresses must be in brackets, IPv4 ones not, in {spec!r}")
    return "" if address.is_unspecified and address.version == 4 else address.compressed


def _environment(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, list):
        pairs = [_environment_entry(item, f"{path}[{index}]") for index, item in enumerate(value)]
    else:
        _require_mapping(value, path)
        pairs = [(key, _environment_value(item, f"{path}.{key}")) for key, item in value.items()]
    for index, (key, _) in enumerate(pairs):
        if not key or "=" in key or "\0" in key:
            raise _fail(path, f"invalid variable name {key!r}")
        if any(key == earlier for earlier, _ in pairs[:index]):
            raise _fail(path, f"variable {key!r} is set twice")
    return tuple(sorted(pairs))


def _environment_entry(value: Any, path: str) -> tuple[str, str]:
    entry = _string(value, path)
    if "=" not in entry:
        raise _fail(path, f"{entry!r} is not NAME=VALUE")
    key, _, item = entry.partition("=")
    return key, item


def _environment_value(value: Any, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _string(value, path)


def _volumes(value: Any, path: str) -> tuple[VolumeMount, ...]:
    mounts = [_volume(item, f"{path}[{index}]") for index, item in enumerate(_require_list(value, path))]
    for index, mount in enumerate(mounts):
        if any(earlier.target == mount.target for earlier in mounts[:index]):
            raise _fail(f"{path}[{index}]", f"{mount.target!r} is mounted twice")
    return tuple(sorted(mounts))


def _volume(value: Any, path: str) -> VolumeMount:
    spec = _string(value, path)
    source, _, rest = spec.partition(":")
    target, _, mode = rest.partition(":")
    if source.startswith(("/", ".", "~")):
        raise _fail(path, f"bind mounts of host paths are not supported: {spec!r}")
    if not NAME_PATTERN.fullmatch(source) or not target.startswith("/") or mode not in ("", "ro", "rw"):
        raise _fail(path, f"{spec!r} is not volume:/container/path[:ro|rw]")
    return VolumeMount(target=posixpath.normpath(target), volume=source, read_only=mode == "ro")


def _command(value: Any, path: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            arguments = shlex.split(_string(value, path))
        except ValueError as error:
            raise _fail(path, f"cannot be split into arguments ({error})") from None
    else:
        arguments = [_string(item, f"{path}[{index}]") for index, item in enumerate(_require_list(value, path))]
    return tuple(arguments) or None


def _labels(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    labels = _string_map(value, path)
    for key, _ in labels:
        if not key or key.startswith(RESERVED_LABEL_PREFIX):
            raise _fail(f"{path}.{key}", f"label names must be non-empty and not start with {RESERVED_LABEL_PREFIX}")
    return labels


# --- canonical form ----------------------------------------------------------------------------------------


def _config_to_json(config: ServiceConfig) -> dict:
    return {
        "image": config.image,
        "ports": [mapping.spec() for mapping in config.ports],
        "environment": dict(config.environment),
        "volumes": [mount.spec() for mount in config.volumes],
        "networks": list(config.networks),
        "command": None if config.command is None else list(config.command),
        "depends_on": list(config.depends_on),
        "running": config.running,
        "restart": config.restart,
        "labels": dict(config.labels),
        "update_strategy": config.update_strategy,
    }


def _hashed_config(config: ServiceConfig) -> dict:
    canonical = _config_to_json(config)
    return {name: canonical[name] for name in HASHED_FIELDS}


def _app_to_json(app: App) -> dict:
    return {"appId": app.app_id, "appName": app.app_name, "services": [
        {**({} if service.service_id is None else {"serviceId": service.service_id}),
         "serviceName": service.service_name,
         "imageName": service.config.image,
         "config": _config_to_json(service.config)}
        for service in app.services]}
