"""Report patches (pure): merge-patch semantics as the receivers apply them, and their composition.

A patch merges objects recursively; any other value (arrays included) replaces; null deletes.
Two patches compose into one only when the result does to *every* receiver state what applying
them in turn does. That fails in exactly one case: the earlier patch replaces or deletes a key with a
non-object and the later one sends an object for it, because an object merges into whatever the
receiver holds and cannot say "replace". Such a pair stays two separate reports.
"""


def apply_patch(state: dict, patch: dict) -> dict:
    """What a receiver holds after applying `patch` to `state` (neither is modified)."""
    result = dict(state)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = apply_patch(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = value
    return result


def compose(earlier: dict, later: dict) -> dict | None:
    """One patch equal to `earlier` then `later`, or None when no single patch is."""
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
