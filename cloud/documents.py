"""Pure helpers of the HTTP API: ETags, device-report merging, the EMQX Fleets shadow view, token digests."""
from __future__ import annotations

import copy
import datetime
import hashlib
import json

from messages.protocol.shadow_document import compute_delta


def canonical_json(value) -> str:
    """One spelling per JSON value (sorted keys, no whitespace): what is stored and hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def strong_etag(canonical: str) -> str:
    """A strong ETag (quoted) of a canonical JSON text: equal documents, equal tags."""
    return '"' + hashlib.sha256(canonical.encode("utf-8")).hexdigest() + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """True if an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks, or ``*``)."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def merge_report(state: dict, patch: dict) -> dict:
    """``state`` with a device report merged in: objects merge, null removes a key, anything else replaces."""
    merged = copy.deepcopy(state)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_report(merged[key], value)
        else:
            merged[key] = copy.deepcopy(_without_nulls(value))
    return merged


def _without_nulls(value):
    if isinstance(value, dict):
        return {key: _without_nulls(child) for key, child in value.items() if child is not None}
    return value


def emqx_shadow_view(document: dict) -> dict:
    """The EMQX Fleets ThingDatas answer for a shadow document: flat sections, delta, version, updatedAt."""
    state = document["state"]
    updated = datetime.datetime.fromtimestamp(document["timestamp"], datetime.timezone.utc)
    return {"reported": copy.deepcopy(state.get("reported", {})),
            "desired": copy.deepcopy(state.get("desired", {})),
            "delta": compute_delta(state.get("desired"), state.get("reported")),
            "version": document["version"],
            "updatedAt": updated.strftime("%Y-%m-%dT%H:%M:%SZ")}


def token_digest(token: str) -> str:
    """What is stored for a bearer token; the token itself never is."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
