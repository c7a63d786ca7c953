"""The container options of a service (`messages.protocol.target_state.options`) as the Docker SDK's
`containers.create` arguments: one entry per option, kept apart from the adapter's create so the two grow
independently. Only options not at their default are passed, so the engine's own defaults stay in force.
"""
from __future__ import annotations

from typing import Any, Callable

from docker.types import LogConfig, Ulimit

from messages.protocol.target_state import ContainerOptions


def create_arguments(options: ContainerOptions) -> dict[str, Any]:
    """`containers.create` keyword arguments for the options set (stop_grace_period is not one: see
    `stop_timeout`)."""
    arguments: dict[str, Any] = {}
    for name, value in options.set_options().items():
        argument, convert = _TO_ENGINE[name]
        if argument:
            arguments[argument] = convert(value)
    if "expose" in arguments:
        arguments.pop("expose")  # merged into the port bindings by the adapter (they share ExposedPorts)
    return arguments


def exposed_only(options: ContainerOptions, published: set[str]) -> dict[str, list[Any]]:
    """Port bindings that expose a port without publishing it: an empty binding list."""
    return {spec: [] for spec in options.expose if spec not in published}


def _same(value: Any) -> Any:
    return value


def _as_list(value: tuple[Any, ...]) -> list[Any]:
    return list(value)


# option -> (the SDK's argument, its value from ours); "" for options applied elsewhere
_TO_ENGINE: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "entrypoint": ("entrypoint", _as_list),
    "working_dir": ("working_dir", _same),
    "user": ("user", _same),
    "hostname": ("hostname", _same),
    "extra_hosts": ("extra_hosts", lambda hosts: [f"{name}:{address}" for name, address in hosts]),
    "dns": ("dns", _as_list),
    "tmpfs": ("tmpfs", dict),
    "read_only": ("read_only", _same),
    "init": ("init", _same),
    "stop_signal": ("stop_signal", _same),
    "stop_grace_period": ("", _same),
    "shm_size": ("shm_size", _same),
    "ulimits": ("ulimits", lambda items: [Ulimit(name=name, soft=soft, hard=hard) for name, soft, hard in items]),
    "sysctls": ("sysctls", dict),
    "cpus": ("nano_cpus", _same),
    "mem_limit": ("mem_limit", _same),
    "mem_reservation": ("mem_reservation", _same),
    "pids_limit": ("pids_limit", _same),
    "logging": ("log_config", lambda value: LogConfig(type=value[0], config=dict(value[1]))),
    "cap_add": ("cap_add", _as_list),
    "cap_drop": ("cap_drop", _as_list),
    "devices": ("devices", lambda items: [":".join(item) for item in items]),
    "privileged": ("privileged", _same),
    "network_mode": ("network_mode", _same),
    "pid": ("pid_mode", _same),
    "ipc": ("ipc_mode", _same),
    "security_opt": ("security_opt", _as_list),
    "expose": ("expose", _same),
}
