"""The canonical form of a target state and its config hashes.

Two spellings of the same configuration serialise and hash the same, because parsing normalised them; the
hash is stored as a container label and compared to detect a changed configuration.
"""
from __future__ import annotations

import hashlib

from messages.protocol import json as strict_json
from messages.protocol.json import JSONObject
from messages.protocol.target_state.dependencies import dependencies_to_json
from messages.protocol.target_state.health import healthcheck_to_json
from messages.protocol.target_state.model import App, Service, ServiceConfig, TargetState
from messages.protocol.target_state.options import OPTION_NAMES, options_to_json
from messages.protocol.target_state.registries import registries_to_json

# Fields that define the container itself. `running`, `depends_on` and `update_strategy` only steer the
# planner, so changing them must never recreate a container: they are left out of the hash. Every container
# option (`options`) defines the container too: those set are hashed by their names, those at their default
# are left out, so a config that uses none hashes as it did before they existed; `healthcheck` likewise is
# hashed only when set, so containers created before the field existed keep their hash (and are not recreated).
HASHED_FIELDS = ("image", "ports", "environment", "volumes", "networks", "command", "restart", "labels",
                 "healthcheck")


def to_json(target: TargetState) -> JSONObject:
    """The canonical document: every field explicit and normalised; `parse_target_state` of it is equal."""
    document: JSONObject = {"apps": {app.app_id: _app_to_json(app) for app in target.apps}}
    if target.purge_volumes:  # absent when empty, so documents without it keep their canonical form
        document["purge_volumes"] = list(target.purge_volumes)
    if target.override_lock:  # likewise
        document["override_lock"] = True
    if target.registries:  # likewise
        document["registries"] = registries_to_json(target.registries)
    return document


def config_hash(service: Service) -> str:
    """sha256 of the canonical container-defining config: stored as a label, compared to detect changes."""
    return hashlib.sha256(strict_json.canonical_bytes(_hashed_config(service.config))).hexdigest()


def config_field_hashes(service: Service) -> dict[str, str]:
    """A short hash per container-defining field, so a changed container can be explained ("ports changed")."""
    hashed = _hashed_config(service.config)
    return {name: hashlib.sha256(strict_json.canonical_bytes(value)).hexdigest()[:12] for name, value in hashed.items()}


def _config_to_json(config: ServiceConfig) -> JSONObject:
    return {
        "image": config.image,
        "ports": [mapping.spec() for mapping in config.ports],
        "environment": dict(config.environment),
        "volumes": [mount.spec() for mount in config.volumes],
        "networks": list(config.networks),
        "command": None if config.command is None else list(config.command),
        "depends_on": dependencies_to_json(config.depends_on),
        "running": config.running,
        "restart": config.restart,
        "labels": dict(config.labels),
        "update_strategy": config.update_strategy,
        **({} if config.healthcheck is None else {"healthcheck": healthcheck_to_json(config.healthcheck)}),
        **options_to_json(config.options),
    }


def _hashed_config(config: ServiceConfig) -> JSONObject:
    canonical = _config_to_json(config)
    return {name: canonical[name] for name in HASHED_FIELDS + OPTION_NAMES if name in canonical}


def _app_to_json(app: App) -> JSONObject:
    return {"appId": app.app_id, "appName": app.app_name, "services": [
        {**({} if service.service_id is None else {"serviceId": service.service_id}),
         "serviceName": service.service_name,
         "imageName": service.config.image,
         "config": _config_to_json(service.config)}
        for service in app.services]}
