"""Strict JSON for everything that crosses the device<->cloud boundary or lands in a store (pure).

One decoder and one canonical spelling, so that what one side accepts the other can carry: the bus
(msgpack) refuses integers beyond 64 bits and lone surrogates at *encode* time, SQLite refuses integers
of 2^63 and more, and `json.loads` happily produces both, turns `1e999` into `inf` and keeps the last of
two equal keys. :func:`decode` refuses all of these, plus invalid UTF-8, nesting beyond a bound (measured
on the text first, so hostile input never reaches a recursion limit) and size beyond a bound.

Every refusal is a :class:`JSONRefused` subclass, so each caller maps it to the error it declares
(PayloadError, InvalidTargetState, ShadowError, StoreValueError, the API's 400) and keeps its wording.

:func:`check_value` holds a value built in memory (a handler's answer, a report, an application's file)
to the same rules, naming the path of what it refuses; the bus codec, the store and the senders of JSON
(:func:`encode`: the HTTP client, the shadow listener, app_config) use it, so what one side writes the
other can read.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn, TypeAlias

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_DEPTH = 64  # containers inside containers; no document of ours comes near it
_MAX_INT_CHARS = 20  # "-9223372036854775808": int() never sees a longer digit string (CPython stops at 4300)
# A string (escapes included) or a bracket: what the depth scan needs to see, in one pass without recursion.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# Where a number might overflow (an exponent, or 19 digits and more), found in one scan of the text;
# a match inside a string only costs the slow path.
_RISKY_NUMBER = re.compile(r"[0-9][eE]|[0-9]{19}")
# Where a lone surrogate might come from: a \uD800-\uDFFF escape, or (text input only) a raw surrogate.
_MAYBE_SURROGATE = re.compile(r"\\[uU][dD][89a-fA-F]|[\ud800-\udfff]")

# A JSON object as Python holds it once decoded: string keys, JSON values (checked where it enters: this
# module's decode, the bus codec, the store). The values stay Any on purpose: a document's shape is its
# reader's to check, field by field (as target_state.parse does), not something one alias can say.
JSONObject: TypeAlias = dict[str, Any]


class JSONRefused(ValueError):
    """The text is not a JSON value we accept; the message says why (no input is echoed). ``path`` is the
    member's path when the refusal is of one value (``state.desired.level``), None for the text as a whole."""

    path: str | None = None


class JSONTooLarge(JSONRefused):
    """More bytes than the caller's bound: refused before any parsing."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"{size} bytes exceeds the limit of {limit}")
        self.size, self.limit = size, limit


class JSONNotUTF8(JSONRefused):
    """The bytes are not UTF-8 (the message is the codec's reason)."""


class JSONTooDeep(JSONRefused):
    """Containers nested deeper than the caller's bound."""

    def __init__(self, limit: int, path: str | None = None):
        super().__init__(f"{path or 'value'}: nested deeper than {limit} levels" if path is not None
                         else f"nested deeper than {limit} levels")
        self.limit, self.path = limit, path


class JSONInvalid(JSONRefused):
    """Not JSON, or JSON we refuse: duplicate keys, NaN/Infinity, a number beyond float or 64-bit range."""


class JSONOutOfRange(JSONInvalid):
    """An integer beyond 64 bits, which msgpack and SQLite cannot carry."""


class JSONUnencodable(JSONInvalid):
    """Valid JSON text whose strings no UTF-8 encoder takes back: a lone surrogate escape ("\\ud800")."""


def decode(data: bytes | bytearray | memoryview | str, *, max_bytes: int | None = None,
           max_depth: int = MAX_DEPTH, int_max: int = INT64_MAX) -> object:
    """The JSON value in ``data`` (UTF-8 bytes, or text), or a :class:`JSONRefused` subclass.

    Integers must lie in [INT64_MIN, ``int_max``]; ``int_max`` is only raised by a caller that must
    answer an out-of-range field in its own words (and checks the range itself). Depth counts
    containers: ``{}`` is 1, ``{"a": []}`` is 2.
    """
    if isinstance(data, str):
        text = data
        if max_bytes is not None and (size := len(text.encode("utf-8", "surrogatepass"))) > max_bytes:
            raise JSONTooLarge(size, max_bytes)
    else:
        raw = bytes(data)
        if max_bytes is not None and len(raw) > max_bytes:
            raise JSONTooLarge(len(raw), max_bytes)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JSONNotUTF8(error.reason) from None
    if text.count("[") + text.count("{") > max_depth:  # brackets in strings count too: only a quick bound
        _check_depth(text, max_depth)
    # The number hooks are Python calls per number; they are needed only where a number could overflow:
    # an exponent (1e999) or a run of 19 digits and more (beyond 64 bits, or a float past its range).
    risky_numbers = _RISKY_NUMBER.search(text) is not None
    try:
        if risky_numbers:
            value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                               parse_int=_short_int)
        else:
            value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:  # only for a bound beyond the interpreter's recursion limit
        raise JSONTooDeep(max_depth) from None
    except JSONRefused:
        raise
    except ValueError as error:  # json.JSONDecodeError: syntax
        raise JSONInvalid(str(error)) from None
    # An integer beyond the range, a float past its range (inf) and "\ud800" (a str no UTF-8 encoder takes:
    # msgpack, SQLite, a socket) are values json.loads builds: found, with their path, by check_value.
    if risky_numbers or _MAYBE_SURROGATE.search(text) is not None:
        check_value(value, max_depth=max_depth, int_max=int_max)
    return value


def check_value(value: object, *, path: str = "", max_depth: int = MAX_DEPTH, int_max: int = INT64_MAX) -> None:
    """Refuse a Python value that is not one :func:`decode` could have produced: the same rules for what
    was built in memory (a handler's answer, a report, a file's content) as for what arrived as text.

    Objects with string keys, arrays (lists), strings encodable as UTF-8 (no lone surrogate), booleans,
    null, integers in the signed 64-bit range, finite floats, at most ``max_depth`` containers deep.
    Raises the :class:`JSONRefused` subclass :func:`decode` would, its message naming the path of the
    first bad member below ``path`` (``state.desired.level``, ``ports[3]``). Iterative and linear in the
    size of the value, so no hostile value reaches a recursion limit. ``int_max`` is decode's.
    """
    try:
        _check(value, "", max_depth, int_max, named=False)  # quick: no path is spelled while all is well
    except JSONRefused:
        _check(value, path, max_depth, int_max, named=True)  # again, to name where
        raise


def _check(value: object, path: str, max_depth: int, int_max: int, *, named: bool) -> None:
    stack: list[tuple[object, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, int):
            if not INT64_MIN <= item <= int_max:
                raise _refused(JSONOutOfRange, where, "an integer outside the signed 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refused(JSONInvalid, where, f"{item} is not a finite number")
        elif isinstance(item, dict):
            if depth >= max_depth:
                raise JSONTooDeep(max_depth, where)
            members: list[tuple[object, str, int]] = []
            for key, member in item.items():
                if not isinstance(key, str):
                    raise _refused(JSONInvalid, where, f"key {key!r:.40} is not a string")
                _check_text(key, f"{where} key" if where else "key")
                members.append((member, (f"{where}.{key}" if where else key) if named else "", depth + 1))
            stack.extend(reversed(members))  # popped in document order: the first bad member is the one named
        elif isinstance(item, list):
            if depth >= max_depth:
                raise JSONTooDeep(max_depth, where)
            stack.extend(reversed([(member, f"{where}[{index}]" if named else "", depth + 1)
                                   for index, member in enumerate(item)]))
        else:
            raise _refused(JSONInvalid, where, f"{type(item).__name__} is not a JSON value")


def _refused(kind: type[JSONRefused], where: str, problem: str) -> JSONRefused:
    error = kind(f"{where}: {problem}" if where else problem)
    error.path = where
    return error


def _check_text(text: str, where: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _refused(JSONUnencodable, where, "a string holds a lone surrogate") from None


def canonical_text(value: object, *, ascii_only: bool = False) -> str:
    """The one spelling of a JSON value: sorted keys, no whitespace, finite numbers only.

    Equal values give equal text, so it is what is hashed (ETags, config hashes) and stored.
    ``ascii_only`` escapes non-ASCII characters: the agent's store keeps that form; hashes never use
    it, since config hashes live on as container labels and must not change.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False)


def canonical_bytes(value: object) -> bytes:
    """:func:`canonical_text` as UTF-8: what hashes and size quotas are computed over."""
    return canonical_text(value).encode("utf-8")


def encode(value: object, *, path: str = "", max_depth: int = MAX_DEPTH, indent: int | None = None) -> bytes:
    """``value`` checked (:func:`check_value`) and spelled canonically as UTF-8: what the device and the
    cloud send and write. ``indent`` is for files people read; the keys stay sorted."""
    check_value(value, path=path, max_depth=max_depth)
    if indent is None:
        return canonical_bytes(value)
    return json.dumps(value, sort_keys=True, indent=indent, ensure_ascii=False, allow_nan=False).encode("utf-8")


def json_equal(a: object, b: object) -> bool:
    """Equality of JSON values: numbers by value (1 == 1.0), but a boolean only equals a boolean."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    return type(a) is type(b) and a == b


def json_identical(a: object, b: object) -> bool:
    """Equal JSON values spelled alike: like :func:`json_equal`, but a number's kind counts too (1 is not
    1.0), for whoever hands the values on to a reader that may tell them apart (an application's file)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_identical(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_identical, a, b))
    return a == b


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise JSONTooDeep(max_depth)
        elif token in "]}":
            depth -= 1


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONInvalid(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return value


def _no_constant(name: str) -> NoReturn:
    raise JSONInvalid(f"{name} is not allowed")


def _short_int(digits: str) -> int:
    """int() of at most 20 digits (check_value then holds it to the range); a longer run is refused unread."""
    if len(digits) > _MAX_INT_CHARS:
        raise JSONOutOfRange(f"an integer of {len(digits.lstrip('-'))} digits does not fit in 64 bits")
    return int(digits)
