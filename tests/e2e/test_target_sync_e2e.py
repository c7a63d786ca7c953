"""Target state sync end to end: the agent (persistence, poller, reconciler, reporter), the reference cloud
(`run.py cloud` on SQLite and a real Mosquitto) and the real Docker engine with the local busybox images.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

import conf
from actors.runtime.processes import group_members, reap_children
from actors.runtime.system import AgentSystem
from cloud.db import open_store, parse_store_url
from cloud.store import CloudStore
from store import Store
from tests.integration.test_reconciler_engine import IMAGE_1, IMAGE_2, Device, document, recorder
from tests.integration.test_supervision import agent_config
from tests.support.cloud import ADMIN_TOKEN, CloudProcess
from tests.support.pki import session_pki
from tests.support.polling import wait_for

TEST_SETTINGS = {
    "poller": {"interval": 0.3, "jitter": 0.0, "backoff_min": 0.2, "backoff_max": 1.0},
    # engine_timeout: a call made while dockerd shuts down can hang until it; keep the outage test short
    "reconciler": {"drift_interval": 0.5, "retry_base": 0.2, "retry_max": 1.0, "max_attempts": 2,
                   "engine_timeout": 5.0},
    "reporter": {"throttle": 0.2, "retry_min": 0.2, "retry_max": 1.0},
}


class SyncedDevice(Device):
    """A device registered on a running cloud, and the agent(s) started for it."""

    def __init__(self, docker_client, tmp_path, port, cloud: CloudProcess):
        super().__init__(docker_client, tmp_path)
        self.cloud = cloud
        self.admin = cloud.client(ADMIN_TOKEN)
        self.token = uuid.uuid4().hex
        assert self.admin.register_device(self.owner, self.owner, self.token).ok
        self.config = agent_config(tmp_path, port, {}, restart_base_delay=0.2, restart_max_delay=1.0, cooldown=2.0)
        self.config["device"].update(uuid=self.owner, thing=self.owner, token=self.token)
        self.config["cloud"]["url"] = cloud.url
        self.config["update"]["settle_seconds"] = 0.5  # a release commits (update_status "done") soon after converging
        session_pki().agent_links(self.config, self.owner)
        shipped = conf.defaults("agent")["actors"]
        self.config["actors"] = {name: {**shipped[name], "settings": TEST_SETTINGS.get(name, {})}
                                 for name in ("persistence", "poller", "reconciler", "reporter")}
        self.config["actors"]["recorder"] = recorder(self)
        self.systems: list[AgentSystem] = []

    def start(self) -> AgentSystem:
        system = AgentSystem(self.config)
        self.systems.append(system)
        system.start()
        return system

    def post(self, apps: dict) -> str:
        reply = self.admin.set_target(self.owner, document(apps))
        assert reply.ok, reply.body
        return reply.json()["etag"]

    def reported(self) -> dict:
        reply = self.admin.device_state(self.owner)
        return reply.json()["state"] if reply.ok else {}

    def stored_etag(self) -> str | None:
        with Store.open(self.db, readonly=True) as store:
            target = store.load_target()
        return None if target is None else target.etag


@pytest.fixture
def device(tmp_path, port, broker, docker_client, test_images):  # noqa: F811
    cloud = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db", {"log": {"level": "INFO"}}).start()
    synced = SyncedDevice(docker_client, tmp_path, port, cloud)
    yield synced
    for system in synced.systems:
        system.stop()
    cloud.stop()
    synced.remove_everything()


def reported_services(device: SyncedDevice) -> dict:
    return {f"{app_id}/{name}": row for app_id, app in device.reported().get("apps", {}).items()
            for name, row in app["services"].items()}


def test_converges_updates_removes_repairs_and_rejects_through_the_cloud(device):
    foreign = device.docker.containers.run(IMAGE_1, name=f"foreign-{device.owner}", detach=True)
    try:
        _converge_update_remove_repair_reject(device)
        foreign.reload()
        assert foreign.status == "running"  # never touched: it has no Fleetlet labels
    finally:
        foreign.remove(force=True)


def _converge_update_remove_repair_reject(device: SyncedDevice) -> None:
    system = device.start()
    etag = device.post({"1": {"web": {}, "db": {}}, "2": {"worker": {"image": IMAGE_2}}})
    device.wait_converged(etag)
    ids = device.running_ids()
    assert set(ids) == {"web", "db", "worker"}
    wait_for(lambda: {name: (row.get("containerId"), row["status"]) for name, row in reported_services(device).items()}
             == {"1/web": (ids["web"], "running"), "1/db": (ids["db"], "running"),
                 "2/worker": (ids["worker"], "running")} and
             {app["update_status"] for app in device.reported()["apps"].values()} == {"done"},
             what="the cloud to hold the converged state")
    assert device.reported()["target_state"] == {"status": "accepted", "etag": etag}

    # one service's environment changes: that container only is recreated
    etag = device.post({"1": {"web": {"environment": {"MODE": "fast"}}, "db": {}}, "2": {"worker": {"image": IMAGE_2}}})
    device.wait_converged(etag)
    changed = device.running_ids()
    assert changed["web"] != ids["web"] and {k: changed[k] for k in ("db", "worker")} == {
        k: ids[k] for k in ("db", "worker")}
    assert "MODE=fast" in device.docker.containers.get(changed["web"]).attrs["Config"]["Env"]

    # a service removed from the target: its container goes, and so does its line in the cloud
    etag = device.post({"1": {"web": {"environment": {"MODE": "fast"}}}, "2": {"worker": {"image": IMAGE_2}}})
    device.wait_converged(etag)
    assert set(device.running_ids()) == {"web", "worker"}
    wait_for(lambda: set(reported_services(device)) == {"1/web", "2/worker"}, what="db gone from the report")

    # drift: a container removed by hand comes back, one stopped by hand runs again
    device.docker.containers.get(changed["worker"]).remove(force=True)
    device.docker.containers.get(changed["web"]).stop(timeout=1)
    repaired = wait_for(lambda: _settled(device), timeout=10, what="the drift repaired")
    assert repaired["web"] == changed["web"] and repaired["worker"] != changed["worker"]

    # the cloud serves a document this agent cannot use (say, written by a newer cloud): rejected, reported,
    # and the previous target keeps running
    bad = {"apps": {"1": {"services": [{"serviceName": "web", "config": {"image": IMAGE_1, "gpu": True}}]}}}
    cloud_store = CloudStore(open_store(parse_store_url(f"sqlite:///{device.cloud.workdir}/cloud.db")))
    bad_etag, _ = cloud_store.set_target_state(device.owner, bad, int(time.time()))
    cloud_store.close()
    rejected = wait_for(lambda: device.reported()["target_state"].get("rejected"), what="the rejection reported")
    assert rejected["etag"] == bad_etag and "apps.1.services[0].config.gpu: unknown field" in rejected["reason"]
    assert device.reported()["target_state"]["status"] == "rejected"
    assert device.stored_etag() == etag
    passes = len(device.messages("ReconcilePassFinished"))
    wait_for(lambda: len(device.messages("ReconcilePassFinished")) >= passes + 2, what="two more drift checks")
    assert device.running_ids() == repaired
    assert all(c.restarts == 0 for c in system.status().children)


def _settled(device: SyncedDevice) -> dict | None:
    found = device.containers()
    if set(found) == {"web", "worker"} and all(len(c) == 1 and c[0].status == "running" for c in found.values()):
        return {service: containers[0].id for service, containers in found.items()}
    return None


def test_sigkill_of_the_whole_agent_mid_apply_converges_after_restart_without_duplicates(device):
    device.config["actors"]["reconciler"]["settings"]["max_parallel"] = 2  # a longer apply to interrupt
    system = device.start()
    services = {f"s{index}": {"environment": {"INDEX": str(index)}} for index in range(8)}
    etag = device.post({"1": services})
    wait_for(lambda: 1 <= sum(map(len, device.containers().values())) < 8, interval=0.005,
             what="the apply to be underway")
    for pgid in system.pgids:  # as a power cut would: every agent process at once
        os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not any(group_members(pgid) for pgid in system.pgids), what="the agent gone")
    reap_children()
    left = sum(map(len, device.containers().values()))
    assert left < 8 or not all(c[0].status == "running" for c in device.containers().values())

    device.start()
    device.wait_converged(etag, timeout=30)
    assert set(device.running_ids()) == set(services)  # one running container per service, no duplicates
    wait_for(lambda: len(reported_services(device)) == 8 and
             all(row["status"] == "running" for row in reported_services(device).values()),
             what="the report of all eight")


@pytest.fixture
def private_device(tmp_path, port, broker, private_dockerd, monkeypatch):
    """A device whose engine is a private dockerd (the agent's workers reach it through DOCKER_HOST)."""
    monkeypatch.setenv("DOCKER_HOST", private_dockerd.url)  # inherited by every actor forked from here
    client = private_dockerd.client()
    cloud = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db", {"log": {"level": "INFO"}}).start()
    synced = SyncedDevice(client, tmp_path, port, cloud)
    synced.config["supervisor"] = conf.defaults("agent")["supervisor"]  # the device's restart policy, not a test's
    yield synced
    for system in synced.systems:
        system.stop()
    cloud.stop()
    client.close()  # the private engine goes, containers and all, with its fixture


OUTAGE = float(os.environ.get("FLEETLET_TEST_OUTAGE", "10"))  # seconds the engine stays away


def engine_reported(device: SyncedDevice) -> str | None:
    return device.reported().get("engine", {}).get("status")


def test_an_engine_outage_is_a_known_state_and_the_device_converges_within_seconds_of_its_return(
        private_device, private_dockerd):
    device = private_device
    shared_bridge = os.path.exists("/sys/class/net/docker0")  # the shared engine's (the private one has its own netns)
    system = device.start()
    etag = device.post({"1": {f"s{index}": {} for index in range(4)}})
    device.wait_converged(etag)
    before = device.running_ids()
    pids = {c.name: c.pid for c in system.status().children}

    device.post({"1": {f"s{index}": {"environment": {"V": "2"}} for index in range(4)}})
    wait_for(lambda: device.containers().keys() != before.keys() or
             any(c[0].id not in before.values() for c in device.containers().values()),
             interval=0.005, what="the update underway")
    private_dockerd.stop()
    # polling goes on: a newer target is stored while the engine is away
    etag = device.post({"1": {f"s{index}": {"environment": {"V": "3"}} for index in range(4)}})
    wait_for(lambda: device.stored_etag() == etag, what="the newer target stored")
    wait_for(lambda: any(e["key"] == "engine" and "unreachable" in e["message"] for e in device.errors()),
             what="the outage recorded")
    wait_for(lambda: engine_reported(device) == "unreachable", what="the outage in the report")
    time.sleep(OUTAGE)  # the fault itself (long enough to exceed a crashing reconciler's restart intensity)
    assert {c.name: (c.pid, c.restarts) for c in system.status().children} == {n: (p, 0) for n, p in pids.items()}

    private_dockerd.start()
    back = time.monotonic()
    device.wait_converged(etag, timeout=30)
    converged_after = time.monotonic() - back
    print(f"converged {converged_after:.1f} s after the engine returned")
    assert converged_after < 10.0
    after = device.running_ids()
    assert set(after) == set(before)
    assert all("V=3" in device.docker.containers.get(cid).attrs["Config"]["Env"] for cid in after.values())
    assert {c.name: (c.pid, c.restarts) for c in system.status().children} == {n: (p, 0) for n, p in pids.items()}
    wait_for(lambda: not any(e["key"] == "engine" for e in device.errors()), what="the engine error cleared")
    wait_for(lambda: engine_reported(device) == "ok", what="the engine back in the report")
    # A private dockerd in the host's namespace deleted docker0 when restarted, breaking the shared engine.
    assert os.path.exists("/sys/class/net/docker0") or not shared_bridge
