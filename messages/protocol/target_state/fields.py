"""Field validators of a target-state document: each takes a decoded JSON value and the path it sits at, and
returns the normalised value or raises `InvalidTargetState` naming that path.

Shared by the document parser (`parse`) and the image validator (`images`); the underscore names are the
package's own, not part of its public surface.
"""
from __future__ import annotations

import ipaddress
import posixpath
import re
from collections import Counter
from collections.abc import Sized
from typing import Any, Mapping

from messages.protocol.target_state import limits
from messages.protocol.target_state.model import (
    PROTOCOLS,
    RESTART_POLICIES,
    InvalidTargetState,
    PortMapping,
    VolumeMount,
)

NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
RESERVED_LABEL_PREFIX = "io.fleetlet."

# Every digit run is bounded: int() refuses more than 4,300 digits with a plain ValueError, and no port
# needs more than five.
_PORT_PATTERN = re.compile(
    r"(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]{2,45}\]):(?P<ip_host>\d{0,5}):|(?P<host>\d{1,5}):)?"
    r"(?P<container>\d{1,5})(?:/(?P<protocol>[a-z]{1,8}))?"
)


def _fail(path: str, problem: str) -> InvalidTargetState:
    return InvalidTargetState(f"{path}: {problem}")


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _require_mapping(value: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be an object, not {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, f"key {key!r} must be a string")


def _require_object(value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    _require_mapping(value, path)
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise _fail(f"{path}.{unknown[0]}", "unknown field")
    missing = [key for key in required if key not in value]
    if missing:
        raise _fail(f"{path}.{missing[0]}", "required field is missing")


def _require_list(value: Any, path: str, limit: int | None = None) -> list[object]:
    if not isinstance(value, list):
        raise _fail(path, f"must be an array, not {_type_name(value)}")
    _check_count(value, path, limit)
    return value


def _check_count(value: Sized, path: str, limit: int | None) -> None:
    if limit is not None and len(value) > limit:
        raise _fail(path, f"{len(value)} entries, more than {limit}")


def _string(value: Any, path: str, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"must be a string, not {_type_name(value)}")
    if "\0" in value:
        raise _fail(path, "must not contain NUL characters")
    if max_length is not None and len(value) > max_length:
        raise _fail(path, f"longer than {max_length} characters")
    return value


def _name(value: Any, path: str) -> str:
    name = _string(value, path)
    if not NAME_PATTERN.fullmatch(name):
        raise _fail(path, f"{name!r} does not match {NAME_PATTERN.pattern}")
    return name


def _unique_names(values: Any, path: str, limit: int) -> tuple[str, ...]:
    names = [_name(value, f"{path}[{index}]") for index, value in enumerate(_require_list(values, path, limit))]
    if len(set(names)) != len(names):
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        raise _fail(path, f"{duplicates[0]!r} is listed twice")
    return tuple(sorted(names))


def _string_map(value: Any, path: str, limit: int) -> tuple[tuple[str, str], ...]:
    _require_mapping(value, path)
    _check_count(value, path, limit)
    for key in value:
        _key(key, path)
    return tuple(sorted((key, _string(item, f"{path}.{key}", limits.MAX_STRING_LENGTH)) for key, item in value.items()))


def _key(key: str, path: str) -> None:
    if len(key) > limits.MAX_KEY_LENGTH:
        raise _fail(path, f"a name is longer than {limits.MAX_KEY_LENGTH} characters")


def _ports(value: Any, path: str) -> tuple[PortMapping, ...]:
    items = _require_list(value, path, limits.MAX_PORTS_PER_SERVICE)
    mappings = [_port(item, f"{path}[{index}]") for index, item in enumerate(items)]
    seen: set[PortMapping] = set()
    bound: dict[tuple[int, str], set[str]] = {}  # (host port, protocol) -> host addresses ("" is every one)
    for index, mapping in enumerate(mappings):
        if mapping in seen:
            raise _fail(f"{path}[{index}]", f"duplicate port mapping {mapping.spec()!r}")
        seen.add(mapping)
        if mapping.host_port is None:
            continue
        addresses = bound.setdefault((mapping.host_port, mapping.protocol), set())
        if mapping.host_ip in addresses or "" in addresses or (mapping.host_ip == "" and addresses):
            raise _fail(f"{path}[{index}]", f"host port {mapping.host_port}/{mapping.protocol} is bound twice")
        addresses.add(mapping.host_ip)
    return tuple(sorted(mappings, key=lambda m: (m.container_port, m.protocol, m.host_port or 0, m.host_ip)))


def _port(value: Any, path: str) -> PortMapping:
    if isinstance(value, int) and not isinstance(value, bool):
        return PortMapping(container_port=_port_number(value, path))
    spec = _string(value, path, limits.MAX_PORT_SPEC_LENGTH)
    match = _PORT_PATTERN.fullmatch(spec)
    if not match:
        raise _fail(path, f"{spec!r} is not a port spec ([ip:][host:]container[/tcp|udp|sctp])")
    protocol = match["protocol"] or "tcp"
    if protocol not in PROTOCOLS:
        raise _fail(path, f"unknown protocol {protocol!r} in {spec!r}")
    host = match["host"] or match["ip_host"]
    return PortMapping(
        container_port=_port_number(int(match["container"]), path),
        protocol=protocol,
        host_port=_port_number(int(host), path) if host else None,
        host_ip=_host_ip(match["ip"], spec, path) if match["ip"] else "",
    )


def _port_number(number: int, path: str) -> int:
    if not 1 <= number <= 65535:
        raise _fail(path, f"port {number} is outside 1-65535")
    return number


def _host_ip(text: str, spec: str, path: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise _fail(path, f"invalid host address in {spec!r}") from None
    if (address.version == 6) != text.startswith("["):
        raise _fail(path, f"IPv6 host addresses must be in brackets, IPv4 ones not, in {spec!r}")
    return "" if address.is_unspecified and address.version == 4 else address.compressed


def _environment(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, list):
        _check_count(value, path, limits.MAX_ENVIRONMENT_ENTRIES)
        pairs = [_environment_entry(item, f"{path}[{index}]") for index, item in enumerate(value)]
    else:
        _require_mapping(value, path)
        _check_count(value, path, limits.MAX_ENVIRONMENT_ENTRIES)
        pairs = [(key, _environment_value(item, f"{path}.{key}")) for key, item in value.items()]
    seen: set[str] = set()
    for key, _ in pairs:
        if not key or "=" in key or "\0" in key:
            raise _fail(path, f"invalid variable name {key[:80]!r}")
        _key(key, path)
        if key in seen:
            raise _fail(path, f"variable {key!r} is set twice")
        seen.add(key)
    return tuple(sorted(pairs))


def _environment_entry(value: Any, path: str) -> tuple[str, str]:
    entry = _string(value, path, limits.MAX_KEY_LENGTH + 1 + limits.MAX_STRING_LENGTH)
    if "=" not in entry:
        raise _fail(path, f"{entry[:80]!r} is not NAME=VALUE")
    key, _, item = entry.partition("=")
    if len(item) > limits.MAX_STRING_LENGTH:
        raise _fail(path, f"the value is longer than {limits.MAX_STRING_LENGTH} characters")
    return key, item


def _environment_value(value: Any, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # the decoder bounds integers to 64 bits: str() is always cheap
    return _string(value, path, limits.MAX_STRING_LENGTH)


def _volumes(value: Any, path: str) -> tuple[VolumeMount, ...]:
    items = _require_list(value, path, limits.MAX_VOLUMES_PER_SERVICE)
    mounts = [_volume(item, f"{path}[{index}]") for index, item in enumerate(items)]
    targets: set[str] = set()
    for index, mount in enumerate(mounts):
        if mount.target in targets:
            raise _fail(f"{path}[{index}]", f"{mount.target!r} is mounted twice")
        targets.add(mount.target)
    return tuple(sorted(mounts))


def _volume(value: Any, path: str) -> VolumeMount:
    spec = _string(value, path, limits.MAX_KEY_LENGTH)
    source, _, rest = spec.partition(":")
    target, _, mode = rest.partition(":")
    if source.startswith((".", "~")):
        raise _fail(path, f"a bind mount needs an absolute host path (the device has no project directory): {spec!r}")
    is_bind = source.startswith("/")
    named = is_bind or NAME_PATTERN.fullmatch(source)
    if not named or not target.startswith("/") or mode not in ("", "ro", "rw"):
        raise _fail(path, f"{spec!r} is not volume:/container/path[:ro|rw] or /host/path:/container/path[:ro|rw]")
    if is_bind:
        source = _normal_path(source)
    return VolumeMount(target=_normal_path(target), volume=source, read_only=mode == "ro")


def _normal_path(path: str) -> str:
    """posixpath.normpath, which keeps a leading "//" (POSIX allows it a meaning; Linux gives it none)."""
    normal = posixpath.normpath(path)
    return normal[1:] if normal.startswith("//") else normal


def _restart(value: Any, path: str) -> str:
    """"no", "always", "unless-stopped", "on-failure" or "on-failure:N"; "on-failure:0" is "on-failure"."""
    policy, colon, count = value.partition(":") if isinstance(value, str) else (value, "", "")
    if policy not in RESTART_POLICIES or (colon and (policy != "on-failure" or not re.fullmatch(r"\d{1,9}", count))):
        raise _fail(path, f"must be one of {', '.join(RESTART_POLICIES)} or on-failure:N")
    return f"on-failure:{int(count)}" if colon and int(count) else policy


def _command(value: Any, path: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = _string(value, path, limits.MAX_STRING_LENGTH)
        try:
            arguments = split_arguments(text, limits.MAX_COMMAND_ARGUMENTS)
        except ValueError as error:
            raise _fail(path, f"cannot be split into arguments ({error})") from None
    else:
        items = _require_list(value, path, limits.MAX_COMMAND_ARGUMENTS)
        arguments = [_string(item, f"{path}[{index}]", limits.MAX_STRING_LENGTH) for index, item in enumerate(items)]
    return tuple(arguments) or None


# shlex.split's POSIX words (no comments) by regular expressions, which run in the regex engine: shlex walks
# a string a character at a time in Python (half a second per MiB). Every alternative starts with its own
# character and the loops are possessive, so nothing backtracks. Whitespace is shlex's: space, tab, CR, LF.
_PIECE = r"[^ \t\r\n'\"\\]|\\.|'[^']*+'|\"(?:[^\"\\]|\\.)*+\""
_SPLITTABLE = re.compile(rf"(?:[ \t\r\n]|{_PIECE})*+", re.DOTALL)
_WORD = re.compile(rf"(?:{_PIECE})++", re.DOTALL)
_QUOTING = re.compile(r"""['"\\]""")
_PART = re.compile(r"[^'\"\\]++|\\(.)|'([^']*+)'|\"((?:[^\"\\]|\\.)*+)\"", re.DOTALL)
_DOUBLE_INNER = re.compile(r'(?:[^"\\]|\\.)*+', re.DOTALL)
_QUOTED_ESCAPE = re.compile(r'\\(["\\])')


def split_arguments(text: str, limit: int | None = None) -> list[str]:
    """``shlex.split(text)``, in time linear in ``text``; ValueError as shlex words it, or when there are more
    than ``limit`` words."""
    stuck = _SPLITTABLE.match(text).end()  # type: ignore[union-attr]  # a * always matches
    if stuck < len(text):  # at an unclosed quote, or a backslash ending the text (or the "..." it opens)
        rest = text[stuck:]
        unescaped = rest[0] == "\\" or rest[0] == '"' and _DOUBLE_INNER.match(rest, 1).end() < len(rest)  # type: ignore[union-attr]
        raise ValueError("No escaped character" if unescaped else "No closing quotation")  # shlex's words
    words = _WORD.findall(text)
    if limit is not None and len(words) > limit:
        raise ValueError(f"{len(words)} arguments, more than {limit}")
    return [_PART.sub(_unquote, word) if _QUOTING.search(word) else word for word in words]


def _unquote(part: re.Match[str]) -> str:
    escaped, single, double = part.groups()
    if escaped is not None:
        return escaped
    if single is not None:
        return single
    if double is not None:
        return _QUOTED_ESCAPE.sub(r"\1", double)  # inside "...", a backslash escapes only " and itself
    return part.group()


def _labels(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    labels = _string_map(value, path, limits.MAX_LABELS_PER_SERVICE)
    for key, _ in labels:
        if not key or key.startswith(RESERVED_LABEL_PREFIX):
            raise _fail(f"{path}.{key}", f"label names must be non-empty and not start with {RESERVED_LABEL_PREFIX}")
    return labels
