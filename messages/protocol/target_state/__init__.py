"""The cloud's target-state document: strict validation into frozen dataclasses, canonical form, config hash.

A document is rejected as a whole (`InvalidTargetState`, naming the path of the first bad field) so the agent
keeps running the last good one. Everything is normalised on the way in (image names, port specs, env order,
default network...) so that two spellings of the same configuration compare, serialise and hash the same.

`model` holds the dataclasses, `parse` the document validator, `fields`, `images`, `dependencies` (`depends_on`
and its conditions) and `options` (the table of compose's further container options) its field validators,
`canonical` the canonical JSON and hashes; import from this package, not from those modules.
"""
from messages.protocol.target_state.canonical import HASHED_FIELDS, config_field_hashes, config_hash, to_json
from messages.protocol.target_state.fields import NAME_PATTERN, RESERVED_LABEL_PREFIX
from messages.protocol.target_state.images import IMAGE_PATTERN, MAX_IMAGE_LENGTH, normalise_image
from messages.protocol.target_state.limits import MAX_APP_NAME_LENGTH, MAX_DOCUMENT_BYTES
from messages.protocol.target_state.model import (
    DEFAULT_NETWORK,
    DELETE_THEN_DOWNLOAD,
    DEPENDENCY_CONDITIONS,
    DOWNLOAD_THEN_KILL,
    HAND_OVER,
    KILL_THEN_DOWNLOAD,
    PROTOCOLS,
    RESTART_POLICIES,
    SERVICE_COMPLETED_SUCCESSFULLY,
    SERVICE_HEALTHY,
    SERVICE_STARTED,
    UPDATE_STRATEGIES,
    App,
    ContainerOptions,
    Healthcheck,
    InvalidTargetState,
    PortMapping,
    RegistryCredentials,
    Service,
    ServiceConfig,
    TargetState,
    VolumeMount,
)
from messages.protocol.target_state.options import OPTION_NAMES
from messages.protocol.target_state.parse import parse_service_config, parse_target_state
from messages.protocol.target_state.registries import credentials_for, registry_host

__all__ = [
    "DEFAULT_NETWORK",
    "DELETE_THEN_DOWNLOAD",
    "DEPENDENCY_CONDITIONS",
    "DOWNLOAD_THEN_KILL",
    "HAND_OVER",
    "HASHED_FIELDS",
    "IMAGE_PATTERN",
    "KILL_THEN_DOWNLOAD",
    "MAX_APP_NAME_LENGTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_IMAGE_LENGTH",
    "OPTION_NAMES",
    "NAME_PATTERN",
    "PROTOCOLS",
    "RESERVED_LABEL_PREFIX",
    "RESTART_POLICIES",
    "SERVICE_COMPLETED_SUCCESSFULLY",
    "SERVICE_HEALTHY",
    "SERVICE_STARTED",
    "UPDATE_STRATEGIES",
    "App",
    "Healthcheck",
    "ContainerOptions",
    "InvalidTargetState",
    "PortMapping",
    "RegistryCredentials",
    "Service",
    "ServiceConfig",
    "TargetState",
    "VolumeMount",
    "config_field_hashes",
    "config_hash",
    "credentials_for",
    "normalise_image",
    "parse_service_config",
    "parse_target_state",
    "registry_host",
    "to_json",
]
