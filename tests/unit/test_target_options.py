"""Compose's container options in the target state: two spellings parse, serialise and hash the same; what
cannot be applied is refused by path; configs without options hash as they did before options existed."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.target.model import ContainerInfo, EngineState, Resource
from actors.target.planner import plan
from messages.protocol import json as strict_json
from messages.protocol.target_state import (
    HASHED_FIELDS,
    InvalidTargetState,
    config_field_hashes,
    config_hash,
    parse_target_state,
    to_json,
)

PATH = "apps.1.services[0].config"


def service_of(**config):
    target = parse_target_state({"apps": {"1": {"services": [
        {"serviceName": "svc", "config": {"image": "busybox:1", **config}}]}}})
    return target.apps[0].services[0]


SAME = [
    ({"mem_limit": "1g"}, {"mem_limit": 1024 ** 3}, {"mem_limit": "1024m"}, {"mem_limit": "1048576k"},
     {"mem_limit": "1gb"}),
    ({"shm_size": "64m"}, {"shm_size": "64M"}, {"shm_size": 67108864}),
    ({"cpus": 0.5}, {"cpus": "0.5"}, {"cpus": "0.50"}),
    ({"cpus": 2}, {"cpus": "2.0"}, {"cpus": 2.0}),
    ({"stop_signal": "SIGTERM"}, {"stop_signal": "TERM"}, {"stop_signal": "term"}, {"stop_signal": 15},
     {"stop_signal": "15"}),
    ({"stop_grace_period": "1m30s"}, {"stop_grace_period": 90}, {"stop_grace_period": "90s"},
     {"stop_grace_period": "1m29s1000ms"}),
    ({"cap_add": ["NET_ADMIN", "SYS_TIME"]}, {"cap_add": ["cap_sys_time", "CAP_NET_ADMIN", "net_admin"]}),
    ({"devices": ["/dev/ttyUSB0"]}, {"devices": ["/dev/ttyUSB0:/dev/ttyUSB0"]},
     {"devices": ["/dev/ttyUSB0:/dev/ttyUSB0:rwm"]}, {"devices": ["/dev/ttyUSB0:/dev/ttyUSB0:mwr"]},
     {"devices": ["/dev/ttyUSB0:rwm"]}),
    ({"extra_hosts": ["a:10.0.0.1", "b:::1"]}, {"extra_hosts": {"b": "0:0::1", "a": "10.0.0.1"}},
     {"extra_hosts": ["b=::1", "a=10.0.0.1"]}),
    ({"tmpfs": "/run"}, {"tmpfs": ["/run/"]}),
    ({"tmpfs": ["/run:size=64m,mode=1777"]}, {"tmpfs": ["/run:mode=1777,size=64m"]}),
    ({"ulimits": {"nproc": 10}}, {"ulimits": {"nproc": {"soft": 10, "hard": 10}}}),
    ({"sysctls": {"net.core.somaxconn": 1024}}, {"sysctls": ["net.core.somaxconn=1024"]},
     {"sysctls": {"net.core.somaxconn": "1024"}}),
    ({"pids_limit": 0}, {"pids_limit": -1}, {}),
    ({"read_only": False, "init": False, "privileged": False}, {}),
    ({"security_opt": ["no-new-privileges"]}, {"security_opt": ["no-new-privileges:true"]},
     {"security_opt": ["no-new-privileges=true"]}),
    ({"expose": [80, "53/udp"]}, {"expose": ["53/udp", "80/tcp", "80"]}),
    ({"working_dir": "/srv/app/"}, {"working_dir": "/srv//app"}),
    ({"user": 1000}, {"user": "1000"}),
    ({"entrypoint": "sh -c 'echo hi'"}, {"entrypoint": ["sh", "-c", "echo hi"]}),
    ({"restart": "on-failure:0"}, {"restart": "on-failure"}),
    ({"volumes": ["/var/lib/app/:/data"]}, {"volumes": ["/var//lib/app:/data/:rw"]}),
    ({"logging": {"driver": "local", "options": {"max-file": 3}}},
     {"logging": {"driver": "local", "options": {"max-file": "3"}}}),
]


@pytest.mark.parametrize("spellings", SAME, ids=lambda spellings: next(iter(spellings[0]), "defaults"))
def test_two_spellings_parse_serialise_and_hash_the_same(spellings):
    services = [service_of(**spelling) for spelling in spellings]
    assert all(service == services[0] for service in services)
    assert len({config_hash(service) for service in services}) == 1


DIFFERENT = [
    ({"mem_limit": "1g"}, {"mem_limit": "1025m"}),
    ({"dns": ["1.1.1.1", "9.9.9.9"]}, {"dns": ["9.9.9.9", "1.1.1.1"]}),  # the order of lookup
    ({"restart": "on-failure:3"}, {"restart": "on-failure"}),
    ({"volumes": ["/a:/data"]}, {"volumes": ["/a:/data:ro"]}),
    ({"network_mode": "host"}, {"network_mode": "none"}),
    ({"cap_add": ["NET_ADMIN"]}, {"cap_drop": ["NET_ADMIN"]}),
]


@pytest.mark.parametrize("first, second", DIFFERENT)
def test_different_settings_hash_differently(first, second):
    assert config_hash(service_of(**first)) != config_hash(service_of(**second))


def test_a_config_without_options_hashes_as_before_options_existed():
    service = service_of(ports=["8080:80"], environment={"A": "1"}, volumes=["data:/data"], restart="on-failure")
    canonical = to_json(parse_target_state({"apps": {"1": {"services": [
        {"serviceName": "svc", "config": {"image": "busybox:1", "ports": ["8080:80"], "environment": {"A": "1"},
                                          "volumes": ["data:/data"], "restart": "on-failure"}}]}}}))
    config = canonical["apps"]["1"]["services"][0]["config"]
    # The fields hashed before options (and health checks, hashed only when set) existed.
    before = [name for name in HASHED_FIELDS if name != "healthcheck"]
    old = hashlib.sha256(strict_json.canonical_bytes({name: config[name] for name in before})).hexdigest()
    assert config_hash(service) == old


REFUSED = [
    ({"mem_limit": "lots"}, "mem_limit", "is not a size"),
    ({"mem_limit": "1.5g"}, "mem_limit", "is not a size"),
    ({"mem_limit": 0}, "mem_limit", "is not a positive size"),
    ({"cpus": "-1"}, "cpus", "between"),
    ({"cpus": "0.0000000001"}, "cpus", "between"),
    ({"cpus": True}, "cpus", "must be a number"),
    ({"stop_signal": "SIGNOPE"}, "stop_signal", "is not a signal"),
    ({"stop_grace_period": "500ms"}, "stop_grace_period", "whole number of seconds"),
    ({"stop_grace_period": "10 seconds"}, "stop_grace_period", "is not a duration"),
    ({"ulimits": {"files": 10}}, "ulimits.files", "unknown limit"),
    ({"ulimits": {"nofile": {"soft": 20, "hard": 10}}}, "ulimits.nofile", "above the hard limit"),
    ({"sysctls": {"kernel.panic": 1}}, "sysctls.kernel.panic", "not a namespaced sysctl"),
    ({"sysctls": {"vm.swappiness": 1}}, "sysctls.vm.swappiness", "not a namespaced sysctl"),
    ({"devices": ["ttyUSB0"]}, "devices[0]", "is not an absolute path"),
    ({"devices": ["/dev/a:/dev/b:rwx"]}, "devices[0]", "permissions"),
    ({"devices": ["/dev/a:/dev/x", "/dev/b:/dev/x"]}, "devices[1]", "mapped twice"),
    ({"network_mode": "bridge"}, "network_mode", "must be one of host, none"),
    ({"network_mode": "container:db"}, "network_mode", "must be one of host, none"),
    ({"network_mode": "host", "ports": ["80:80"]}, "ports", "publishes no ports"),
    ({"network_mode": "host", "networks": ["back"]}, "networks", "joins no network"),
    ({"network_mode": "host", "sysctls": {"net.core.somaxconn": 1}}, "sysctls", "would change the host's network"),
    ({"pid": "container:x"}, "pid", "must be one of host"),
    ({"ipc": "service:x"}, "ipc", "must be one of"),
    ({"privileged": "true"}, "privileged", "must be a boolean"),
    ({"cap_add": ["NET ADMIN"]}, "cap_add[0]", "is not a capability"),
    ({"extra_hosts": ["nohost"]}, "extra_hosts[0]", "is not name:address"),
    ({"extra_hosts": ["a:not-an-ip"]}, "extra_hosts[0]", "is not an IP address"),
    ({"dns": ["1.1.1.1", "1.1.1.1"]}, "dns", "listed twice"),
    ({"hostname": "-bad"}, "hostname", "is not a host name"),
    ({"user": "root; rm"}, "user", "is not user[:group]"),
    ({"working_dir": "relative"}, "working_dir", "is not an absolute path"),
    ({"tmpfs": ["/run", "/run/"]}, "tmpfs[1]", "mounted twice"),
    ({"logging": {"driver": "json-file", "opts": {}}}, "logging.opts", "unknown field"),
    ({"expose": ["80-90"]}, "expose[0]", "is not port"),
    ({"restart": "on-failure:x"}, "restart", "on-failure:N"),
    ({"restart": "always:3"}, "restart", "on-failure:N"),
    ({"volumes": ["./data:/data"]}, "volumes[0]", "absolute host path"),
    ({"container_name": "x"}, "container_name", "unknown field"),
]


@pytest.mark.parametrize("config, field, problem", REFUSED)
def test_what_cannot_be_applied_is_refused_by_path(config, field, problem):
    with pytest.raises(InvalidTargetState) as refused:
        service_of(**config)
    assert refused.value.reason.startswith(f"{PATH}.{field}: ")
    assert problem in refused.value.reason


def test_a_bind_mount_needs_no_volume_and_on_failure_n_stays_exited():
    target = parse_target_state({"apps": {"1": {"services": [{"serviceName": "svc", "config": {
        "image": "busybox:1", "volumes": ["/srv:/srv"], "restart": "on-failure:2"}}]}}})
    service = target.apps[0].services[0]
    gave_up = ContainerInfo(id="c1", name="x", app_id="1", service_name="svc", config_hash=config_hash(service),
                            image="busybox:1", status="exited", exit_code=1, networks=frozenset({"default"}))
    current = EngineState(containers=(gave_up,), images=frozenset({"busybox:1"}),
                          networks=frozenset({Resource("1", "default")}))
    assert plan(target, current) == []  # the engine gave up after 2 retries: the agent does not override it
    fresh = EngineState(images=frozenset({"busybox:1"}), networks=frozenset({Resource("1", "default")}))
    assert [step.action.value for step in plan(target, fresh)] == ["create"]  # no volume to create first


def test_a_host_network_service_joins_no_network():
    target = parse_target_state({"apps": {"1": {"services": [{"serviceName": "svc", "config": {
        "image": "busybox:1", "network_mode": "host"}}]}}})
    service = target.apps[0].services[0]
    assert service.config.networks == ()
    running = ContainerInfo(id="c1", name="x", app_id="1", service_name="svc", config_hash=config_hash(service),
                            image="busybox:1", status="running")
    assert plan(target, EngineState(containers=(running,), images=frozenset({"busybox:1"}))) == []


# -- property: any valid options survive the canonical form unchanged ---------------------------------------------

sizes = st.one_of(st.integers(1, 2 ** 40), st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 4096),
                                                        st.sampled_from(["b", "k", "m", "g", "K", "M", "kb", "mb"])))
names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
options = st.fixed_dictionaries({}, optional={
    "mem_limit": sizes, "mem_reservation": sizes, "shm_size": sizes,
    "cpus": st.decimals(min_value="0.001", max_value="64", places=3).map(str),
    "pids_limit": st.integers(-1, 10 ** 6),
    "stop_signal": st.sampled_from(["TERM", "SIGINT", "9", "SIGQUIT", 15, "hup"]),
    "stop_grace_period": st.one_of(st.integers(0, 3600), st.builds(lambda m, s: f"{m}m{s}s", st.integers(0, 59),
                                                                    st.integers(0, 59))),
    "cap_add": st.lists(st.sampled_from(["NET_ADMIN", "cap_sys_time", "SYS_PTRACE", "net_admin"]), max_size=4),
    "cap_drop": st.lists(st.sampled_from(["MKNOD", "NET_RAW", "ALL"]), max_size=3),
    "devices": st.lists(st.sampled_from(["/dev/null", "/dev/zero:/dev/z", "/dev/full:/dev/f:r"]), max_size=3,
                        unique=True),
    "dns": st.lists(st.sampled_from(["1.1.1.1", "9.9.9.9", "::1"]), unique=True, max_size=3),
    "extra_hosts": st.dictionaries(names, st.sampled_from(["10.0.0.1", "::1", "192.168.0.7"]), max_size=3),
    "tmpfs": st.lists(st.sampled_from(["/run", "/tmp:size=1m", "/cache:mode=1777,size=2m"]), unique=True),
    "read_only": st.booleans(), "init": st.booleans(), "privileged": st.booleans(),
    "ulimits": st.dictionaries(st.sampled_from(["nofile", "nproc", "core"]), st.integers(1, 4096), max_size=3),
    "sysctls": st.dictionaries(st.sampled_from(["net.core.somaxconn", "kernel.shmmax", "net.ipv4.tcp_syncookies"]),
                               st.integers(0, 4096), max_size=3),
    "hostname": names, "user": st.sampled_from(["1000", "1000:1000", "nobody", 0]),
    "working_dir": st.sampled_from(["/", "/srv", "/srv/app/", "//x"]),
    "entrypoint": st.lists(names, min_size=1, max_size=3),
    "expose": st.lists(st.integers(1, 65535), max_size=4),
    "security_opt": st.lists(st.sampled_from(["no-new-privileges", "seccomp=unconfined", "apparmor:unconfined"]),
                             unique=True),
    "logging": st.builds(lambda driver, options: {"driver": driver, "options": options},
                         st.sampled_from(["json-file", "local", "none"]),
                         st.dictionaries(st.sampled_from(["max-size", "max-file"]), st.sampled_from(["1m", "3"]))),
    "ipc": st.sampled_from(["host", "private", "shareable", "none"]), "pid": st.just("host"),
})


@settings(max_examples=300)
@given(options)
def test_any_valid_options_survive_the_canonical_form_and_its_hash(config):
    service = service_of(**config)
    again = parse_target_state(to_json(parse_target_state({"apps": {"1": {"services": [
        {"serviceName": "svc", "config": {"image": "busybox:1", **config}}]}}})))
    assert again.apps[0].services[0] == service
    assert config_hash(again.apps[0].services[0]) == config_hash(service)


def test_an_option_set_or_unset_is_named_as_the_change():
    with_limit, without = service_of(mem_limit="1g"), service_of()
    created = ContainerInfo(id="c1", name="x", app_id="1", service_name="svc", config_hash=config_hash(with_limit),
                            image="busybox:1", status="exited", networks=frozenset({"default"}),
                            field_hashes=tuple(sorted(config_field_hashes(with_limit).items())))
    target = parse_target_state({"apps": {"1": {"services": [
        {"serviceName": "svc", "config": {"image": "busybox:1"}}]}}})
    assert target.apps[0].services[0] == without
    (remove,) = plan(target, EngineState(containers=(created,), images=frozenset({"busybox:1"}),
                                         networks=frozenset({Resource("1", "default")})))
    assert remove.reason == "mem_limit changed"
