"""What `docker inspect` says a container was created with, in the target state's normalised terms: lets a
test check that every field of a service config was applied, whatever the config."""
from __future__ import annotations

from typing import Any

from messages.protocol.target_state import ServiceConfig


def _exposed(inspected: dict) -> tuple[str, ...]:
    published = {spec for spec, bound in (inspected["HostConfig"]["PortBindings"] or {}).items() if bound}
    return tuple(sorted(set(inspected["Config"].get("ExposedPorts") or {}) - published,
                        key=lambda spec: (int(spec.partition("/")[0]), spec)))


READ_BACK: dict[str, Any] = {
    "entrypoint": lambda c: tuple(c["Config"]["Entrypoint"] or ()) or None,
    "working_dir": lambda c: c["Config"]["WorkingDir"] or None,
    "user": lambda c: c["Config"]["User"] or None,
    "hostname": lambda c: c["Config"]["Hostname"],
    "extra_hosts": lambda c: tuple(sorted(tuple(entry.split(":", 1)) for entry in c["HostConfig"]["ExtraHosts"] or ())),
    "dns": lambda c: tuple(c["HostConfig"]["Dns"] or ()),
    "tmpfs": lambda c: tuple(sorted((c["HostConfig"]["Tmpfs"] or {}).items())),
    "read_only": lambda c: c["HostConfig"]["ReadonlyRootfs"],
    "init": lambda c: bool(c["HostConfig"]["Init"]),
    "stop_signal": lambda c: c["Config"].get("StopSignal"),
    "stop_grace_period": lambda c: c["Config"].get("StopTimeout"),
    "shm_size": lambda c: c["HostConfig"]["ShmSize"],
    "ulimits": lambda c: tuple(sorted((u["Name"], u["Soft"], u["Hard"]) for u in c["HostConfig"]["Ulimits"] or ())),
    "sysctls": lambda c: tuple(sorted((c["HostConfig"].get("Sysctls") or {}).items())),
    "cpus": lambda c: c["HostConfig"]["NanoCpus"],
    "mem_limit": lambda c: c["HostConfig"]["Memory"],
    "mem_reservation": lambda c: c["HostConfig"]["MemoryReservation"],
    "pids_limit": lambda c: c["HostConfig"]["PidsLimit"],
    "logging": lambda c: (c["HostConfig"]["LogConfig"]["Type"],
                          tuple(sorted(c["HostConfig"]["LogConfig"]["Config"].items()))),
    "cap_add": lambda c: tuple(sorted(c["HostConfig"]["CapAdd"] or ())),
    "cap_drop": lambda c: tuple(sorted(c["HostConfig"]["CapDrop"] or ())),
    "devices": lambda c: tuple(sorted((d["PathOnHost"], d["PathInContainer"], d["CgroupPermissions"])
                                      for d in c["HostConfig"]["Devices"] or ())),
    "privileged": lambda c: c["HostConfig"]["Privileged"],
    "network_mode": lambda c: c["HostConfig"]["NetworkMode"],
    "pid": lambda c: c["HostConfig"]["PidMode"] or None,
    "ipc": lambda c: c["HostConfig"]["IpcMode"] or None,
    # the engine adds options of its own (label=disable with pid: host): the target's must all be there
    "security_opt": lambda c: tuple(sorted(c["HostConfig"]["SecurityOpt"] or ())),
    "expose": _exposed,
}
SUPERSET = {"security_opt"}


def differences(config: ServiceConfig, inspected: dict) -> dict[str, tuple[Any, Any]]:
    """Every field of ``config`` the container does not show as asked: name -> (asked, shown)."""
    found = {}
    for name, wanted in config.options.set_options().items():
        shown = READ_BACK[name](inspected)
        if (set(wanted) - set(shown)) if name in SUPERSET else shown != wanted:
            found[name] = (wanted, shown)
    env = dict(entry.split("=", 1) for entry in inspected["Config"]["Env"] or ())
    if any(env.get(key) != value for key, value in config.environment):
        found["environment"] = (config.environment, env)
    policy = inspected["HostConfig"]["RestartPolicy"]
    restart = policy["Name"] + (f":{policy['MaximumRetryCount']}" if policy.get("MaximumRetryCount") else "")
    if restart != config.restart:
        found["restart"] = (config.restart, restart)
    if config.command is not None and tuple(inspected["Config"]["Cmd"]) != config.command:
        found["command"] = (config.command, inspected["Config"]["Cmd"])
    mounts = sorted((m["Destination"], m["Type"], m["RW"]) for m in inspected["Mounts"]
                    if m["Type"] in ("bind", "volume"))
    asked = sorted((m.target, "bind" if m.is_bind else "volume", not m.read_only) for m in config.volumes)
    if mounts != asked:
        found["volumes"] = (asked, mounts)
    bindings = inspected["HostConfig"]["PortBindings"] or {}
    for mapping in config.ports:
        bound = bindings.get(f"{mapping.container_port}/{mapping.protocol}") or []
        if not any(b["HostIp"] == mapping.host_ip and b["HostPort"] == str(mapping.host_port or "") for b in bound):
            found[f"ports {mapping.spec()}"] = (mapping, bound)
    return found
