"""Every container option on the real engine: created, read back by `docker inspect` as asked, and planned
again with zero steps, also by a new engine adapter (an agent restart): the invariant that keeps an added
field from becoming a restart loop."""
import pathlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.target.engine.adapter import DEFAULT_OPTIONS, DockerEngine
from actors.target.planner import plan
from tests.integration.test_engine import (  # noqa: F401  (fixtures)
    IMAGE_1,
    client,
    converge,
    engine,
    owner,
    target_of,
)
from tests.support.inspect_options import differences

BIND_ROOT = str(pathlib.Path(__file__).resolve().parent)  # any directory on the host; mounted read-only

# option config -> what `docker inspect` must show (a function of the inspect document)
CASES = {
    "entrypoint": ({"entrypoint": ["/bin/sh", "-c"], "command": ["sleep 600"]},
                   lambda c: c["Config"]["Entrypoint"] == ["/bin/sh", "-c"]),
    "working_dir": ({"working_dir": "/tmp/"}, lambda c: c["Config"]["WorkingDir"] == "/tmp"),
    "user": ({"user": "1000:1000"}, lambda c: c["Config"]["User"] == "1000:1000"),
    "hostname": ({"hostname": "gateway"}, lambda c: c["Config"]["Hostname"] == "gateway"),
    "extra_hosts": ({"extra_hosts": ["db.local:10.0.0.5", "v6=::1"]},
                    lambda c: sorted(c["HostConfig"]["ExtraHosts"]) == ["db.local:10.0.0.5", "v6:::1"]),
    "dns": ({"dns": ["9.9.9.9", "1.1.1.1"]}, lambda c: c["HostConfig"]["Dns"] == ["9.9.9.9", "1.1.1.1"]),
    "tmpfs": ({"tmpfs": ["/run:size=64m,mode=1777", "/cache"]},
              lambda c: c["HostConfig"]["Tmpfs"] == {"/run": "mode=1777,size=64m", "/cache": ""}),
    "read_only": ({"read_only": True}, lambda c: c["HostConfig"]["ReadonlyRootfs"] is True),
    "init": ({"init": True}, lambda c: c["HostConfig"]["Init"] is True),
    "stop_signal": ({"stop_signal": "TERM"}, lambda c: c["Config"]["StopSignal"] == "SIGTERM"),
    "stop_grace_period": ({"stop_grace_period": "1m30s"}, lambda c: c["Config"]["StopTimeout"] == 90),
    "shm_size": ({"shm_size": "128m"}, lambda c: c["HostConfig"]["ShmSize"] == 128 * 1024 ** 2),
    "ulimits": ({"ulimits": {"nproc": 512, "nofile": {"soft": 1024, "hard": 2048}}},
                lambda c: sorted((u["Name"], u["Soft"], u["Hard"]) for u in c["HostConfig"]["Ulimits"])
                == [("nofile", 1024, 2048), ("nproc", 512, 512)]),
    "sysctls": ({"sysctls": {"net.core.somaxconn": 1024, "kernel.shmmax": "68719476736"}},
                lambda c: c["HostConfig"]["Sysctls"] == {"net.core.somaxconn": "1024",
                                                         "kernel.shmmax": "68719476736"}),
    "cpus": ({"cpus": 0.5}, lambda c: c["HostConfig"]["NanoCpus"] == 500_000_000),
    "mem_limit": ({"mem_limit": "64m"}, lambda c: c["HostConfig"]["Memory"] == 64 * 1024 ** 2),
    "mem_reservation": ({"mem_reservation": "32m"},
                        lambda c: c["HostConfig"]["MemoryReservation"] == 32 * 1024 ** 2),
    "pids_limit": ({"pids_limit": 100}, lambda c: c["HostConfig"]["PidsLimit"] == 100),
    "logging": ({"logging": {"driver": "json-file", "options": {"max-size": "1m", "max-file": 3}}},
                lambda c: c["HostConfig"]["LogConfig"] == {"Type": "json-file",
                                                           "Config": {"max-size": "1m", "max-file": "3"}}),
    "cap_add": ({"cap_add": ["CAP_NET_ADMIN"]}, lambda c: c["HostConfig"]["CapAdd"] == ["NET_ADMIN"]),
    "cap_drop": ({"cap_drop": ["net_raw", "MKNOD"]}, lambda c: c["HostConfig"]["CapDrop"] == ["MKNOD", "NET_RAW"]),
    "devices": ({"devices": ["/dev/null:/dev/sensor:rw"]}, lambda c: c["HostConfig"]["Devices"] == [
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/sensor", "CgroupPermissions": "rw"}]),
    # Created, not started: this test machine's engine runs in a container that may not grant every capability.
    "privileged": ({"privileged": True, "running": False}, lambda c: c["HostConfig"]["Privileged"] is True),
    "network_mode_host": ({"network_mode": "host"}, lambda c: c["HostConfig"]["NetworkMode"] == "host"),
    "network_mode_none": ({"network_mode": "none"}, lambda c: c["HostConfig"]["NetworkMode"] == "none"),
    "pid": ({"pid": "host"}, lambda c: c["HostConfig"]["PidMode"] == "host"),
    "ipc": ({"ipc": "shareable"}, lambda c: c["HostConfig"]["IpcMode"] == "shareable"),
    "security_opt": ({"security_opt": ["no-new-privileges"]},
                     # with pid: host the engine adds label=disable of its own
                     lambda c: "no-new-privileges:true" in c["HostConfig"]["SecurityOpt"]),
    "expose": ({"expose": ["8080", 53, "53/udp"], "ports": ["9000"]},
               lambda c: set(c["Config"]["ExposedPorts"]) == {"8080/tcp", "53/tcp", "53/udp", "9000/tcp"}
               and {port for port, bound in c["HostConfig"]["PortBindings"].items() if bound} == {"9000/tcp"}),
    "bind_mount": ({"volumes": [f"{BIND_ROOT}/:/data:ro"]}, lambda c: [
        (m["Type"], m["Source"], m["Destination"], m["RW"]) for m in c["Mounts"]] == [
        ("bind", BIND_ROOT, "/data", False)]),
    "restart_on_failure": ({"restart": "on-failure:3"}, lambda c: c["HostConfig"]["RestartPolicy"] == {
        "Name": "on-failure", "MaximumRetryCount": 3}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_option_is_applied_and_read_back_as_unchanged(client, engine, owner, name):  # noqa: F811
    config, applied = CASES[name]
    target = target_of({"svc": config})
    current, _ = converge(engine, target)
    (info,) = current.containers
    inspected = client.api.inspect_container(info.id)
    assert applied(inspected), inspected["Config"] | inspected["HostConfig"]
    assert inspected["State"]["Status"] == ("running" if config.get("running", True) else "created")
    assert plan(target, engine.read_current()) == []
    # What an agent restart reads: the engine alone.
    restarted = DockerEngine(owner, options=replace(DEFAULT_OPTIONS, timeout=20))
    try:
        assert plan(target, restarted.read_current()) == []
    finally:
        restarted.close()


def test_changing_an_option_recreates_and_names_it(client, engine, owner):  # noqa: F811
    converge(engine, target_of({"svc": {"mem_limit": "64m"}}))
    (stop,) = plan(target_of({"svc": {"mem_limit": "1024m"}}), engine.read_current())
    assert stop.reason == "mem_limit changed"
    assert plan(target_of({"svc": {"mem_limit": 64 * 1024 ** 2}}), engine.read_current()) == []


def test_every_option_at_once_converges_and_stays(client, engine, owner):  # noqa: F811
    config: dict = {}
    for name, (case, _) in CASES.items():
        if name not in ("network_mode_host", "network_mode_none", "restart_on_failure", "user", "privileged"):
            config = {**config, **case}
    target = target_of({"svc": config})
    current, _ = converge(engine, target)
    inspected = client.api.inspect_container(current.containers[0].id)
    failed = [name for name, (case, applied) in CASES.items()
              if case.items() <= config.items() and not applied(inspected)]
    assert failed == [], inspected["HostConfig"]
    assert plan(target, engine.read_current()) == []


COMBINABLE = sorted(set(CASES) - {"network_mode_host", "network_mode_none", "privileged", "user", "restart_on_failure"})


def spelled_size(megabytes: int, spelling: int):
    return [f"{megabytes}m", megabytes * 1024 ** 2, f"{megabytes * 1024}k", f"{megabytes}MB"][spelling]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.sets(st.sampled_from(COMBINABLE), max_size=6), megabytes=st.integers(8, 512),
       spelling=st.integers(0, 3), cpus=st.decimals("0.01", "2", places=2), nofile=st.integers(64, 4096),
       signal_number=st.sampled_from([2, 3, 15, "TERM", "sigusr1"]))
def test_random_valid_configs_survive_create_read_back_and_plan(client, engine, owner, cases, megabytes,  # noqa: F811
                                                                spelling, cpus, nofile, signal_number):
    config: dict = {"mem_limit": spelled_size(megabytes, spelling), "cpus": str(cpus),
                    "ulimits": {"nofile": nofile}, "stop_signal": signal_number}
    for name in cases:
        config.update(CASES[name][0])
    target = target_of({"svc": config})
    current, _ = converge(engine, target)
    (info,) = current.containers
    inspected = client.api.inspect_container(info.id)
    assert differences(target.apps[0].services[0].config, inspected) == {}
    assert plan(target, engine.read_current()) == []
