"""Pure helpers of the HTTP API: ETags, the EMQX Fleets shadow view, token digests.

Canonical JSON lives in :mod:`messages.protocol.json`, report merging in :mod:`messages.protocol.patches`.
"""
from __future__ import annotations

import copy
import datetime
import hashlib

from messages.protocol.shadow_document import compute_delta


def strong_etag(canonical: str) -> str:
    """A strong ETag (quoted) of a ``canonical_text``: equal documents, equal tags."""
    return '"' + hashlib.sha256(canonical.encode("utf-8")).hexdigest() + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """True if an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks, or ``*``)."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


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
