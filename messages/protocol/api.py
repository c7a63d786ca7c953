"""The device<->cloud HTTP API and the poll-now topic, written once for the agent and the reference cloud.

The cloud's router matches these paths and the agent builds them, so neither can drift from the other.
Ids go into paths percent-encoded (the cloud decodes them); the route patterns match one path segment.
"""
from __future__ import annotations

from urllib.parse import quote

from messages.protocol.shadow_topics import CLASSIC_SHADOW

DEVICE_STATE_PATH = "/api/v1/device/state"  # PATCH {uuid: report}: the reporter's merge patches
IF_NONE_MATCH = "If-None-Match"
ETAG = "ETag"

_SEGMENT = "([^/]+)"
_TARGET_STATE = "/api/v1/device/{}/target-state"
_DEVICE_STATE = "/api/v1/device/{}/state"
_DEVICE = "/api/v1/devices/{}"
_SHADOW = "/things/{}/shadow"
_EMQX_SHADOW = "/api/v1/thing-datas/{}/shadow"
_POLL_NOW_TOPIC = "fleetlet/devices/{}/poll-now"


def segment(value: str) -> str:
    """One path segment (or query value), every reserved character escaped: a uuid or thing name cannot change
    the path."""
    return quote(value, safe="")


def target_state_path(uuid: str) -> str:
    """GET (with If-None-Match) by the device, POST by the operator."""
    return _TARGET_STATE.format(segment(uuid))


def device_state_path(uuid: str) -> str:
    """GET by the operator: the state merged from the device's reports."""
    return _DEVICE_STATE.format(segment(uuid))


def device_path(uuid: str) -> str:
    """PUT by the operator: register a device and its token."""
    return _DEVICE.format(segment(uuid))


def shadow_path(thing: str, name: str = CLASSIC_SHADOW) -> str:
    """AWS IoT's HTTPS shadow API: the classic shadow, or a named one given as ``?name=``."""
    path = _SHADOW.format(segment(thing))
    return path if name == CLASSIC_SHADOW else f"{path}?name={segment(name)}"


def emqx_shadow_path(thing: str) -> str:
    """EMQX Fleets' HTTPS shadow read."""
    return _EMQX_SHADOW.format(segment(thing))


def poll_now_topic(uuid: str) -> str:
    """Where the cloud tells a device that its target state changed (the payload is only a hint)."""
    return _POLL_NOW_TOPIC.format(uuid)


# What the cloud's router matches: each path above, with its ids as groups.
TARGET_STATE_ROUTE = _TARGET_STATE.format(_SEGMENT)
DEVICE_STATE_ROUTE = _DEVICE_STATE.format(_SEGMENT)
DEVICE_ROUTE = _DEVICE.format(_SEGMENT)
SHADOW_ROUTE = _SHADOW.format(_SEGMENT)
EMQX_SHADOW_ROUTE = _EMQX_SHADOW.format(_SEGMENT)
