"""docker-compose files as target states (pure): `run.py target from-compose` and `run.py target set` use it.

The operator's side converts; the device never sees YAML. What compose means is kept: `${VAR}`,
`${VAR:-default}` (and `-`, `:?`, `?`, `:+`, `+`) from the operator's environment, `$$` for a dollar;
`environment` as a list or a map (a variable without a value comes from the operator's environment);
`restart` absent is "no" (compose's default, not the target state's); named volumes and networks must be
declared at the top level; ports in every documented syntax (ranges expand to one mapping per port);
`depends_on` as a list or with conditions (`service_healthy` waits until the dependency runs healthy, and
needs its `healthcheck` in the file; `service_started` and `service_completed_successfully` wait until it
runs, or has exited 0 as a one-shot). Every service key maps to the target state's field of the same name
(see `messages.protocol.target_state.options`) or is refused with its path: nothing is dropped silently.
Refused: `build` (a device does not build images), `env_file` (the files are on the operator's machine:
put the variables in `environment`), optional dependencies (`required: false`), relative bind mounts,
anonymous volumes, and anything the agent cannot apply.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable, Mapping

from cloud.compose_yaml import ComposeError, load_compose_yaml
from messages.protocol.target_state import (
    DEPENDENCY_CONDITIONS,
    NAME_PATTERN,
    OPTION_NAMES,
    SERVICE_STARTED,
    InvalidTargetState,
    parse_service_config,
    parse_target_state,
)
from messages.protocol.target_state.limits import MAX_PORTS_PER_SERVICE

__all__ = ["ComposeError", "compose_to_target", "load_compose", "looks_like_compose"]

# Keys of a service that go to the target state unchanged (it parses and normalises them).
PASSED_THROUGH = frozenset(OPTION_NAMES) - {"expose"} | {"command", "healthcheck"}
TOP_LEVEL = ("services", "volumes", "networks", "name", "version")
_INTERPOLATION = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:-|-|:\?|\?|:\+|\+)(?P<argument>.*))?", re.S)
_REFUSED = {
    "build": "a device does not build images: build and push it, then name it in image",
    "env_file": "the file is on the operator's machine, not the device: put its variables in environment",
    "container_name": "Fleetlet names containers itself (<device>_<app>_<service>)",
    "links": "services reach each other by name on their networks",
    "external_links": "services reach each other by name on their networks",
    "volumes_from": "name the volumes instead",
    "secrets": "not supported: give the values in environment",
    "configs": "not supported: mount a volume instead",
    "profiles": "not supported: a target runs every service it lists",
    "extends": "not supported: use YAML anchors (<<: *name)",
    "scale": "one container per service",
}


def looks_like_compose(data: bytes) -> bool:
    """Whether a file given to `run.py target set` is a compose file rather than a target-state document
    (a JSON object with "apps"): anything else is read as compose."""
    import json
    try:
        document = json.loads(data)
    except ValueError:
        return True
    return not (isinstance(document, dict) and "apps" in document)


def load_compose(data: bytes, environ: Mapping[str, str], app_id: str | None = None, app_name: str | None = None,
                 default_name: str = "app") -> dict[str, Any]:
    """The target-state document of a compose file's bytes (validated as the device will); ComposeError."""
    return compose_to_target(load_compose_yaml(data), environ, app_id, app_name, default_name)


def compose_to_target(document: Any, environ: Mapping[str, str], app_id: str | None = None,
                      app_name: str | None = None, default_name: str = "app") -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ComposeError("the file must hold a mapping with services")
    document = _interpolate(document, environ, "")
    for key in document:
        if not isinstance(key, str) or (key not in TOP_LEVEL and not key.startswith("x-")):
            raise ComposeError(f"{key}: not supported (a compose file here has {', '.join(TOP_LEVEL)} and x-*)")
    services = document.get("services")
    if not isinstance(services, dict) or not services:
        raise ComposeError("services: must be a mapping of at least one service")
    volumes = _declared(document.get("volumes"), "volumes", {"driver": ("local",)})
    networks = _declared(document.get("networks"), "networks", {"driver": ("bridge",)}) | {"default"}
    app = app_id or _project_name(document.get("name"), default_name)
    if not NAME_PATTERN.fullmatch(app):
        raise ComposeError(f"app id {app!r} does not match {NAME_PATTERN.pattern} (give --app-id)")
    converted = [{"serviceName": name, "config": _service(name, service, volumes, networks, environ)}
                 for name, service in services.items()]
    target = {"apps": {app: {"appId": app, "appName": app_name or app, "services": converted}}}
    try:
        parse_target_state(target)
    except InvalidTargetState as error:
        raise ComposeError(f"the converted target state: {error.reason}") from None
    return target


def _project_name(name: Any, default: str) -> str:
    if name is not None and not isinstance(name, str):
        raise ComposeError("name: must be a string")
    return re.sub(r"[^a-z0-9_-]", "", (name or default).lower()) or "app"


def _declared(section: Any, path: str, allowed: Mapping[str, tuple[str, ...]]) -> set[str]:
    """Names of the top-level volumes or networks; each may say only what the agent does anyway."""
    if section is None:
        return set()
    _mapping(section, path)
    for name, spec in section.items():
        if spec is None:
            continue
        _mapping(spec, f"{path}.{name}")
        for key, value in spec.items():
            if key not in allowed:
                raise ComposeError(f"{path}.{name}.{key}: not supported (the agent creates the {path} itself)")
            if value not in allowed[key]:
                raise ComposeError(f"{path}.{name}.{key}: only {', '.join(allowed[key])} is supported")
    return set(section)


def _mapping(value: Any, path: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ComposeError(f"{path}: must be a mapping with string keys")


# --- interpolation -----------------------------------------------------------------------------------------


def _interpolate(value: Any, environ: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):
        return _substitute(value, environ, path)
    if isinstance(value, list):
        return [_interpolate(item, environ, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _interpolate(item, environ, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
    return value


def _substitute(text: str, environ: Mapping[str, str], path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["named"]:
            return _variable(match["named"], None, "", environ, path)
        braced = _BRACED.fullmatch(match["braced"])
        if not braced:
            raise ComposeError(f"{path}: {match.group()!r} is not ${{NAME}} or ${{NAME:-default}}")
        return _variable(braced["name"], braced["operator"], braced["argument"] or "", environ, path)

    return _INTERPOLATION.sub(replace, text)


def _variable(name: str, operator: str | None, argument: str, environ: Mapping[str, str], path: str) -> str:
    value = environ.get(name)
    empty = not value
    if operator in (":-", "-"):
        return argument if value is None or (operator == ":-" and empty) else value
    if operator in (":?", "?"):
        if value is None or (operator == ":?" and empty):
            raise ComposeError(f"{path}: {name} is required: {argument or 'not set'}")
        return value
    if operator in (":+", "+"):
        return argument if value is not None and not (operator == ":+" and empty) else ""
    if value is None:  # compose warns and substitutes ""; a device would run the wrong configuration
        raise ComposeError(f"{path}: variable {name} is not set (set it, or give a default: ${{{name}:-value}})")
    return value


# --- services ----------------------------------------------------------------------------------------------


def _service(name: str, service: Any, volumes: set[str], networks: set[str],
             environ: Mapping[str, str]) -> dict[str, Any]:
    path = f"services.{name}"
    _mapping(service, path)
    if "image" not in service:
        raise ComposeError(f"{path}.build: {_REFUSED['build']}" if "build" in service else f"{path}.image: required")
    config: dict[str, Any] = {"image": service["image"], "restart": "no"}
    for key, value in service.items():
        where = f"{path}.{key}"
        if key in _REFUSED:
            raise ComposeError(f"{where}: {_REFUSED[key]}")
        if key == "image":
            continue
        converter = _CONVERTERS.get(key)
        if converter is not None:
            converter(value, where, config, volumes if key == "volumes" else networks, environ)
        elif key in PASSED_THROUGH:
            config[key] = value
        else:
            raise ComposeError(f"{where}: not supported")
    try:
        parse_service_config(config, path)
    except InvalidTargetState as error:
        raise ComposeError(error.reason) from None
    return config


def _environment(value: Any, path: str, config: dict[str, Any], _: set[str], environ: Mapping[str, str]) -> None:
    pairs: list[tuple[str, Any, str]] = []
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ComposeError(f"{path}[{index}]: must be a string NAME=VALUE or NAME")
            key, equals, text = item.partition("=")
            pairs.append((key, text if equals else None, f"{path}[{index}]"))
    else:
        _mapping(value, path)
        pairs = [(key, item, f"{path}.{key}") for key, item in value.items()]
    environment = {}
    for key, item, where in pairs:
        if item is None:
            if key not in environ:  # compose leaves it unset in the container: say so instead
                raise ComposeError(f"{where}: {key} has no value here and is not set in the environment")
            item = environ[key]
        environment[key] = _scalar_text(item, where)
    config["environment"] = environment


def _scalar_text(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ComposeError(f"{path}: must be a string, a number or a boolean")


def _labels(value: Any, path: str, config: dict[str, Any], _: set[str], __: Mapping[str, str]) -> None:
    if isinstance(value, list):
        items = [str(item).partition("=") for item in value]
        config["labels"] = {key: text for key, _, text in items}
    else:
        _mapping(value, path)
        config["labels"] = {key: _scalar_text(item, f"{path}.{key}") for key, item in value.items()}


def _restart(value: Any, path: str, config: dict[str, Any], _: set[str], __: Mapping[str, str]) -> None:
    config["restart"] = "no" if value is False else value  # `restart: no` read as YAML 1.1 would


def _networks(value: Any, path: str, config: dict[str, Any], declared: set[str], _: Mapping[str, str]) -> None:
    if isinstance(value, list):
        names = value
    else:
        _mapping(value, path)
        for name, spec in value.items():
            if spec not in (None, {}):
                raise ComposeError(f"{path}.{name}: aliases, addresses and priorities are not supported")
        names = list(value)
    for index, name in enumerate(names):
        if name not in declared:
            raise ComposeError(f"{path}[{index}]: network {name!r} is not declared under the top-level networks")
    config["networks"] = names


def _network_mode(value: Any, path: str, config: dict[str, Any], _: set[str], __: Mapping[str, str]) -> None:
    if value == "bridge":
        raise ComposeError(f"{path}: bridge is Docker's default network, not the app's: leave network_mode out")
    config["network_mode"] = value


def _depends_on(value: Any, path: str, config: dict[str, Any], _: set[str], __: Mapping[str, str]) -> None:
    if isinstance(value, list):
        config["depends_on"] = value
        return
    _mapping(value, path)
    conditions = {}
    for name, spec in value.items():
        where = f"{path}.{name}"
        _mapping(spec, where)
        for key, item in spec.items():
            if key == "condition":
                if item not in DEPENDENCY_CONDITIONS:
                    raise ComposeError(f"{where}.condition: must be one of {', '.join(DEPENDENCY_CONDITIONS)}")
            elif key == "required":
                if item is not True:
                    raise ComposeError(f"{where}.required: optional dependencies are not supported")
            else:
                raise ComposeError(f"{where}.{key}: not supported")
        # The target state takes the condition as it is (service_started when absent, as in compose) and
        # checks the rest with the whole app: a service_healthy dependency must declare a healthcheck.
        conditions[name] = {"condition": spec.get("condition", SERVICE_STARTED)}
    config["depends_on"] = conditions


def _volumes(value: Any, path: str, config: dict[str, Any], declared: set[str], _: Mapping[str, str]) -> None:
    if not isinstance(value, list):
        raise ComposeError(f"{path}: must be a list")
    mounts, tmpfs = [], []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if isinstance(item, dict):
            mount = _long_volume(item, where)
            if mount.startswith("tmpfs:"):
                tmpfs.append(mount[len("tmpfs:"):])
                continue
        elif isinstance(item, str):
            mount = _short_volume(item, where)
        else:
            raise ComposeError(f"{where}: must be a string or a mapping")
        source = mount.partition(":")[0]
        if not source.startswith("/") and source not in declared:
            raise ComposeError(f"{where}: volume {source!r} is not declared under the top-level volumes")
        mounts.append(mount)
    config["volumes"] = mounts
    if tmpfs:
        config["tmpfs"] = [*_as_list(config.get("tmpfs")), *tmpfs]


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _short_volume(spec: str, path: str) -> str:
    parts = spec.split(":")
    if len(parts) == 1:
        raise ComposeError(f"{path}: anonymous volumes are not supported: give it a name (name:{spec})")
    if parts[0].startswith((".", "~")):
        raise ComposeError(f"{path}: {spec!r}: a relative bind mount means a path on the operator's machine; "
                           "give an absolute path on the device")
    if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ComposeError(f"{path}: {spec!r}: only the ro and rw options are supported")
    return spec


def _long_volume(item: dict[str, Any], path: str) -> str:
    allowed = {"type", "source", "target", "read_only", "tmpfs"}
    for key in item:
        if key not in allowed:
            raise ComposeError(f"{path}.{key}: not supported")
    kind, target = item.get("type"), item.get("target")
    if not isinstance(target, str):
        raise ComposeError(f"{path}.target: required, a path in the container")
    if kind == "tmpfs":
        size = (item.get("tmpfs") or {}).get("size")
        return f"tmpfs:{target}" + (f":size={size}" if size is not None else "")
    if kind not in ("volume", "bind"):
        raise ComposeError(f"{path}.type: must be volume, bind or tmpfs")
    if "tmpfs" in item:
        raise ComposeError(f"{path}.tmpfs: only for type tmpfs")
    source = item.get("source")
    if not isinstance(source, str):
        raise ComposeError(f"{path}.source: required for type {kind}")
    if (kind == "bind") != source.startswith("/"):
        raise ComposeError(f"{path}.source: a bind mount's source is an absolute path, a volume's a name")
    read_only = item.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ComposeError(f"{path}.read_only: must be a boolean")
    return f"{source}:{target}:{'ro' if read_only else 'rw'}"


def _ports(value: Any, path: str, config: dict[str, Any], _: set[str], __: Mapping[str, str]) -> None:
    if not isinstance(value, list):
        raise ComposeError(f"{path}: must be a list")
    specs: list[str] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        specs += _long_port(item, where) if isinstance(item, dict) else _short_port(item, where)
        if len(specs) > MAX_PORTS_PER_SERVICE:
            raise ComposeError(f"{path}: more than {MAX_PORTS_PER_SERVICE} ports")
    config["ports"] = specs


def _expose(value: Any, path: str, config: dict[str, Any], _: set[str], __: Mapping[str, str]) -> None:
    if not isinstance(value, list):
        raise ComposeError(f"{path}: must be a list")
    exposed: list[str] = []
    for index, item in enumerate(value):
        port, _slash, protocol = str(item).partition("/")
        exposed += [f"{number}/{protocol}" if protocol else str(number)
                    for number in _range(port, f"{path}[{index}]")]
    config["expose"] = exposed


def _short_port(item: Any, path: str) -> list[str]:
    """"3000", "3000-3005", "8000:8000", "9090-9091:8080-8081", "127.0.0.1:8001:8001", "127.0.0.1::80",
    "[::1]:6001:6001", "::1:6000:6000", "6060:6060/udp", or a number."""
    if isinstance(item, int) and not isinstance(item, bool):
        return [str(item)]
    if not isinstance(item, str):
        raise ComposeError(f"{path}: must be a string, a number or a mapping")
    text, _, protocol = item.partition("/")
    parts = text.rsplit(":", 2)
    address = parts[0] if len(parts) == 3 else ""
    host = parts[-2] if len(parts) >= 2 else ""
    containers = _range(parts[-1], path)
    hosts = _range(host, path) if host else []
    if hosts and len(hosts) != len(containers):
        raise ComposeError(f"{path}: {item!r}: a host range must be as long as the container range")
    return [_port_spec(address, str(hosts[i]) if hosts else "", container, protocol, path)
            for i, container in enumerate(containers)]


def _long_port(item: dict[str, Any], path: str) -> list[str]:
    for key in item:
        if key not in ("target", "published", "host_ip", "protocol", "mode"):
            raise ComposeError(f"{path}.{key}: not supported")
    if item.get("mode", "host") != "host":
        raise ComposeError(f"{path}.mode: only host (ingress is Swarm's)")
    target = item.get("target")
    if isinstance(target, bool) or not isinstance(target, int):
        raise ComposeError(f"{path}.target: required, the container's port number")
    published = str(item["published"]) if item.get("published") is not None else ""
    hosts = _range(published, f"{path}.published") if published else []
    if len(hosts) > 1:
        raise ComposeError(f"{path}.published: a range of host ports for one container port is not supported")
    protocol = item.get("protocol", "")
    return [_port_spec(str(item.get("host_ip", "")), str(hosts[0]) if hosts else "", target, protocol, path)]


def _port_spec(address: str, host: str, container: int, protocol: str, path: str) -> str:
    suffix = f"/{protocol}" if protocol else ""
    if not address:
        return f"{host}:{container}{suffix}" if host else f"{container}{suffix}"
    bare = address.strip("[]")
    try:
        version = ipaddress.ip_address(bare).version
    except ValueError:
        raise ComposeError(f"{path}: {address!r} is not an IP address") from None
    shown = f"[{bare}]" if version == 6 else bare
    return f"{shown}:{host}:{container}{suffix}"


def _range(text: str, path: str) -> list[int]:
    first, dash, last = text.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()) or len(first) > 5 or len(last) > 5:
        raise ComposeError(f"{path}: {text!r} is not a port or a range of ports")
    low, high = int(first), int(last) if dash else int(first)
    if not 1 <= low <= high <= 65535 or high - low >= MAX_PORTS_PER_SERVICE:
        raise ComposeError(f"{path}: {text!r} is not a range within 1-65535 of at most {MAX_PORTS_PER_SERVICE} ports")
    return list(range(low, high + 1))


def _deploy(value: Any, path: str, config: dict[str, Any], _: set[str], __: Mapping[str, str]) -> None:
    """deploy.resources only (the rest is Swarm's): limits.cpus, limits.memory, limits.pids,
    reservations.memory, as cpus, mem_limit, pids_limit, mem_reservation."""
    _mapping(value, path)
    for key in value:
        if key != "resources":
            raise ComposeError(f"{path}.{key}: not supported (only deploy.resources)")
    resources = value["resources"]
    _mapping(resources, f"{path}.resources")
    fields = {"limits": {"cpus": "cpus", "memory": "mem_limit", "pids": "pids_limit"},
              "reservations": {"memory": "mem_reservation"}}
    for kind, spec in resources.items():
        where = f"{path}.resources.{kind}"
        if kind not in fields:
            raise ComposeError(f"{where}: not supported")
        _mapping(spec, where)
        for key, item in spec.items():
            if key not in fields[kind]:
                raise ComposeError(f"{where}.{key}: not supported")
            name = fields[kind][key]
            if name in config and config[name] != item:
                raise ComposeError(f"{where}.{key}: contradicts {name}")
            config[name] = item


_CONVERTERS: dict[str, Callable[[Any, str, dict[str, Any], set[str], Mapping[str, str]], None]] = {
    "environment": _environment,
    "labels": _labels,
    "restart": _restart,
    "networks": _networks,
    "network_mode": _network_mode,
    "depends_on": _depends_on,
    "volumes": _volumes,
    "ports": _ports,
    "expose": _expose,
    "deploy": _deploy,
}


def default_app_name(path: str) -> str:
    """Compose's default project name: the directory holding the file."""
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or "app"
