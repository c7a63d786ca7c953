"""The document's top-level "registries": a login per registry host, for private images.

    "registries": {"127.0.0.1:5443": {"username": "fleetlet", "password": "..."}}

A host is spelled as in image references (`HOST[:PORT]`, Docker Hub as "docker.io"); `registry_host` finds
an image's. The login travels only to the engine worker that pulls from that host (see `RegistryCredentials`).
"""
from __future__ import annotations

import re
from typing import Any

from messages.protocol.json import JSONObject
from messages.protocol.target_state import limits
from messages.protocol.target_state.fields import _check_count, _fail, _require_mapping, _require_object, _string
from messages.protocol.target_state.model import RegistryCredentials, TargetState

DOCKER_HUB = "docker.io"
HOST_PATTERN = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?(?::[0-9]{1,5})?")


def registry_host(image: str) -> str:
    """The registry an image reference names: its first component when that is a host (it has a dot or a port,
    or is localhost, as Docker decides), else Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def credentials_for(target: TargetState, image: str) -> RegistryCredentials | None:
    host = registry_host(image)
    return next((login for name, login in target.registries if name == host), None)


def parse_registries(value: Any, path: str) -> tuple[tuple[str, RegistryCredentials], ...]:
    _require_mapping(value, path)
    _check_count(value, path, limits.MAX_REGISTRIES)
    parsed = []
    for host, login in value.items():
        if not HOST_PATTERN.fullmatch(host) or (":" in host and not 0 < int(host.rpartition(":")[2]) < 65536):
            raise _fail(f"{path}.{host}", "is not a registry host (HOST or HOST:PORT)")
        where = f"{path}.{host}"
        _require_object(login, where, required=("username", "password"), optional=())
        parsed.append((host, RegistryCredentials(
            username=_string(login["username"], f"{where}.username", limits.MAX_CREDENTIAL_LENGTH),
            password=_string(login["password"], f"{where}.password", limits.MAX_CREDENTIAL_LENGTH))))
    return tuple(sorted(parsed, key=lambda item: item[0]))


def registries_to_json(registries: tuple[tuple[str, RegistryCredentials], ...]) -> JSONObject:
    return {host: {"username": login.username, "password": login.password} for host, login in registries}
