"""What the broker (or the EMQX HTTPS read) delivers to the device about one shadow, parsed strictly (pure).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from messages.protocol import json as strict_json
from messages.protocol.shadow_topics import ShadowTopics


class PayloadError(ValueError):
    """A message from the broker or the cloud that breaks the shadow protocol; the text says how."""


@dataclasses.dataclass(frozen=True)
class PayloadLimits:
    max_bytes: int = 128 * 1024
    max_depth: int = 32  # a shadow's state is at most 6 levels below a section; metadata adds one


@dataclasses.dataclass(frozen=True)
class Delta:
    """update/delta: desired values that differ from reported (full paths kept)."""
    version: int
    state: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Document:
    """get/accepted (or the EMQX HTTPS read): the whole shadow."""
    version: int
    desired: dict[str, Any]
    reported: dict[str, Any]
    client_token: str | None


@dataclasses.dataclass(frozen=True)
class Accepted:
    """update/accepted."""
    version: int
    client_token: str | None


@dataclasses.dataclass(frozen=True)
class Rejected:
    """get/rejected or update/rejected."""
    code: int
    message: str
    client_token: str | None


Incoming = Delta | Document | Accepted | Rejected


def decode_payload(payload: bytes, limits: PayloadLimits) -> dict[str, Any]:
    """A JSON object within the size and nesting limits, strictly decoded (messages.protocol.json), or
    PayloadError."""
    try:
        body = strict_json.decode(payload, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
    except strict_json.JSONNotUTF8:
        raise PayloadError("not UTF-8") from None
    except (strict_json.JSONTooLarge, strict_json.JSONTooDeep) as exc:
        raise PayloadError(str(exc)) from None
    except strict_json.JSONRefused as exc:
        raise PayloadError(f"not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise PayloadError(f"expected a JSON object, got {type(body).__name__}")
    return body


def parse_payload(operation: str, payload: bytes, limits: PayloadLimits) -> Incoming:
    """Parse what arrived on ``.../shadow/<operation>``; PayloadError for anything off-protocol."""
    parser = _PARSERS.get(operation)
    if parser is None:
        raise PayloadError(f"{operation!r} is not a topic the device listens to")
    return parser(decode_payload(payload, limits))


def _version(body: dict[str, Any]) -> int:
    version = body.get("version")
    if type(version) is not int or version < 0:
        raise PayloadError(f"version must be a non-negative integer, got {version!r:.40}")
    return version


def _token(body: dict[str, Any]) -> str | None:
    token = body.get("clientToken")
    if token is not None and not isinstance(token, str):
        raise PayloadError(f"clientToken must be a string, got {type(token).__name__}")
    return token


def _section(container: dict[str, Any], name: str) -> dict[str, Any]:
    value = container.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{name} must be an object, got {type(value).__name__}")
    return value


def _parse_delta(body: dict[str, Any]) -> Delta:
    state = body.get("state")
    if not isinstance(state, dict):
        raise PayloadError("a delta needs a state object")
    return Delta(_version(body), state)


def _parse_document(body: dict[str, Any]) -> Document:
    state = _section(body, "state")
    return Document(_version(body), _section(state, "desired"), _section(state, "reported"), _token(body))


def _parse_accepted(body: dict[str, Any]) -> Accepted:
    return Accepted(_version(body), _token(body))


def _parse_rejected(body: dict[str, Any]) -> Rejected:
    code, message = body.get("code"), body.get("message", "")
    if type(code) is not int or not 400 <= code <= 599:
        raise PayloadError(f"code must be an HTTP error status, got {code!r:.40}")
    if not isinstance(message, str):
        raise PayloadError(f"message must be a string, got {type(message).__name__}")
    return Rejected(code, message[:500], _token(body))


_PARSERS: dict[str, Callable[[dict[str, Any]], Incoming]] = {
    "update/delta": _parse_delta, "get/accepted": _parse_document, "get/rejected": _parse_rejected,
    "update/accepted": _parse_accepted, "update/rejected": _parse_rejected}


def parse_emqx_view(body: object, client_token: str) -> Document:
    """The EMQX Fleets HTTPS read (flat ``desired``, ``reported``, ``version``) as a Document."""
    if not isinstance(body, dict):
        raise PayloadError(f"expected a JSON object, got {type(body).__name__}")
    return Document(_version(body), _section(body, "desired"), _section(body, "reported"), client_token)


def subscriptions(profile: str, topics: ShadowTopics) -> tuple[str, ...]:
    """The topics one shadow needs. EMQX Fleets has no MQTT get: its read is the HTTPS one."""
    needed = (topics.update_delta, topics.update_accepted, topics.update_rejected)
    return needed + ((topics.get_accepted, topics.get_rejected) if profile == "aws" else ())
