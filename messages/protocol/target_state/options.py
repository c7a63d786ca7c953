"""The container options of a service config beyond the original fields (compose's names: `mem_limit`,
`devices`, `cap_add`, ...), as one table: each option has its parser (JSON value and path -> the normalised
value, or `InvalidTargetState` naming the path) and its canonical JSON.

Normalising is what keeps them from causing recreates: two spellings of one setting ("1g" and 1073741824,
"TERM" and "SIGTERM" and 15, `cap_add: [CAP_NET_ADMIN]` and `[NET_ADMIN]`) parse to one value, so they
serialise and hash the same. An option left at its default is absent from the canonical form and from the
hash, so adding options never changed the hash of a config that uses none of them.

The engine adapter turns these into the Docker API's arguments (`actors/target/engine/options.py`); the
device's policy (`actors/target/policy.py`) decides which a target may use.
"""
from __future__ import annotations

import ipaddress
import posixpath
import re
import signal
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from messages.protocol.target_state import limits
from messages.protocol.target_state.fields import (
    _command,
    _fail,
    _require_list,
    _require_mapping,
    _require_object,
    _string,
    _string_map,
    _type_name,
)
from messages.protocol.target_state.model import ContainerOptions

NETWORK_MODES = ("host", "none")
PID_MODES = ("host",)
IPC_MODES = ("host", "private", "shareable", "none")
ULIMITS = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
           "rss", "rtprio", "rttime", "sigpending", "stack")
# The sysctls Docker namespaces per container (its own list): nothing else can be set without touching the host.
NAMESPACED_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                      "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
NAMESPACED_SYSCTL_PREFIXES = ("fs.mqueue.", "net.")
MAX_LIST = limits.MAX_OPTION_ENTRIES

_BYTES = re.compile(r"(?P<number>\d{1,19})\s?(?P<unit>[bkmg]?)b?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_DURATION_PART = re.compile(r"(?P<number>\d{1,9}(?:\.\d{1,9})?)(?P<unit>h|ms|m|s|us|ns)")
_SECONDS = {"h": Decimal(3600), "m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001"),
            "us": Decimal("0.000001"), "ns": Decimal("0.000000001")}
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_USER = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,31}(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,31})?")
_CAPABILITY = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_SYSCTL = re.compile(r"[a-z0-9_]+(\.[a-z0-9_-]+)+")
_DRIVER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
_SECURITY_OPT = re.compile(r"[a-z-]{1,32}(?:[:=][^\s]{1,256})?")
_EXPOSE = re.compile(r"(?P<port>\d{1,5})(?:/(?P<protocol>tcp|udp|sctp))?")


# --- parsers -----------------------------------------------------------------------------------------------


def _optional_string(value: Any, path: str) -> str | None:
    return None if value is None else _string(value, path, limits.MAX_KEY_LENGTH)


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, f"must be a boolean, not {_type_name(value)}")
    return value


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, not {_type_name(value)}")
    return value


def _absolute_path(value: Any, path: str) -> str:
    text = _string(value, path, limits.MAX_KEY_LENGTH)
    if not text.startswith("/"):
        raise _fail(path, f"{text!r} is not an absolute path")
    return posixpath.normpath(text).replace("//", "/")


def _entrypoint(value: Any, path: str) -> tuple[str, ...] | None:
    return _command(value, path)


def _working_dir(value: Any, path: str) -> str | None:
    return None if value is None else _absolute_path(value, path)


def _user(value: Any, path: str) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `user: 1000` in YAML
    user = _optional_string(value, path)
    if user is not None and not _USER.fullmatch(user):
        raise _fail(path, f"{user!r} is not user[:group]")
    return user


def _hostname(value: Any, path: str) -> str | None:
    name = _optional_string(value, path)
    if name is not None and not _HOSTNAME.fullmatch(name):
        raise _fail(path, f"{name!r} is not a host name")
    return name


def _address(text: str, path: str) -> str:
    try:
        return ipaddress.ip_address(text.strip("[]")).compressed
    except ValueError:
        raise _fail(path, f"{text!r} is not an IP address") from None


def _extra_hosts(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    """A list of "name:address" or "name=address" (compose's both), or a map of name to address."""
    if isinstance(value, list):
        pairs = []
        for index, item in enumerate(_require_list(value, path, MAX_LIST)):
            entry = _string(item, f"{path}[{index}]", 512)
            separator = "=" if "=" in entry else ":"
            name, found, address = entry.partition(separator)
            if not found:
                raise _fail(f"{path}[{index}]", f"{entry!r} is not name:address")
            pairs.append((name, address, f"{path}[{index}]"))
    else:
        _require_mapping(value, path)
        _check_size(value, path)
        pairs = [(name, _string(address, f"{path}.{name}", 64), f"{path}.{name}") for name, address in value.items()]
    hosts = set()
    for name, address, where in pairs:
        if not _HOSTNAME.fullmatch(name):
            raise _fail(where, f"{name!r} is not a host name")
        hosts.add((name, _address(address, where)))
    return tuple(sorted(hosts))


def _check_size(value: Any, path: str) -> None:
    if len(value) > MAX_LIST:
        raise _fail(path, f"{len(value)} entries, more than {MAX_LIST}")


def _dns(value: Any, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else _require_list(value, path, MAX_LIST)
    addresses = [_address(_string(item, f"{path}[{index}]", 64), f"{path}[{index}]")
                 for index, item in enumerate(items)]
    if len(set(addresses)) != len(addresses):
        raise _fail(path, "an address is listed twice")
    return tuple(addresses)


def _tmpfs(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    """"/path[:options]" entries (compose's string or list); options as given, e.g. "size=64m,mode=1777"."""
    items = [value] if isinstance(value, str) else _require_list(value, path, MAX_LIST)
    mounts: dict[str, str] = {}
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        target, _, options = _string(item, where, 1024).partition(":")
        target = _absolute_path(target, where)
        if target in mounts:
            raise _fail(where, f"{target!r} is mounted twice")
        if options and not re.fullmatch(r"[a-zA-Z0-9_]+(=[a-zA-Z0-9_.]+)?(,[a-zA-Z0-9_]+(=[a-zA-Z0-9_.]+)?)*", options):
            raise _fail(where, f"{options!r} is not a list of mount options")
        mounts[target] = ",".join(sorted(options.split(","))) if options else ""
    return tuple(sorted(mounts.items()))


def _stop_signal(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = _string(value, path, 32).upper()
    try:
        found = signal.Signals(int(text)) if text.isdigit() else signal.Signals[
            text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise _fail(path, f"{value!r} is not a signal") from None
    return found.name


def _duration_seconds(value: Any, path: str) -> int | None:
    """Compose's durations ("1m30s", "10s", "2h") or a number of seconds; whole seconds (what the engine takes)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = Decimal(value)
    else:
        text = _string(value, path, 64)
        parts = list(_DURATION_PART.finditer(text))
        if not parts or "".join(part.group() for part in parts) != text:
            raise _fail(path, f"{text!r} is not a duration like 1m30s")
        seconds = sum((Decimal(part["number"]) * _SECONDS[part["unit"]] for part in parts), Decimal(0))
    if seconds != seconds.to_integral_value() or not 0 <= seconds <= 86400 * 365:
        raise _fail(path, f"{value!r} is not a whole number of seconds between 0 and a year")
    return int(seconds)


def _bytes(value: Any, path: str) -> int | None:
    """Compose's byte values ("64m", "1g", "512k", "100b") or a number of bytes."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = _string(value, path, 64)
        match = _BYTES.fullmatch(text.strip())
        if not match:
            raise _fail(path, f"{text!r} is not a size like 64m or 1g")
        number = int(match["number"]) * _UNITS[match["unit"].lower()]
    if not 0 < number < 2 ** 63:
        raise _fail(path, f"{value!r} is not a positive size")
    return number


def _ulimits(value: Any, path: str) -> tuple[tuple[str, int, int], ...]:
    _require_mapping(value, path)
    _check_size(value, path)
    found = []
    for name, limit in value.items():
        where = f"{path}.{name}"
        if name not in ULIMITS:
            raise _fail(where, f"unknown limit (known: {', '.join(ULIMITS)})")
        if isinstance(limit, dict):
            _require_object(limit, where, required=("soft", "hard"), optional=())
            soft, hard = _integer(limit["soft"], f"{where}.soft"), _integer(limit["hard"], f"{where}.hard")
        else:
            soft = hard = _integer(limit, where)
        if not -1 <= soft < 2 ** 63 or not -1 <= hard < 2 ** 63:
            raise _fail(where, "limits are -1 (unlimited) or more")
        if hard != -1 and (soft == -1 or soft > hard):
            raise _fail(where, f"soft limit {soft} is above the hard limit {hard}")
        found.append((name, soft, hard))
    return tuple(sorted(found))


def _sysctls(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, list):
        items = [_string(item, f"{path}[{index}]", 1024).partition("=")
                 for index, item in enumerate(_require_list(value, path, MAX_LIST))]
        pairs = {name: setting for name, _, setting in items}
        if len(pairs) != len(items):
            raise _fail(path, "a sysctl is set twice")
    else:
        _require_mapping(value, path)
        _check_size(value, path)
        pairs = {name: str(_scalar(setting, f"{path}.{name}")) for name, setting in value.items()}
    for name, setting in pairs.items():
        if not _SYSCTL.fullmatch(name) or not setting:
            raise _fail(path, f"{name!r}={setting!r} is not name=value")
        if name not in NAMESPACED_SYSCTLS and not name.startswith(NAMESPACED_SYSCTL_PREFIXES):
            raise _fail(f"{path}.{name}", "not a namespaced sysctl: it would change the whole device")
    return tuple(sorted(pairs.items()))


def _scalar(value: Any, path: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _fail(path, f"must be a string or an integer, not {_type_name(value)}")
    return _string(value, path, 1024) if isinstance(value, str) else value


def _cpus(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(path, f"must be a number, not {_type_name(value)}")
    try:
        nano = Decimal(str(value)) * 10 ** 9
    except InvalidOperation:
        raise _fail(path, f"{value!r} is not a number") from None
    if not nano.is_finite() or nano != nano.to_integral_value() or not 0 < nano <= 1024 * 10 ** 9:
        raise _fail(path, f"{value!r} is not a number of CPUs between 0.000000001 and 1024")
    return int(nano)


def _pids_limit(value: Any, path: str) -> int | None:
    if value is None:
        return None
    limit = _integer(value, path)
    if not -1 <= limit < 2 ** 63:
        raise _fail(path, "must be -1 or 0 (unlimited) or a positive number")
    return None if limit <= 0 else limit  # compose's two spellings of "unlimited" are the default


def _logging(value: Any, path: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    if value is None:
        return None
    _require_object(value, path, required=("driver",), optional=("options",))
    driver = _string(value["driver"], f"{path}.driver", 64)
    if not _DRIVER.fullmatch(driver):
        raise _fail(f"{path}.driver", f"{driver!r} is not a logging driver name")
    options = value.get("options") or {}
    _require_mapping(options, f"{path}.options")
    as_text = {key: str(_scalar(item, f"{path}.options.{key}")) for key, item in options.items()}
    return driver, _string_map(as_text, f"{path}.options", MAX_LIST)


def _capabilities(value: Any, path: str) -> tuple[str, ...]:
    names = set()
    for index, item in enumerate(_require_list(value, path, MAX_LIST)):
        name = _string(item, f"{path}[{index}]", 64).upper()
        name = name[len("CAP_"):] if name.startswith("CAP_") else name
        if not _CAPABILITY.fullmatch(name):
            raise _fail(f"{path}[{index}]", f"{item!r} is not a capability")
        names.add(name)
    return tuple(sorted(names))


def _devices(value: Any, path: str) -> tuple[tuple[str, str, str], ...]:
    """"/dev/host[:/dev/container[:rwm]]" entries; the container path defaults to the host's, permissions to rwm."""
    found: dict[str, tuple[str, str, str]] = {}
    for index, item in enumerate(_require_list(value, path, MAX_LIST)):
        where = f"{path}[{index}]"
        parts = _string(item, where, 1024).split(":")
        if len(parts) == 2 and parts[1] and set(parts[1]) <= set("rwm"):
            parts = [parts[0], parts[0], parts[1]]  # "/dev/x:rw": the short form of permissions
        if not 1 <= len(parts) <= 3:
            raise _fail(where, f"{item!r} is not /dev/host[:/dev/container[:rwm]]")
        host = _absolute_path(parts[0], where)
        container = _absolute_path(parts[1], where) if len(parts) > 1 else host
        permissions = parts[2] if len(parts) > 2 else "rwm"
        if not permissions or not set(permissions) <= set("rwm") or len(set(permissions)) != len(permissions):
            raise _fail(where, f"permissions {permissions!r} are not a combination of r, w and m")
        if container in found:
            raise _fail(where, f"{container!r} is mapped twice")
        found[container] = (host, container, "".join(flag for flag in "rwm" if flag in permissions))
    return tuple(sorted(found.values()))


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, str], str | None]:
    def parse(value: Any, path: str) -> str | None:
        if value is not None and value not in choices:
            raise _fail(path, f"must be one of {', '.join(choices)}")
        return None if value is None else str(value)

    return parse


def _security_opt(value: Any, path: str) -> tuple[str, ...]:
    options = set()
    for index, item in enumerate(_require_list(value, path, MAX_LIST)):
        option = _string(item, f"{path}[{index}]", 512)
        if not _SECURITY_OPT.fullmatch(option):
            raise _fail(f"{path}[{index}]", f"{option!r} is not a security option")
        # "no-new-privileges" and "no-new-privileges:true" (and "=true") are one setting
        options.add("no-new-privileges:true" if option in ("no-new-privileges", "no-new-privileges=true")
                    else option.replace("=", ":", 1) if option.startswith(("seccomp=", "apparmor=", "label="))
                    else option)
    return tuple(sorted(options))


def _expose(value: Any, path: str) -> tuple[str, ...]:
    ports = set()
    for index, item in enumerate(_require_list(value, path, limits.MAX_PORTS_PER_SERVICE)):
        where = f"{path}[{index}]"
        text = str(_integer(item, where)) if not isinstance(item, str) else _string(item, where, 16)
        match = _EXPOSE.fullmatch(text)
        if not match or not 1 <= int(match["port"]) <= 65535:
            raise _fail(where, f"{item!r} is not port[/tcp|udp|sctp]")
        ports.add((int(match["port"]), match["protocol"] or "tcp"))
    return tuple(f"{port}/{protocol}" for port, protocol in sorted(ports))


# Each option's parser, by its name in the document (which is compose's).
PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "entrypoint": _entrypoint,
    "working_dir": _working_dir,
    "user": _user,
    "hostname": _hostname,
    "extra_hosts": _extra_hosts,
    "dns": _dns,
    "tmpfs": _tmpfs,
    "read_only": _boolean,
    "init": _boolean,
    "stop_signal": _stop_signal,
    "stop_grace_period": _duration_seconds,
    "shm_size": _bytes,
    "ulimits": _ulimits,
    "sysctls": _sysctls,
    "cpus": _cpus,
    "mem_limit": _bytes,
    "mem_reservation": _bytes,
    "pids_limit": _pids_limit,
    "logging": _logging,
    "cap_add": _capabilities,
    "cap_drop": _capabilities,
    "devices": _devices,
    "privileged": _boolean,
    "network_mode": _one_of(NETWORK_MODES),
    "pid": _one_of(PID_MODES),
    "ipc": _one_of(IPC_MODES),
    "security_opt": _security_opt,
    "expose": _expose,
}
OPTION_NAMES = tuple(PARSERS)
assert OPTION_NAMES == tuple(field.name for field in fields(ContainerOptions)), "one parser per option, in order"


def parse_options(config: Any, path: str) -> ContainerOptions:
    """The options present in a service config (a mapping already checked to hold only known fields)."""
    return ContainerOptions(**{name: PARSERS[name](config[name], f"{path}.{name}")
                               for name in OPTION_NAMES if name in config})


def options_to_json(options: ContainerOptions) -> dict[str, Any]:
    """The canonical JSON of the options not at their default (parsing it gives the same options)."""
    return {name: _TO_JSON.get(name, _plain)(value) for name, value in options.set_options().items()}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _cpus_to_json(nano: int) -> Any:
    cpus = Decimal(nano) / 10 ** 9
    return int(cpus) if cpus == cpus.to_integral_value() else str(cpus.normalize())


_TO_JSON: dict[str, Callable[[Any], Any]] = {
    "extra_hosts": lambda hosts: [f"{name}={address}" for name, address in hosts],
    "tmpfs": lambda mounts: [f"{target}:{options}" if options else target for target, options in mounts],
    "ulimits": lambda items: {name: {"soft": soft, "hard": hard} for name, soft, hard in items},
    "sysctls": lambda items: dict(items),
    "cpus": _cpus_to_json,
    "logging": lambda value: {"driver": value[0], "options": dict(value[1])},
    "devices": lambda items: [":".join(item) for item in items],
}
