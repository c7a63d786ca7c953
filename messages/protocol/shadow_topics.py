"""MQTT topics of AWS IoT and EMQX Fleets device shadows, and the thing/shadow name rules."""
from __future__ import annotations

import dataclasses
import re

from messages.protocol.shadow_document import ShadowError

_THING_NAME = r"[a-zA-Z0-9:_-]{1,128}"
_SHADOW_NAME = r"[$a-zA-Z0-9:_-]{1,64}"
OPERATIONS = ("get", "get/accepted", "get/rejected", "update", "update/accepted", "update/rejected",
              "update/delta", "update/documents", "delete", "delete/accepted", "delete/rejected")
_PREFIXES = {"aws": "$aws", "emqx": "$emqx"}
# The classic (unnamed) shadow's name, on both sides and in every store: TOML has no null, both stores key a
# shadow by (thing, name), and the topics and the HTTPS API simply leave the name out.
CLASSIC_SHADOW = ""
_TOPIC = re.compile(rf"\$(aws|emqx)/things/({_THING_NAME})/shadow(?:/name/({_SHADOW_NAME}))?"
                    rf"/({'|'.join(map(re.escape, OPERATIONS))})")


def validate_thing_name(name: object) -> str:
    """Return ``name`` if it is a valid thing name, else raise a 400 ShadowError."""
    if not isinstance(name, str) or not re.fullmatch(_THING_NAME, name):
        raise ShadowError(400, f"Thing name must match {_THING_NAME}")
    return name


def validate_shadow_name(name: object) -> str:
    """Return ``name`` if it is a valid named-shadow name, else raise a 400 ShadowError."""
    if not isinstance(name, str) or not re.fullmatch(_SHADOW_NAME, name):
        raise ShadowError(400, f"Shadow name must match {_SHADOW_NAME}")
    return name


@dataclasses.dataclass(frozen=True)
class ShadowTopics:
    """The MQTT topics of one shadow; subscribe to each one needed, never to ``shadow/#``."""

    get: str
    get_accepted: str
    get_rejected: str
    update: str
    update_accepted: str
    update_rejected: str
    update_delta: str
    update_documents: str
    delete: str
    delete_accepted: str
    delete_rejected: str


def shadow_topics(profile: str, thing_name: str, shadow_name: str = CLASSIC_SHADOW) -> ShadowTopics:
    """Topics for the classic (``shadow_name`` CLASSIC_SHADOW) or a named shadow under profile aws or emqx.

    EMQX Fleets has only the classic shadow, so a name is refused there.
    """
    if profile not in _PREFIXES:
        raise ValueError(f"unknown shadow profile {profile!r}; expected one of {sorted(_PREFIXES)}")
    prefix = f"{_PREFIXES[profile]}/things/{validate_thing_name(thing_name)}/shadow"
    if shadow_name != CLASSIC_SHADOW:
        if profile != "aws":
            raise ValueError(f"profile {profile!r} has no named shadows")
        prefix += f"/name/{validate_shadow_name(shadow_name)}"
    return ShadowTopics(**{op.replace("/", "_"): f"{prefix}/{op}" for op in OPERATIONS})


def parse_shadow_topic(topic: str) -> tuple[str, str, str, str] | None:
    """``(profile, thing_name, shadow_name, operation)`` for a shadow topic (CLASSIC_SHADOW for the classic
    one), None for any other."""
    match = _TOPIC.fullmatch(topic)
    if match is None:
        return None
    profile, thing_name, shadow_name, operation = match.groups()
    if profile != "aws" and shadow_name is not None:
        return None
    return profile, thing_name, shadow_name or CLASSIC_SHADOW, operation
