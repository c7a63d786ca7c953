"""Typed messages and their msgpack wire form.

Every message exchanged between actors is a frozen dataclass registered here by name. On the wire it is
``[tag, schema_version, {field: value}]`` packed with msgpack. Decoding is strict: anything that is not
exactly a registered message of the expected schema raises :class:`MessageError`, so a peer (or a
corrupted buffer) can never make an actor act on a half-understood message.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping

import msgpack

from messages.protocol import json as strict_json

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_MAX_CONTAINER_LEN = 100_000


class MessageError(ValueError):
    """A buffer or object is not a valid registered message; the text says what was wrong."""


@dataclasses.dataclass(frozen=True)
class _Schema:
    cls: type
    version: int
    fields: dict[str, object]  # field name -> resolved type hint (a class, or a typing form such as `int | None`)


_REGISTRY: dict[str, _Schema] = {}
_T = typing.TypeVar("_T")


@typing.overload
def message(cls: type[_T], *, version: int = 1) -> type[_T]: ...
@typing.overload
def message(cls: None = None, *, version: int = 1) -> Callable[[type[_T]], type[_T]]: ...
@typing.dataclass_transform(frozen_default=True)
def message(cls: type[_T] | None = None, *, version: int = 1) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Class decorator: make ``cls`` a frozen dataclass and register it under its class name."""

    def register(klass: type[_T]) -> type[_T]:
        if not dataclasses.is_dataclass(klass):
            klass = dataclasses.dataclass(frozen=True)(klass)
        params = getattr(klass, "__dataclass_params__", None)  # set by @dataclass; not in typeshed's stubs
        # is_dataclass again (always true by now) so that mypy knows it too, for dataclasses.fields below
        if not dataclasses.is_dataclass(klass) or params is None or not params.frozen:
            raise TypeError(f"message {klass.__name__} must be a frozen dataclass")
        name = klass.__name__
        if name in _REGISTRY and _REGISTRY[name].cls is not klass:
            raise TypeError(f"message name {name!r} is registered twice")
        hints = typing.get_type_hints(klass)
        fields = {f.name: hints[f.name] for f in dataclasses.fields(klass)}
        for fname, hint in fields.items():
            _check_supported(hint, f"{name}.{fname}")
        _REGISTRY[name] = _Schema(klass, version, fields)
        return klass

    return register(cls) if cls is not None else register


_SCALAR_HINTS = (bool, int, float, str, bytes, type(None), dict)


def _check_supported(hint: object, where: str) -> None:
    """Refuse at import time a field type the codec could not round-trip."""
    origin = typing.get_origin(hint)
    if hint in _SCALAR_HINTS or origin is dict:
        return
    if origin in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(hint):
            if arg is not Ellipsis:
                _check_supported(arg, where)
        return
    if dataclasses.is_dataclass(hint):
        for f in dataclasses.fields(hint):
            _check_supported(typing.get_type_hints(hint)[f.name], f"{where}.{f.name}")
        return
    raise TypeError(f"{where}: field type {hint} is not supported by the message codec")


def registered() -> dict[str, type]:
    """Name -> class of every registered message."""
    return {name: schema.cls for name, schema in _REGISTRY.items()}


def message_class(name: str) -> type:
    try:
        return _REGISTRY[name].cls
    except KeyError:
        raise MessageError(f"unknown message type {name!r}") from None


def encode(msg: object) -> bytes:
    """Pack a registered message; raises MessageError for anything :func:`decode` would refuse (a field of
    the wrong type, a JSON field holding 2^64, infinity or a lone surrogate, an oversized result), so no
    OverflowError or UnicodeEncodeError ever reaches a sender."""
    name = type(msg).__name__
    schema = _REGISTRY.get(name)
    if schema is None or schema.cls is not type(msg):
        raise MessageError(f"cannot encode {type(msg).__qualname__}: not a registered message")
    body = {fname: _to_wire(getattr(msg, fname)) for fname in schema.fields}
    for fname, hint in schema.fields.items():
        _from_wire(body[fname], hint, f"{name}.{fname}")  # the receiver's checks, at the sender
    try:
        packed: bytes = msgpack.packb([name, schema.version, body], use_bin_type=True)
    except (OverflowError, UnicodeEncodeError, TypeError, ValueError) as exc:  # an int field beyond 64 bits...
        raise MessageError(f"{name}: cannot be encoded: {type(exc).__name__}: {exc}") from None
    if len(packed) > MAX_MESSAGE_BYTES:
        raise MessageError(f"{name}: {len(packed)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    return packed


def decode(buf: bytes | bytearray | memoryview) -> object:
    """Unpack and validate a message; raises MessageError naming what was wrong."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise MessageError(f"expected bytes, got {type(buf).__name__}")
    if len(buf) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(buf)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    try:
        raw = msgpack.unpackb(
            buf, raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_MESSAGE_BYTES, max_bin_len=MAX_MESSAGE_BYTES,
            max_array_len=_MAX_CONTAINER_LEN, max_map_len=_MAX_CONTAINER_LEN,
        )
    except (ValueError, msgpack.UnpackException, RecursionError) as exc:
        raise MessageError(f"undecodable message: {type(exc).__name__}: {exc}") from None
    if not (isinstance(raw, list) and len(raw) == 3):
        raise MessageError("message header must be [tag, version, fields]")
    name, version, body = raw
    if not isinstance(name, str):
        raise MessageError(f"message tag must be a string, got {type(name).__name__}")
    schema = _REGISTRY.get(name)
    if schema is None:
        raise MessageError(f"unknown message type {name!r}")
    if type(version) is not int or version != schema.version:
        raise MessageError(f"{name}: schema version {version!r} is not the supported {schema.version}")
    if not isinstance(body, dict):
        raise MessageError(f"{name}: fields must be a map")
    return _build(schema, body, name)


def _build(schema: _Schema, body: Mapping[object, object], where: str) -> object:
    missing = schema.fields.keys() - body.keys()
    extra = body.keys() - schema.fields.keys()
    if missing:
        raise MessageError(f"{where}: missing field(s) {sorted(missing)}")
    if extra:
        raise MessageError(f"{where}: unexpected field(s) {sorted(map(str, extra))}")
    values = {f: _from_wire(body[f], hint, f"{where}.{f}") for f, hint in schema.fields.items()}
    return schema.cls(**values)


def _to_wire(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    return value


def _check_json(value: object, where: str) -> None:
    """dict-typed fields carry JSON documents: what messages.protocol.json accepts, nothing else."""
    try:
        strict_json.check_value(value, path=where, max_depth=strict_json.MAX_DEPTH + 1)  # a document, and its field
    except strict_json.JSONRefused as exc:
        raise MessageError(str(exc)) from None


def _from_wire(value: object, hint: object, where: str) -> object:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _from_wire(value, option, where)
            except MessageError:
                continue
        raise MessageError(f"{where}: {value!r:.60} matches none of {hint}")
    if hint is type(None):
        if value is not None:
            raise MessageError(f"{where}: expected null")
        return None
    if hint is bool:
        if type(value) is not bool:
            raise MessageError(f"{where}: expected bool, got {type(value).__name__}")
        return value
    if hint is int:
        if type(value) is not int:
            raise MessageError(f"{where}: expected int, got {type(value).__name__}")
        return value
    if hint is float:
        if type(value) is not int and type(value) is not float:
            raise MessageError(f"{where}: expected float, got {type(value).__name__}")
        return float(value)
    if isinstance(hint, type) and hint in (str, bytes):
        if type(value) is not hint:
            raise MessageError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise MessageError(f"{where}: expected a map, got {type(value).__name__}")
        _check_json(value, where)
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise MessageError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_wire(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise MessageError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_from_wire(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise MessageError(f"{where}: expected a map, got {type(value).__name__}")
        hints = typing.get_type_hints(hint)
        nested = _Schema(hint, 0, {f.name: hints[f.name] for f in dataclasses.fields(hint)})
        return _build(nested, value, where)
    raise MessageError(f"{where}: field type {hint} is not supported by the codec")
