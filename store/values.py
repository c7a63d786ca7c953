"""Validation and canonical JSON encoding of what callers hand to the store (pure)."""
import math

from messages.protocol import json as strict_json
from messages.protocol.json import JSONObject
from store.errors import StoreValueError

# Deeper documents are hostile or buggy; refusing them cleanly beats a RecursionError.
MAX_DEPTH = 64


def encode_json(value: object, what: str) -> str:
    """Canonical JSON text (sorted keys, compact, ASCII), so equal documents give equal text."""
    _check_json(value, what)
    return strict_json.canonical_text(value, ascii_only=True)


def encode_object(value: object, what: str) -> str:
    if not isinstance(value, dict):
        raise StoreValueError(f"{what}: expected a JSON object (dict), got {type(value).__name__}")
    return encode_json(value, what)


def decode_json(text: str) -> object:
    """What encode_json wrote, decoded as strictly as it was checked (a depth of MAX_DEPTH below the top)."""
    try:
        return strict_json.decode(text, max_depth=MAX_DEPTH + 1)
    except strict_json.JSONRefused as exc:
        raise StoreValueError(f"stored JSON is unreadable: {exc}") from None


def decode_object(text: str, what: str) -> JSONObject:
    """What encode_object wrote: decode_json, and refuse anything but an object (no row this store wrote)."""
    value = decode_json(text)
    if not isinstance(value, dict):
        raise StoreValueError(f"stored JSON is unreadable: {what} is {type(value).__name__}, not an object")
    return value


def _check_json(value: object, path: str) -> None:
    try:
        strict_json.check_value(value, path=path, max_depth=MAX_DEPTH + 1)
    except strict_json.JSONRefused as exc:
        raise StoreValueError(str(exc)) from None


def require_text(value: object, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise StoreValueError(f"{what}: expected a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise StoreValueError(f"{what}: must not be empty")
    return value


def require_optional_text(value: object, what: str) -> str | None:
    return None if value is None else require_text(value, what, allow_empty=True)


def require_timestamp(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreValueError(f"{what}: expected a finite number of seconds, got {value!r}")
    return float(value)


def require_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= strict_json.INT64_MAX:
        raise StoreValueError(f"{what}: expected a non-negative 64-bit integer, got {value!r:.40}")
    return value
