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
- ports given without an address are published on ``bind_address`` ("" = every interface).

Pure, except :func:`on_this_host`, which the shell calls once to build the :class:`Policy`.
"""
from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from messages.protocol.target_state import App, PortMapping, Service, TargetState, parse_target_state, to_json

SSH_PORT = 22
# What an actor enforcing the policy reads of the configuration (its `uses`).
POLICY_USES = ("policy", "agent.admin_port", "mqtt.host", "mqtt.port", "cloud.url", "api.port")


@dataclass(frozen=True)
class Policy:
    reserved_ports: tuple[tuple[int, str], ...] = ()  # (host port, what uses it), on every protocol
    allow_loopback_ports: bool = False
    bind_address: str = ""  # where ports without an address are published; "": every interface


@dataclass(frozen=True)
class Violation:
    app_id: str
    service_name: str
    field: str
    reason: str
    allowed_by: str | None  # the policy key that would allow it; None: nothing does

    def __str__(self) -> str:
        allowance = f"{self.allowed_by} = true allows it" if self.allowed_by else "no policy allows it"
        return f"apps.{self.app_id} service {self.service_name}: {self.field}: {self.reason} ({allowance})"


class PolicyRefused(ValueError):
    """A target breaks the policy; ``violations`` say where and why, ``reason`` all of it in one line."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        self.reason = "policy: " + "; ".join(map(str, violations))
        super().__init__(self.reason)


def check_policy(target: TargetState, policy: Policy) -> list[Violation]:
    """Every way ``target`` breaks ``policy``, in document order; empty when it complies."""
    reserved = dict(policy.reserved_ports)
    found = []
    for app in target.apps:
        for service in app.services:
            for mapping in service.config.ports:
                found += _port_violations(app, service, mapping, reserved, policy)
    return found


def _port_violations(app: App, service: Service, mapping: PortMapping, reserved: Mapping[int, str],
                     policy: Policy) -> list[Violation]:
    def violation(reason: str, allowed_by: str | None = None) -> Violation:
        return Violation(app.app_id, service.service_name, f"config.ports {mapping.spec()!r}", reason, allowed_by)

    found = []
    if mapping.host_port is not None and mapping.host_port in reserved:
        found.append(violation(f"host port {mapping.host_port} is {reserved[mapping.host_port]}"))
    if mapping.host_ip:
        kind = address_kind(mapping.host_ip)
        if kind == "link-local":
            found.append(violation(f"host address {mapping.host_ip} is link-local"))
        elif kind == "loopback" and not policy.allow_loopback_ports:
            found.append(violation(f"host address {mapping.host_ip} is loopback", "policy.allow_loopback_ports"))
    return found


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


def policy_from_config(config: Mapping[str, Any], on_host: Callable[[str], bool]) -> Policy:
    """The policy of the configuration slice ``POLICY_USES``; ``on_host(host)``: whether host is this device."""
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
    return Policy(tuple(sorted(reserved.items())), section["allow_loopback_ports"], bind_address)


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
