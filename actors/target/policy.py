"""The device owner's policy over target states (``[policy]`` in conf/agent.toml): it outranks the cloud.

A target that breaks it is rejected as a whole, each violation naming its app, service and field and the
policy key that would allow it (None: nothing does). Checked where a target enters (the poller, before it
is stored) and again wherever a stored one is used (the reconciler, ``run.py plan``): the policy may have
changed since the target was stored, and the check is level-triggered like everything the reconciler
does. What the policy says about host ports:

- no container publishes the agent's admin port, the broker's port or the cloud API's port (when on this
  device), or port 22: a container holding one after a reboot would stand in for the agent, the broker
  or sshd;
- none publishes on a loopback (127.0.0.0/8, ::1) or link-local (169.254.0.0/16, fe80::/10) host address,
  where the device's own services listen; ``allow_loopback_ports`` allows loopback ones;
- ports given without an address are published on ``bind_address`` ("" = every interface);
- none publishes a host port below 1024 unless ``allow_privileged_ports``.

What it says about the rest of a container (the compose options), each refused unless its key allows it:
``privileged`` (``allow_privileged``), ``network_mode: host`` (``allow_host_network``), ``pid: host``
(``allow_host_pid``), ``ipc: host`` (``allow_host_ipc``), ``devices`` (each host path must match a glob of
``devices``), capabilities beyond Docker's default set (each named in ``cap_add``), bind mounts (the host
path, and what it resolves to through symlinks, under one of ``bind_roots``), ``security_opt`` (each listed in
``security_opt``; ``no-new-privileges:true`` only takes privileges away and is always allowed), and images
from registries outside ``registries`` (when it is not empty).

Pure, except :func:`on_this_host`, which the shell calls once to build the :class:`Policy`.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import os
import posixpath
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from messages.protocol.target_state import App, PortMapping, Service, TargetState, parse_target_state, to_json

SSH_PORT = 22
POLICY_REASON_PREFIX = "policy: "  # how every refusal's reason starts (the poller judges those again on start)
# What an actor enforcing the policy reads of the configuration (its `uses`).
POLICY_USES = ("policy", "agent.admin_port", "mqtt.host", "mqtt.port", "cloud.url", "api.port")


# What Docker grants a container without cap_add (its default set): adding one of these changes nothing.
DEFAULT_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "NET_RAW",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
ALWAYS_ALLOWED_SECURITY_OPT = frozenset({"no-new-privileges:true"})
PRIVILEGED_PORTS = 1024  # host ports below it are the device's services' (and need root on the host)


@dataclass(frozen=True)
class Policy:
    reserved_ports: tuple[tuple[int, str], ...] = ()  # (host port, what uses it), on every protocol
    allow_loopback_ports: bool = False
    bind_address: str = ""  # where ports without an address are published; "": every interface
    allow_privileged_ports: bool = False
    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    devices: tuple[str, ...] = ()  # globs of host device paths ("/dev/ttyUSB*")
    cap_add: tuple[str, ...] = ()  # capabilities beyond the default set, without CAP_ ("NET_ADMIN", "ALL")
    bind_roots: tuple[str, ...] = ()  # host directories whose contents may be bind-mounted
    security_opt: tuple[str, ...] = ()  # security options allowed, as the target normalises them
    registries: tuple[str, ...] = ()  # globs of registry hosts images may come from ("docker.io"); (): any
    # How the host resolves a bind mount's path (os.path.realpath on the device): a symlink under a root
    # must not lead outside it. The default only normalises (for tests and pure callers).
    resolve: Callable[[str], str] = posixpath.normpath


@dataclass(frozen=True)
class Violation:
    app_id: str
    service_name: str
    field: str
    reason: str
    allowed_by: str | None  # the policy key that would allow it; None: nothing does
    allowing_value: str = "true"  # what that key would be set to, as TOML

    def __str__(self) -> str:
        allowance = f"{self.allowed_by} = {self.allowing_value} allows it" if self.allowed_by else "no policy allows it"
        return f"apps.{self.app_id} service {self.service_name}: {self.field}: {self.reason} ({allowance})"


class PolicyRefused(ValueError):
    """A target breaks the policy; ``violations`` say where and why, ``reason`` all of it in one line."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        self.reason = POLICY_REASON_PREFIX + "; ".join(map(str, violations))
        super().__init__(self.reason)


def check_policy(target: TargetState, policy: Policy) -> list[Violation]:
    """Every way ``target`` breaks ``policy``, in document order; empty when it complies."""
    reserved = dict(policy.reserved_ports)
    found = []
    for app in target.apps:
        for service in app.services:
            for mapping in service.config.ports:
                found += _port_violations(app, service, mapping, reserved, policy)
            found += container_violations(app, service, policy)
    return found


def _port_violations(app: App, service: Service, mapping: PortMapping, reserved: Mapping[int, str],
                     policy: Policy) -> list[Violation]:
    def violation(reason: str, allowed_by: str | None = None) -> Violation:
        return Violation(app.app_id, service.service_name, f"config.ports {mapping.spec()!r}", reason, allowed_by)

    found = []
    if mapping.host_port is not None and mapping.host_port in reserved:
        found.append(violation(f"host port {mapping.host_port} is {reserved[mapping.host_port]}"))
    elif mapping.host_port is not None and mapping.host_port < PRIVILEGED_PORTS and not policy.allow_privileged_ports:
        found.append(violation(f"host port {mapping.host_port} is below {PRIVILEGED_PORTS}",
                               "policy.allow_privileged_ports"))
    if mapping.host_ip:
        kind = address_kind(mapping.host_ip)
        if kind == "link-local":
            found.append(violation(f"host address {mapping.host_ip} is link-local"))
        elif kind == "loopback" and not policy.allow_loopback_ports:
            found.append(violation(f"host address {mapping.host_ip} is loopback", "policy.allow_loopback_ports"))
    return found


def container_violations(app: App, service: Service, policy: Policy) -> list[Violation]:
    """How the service's container options, bind mounts and image break the policy."""
    config, options = service.config, service.config.options
    found = []

    def refuse(field: str, reason: str, key: str, value: str = "true") -> None:
        found.append(Violation(app.app_id, service.service_name, f"config.{field}", reason, key, value))

    if options.privileged and not policy.allow_privileged:
        refuse("privileged", "a privileged container has every device and capability", "policy.allow_privileged")
    if options.network_mode == "host" and not policy.allow_host_network:
        refuse("network_mode", "the host's network lets it use every port and interface", "policy.allow_host_network")
    if options.pid == "host" and not policy.allow_host_pid:
        refuse("pid", "the host's PID namespace shows and signals every process", "policy.allow_host_pid")
    if options.ipc == "host" and not policy.allow_host_ipc:
        refuse("ipc", "the host's IPC namespace shares its shared memory", "policy.allow_host_ipc")
    for host, _, _ in options.devices:
        if not any(fnmatch.fnmatchcase(host, pattern) for pattern in policy.devices):
            refuse("devices", f"device {host} is not in policy.devices", "policy.devices", _toml_list(host))
    for capability in options.cap_add:
        if capability not in DEFAULT_CAPABILITIES and capability not in policy.cap_add:
            refuse("cap_add", f"capability {capability} is beyond Docker's default set", "policy.cap_add",
                   _toml_list(capability))
    for mount in config.volumes:
        if mount.is_bind and not _under_roots(mount.volume, policy):
            refuse("volumes", f"bind mount of {mount.volume} is outside policy.bind_roots", "policy.bind_roots",
                   _toml_list(mount.volume))
    for option in options.security_opt:
        if option not in ALWAYS_ALLOWED_SECURITY_OPT and option not in policy.security_opt:
            refuse("security_opt", f"security option {option} is not in policy.security_opt", "policy.security_opt",
                   _toml_list(option))
    registry = image_registry(config.image)
    if policy.registries and not any(fnmatch.fnmatchcase(registry, pattern) for pattern in policy.registries):
        refuse("image", f"registry {registry} of {config.image} is not in policy.registries", "policy.registries",
               _toml_list(registry))
    return found


def image_registry(image: str) -> str:
    """The registry host an image reference pulls from: Docker's rule (a first component with a dot or a
    colon, or "localhost", is a host), else Docker Hub."""
    first, slash, _ = image.partition("/")
    return first if slash and ("." in first or ":" in first or first == "localhost") else "docker.io"


def _under_roots(path: str, policy: Policy) -> bool:
    def under(candidate: str) -> bool:
        return any(candidate == root or candidate.startswith(root.rstrip("/") + "/") for root in policy.bind_roots)

    return under(path) and under(policy.resolve(path))


def _toml_list(item: str) -> str:
    return f'["{item}"]'


def address_kind(text: str) -> str | None:
    """"loopback", "link-local" or None for an IP address (an IPv4-mapped IPv6 one counts as its IPv4)."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    return "link-local" if address.is_link_local else None


def enforce_policy(target: TargetState, policy: Policy) -> TargetState:
    """``target`` as the engine must run it (ports without an address on ``bind_address``); raises
    :class:`PolicyRefused` when it breaks the policy."""
    if violations := check_policy(target, policy):
        raise PolicyRefused(violations)
    if not policy.bind_address:
        return target
    bound = replace(target, apps=tuple(replace(app, services=tuple(
        replace(service, config=replace(service.config, ports=tuple(
            replace(mapping, host_ip=mapping.host_ip or policy.bind_address) for mapping in service.config.ports)))
        for service in app.services)) for app in target.apps))
    return parse_target_state(to_json(bound))  # normalised again: ports in their canonical order


def policy_from_config(config: Mapping[str, Any], on_host: Callable[[str], bool],
                       resolve: Callable[[str], str] = os.path.realpath) -> Policy:
    """The policy of the configuration slice ``POLICY_USES``; ``on_host(host)``: whether host is this device,
    ``resolve(path)``: a host path with its symlinks resolved."""
    section = config["policy"]
    reserved = {SSH_PORT: "ssh's port", config["agent"]["admin_port"]: "the agent's admin port (agent.admin_port)"}
    if config.get("api", {}).get("port"):
        reserved.setdefault(config["api"]["port"], "the local API's port (api.port)")
    if on_host(config["mqtt"]["host"]):
        reserved.setdefault(config["mqtt"]["port"], "the broker's port (mqtt.port)")
    cloud = urllib.parse.urlsplit(config["cloud"]["url"])
    if cloud.hostname and on_host(cloud.hostname):
        reserved.setdefault(cloud.port or (443 if cloud.scheme == "https" else 80), "the cloud API's port (cloud.url)")
    bind = ipaddress.ip_address(section["bind_address"]) if section["bind_address"] else None
    # As the target's own addresses are normalised: 0.0.0.0 is "", every interface.
    bind_address = "" if bind is None or (bind.is_unspecified and bind.version == 4) else bind.compressed
    return Policy(
        tuple(sorted(reserved.items())), section["allow_loopback_ports"], bind_address,
        allow_privileged_ports=section["allow_privileged_ports"], allow_privileged=section["allow_privileged"],
        allow_host_network=section["allow_host_network"], allow_host_pid=section["allow_host_pid"],
        allow_host_ipc=section["allow_host_ipc"], devices=tuple(section["devices"]),
        cap_add=tuple(_capability(name) for name in section["cap_add"]),
        bind_roots=tuple(posixpath.normpath(root) for root in section["bind_roots"]),
        security_opt=tuple(section["security_opt"]), registries=tuple(section["registries"]), resolve=resolve)


def _capability(name: str) -> str:
    name = name.upper()
    return name[len("CAP_"):] if name.startswith("CAP_") else name


def on_this_host(host: str) -> bool:
    """Whether ``host`` is this device: loopback, or an address bound here. A name that does not resolve
    now counts as this device: reserving a port too many is safe, one too few is not."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return True
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0]).partition("%")[0]
        if address_kind(address) == "loopback" or ipaddress.ip_address(address).is_unspecified:
            return True
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address, 0))  # only an address of one of this host's interfaces can be bound
            except OSError:
                continue
            return True
    return False
