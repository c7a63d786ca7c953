"""The part of the AWS IoT Device Shadow document algebra that both the device and the cloud need.

Pure functions only. Every rejection is a :class:`ShadowError` with the code and message AWS IoT uses.
The cloud's update/get/delete algebra lives in :mod:`cloud.shadow_algebra`; topics and name rules in
:mod:`messages.protocol.shadow_topics`.
"""
from __future__ import annotations

import copy
from typing import Any

from messages.protocol.json import json_equal
from messages.protocol.patches import diff

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


def compute_delta(desired: dict[str, Any] | None, reported: dict[str, Any] | None) -> dict[str, Any]:
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
        elif not json_equal(wanted, actual):  # missing reads as None, which a state never holds
            delta[key] = copy.deepcopy(wanted)
    return delta


def is_stale(held_version: int | None, incoming_version: int) -> bool:
    """True if a message must be dropped: only when older than what is held (equal is not stale)."""
    return held_version is not None and incoming_version < held_version


def changed_fields(previous_reported: dict[str, Any] | None, actual: dict[str, Any] | None) -> dict[str, Any]:
    """The smallest reported patch turning ``previous_reported`` into ``actual``; null for removals.

    Null values and empty objects count as absent on both sides, as they do in a shadow.
    """
    return diff(stored_form(previous_reported or {}) or {}, stored_form(actual or {}) or {})


def stored_form(value: Any) -> Any:
    """``value`` as a shadow stores it: no nulls and no empty objects below objects (array elements are
    kept whole); None when nothing is left of an object."""
    if not isinstance(value, dict):
        return value
    pruned = {key: stored_form(child) for key, child in value.items()}
    return {key: child for key, child in pruned.items() if child is not None} or None
