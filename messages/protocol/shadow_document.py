"""The part of the AWS IoT Device Shadow document algebra that both the device and the cloud need.

Pure functions only. Every rejection is a :class:`ShadowError` with the code and message AWS IoT uses.
The cloud's update/get/delete algebra lives in :mod:`cloud.shadow_algebra`; topics and name rules in
:mod:`messages.protocol.shadow_topics`.
"""
from __future__ import annotations

import copy

SECTIONS = ("desired", "reported")


class ShadowError(Exception):
    """A rejected shadow request: ``code`` is the HTTP-style status, ``message`` the AWS text.

    ``client_token`` is the request's clientToken when it could be read, so that the rejection can
    echo it even when the request was otherwise invalid.
    """

    def __init__(self, code: int, message: str, client_token: str | None = None):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.client_token = client_token


def compute_delta(desired: dict | None, reported: dict | None) -> dict:
    """Every desired leaf whose value differs from reported (or is missing there), full path kept.

    Arrays are compared whole, numbers by value (1 == 1.0, but true != 1); reported-only fields
    never appear.
    """
    delta = {}
    reported = reported if isinstance(reported, dict) else {}
    for key, wanted in (desired or {}).items():
        actual = reported.get(key)
        if isinstance(wanted, dict) and isinstance(actual, dict):
            nested = compute_delta(wanted, actual)
            if nested:
                delta[key] = nested
        elif not _json_equal(wanted, actual):  # missing reads as None, which a state never holds
            delta[key] = copy.deepcopy(wanted)
    return delta


def _json_equal(a, b) -> bool:
    """Equality of JSON values: numbers by value, but a boolean only equals a boolean."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    return type(a) is type(b) and a == b


def is_stale(held_version: int | None, incoming_version: int) -> bool:
    """True if a message must be dropped: only when older than what is held (equal is not stale)."""
    return held_version is not None and incoming_version < held_version


def changed_fields(previous_reported: dict | None, actual: dict | None) -> dict:
    """The smallest reported patch turning ``previous_reported`` into ``actual``; null for removals.

    Null values and empty objects count as absent on both sides, as they do in a shadow.
    """
    return _changes(_prune(previous_reported or {}), _prune(actual or {}))


def _changes(previous: dict, actual: dict) -> dict:
    changes = {key: None for key in previous if key not in actual}
    for key, value in actual.items():
        old = previous.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = _changes(old, value)
            if nested:
                changes[key] = nested
        elif not _json_equal(old, value):
            changes[key] = value
    return changes


def _prune(value):
    """``value`` without nulls and empty objects below objects (array elements are kept whole)."""
    if not isinstance(value, dict):
        return value
    pruned = {key: _prune(child) for key, child in value.items()}
    return {key: child for key, child in pruned.items() if child is not None and child != {}}
