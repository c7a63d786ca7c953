"""Whole-document validation: JSON decoding with its limits, then apps, services and their configs.

A document is rejected as a whole (`InvalidTargetState`, naming the path of the first bad field) so the agent
keeps running the last good one. Every count and length is bounded (`limits`), checked before the items it
counts, and every check is linear in the document's size (bench.validation measures it).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from messages.protocol import json as strict_json
from messages.protocol.target_state import limits
from messages.protocol.target_state.dependencies import check_dependencies, parse_dependencies
from messages.protocol.target_state.fields import (
    _check_count,
    _command,
    _environment,
    _fail,
    _labels,
    _name,
    _ports,
    _require_list,
    _require_mapping,
    _require_object,
    _restart,
    _string,
    _type_name,
    _unique_names,
    _volumes,
)
from messages.protocol.target_state.health import parse_healthcheck
from messages.protocol.target_state.images import _image
from messages.protocol.target_state.limits import MAX_APP_NAME_LENGTH, MAX_DOCUMENT_BYTES
from messages.protocol.target_state.model import (
    DEFAULT_NETWORK,
    DOWNLOAD_THEN_KILL,
    UPDATE_STRATEGIES,
    App,
    ContainerOptions,
    InvalidTargetState,
    PortMapping,
    Service,
    ServiceConfig,
    TargetState,
)
from messages.protocol.target_state.options import OPTION_NAMES, parse_options
from messages.protocol.target_state.registries import parse_registries


def parse_target_state(raw: bytes | bytearray | str | Mapping[str, Any]) -> TargetState:
    """Validate a whole document (JSON bytes/str or an already decoded dict); raise `InvalidTargetState`."""
    document = _check_size(_decode(raw) if isinstance(raw, (bytes, bytearray, str)) else raw)
    _require_object(document, "document", required=("apps",),
                    optional=("purge_volumes", "override_lock", "registries"))
    apps = document["apps"]
    _require_mapping(apps, "apps")
    _check_count(apps, "apps", limits.MAX_APPS)
    parsed = [_parse_app(key, value, f"apps.{key}") for key, value in apps.items()]
    # Ids of apps no longer in the target whose volumes are not worth keeping (see TargetState).
    purge = _unique_names(document.get("purge_volumes", []), "purge_volumes", limits.MAX_APPS)
    override_lock = document.get("override_lock", False)
    if not isinstance(override_lock, bool):
        raise _fail("override_lock", f"must be a boolean, not {_type_name(override_lock)}")
    registries = parse_registries(document.get("registries", {}), "registries")
    return TargetState(apps=tuple(sorted(parsed, key=lambda app: app.app_id)), purge_volumes=purge,
                       override_lock=override_lock, registries=registries)


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


# --- apps and services -------------------------------------------------------------------------------------


def _parse_app(key: str, value: Any, path: str) -> App:
    app_id = _name(key, path)
    _require_object(value, path, required=("services",), optional=("appId", "appName"))
    declared_id = value.get("appId", app_id)
    if isinstance(declared_id, bool) or not isinstance(declared_id, (int, str)) or str(declared_id) != app_id:
        raise _fail(f"{path}.appId", f"{declared_id!r} does not match its key {app_id!r}")
    app_name = _string(value.get("appName", ""), f"{path}.appName", MAX_APP_NAME_LENGTH)
    raw_services = _require_list(value["services"], f"{path}.services", limits.MAX_SERVICES_PER_APP)
    services = [_parse_service(item, f"{path}.services[{index}]") for index, item in enumerate(raw_services)]
    by_name: dict[str, Service] = {}
    for index, service in enumerate(services):
        if service.service_name in by_name:
            raise _fail(f"{path}.services[{index}].serviceName", f"duplicate service name {service.service_name!r}")
        by_name[service.service_name] = service
    for index, service in enumerate(services):
        check_dependencies(service, by_name, f"{path}.services[{index}].config.depends_on")
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


def _check_acyclic(by_name: Mapping[str, Service], path: str) -> None:
    """Peel off services whose dependencies are all peeled (iteratively: chains may be long, and each edge is
    looked at once); whatever remains sits on or behind a cycle, which is then walked to name it."""
    remaining = {name: set(service.config.dependency_names) for name, service in by_name.items()}
    dependents: dict[str, list[str]] = {name: [] for name in by_name}
    for name, dependencies in remaining.items():
        for dependency in dependencies:
            dependents[dependency].append(name)
    ready = [name for name, dependencies in remaining.items() if not dependencies]
    while ready:
        done = ready.pop()
        del remaining[done]
        for name in dependents[done]:
            dependencies = remaining[name]
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


def parse_service_config(value: Any, path: str) -> ServiceConfig:
    """One service's config, validated alone (the compose converter names its errors by the compose path);
    dependencies are checked with the whole app, by `parse_target_state`."""
    return _parse_config(value, path)


def _parse_config(value: Any, path: str) -> ServiceConfig:
    _require_object(value, path, required=("image",), optional=tuple(
        field for field in ServiceConfig.__dataclass_fields__ if field not in ("image", "options")) + OPTION_NAMES)
    if "update_strategy" in value and value["update_strategy"] not in UPDATE_STRATEGIES:
        raise _fail(f"{path}.update_strategy", f"must be one of {', '.join(UPDATE_STRATEGIES)}")
    running = value.get("running", True)
    if not isinstance(running, bool):
        raise _fail(f"{path}.running", f"must be a boolean, not {_type_name(running)}")
    networks = _unique_names(value.get("networks", []), f"{path}.networks", limits.MAX_NETWORKS_PER_SERVICE)
    options = parse_options(value, path)
    ports = _ports(value.get("ports", []), f"{path}.ports")
    if options.network_mode is not None:
        _check_network_mode(options, networks, ports, path)
    return ServiceConfig(
        image=_image(value["image"], f"{path}.image"),
        ports=ports,
        environment=_environment(value.get("environment", {}), f"{path}.environment"),
        volumes=_volumes(value.get("volumes", []), f"{path}.volumes"),
        networks=networks or (() if options.network_mode else (DEFAULT_NETWORK,)),
        command=_command(value.get("command"), f"{path}.command"),
        depends_on=parse_dependencies(value.get("depends_on", []), f"{path}.depends_on"),
        running=running,
        restart=_restart(value.get("restart", "always"), f"{path}.restart"),
        labels=_labels(value.get("labels", {}), f"{path}.labels"),
        update_strategy=value.get("update_strategy", DOWNLOAD_THEN_KILL),
        healthcheck=parse_healthcheck(value.get("healthcheck"), f"{path}.healthcheck"),
        options=options,
    )


def _check_network_mode(options: ContainerOptions, networks: tuple[str, ...], ports: tuple[PortMapping, ...],
                        path: str) -> None:
    """A container in the host's network or in none joins no network of its app and publishes nothing (the
    engine would ignore the ports silently)."""
    if networks:
        raise _fail(f"{path}.networks", f"a service with network_mode {options.network_mode} joins no network")
    if ports:
        raise _fail(f"{path}.ports", f"a service with network_mode {options.network_mode} publishes no ports")
    if options.network_mode == "host" and any(name.startswith("net.") for name, _ in options.sysctls):
        raise _fail(f"{path}.sysctls", "net.* sysctls would change the host's network (network_mode host)")
