"""The AWS IoT Device Shadow document algebra, shared by the reference cloud and the agent.

Pure functions only: no I/O, no clock (every caller passes ``now``, epoch seconds). A shadow document
is a plain dict ``{"state": {"desired"?, "reported"?}, "metadata": {"desired"?, "reported"?},
"version": int, "timestamp": int}``; its metadata mirrors its state with ``{"timestamp": t}`` at each
leaf (an array gets an array of them). Empty objects carry no state and are never stored, so a
document never holds ``{}`` below a section, nor an empty section.

Every rejection is a :class:`ShadowError` with the code and message AWS IoT uses. Topic and name
rules live in :mod:`messages.protocol.shadow_topics`;
strict JSON in :mod:`messages.protocol.json`.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Final, TypeAlias

from messages.protocol import json as strict_json
from messages.protocol.json import JSONObject
from messages.protocol.shadow_document import SECTIONS, ShadowError, compute_delta

MAX_STATE_BYTES_CEILING: Final = 30 * 1024  # the highest quota AWS grants for desired + reported


_MAX_VERSION: Final = strict_json.INT64_MAX  # versions are stored as 64-bit integers
_MAX_UNSIGNED: Final = 2**64 - 1

# What _metadata_of builds: {"timestamp": t} at each leaf, mirroring objects and arrays.
Metadata: TypeAlias = "dict[str, object] | list[object]"


def _bad_request(message: str) -> ShadowError:
    return ShadowError(400, message)


def shadow_not_found(shadow_name: str, client_token: str | None = None) -> ShadowError:
    """404 for a shadow that does not exist (for the classic shadow, pass the thing name)."""
    return ShadowError(404, f"No shadow exists with name: '{shadow_name}'", client_token)


def too_many_requests() -> ShadowError:
    """429: more requests in flight for one client than the service accepts."""
    return ShadowError(429, "Too Many Requests")


def internal_failure() -> ShadowError:
    """500: the service failed; the request may be retried."""
    return ShadowError(500, "Internal service failure")


def error_payload(err: ShadowError, client_token: str | None, now: int) -> dict[str, object]:
    """The body published on a ``*/rejected`` topic; falls back to the token carried by ``err``."""
    payload: dict[str, object] = {"code": err.code, "message": err.message, "timestamp": now}
    token = client_token if client_token is not None else err.client_token
    if token is not None:
        payload["clientToken"] = token
    return payload


@dataclasses.dataclass(frozen=True)
class Limits:
    """Service quotas. ``max_state_bytes`` counts desired + reported serialized without whitespace."""

    max_state_bytes: int = 8 * 1024
    max_depth: int = 6
    max_client_token_bytes: int = 64
    max_payload_bytes: int = 128 * 1024

    def __post_init__(self) -> None:
        if not 0 < self.max_state_bytes <= MAX_STATE_BYTES_CEILING:
            raise ValueError(f"max_state_bytes must be in 1..{MAX_STATE_BYTES_CEILING}")
        for name in ("max_depth", "max_client_token_bytes", "max_payload_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")


DEFAULT_LIMITS = Limits()


def parse_request(payload: bytes, limits: Limits = DEFAULT_LIMITS, require_state: bool = True) -> JSONObject:
    """Validate a request body; return ``{"state"?, "clientToken"?, "version"?}``.

    ``require_state`` is true for ``update``; ``get`` and ``delete`` bodies may be empty and only their
    clientToken and version are read. ``"state": null`` is returned as both sections null (it clears
    the shadow without deleting it). Unknown top-level fields are ignored, as AWS does.
    """
    if len(payload) > limits.max_payload_bytes:
        raise ShadowError(413, "The payload exceeds the maximum size allowed")
    if not require_state and not payload.strip():
        return {}
    body = _decode_json(payload)
    if not isinstance(body, dict):
        raise _bad_request("Invalid JSON")
    request: JSONObject = {}
    if "clientToken" in body:
        request["clientToken"] = _client_token(body["clientToken"], limits)
    try:
        if "version" in body:
            request["version"] = _version(body["version"])
        if require_state:
            request["state"] = _state(body, limits)
    except ShadowError as err:
        raise ShadowError(err.code, err.message, request.get("clientToken")) from None
    return request


def _decode_json(payload: bytes) -> object:
    try:
        # Versions up to 2^64 - 1 reach _version, so that an out-of-range one is "Invalid version" as at AWS;
        # _check_nodes holds state values to the signed 64 bits every other reader accepts.
        return strict_json.decode(payload, int_max=_MAX_UNSIGNED)
    except strict_json.JSONNotUTF8:
        raise ShadowError(415, "Unsupported documented encoding; supported encoding is UTF-8") from None
    except strict_json.JSONRefused as exc:
        # AWS's words; a refused value (2^64, 1e999, "\ud800") is named by its path too.
        raise _bad_request("Invalid JSON" if exc.path is None else f"Invalid JSON: {exc}") from None


def _client_token(token: object, limits: Limits) -> str:
    if not isinstance(token, str) or len(token.encode("utf-8")) > limits.max_client_token_bytes:
        raise _bad_request("Invalid clientToken")
    return token


def _version(version: object) -> int:
    if type(version) is not int or not 0 < version <= _MAX_VERSION:
        raise _bad_request("Invalid version")
    return version


def _state(body: JSONObject, limits: Limits) -> dict[str, JSONObject | None]:
    if "state" not in body:
        raise _bad_request("Missing required node: state")
    state = body["state"]
    if state is None:
        return {section: None for section in SECTIONS}
    if not isinstance(state, dict):
        raise _bad_request("State node must be an object")
    if not set(state) <= set(SECTIONS):  # "delta" is computed by the service, never written
        raise _bad_request("State contains an invalid node")
    for section, value in state.items():
        if value is not None and not isinstance(value, dict):
            raise _bad_request(f"{section.capitalize()} node must be an object")
        try:  # the signed 64 bits every reader takes (the decoder let versions' unsigned ones through)
            strict_json.check_value(value, path=f"state.{section}")
        except strict_json.JSONRefused as exc:
            raise _bad_request(f"Invalid JSON: {exc}") from None
        _check_nodes(value, 1, limits.max_depth)
    return state


def _check_nodes(value: object, level: int, max_depth: int) -> None:
    """Reject nesting deeper than ``max_depth`` (the section object is level 1), null in arrays and
    integers beyond signed 64 bits."""
    if isinstance(value, int) and not strict_json.INT64_MIN <= value <= strict_json.INT64_MAX:
        raise _bad_request("Invalid JSON")
    if not isinstance(value, (dict, list)):
        return
    if level > max_depth:
        raise _bad_request(f"JSON contains too many levels of nesting; maximum is {max_depth}")
    children = value.values() if isinstance(value, dict) else value
    for child in children:
        if child is None and isinstance(value, list):
            raise _bad_request("State contains an invalid node")
        _check_nodes(child, level + 1, max_depth)


@dataclasses.dataclass(frozen=True)
class UpdateOutcome:
    """What an accepted update produces: the new document and the payloads to publish."""

    document: JSONObject
    accepted: JSONObject  # update/accepted
    delta: JSONObject | None  # update/delta, None when there is nothing to publish
    documents: JSONObject  # update/documents


def apply_update(document: JSONObject | None, request: JSONObject, now: int, limits: Limits = DEFAULT_LIMITS,
                 *, deleted_version: int = 0) -> UpdateOutcome:
    """Apply an update ``request`` (as returned by :func:`parse_request`) to ``document``.

    ``document`` is None when the shadow does not exist; ``deleted_version`` is then the version of a
    shadow recently deleted under the same name, which a new one continues from (AWS keeps it 48 h).
    Raises 409 on a version mismatch and 413 when desired + reported outgrow ``limits``.
    """
    token = request.get("clientToken")
    old = copy.deepcopy(document) or {"state": {}, "metadata": {}, "version": deleted_version}
    _check_version(request, old["version"])
    state, metadata = _merge(old["state"], old["metadata"], copy.deepcopy(request["state"]), now)
    if sum(_json_size(section) for section in state.values()) > limits.max_state_bytes:
        raise ShadowError(413, "The payload exceeds the maximum size allowed", token)

    new = {"state": state, "metadata": metadata, "version": old["version"] + 1, "timestamp": now}
    accepted = {"state": copy.deepcopy(request["state"]), "metadata": _metadata_of(request["state"], now),
                "version": new["version"], "timestamp": now}
    # A shadow that did not exist has no previous version: only an empty state and metadata.
    previous = _snapshot(document) if document is not None else {"state": {}, "metadata": {}}
    documents = {"previous": previous, "current": _snapshot(new), "timestamp": now}
    return UpdateOutcome(new, _with_token(accepted, token), _delta_payload(new, token, now),
                         _with_token(documents, token))


def delete_document(document: JSONObject | None, request: JSONObject, now: int, shadow_name: str) -> JSONObject:
    """The delete/accepted payload for deleting ``document``; 404 if absent, 409 on version mismatch.

    The caller drops the document and keeps the returned ``version`` for a later re-creation.
    """
    token = request.get("clientToken")
    if document is None:
        raise shadow_not_found(shadow_name, token)
    _check_version(request, document["version"])
    return _with_token({"version": document["version"], "timestamp": now}, token)


def get_accepted(document: JSONObject, client_token: str | None, now: int) -> JSONObject:
    """The get/accepted payload: the full document with its delta (when there is one)."""
    state = copy.deepcopy(document["state"])
    delta = compute_delta(state.get("desired"), state.get("reported"))
    if delta:
        state["delta"] = delta
    return _with_token({"state": state, "metadata": copy.deepcopy(document["metadata"]),
                        "version": document["version"], "timestamp": now}, client_token)


def _check_version(request: JSONObject, current_version: int) -> None:
    if "version" in request and request["version"] != current_version:
        raise ShadowError(409, "Version conflict", request.get("clientToken"))


def _merge(state: JSONObject, metadata: JSONObject, patch: JSONObject, now: int) -> tuple[JSONObject, JSONObject]:
    """Merge ``patch`` into ``state`` and its ``metadata`` (both copied, then changed and returned).

    Objects merge recursively, any other value replaces (arrays whole), null deletes, and an object
    left empty is removed with its metadata.
    """
    state, metadata = dict(state), dict(metadata)
    for key, value in patch.items():
        value_metadata: object
        if isinstance(value, dict):
            old = state.get(key)
            if isinstance(old, dict):
                value, value_metadata = _merge(old, metadata.get(key, {}), value, now)
            else:
                value, value_metadata = _merge({}, {}, value, now)
        else:
            value_metadata = _metadata_of(value, now)
        if value is None or value == {}:
            state.pop(key, None)
            metadata.pop(key, None)
        else:
            state[key], metadata[key] = value, value_metadata
    return state, metadata


def _metadata_of(value: object, now: int) -> Metadata:
    """Metadata mirroring ``value``: a timestamp per leaf, arrays of them for arrays."""
    if isinstance(value, dict):
        return {key: _metadata_of(child, now) for key, child in value.items()}
    if isinstance(value, list):
        return [_metadata_of(child, now) for child in value]
    return {"timestamp": now}


def _metadata_for(delta: JSONObject, metadata: JSONObject) -> JSONObject:
    """The part of ``metadata`` that describes the leaves of ``delta``."""
    return {key: _metadata_for(value, metadata[key]) if isinstance(value, dict) else metadata[key]
            for key, value in delta.items()}


def _delta_payload(document: JSONObject, token: str | None, now: int) -> JSONObject | None:
    delta = compute_delta(document["state"].get("desired"), document["state"].get("reported"))
    if not delta:
        return None
    metadata = _metadata_for(delta, document["metadata"]["desired"])
    return _with_token({"state": delta, "metadata": copy.deepcopy(metadata),
                        "version": document["version"], "timestamp": now}, token)


def _snapshot(document: JSONObject) -> JSONObject:
    return copy.deepcopy({key: document[key] for key in ("state", "metadata", "version")})


def _with_token(payload: JSONObject, token: str | None) -> JSONObject:
    if token is not None:
        payload["clientToken"] = token
    return payload


def _json_size(value: object) -> int:
    return len(strict_json.canonical_bytes(value))
