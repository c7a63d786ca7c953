"""The device owner's policy over host ports: what it refuses, why, which key would allow it, and bind_address."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import conf
from actors.cli.plan import PlanError, current_plan
from actors.target.policy import (
    Policy,
    PolicyRefused,
    check_policy,
    enforce_policy,
    on_this_host,
    policy_from_config,
)
from messages.protocol.target_state import InvalidTargetState, parse_target_state, to_json
from store import Store

ADMIN, BROKER = 19500, 1883
POLICY = Policy(reserved_ports=((22, "ssh's port"), (BROKER, "the broker's port"), (ADMIN, "the agent's admin port")))


def target(*specs, app="1", service="web"):
    return parse_target_state({"apps": {app: {"appName": "a", "services": [
        {"serviceName": service, "config": {"image": "busybox:1", "ports": list(specs)}}]}}})


def test_a_reserved_port_is_refused_on_any_address_and_nothing_allows_it():
    for spec in ("19500:80", "0.0.0.0:19500:80", "[::]:19500:80", "10.0.0.5:19500:80/udp"):
        (violation,) = check_policy(target(spec), Policy(POLICY.reserved_ports, allow_loopback_ports=True))
        assert violation.allowed_by is None and "the agent's admin port" in violation.reason
        assert str(violation).startswith("apps.1 service web: config.ports ")
    assert check_policy(target("80"), POLICY) == []  # the engine picks the host port


def test_loopback_and_link_local_host_addresses_are_refused_by_default():
    reasons = {str(v) for v in check_policy(target("127.0.0.1:8080:80", "[::1]:8081:80", "169.254.1.1:8082:80",
                                                   "[fe80::1]:8083:80", "[::ffff:127.0.0.2]:8084:80"), POLICY)}
    assert len(reasons) == 5
    assert sum("policy.allow_loopback_ports = true allows it" in r for r in reasons) == 3
    assert sum("link-local (no policy allows it)" in r for r in reasons) == 2
    allowed = check_policy(target("127.0.0.1:8080:80", "169.254.1.1:8082:80"), Policy(allow_loopback_ports=True))
    assert [v.reason for v in allowed] == ["host address 169.254.1.1 is link-local"]


def test_the_container_of_the_issue_is_refused_on_every_count():
    violations = check_policy(target("127.0.0.1:19500:80", "127.0.0.1:1883:1883", "[::1]:22:22"), POLICY)
    assert len(violations) == 6  # three reserved ports, three loopback addresses
    with pytest.raises(PolicyRefused) as refused:
        enforce_policy(target("127.0.0.1:19500:80"), POLICY)
    assert refused.value.reason.startswith("policy: apps.1 service web: config.ports '127.0.0.1:19500:80/tcp': ")


def test_ports_without_an_address_go_to_the_bind_address():
    bound = enforce_policy(target("8080:80", "10.0.0.7:8081:81", "82"), Policy(bind_address="10.0.0.5"))
    ports = bound.apps[0].services[0].config.ports
    assert [p.spec() for p in ports] == ["10.0.0.5:8080:80/tcp", "10.0.0.7:8081:81/tcp", "10.0.0.5::82/tcp"]
    assert enforce_policy(target("8080:80"), Policy()) == target("8080:80")  # "": today's behaviour


def test_the_configuration_reserves_the_ports_of_what_runs_on_this_device():
    config = conf.load("agent", None, ["agent.admin_port=19600", "mqtt.port=8883",
                                       "cloud.url=https://api.example.com", "policy.bind_address=0.0.0.0"])
    here = policy_from_config(config, on_host=lambda host: True)
    assert dict(here.reserved_ports) == {22: "ssh's port", 19600: "the agent's admin port (agent.admin_port)",
                                         8883: "the broker's port (mqtt.port)",
                                         443: "the cloud API's port (cloud.url)"}
    assert here.bind_address == ""  # 0.0.0.0 is every interface, as in a target's own ports
    assert set(dict(policy_from_config(config, on_host=lambda host: False).reserved_ports)) == {22, 19600}
    with pytest.raises(conf.ConfigError, match="policy.bind_address must be an IP address"):
        conf.load("agent", None, ["policy.bind_address=[::1]"])


def test_this_host_is_told_from_its_addresses():
    assert on_this_host("127.0.0.1") and on_this_host("localhost") and on_this_host("::1")
    assert not on_this_host("192.0.2.1")  # TEST-NET-1: never an address of a test machine
    assert on_this_host("no-such-host.invalid")  # cannot tell: reserve


# -- properties ------------------------------------------------------------------------------------------

LOOPBACK = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "::ffff:127.0.0.0/104")]
LINK_LOCAL = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "::ffff:169.254.0.0/112")]

addresses = st.one_of(st.just(""), st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
                      st.sampled_from(["127.0.0.1", "127.9.9.9", "::1", "169.254.3.4", "fe80::9", "10.1.2.3"]))
host_ports = st.one_of(st.none(), st.sampled_from([22, ADMIN, BROKER, 8080]), st.integers(1, 65535))
mappings = st.tuples(addresses, host_ports, st.integers(1, 65535), st.sampled_from(["tcp", "udp"]))


def spec(address: str, host_port: int | None, container: int, protocol: str) -> str:
    host = "" if host_port is None else str(host_port)
    if not address:
        return f"{host}:{container}/{protocol}" if host else f"{container}/{protocol}"
    shown = f"[{address}]" if ":" in address else address
    return f"{shown}:{host}:{container}/{protocol}"


def in_any(address: str, networks) -> bool:
    return bool(address) and any(ipaddress.ip_address(address) in network for network in networks
                                 if network.version == ipaddress.ip_address(address).version)


@given(st.lists(mappings, max_size=6), st.booleans())
def test_violations_are_exactly_the_reserved_ports_and_the_refused_addresses(ports, allow_loopback):
    try:
        doc = target(*(spec(*port) for port in ports))
    except InvalidTargetState:
        assume(False)  # the same host binding twice: not a target at all
    # low host ports have their own tests (test_policy_options)
    policy = Policy(POLICY.reserved_ports, allow_loopback, allow_privileged_ports=True)
    found = sorted((v.field, kind_of(v.reason), v.allowed_by or "") for v in check_policy(doc, policy))
    expected = []
    for mapping in doc.apps[0].services[0].config.ports:
        field = f"config.ports {mapping.spec()!r}"
        if mapping.host_port in dict(POLICY.reserved_ports):
            expected.append((field, "reserved", ""))
        if in_any(mapping.host_ip, LINK_LOCAL):
            expected.append((field, "link-local", ""))
        elif in_any(mapping.host_ip, LOOPBACK) and not allow_loopback:
            expected.append((field, "loopback", "policy.allow_loopback_ports"))
    assert found == sorted(expected)


def kind_of(reason: str) -> str:
    if reason.startswith("host port "):
        return "reserved"
    return reason.rpartition(" is ")[2]


@given(st.lists(mappings, max_size=6), st.sampled_from(["", "10.0.0.5", "192.168.1.9", "fd00::5"]))
def test_a_complying_target_runs_with_every_port_addressed_and_stays_a_valid_target(ports, bind_address):
    try:
        doc = target(*(spec(*port) for port in ports))
    except InvalidTargetState:
        assume(False)
    policy = Policy(allow_loopback_ports=True, bind_address=bind_address)
    assume(not check_policy(doc, policy))
    enforced = enforce_policy(doc, policy)
    before, after = doc.apps[0].services[0].config.ports, enforced.apps[0].services[0].config.ports
    assert [(m.container_port, m.protocol, m.host_port) for m in before] == \
           [(m.container_port, m.protocol, m.host_port) for m in after]
    # as multisets: a port given an address may sort elsewhere among its equals (the canonical order)
    assert sorted(m.host_ip for m in after) == sorted(m.host_ip or bind_address for m in before)
    if not bind_address:
        assert enforced == doc
    assert parse_target_state(to_json(enforced)) == enforced
    assert enforce_policy(enforced, policy) == enforced


def test_plan_refuses_a_stored_target_that_breaks_the_policy_before_asking_the_engine(tmp_path):
    config = conf.load("agent", None, [f"store.path={tmp_path}/agent.db"])
    with Store.open(config["store"]["path"]) as store:
        store.save_target(to_json(target("127.0.0.1:8090:80")), '"old"', 1.0)
    with pytest.raises(PlanError, match="the stored target state is not applied: policy: apps.1 service web: "
                                        "config.ports '127.0.0.1:8090:80/tcp': host address 127.0.0.1 is loopback"):
        current_plan(config)
