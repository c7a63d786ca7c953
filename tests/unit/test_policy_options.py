"""The device policy over compose's container options: each rule refuses by default, naming the service, the
field and the key that would allow it, and accepts when that key allows it; the whole target is rejected."""
from __future__ import annotations

import os
import posixpath

import pytest

import conf
from actors.target.policy import (
    DEFAULT_CAPABILITIES,
    Policy,
    PolicyRefused,
    check_policy,
    enforce_policy,
    image_registry,
    policy_from_config,
)
from messages.protocol.target_state import parse_target_state


def target(image="busybox:1", **config):
    return parse_target_state({"apps": {"home": {"services": [
        {"serviceName": "gateway", "config": {"image": image, **config}},
        {"serviceName": "plain", "config": {"image": "busybox:1"}}]}}})


# config, the field named, the policy key that allows it, that key's allowing value (as Policy takes it)
RULES = [
    ({"privileged": True}, "config.privileged", "policy.allow_privileged", True),
    ({"network_mode": "host"}, "config.network_mode", "policy.allow_host_network", True),
    ({"pid": "host"}, "config.pid", "policy.allow_host_pid", True),
    ({"ipc": "host"}, "config.ipc", "policy.allow_host_ipc", True),
    ({"devices": ["/dev/ttyUSB0"]}, "config.devices", "policy.devices", ("/dev/ttyUSB*",)),
    ({"cap_add": ["NET_ADMIN"]}, "config.cap_add", "policy.cap_add", ("NET_ADMIN",)),
    ({"cap_add": ["ALL"]}, "config.cap_add", "policy.cap_add", ("ALL",)),
    ({"volumes": ["/sys/class/gpio:/gpio"]}, "config.volumes", "policy.bind_roots", ("/sys/class/gpio",)),
    ({"volumes": ["/var/lib/myapp/data:/data:ro"]}, "config.volumes", "policy.bind_roots", ("/var/lib/myapp",)),
    ({"security_opt": ["seccomp=unconfined"]}, "config.security_opt", "policy.security_opt",
     ("seccomp:unconfined",)),
    ({"ports": ["80:8080"]}, "config.ports '80:8080/tcp'", "policy.allow_privileged_ports", True),
    ({"ports": ["10.0.0.5:443:443/udp"]}, "config.ports '10.0.0.5:443:443/udp'", "policy.allow_privileged_ports",
     True),
    ({"image": "ghcr.io/acme/gateway:1"}, "config.image", "policy.registries", ("docker.io",)),
]


def allowing(key: str, value) -> Policy:
    return Policy(**{key.removeprefix("policy."): value})


@pytest.mark.parametrize("config, field, key, value", RULES, ids=[f"{rule[2]}-{rule[1]}" for rule in RULES])
def test_each_rule_refuses_by_default_with_its_key_and_accepts_when_allowed(config, field, key, value):
    image = config.pop("image", "busybox:1")
    try:
        refused = target(image, **config)
        policy = Policy(registries=("docker.io",)) if key == "policy.registries" else Policy()
        (violation,) = check_policy(refused, policy)
        assert (violation.app_id, violation.service_name, violation.field, violation.allowed_by) == (
            "home", "gateway", field, key)
        assert str(violation).startswith(f"apps.home service gateway: {field}: ")
        assert str(violation).endswith(" allows it)")
        with pytest.raises(PolicyRefused) as whole:
            enforce_policy(refused, policy)
        assert key in whole.value.reason
        if key == "policy.registries":
            assert check_policy(refused, Policy(registries=("docker.io", "ghcr.io"))) == []
        else:
            assert check_policy(refused, allowing(key, value)) == []
    finally:
        config["image"] = image  # the parametrised dict is shared between runs


def test_the_refusal_says_how_to_allow_it():
    (violation,) = check_policy(target(devices=["/dev/ttyUSB0:/dev/serial"]), Policy())
    assert str(violation) == ('apps.home service gateway: config.devices: device /dev/ttyUSB0 is not in '
                              'policy.devices (policy.devices = ["/dev/ttyUSB0"] allows it)')


def test_docker_default_capabilities_need_no_allowance_and_others_each_their_own():
    assert check_policy(target(cap_add=sorted(DEFAULT_CAPABILITIES)), Policy()) == []
    found = check_policy(target(cap_add=["NET_ADMIN", "SYS_TIME", "CHOWN"]), Policy(cap_add=("NET_ADMIN",)))
    assert [v.reason for v in found] == ["capability SYS_TIME is beyond Docker's default set"]
    assert check_policy(target(cap_drop=["ALL"]), Policy()) == []  # dropping is always allowed


def test_device_globs_match_host_paths_only():
    policy = Policy(devices=("/dev/ttyUSB*", "/dev/gpiochip0"))
    assert check_policy(target(devices=["/dev/ttyUSB3:/dev/ttyS0", "/dev/gpiochip0"]), policy) == []
    found = check_policy(target(devices=["/dev/ttyS0:/dev/ttyUSB0", "/dev/gpiochip01"]), policy)
    assert [v.reason for v in found] == ["device /dev/gpiochip01 is not in policy.devices",
                                         "device /dev/ttyS0 is not in policy.devices"]


def test_bind_roots_are_directories_not_prefixes_and_symlinks_out_are_refused(tmp_path):
    root = tmp_path / "myapp"
    (root / "data").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    policy = Policy(bind_roots=(str(root),), resolve=os.path.realpath)
    assert check_policy(target(volumes=[f"{root}:/a", f"{root}/data:/b"]), policy) == []
    refused = check_policy(target(volumes=[f"{root}-other:/a", f"{root}/escape:/b", "/etc:/c"]), policy)
    assert [v.reason.split(" is ")[0] for v in refused] == [
        f"bind mount of {path}" for path in (f"{root}-other", f"{root}/escape", "/etc")]
    named = check_policy(target(volumes=["data:/data"]), Policy())
    assert named == []  # named volumes are the app's own


def test_no_new_privileges_only_takes_away_and_is_always_allowed():
    assert check_policy(target(security_opt=["no-new-privileges"]), Policy()) == []
    (violation,) = check_policy(target(security_opt=["apparmor=unconfined", "no-new-privileges"]), Policy())
    assert violation.reason == "security option apparmor:unconfined is not in policy.security_opt"


def test_host_ports_below_1024_and_the_engine_choosing_ports():
    assert check_policy(target(ports=["8080:80", "80", "1024:1024"]), Policy()) == []
    assert [v.field for v in check_policy(target(ports=["1023:1023", "443:443"]), Policy())] == [
        "config.ports '443:443/tcp'", "config.ports '1023:1023/tcp'"]
    assert check_policy(target(ports=["443:443"]), Policy(allow_privileged_ports=True)) == []


@pytest.mark.parametrize("image, registry", [
    ("busybox", "docker.io"), ("library/busybox:1", "docker.io"), ("acme/app", "docker.io"),
    ("docker.io/acme/app", "docker.io"), ("ghcr.io/acme/app:1", "ghcr.io"), ("localhost:5000/app", "localhost:5000"),
    ("localhost/app", "localhost"), ("registry.example.com:443/a/b@sha256:" + "0" * 64, "registry.example.com:443"),
])
def test_the_registry_of_an_image(image, registry):
    parsed = target(image).apps[0].services[0].config.image
    assert image_registry(parsed) == registry


def test_registries_empty_means_any_and_globs_restrict():
    assert check_policy(target("ghcr.io/acme/x:1"), Policy()) == []
    policy = Policy(registries=("*.example.com", "docker.io"))
    assert check_policy(target("registry.example.com/x:1"), policy) == []
    (violation,) = check_policy(target("ghcr.io/acme/x:1"), policy)
    assert violation.reason == "registry ghcr.io of ghcr.io/acme/x:1 is not in policy.registries"


def test_every_violation_of_a_target_is_named_at_once():
    found = check_policy(target(privileged=True, pid="host", devices=["/dev/null"], ports=["22:22", "80:80"]),
                         Policy(reserved_ports=((22, "ssh's port"),)))
    assert [v.allowed_by for v in found] == [None, "policy.allow_privileged_ports", "policy.allow_privileged",
                                             "policy.allow_host_pid", "policy.devices"]


def test_the_configuration_builds_the_policy():
    config = conf.load("agent", overrides=[
        "policy.allow_privileged=true", 'policy.devices=["/dev/ttyUSB*"]', 'policy.cap_add=["cap_net_admin"]',
        'policy.bind_roots=["/var/lib/myapp/"]', 'policy.registries=["docker.io"]', "policy.allow_host_pid=true",
        'policy.security_opt=["seccomp:unconfined"]', "policy.allow_privileged_ports=true"])
    policy = policy_from_config(config, on_host=lambda host: False)
    assert (policy.allow_privileged, policy.devices, policy.cap_add, policy.bind_roots, policy.registries) == (
        True, ("/dev/ttyUSB*",), ("NET_ADMIN",), ("/var/lib/myapp",), ("docker.io",))
    assert policy.allow_host_pid and policy.allow_privileged_ports and not policy.allow_host_network
    assert policy.security_opt == ("seccomp:unconfined",) and policy.resolve is os.path.realpath
    defaults = policy_from_config(conf.load("agent"), on_host=lambda host: False)
    assert defaults == Policy(reserved_ports=defaults.reserved_ports, resolve=os.path.realpath)
    assert Policy().resolve is posixpath.normpath


@pytest.mark.parametrize("override, problem", [
    ('policy.bind_roots=["relative"]', "must be absolute paths other than /"),
    ('policy.bind_roots=["/"]', "must be absolute paths other than /"),
    ('policy.devices=["ttyUSB0"]', "must be absolute paths other than /"),
    ("policy.allow_privileged=1", "must be bool"),
])
def test_bad_policy_settings_are_refused_at_start(override, problem):
    with pytest.raises(conf.ConfigError) as refused:
        conf.load("agent", overrides=[override])
    assert problem in str(refused.value)


def test_a_target_the_policy_refused_is_fetched_again_on_the_first_poll_of_a_start():
    from actors.target.poller import known_etag
    from store import TargetRecord, TargetRejection

    stored = TargetRecord({}, '"good"', 100.0, seq=5)
    by_policy = TargetRejection('"serial"', "policy: apps.1 service gateway: config.devices: ...", 101.0, seq=6)
    invalid = TargetRejection('"broken"', "apps.1.services[0].config.image: required field is missing", 101.0, seq=6)
    assert known_etag(stored, by_policy) == '"serial"'
    assert known_etag(stored, by_policy, recheck_policy=True) == '"good"'  # the policy may allow it now
    assert known_etag(stored, invalid, recheck_policy=True) == '"broken"'  # no policy makes it valid
    assert known_etag(None, by_policy, recheck_policy=True) is None
