"""Merge patches (pure): how a receiver applies a report, how two reports compose, and what to report.

A patch merges objects recursively; any other value (arrays included) replaces; null deletes. Both
receivers apply reports this way: the reference cloud's device-state endpoint and the agent's own
bookkeeping of what the cloud holds. (An AWS shadow also drops objects left empty: the shadow side
hands :func:`report_patch` its state in that stored form, see ``shadow_document.stored_form``.)

Two patches compose into one only when the result does to *every* receiver state what applying
them in turn does. That fails in exactly one case: the earlier patch replaces or deletes a key with a
non-object and the later one sends an object for it, because an object merges into whatever the
receiver holds and cannot say "replace". Such a pair stays two separate reports.
"""
from __future__ import annotations

import copy

from messages.protocol.json import JSONObject, json_equal

_ABSENT = object()


def apply_patch(state: JSONObject, patch: JSONObject) -> JSONObject:
    """What a receiver holds after applying ``patch`` to ``state``: a new document sharing nothing with
    either (neither is modified). Nulls in a patch never land: below a replaced or new object they
    delete from nothing; inside arrays they are values."""
    result = copy.deepcopy(state)
    _merge_into(result, patch)
    return result


def _merge_into(target: JSONObject, patch: JSONObject) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def compose(earlier: JSONObject, later: JSONObject) -> JSONObject | None:
    """One patch equal to ``earlier`` then ``later``, or None when no single patch is."""
    result = dict(earlier)
    for key, value in later.items():
        if isinstance(value, dict) and key in earlier:
            if not isinstance(earlier[key], dict):
                return None
            merged = compose(earlier[key], value)
            if merged is None:
                return None
            result[key] = merged
        else:
            result[key] = value
    return result


def diff(held: JSONObject, latest: JSONObject) -> JSONObject:
    """The smallest patch ``p`` with ``apply_patch(held, p) == without_nulls(latest)``.

    Keys of ``held`` missing from ``latest`` (or null there) are deleted; values are compared as JSON
    (1 == 1.0, true != 1); arrays are compared and sent whole; empty objects are kept.
    """
    change: JSONObject = {key: None for key in held if latest.get(key) is None}
    for key, value in latest.items():
        if value is None:
            continue
        old = held.get(key, _ABSENT)
        if isinstance(old, dict) and isinstance(value, dict):
            nested = diff(old, value)
            if nested:
                change[key] = nested
        elif old is _ABSENT or not json_equal(old, value):
            change[key] = without_nulls(value)
    return change


def report_patch(held: JSONObject, latest: JSONObject) -> JSONObject:
    """The report a sender makes: the patch bringing the receiver from ``held`` to ``latest``, key by key.

    ``held`` is what the receiver holds once everything already queued is applied. Each top-level key
    of ``latest`` is the sender's whole truth for that key: nested keys it lacks are deleted, and null
    (anywhere in an object) means "the sender does not have it", so the key is deleted if held and
    never sent otherwise. Top-level keys ``latest`` does not have (a section not read yet, keys that are
    another handler's) are left as the receiver holds them. Arrays replace whole. Empty when nothing
    changed, so ``report_patch(apply_patch(held, p), latest) == {}`` for ``p = report_patch(held, latest)``.
    """
    return diff({key: held[key] for key in latest if key in held}, latest)


def without_nulls(value: object) -> object:
    """``value`` with every null member of an object removed, at any depth (arrays are kept as they are)."""
    if isinstance(value, dict):
        return {key: without_nulls(child) for key, child in value.items() if child is not None}
    return value

