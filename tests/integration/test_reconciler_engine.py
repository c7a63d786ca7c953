"""The reconciler against the real Docker engine, in a running actor system (persistence + reconciler).

Each test's agent has its own owner label (the device uuid), so nothing outside the test is touched,
and everything the test created is removed at the end. Images are the local fleetlet-test/busybox ones.
"""
from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

import messages
from actors.runtime.system import AgentSystem
from actors.target.engine.adapter import LABEL_OWNER, LABEL_SERVICE_NAME
from messages.bus.engine import ReconcileNow
from messages.bus.target import RestartServices, TargetStateFetched
from messages.protocol.target_state import parse_target_state, to_json
from store import Store
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for
from tests.support.probe_actors import recorded_rows

IMAGE_1 = "fleetlet-test/busybox:1"
IMAGE_2 = "fleetlet-test/busybox:2"


def document(apps: dict[str, dict[str, dict]]) -> dict:
    """{app id: {service name: config}} -> a target document; the image defaults to IMAGE_1."""
    return {"apps": {app_id: {"appName": f"app-{app_id}", "services": [
        {"serviceName": name, "config": {"image": IMAGE_1, **config}} for name, config in services.items()]}
        for app_id, services in apps.items()}}


class Device:
    """One test agent's view: its owner label, its recorded messages, its containers in the engine."""

    def __init__(self, docker_client, tmp_path):
        self.docker = docker_client
        self.owner = f"t-{uuid.uuid4().hex[:10]}"
        self.recorded = tmp_path / "recorded.jsonl"
        self.db = str(tmp_path / "agent.db")

    def messages(self, kind: str) -> list[dict]:
        rows = recorded_rows(self.recorded)
        return [row for row in rows if row["type"] == kind]

    def wait_converged(self, etag: str, timeout: float = 20.0) -> dict:
        return wait_for(lambda: next((p for p in reversed(self.messages("ReconcilePassFinished"))
                                      if p["etag"] == etag and p["converged"]), None),
                        timeout=timeout, what=f"convergence on {etag}")

    def containers(self) -> dict[str, list]:
        """service name -> its containers (of any app), fresh from the engine."""
        found: dict[str, list] = {}
        for container in self.docker.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={self.owner}"},
                                                   ignore_removed=True):
            found.setdefault(container.labels[LABEL_SERVICE_NAME], []).append(container)
        return found

    def running_ids(self) -> dict[str, str]:
        """service name -> container id, asserting exactly one running container per service."""
        found = self.containers()
        assert all(len(containers) == 1 for containers in found.values()), found
        assert all(c[0].status == "running" for c in found.values()), {s: c[0].status for s, c in found.items()}
        return {service: containers[0].id for service, containers in found.items()}

    def errors(self) -> list[dict]:
        with Store.open(self.db, readonly=True) as store:
            return store.errors()

    def remove_everything(self) -> None:
        owned = {"label": f"{LABEL_OWNER}={self.owner}"}
        for container in self.docker.containers.list(all=True, filters=owned):
            container.remove(force=True)
        for network in self.docker.networks.list(filters=owned):
            network.remove()
        for volume in self.docker.volumes.list(filters=owned):
            volume.remove(force=True)


def recorder(device: Device) -> dict:
    return {"class": "tests.support.probe_actors.Recorder",
            "subscribes": ["ReconcilePassFinished", "CurrentStateObserved"],
            "settings": {"path": str(device.recorded)}}


@pytest.fixture
def engine_agent(tmp_path, port, docker_client, test_images):
    device = Device(docker_client, tmp_path)
    systems = []

    def start(**settings) -> AgentSystem:
        config = agent_config(tmp_path, port, {
            "persistence": {"class": "actors.persistence.Persistence",
                            "subscribes": ["TargetStateFetched", "RecordError", "ClearError", "RestartServices",
                                           "ServicesRestarted", "ReleaseChanged"]},
            "reconciler": {"class": "actors.target.reconciler.Reconciler",
                           "subscribes": ["TargetStateStored", "RestartsRecorded", "ReconcileNow"],
                           "settings": {"drift_interval": 30.0, "retry_base": 0.2, "retry_max": 0.4,
                                        "max_attempts": 2, **settings}},
            "recorder": recorder(device),
        })
        config["device"]["uuid"] = device.owner
        config["update"]["settle_seconds"] = 0.5  # a release commits (update_status "done") soon after converging
        system = AgentSystem(config)
        systems.append(system)
        system.start()
        return system

    yield start, device
    for system in systems:
        system.stop()
    device.remove_everything()


def set_target(system: AgentSystem, doc: dict, etag: str) -> None:
    fetched = TargetStateFetched(to_json(parse_target_state(doc)), etag, time.time())
    system.asys.tell(system.supervisor, messages.encode(fetched))


def tell(system: AgentSystem, msg) -> None:
    system.asys.tell(system.supervisor, messages.encode(msg))


def test_a_failing_service_is_marked_failed_while_the_rest_converges(engine_agent):
    start, device = engine_agent
    system = start()
    set_target(system, document({"1": {"web": {}, "db": {}}}), '"v1"')
    device.wait_converged('"v1"')
    before = device.running_ids()

    # download-then-kill (the default): the new image cannot be pulled, so the old container keeps running
    set_target(system, document({"1": {"web": {"image": "fleetlet-test/absent:1"}, "db": {}, "cache": {}}}), '"v2"')
    failed = wait_for(lambda: next((p for p in device.messages("ReconcilePassFinished")
                                    if p["etag"] == '"v2"' and p["failed"]), None), what="web marked failed")
    assert failed["failed"] == ["1/web"] and not failed["converged"]
    assert device.running_ids() == {**before, "cache": device.running_ids()["cache"]}
    error = next(e for e in device.errors() if e["source"] == "reconciler")
    assert error["key"] == "1/web" and "fleetlet-test/absent:1" in error["message"]
    report = device.messages("CurrentStateObserved")[-1]["state"]["apps"]["1"]
    assert report["update_status"] == "failed"
    assert report["services"]["web"]["status"] == "running" and "absent" in report["services"]["web"]["reason"]
    assert report["services"]["cache"]["status"] == "running" and "reason" not in report["services"]["cache"]

    # kill-then-download: the old container goes first, then the pull fails
    set_target(system, document({"1": {"web": {"image": "fleetlet-test/absent:1",
                                               "update_strategy": "kill-then-download"}, "db": {}}}), '"v3"')
    wait_for(lambda: "web" not in device.containers() and "cache" not in device.containers(), what="web and cache gone")
    wait_for(lambda: any(p["etag"] == '"v3"' and p["failed"] == ["1/web"]
                         for p in device.messages("ReconcilePassFinished")),
             what="web failing again")
    assert device.running_ids()["db"] == before["db"]

    set_target(system, document({"1": {"web": {}, "db": {}}}), '"v4"')
    device.wait_converged('"v4"')
    assert not [e for e in device.errors() if e["source"] == "reconciler"]  # cleared once it converged


def test_restart_services_restarts_the_same_containers(engine_agent, docker_client):
    start, device = engine_agent
    system = start()
    set_target(system, document({"1": {"web": {}, "db": {}, "once": {"restart": "no"}}}), '"v1"')
    device.wait_converged('"v1"')
    ids = {service: containers[0].id for service, containers in device.containers().items()}
    started = {service: docker_client.containers.get(ids[service]).attrs["State"]["StartedAt"] for service in ids}
    passes = len(device.messages("ReconcilePassFinished"))

    tell(system, RestartServices("1", ("web", "once"), "config file changed"))
    wait_for(lambda: any(p["trigger"] == "restart services" and p["converged"] and p["steps"] == 4
                         for p in device.messages("ReconcilePassFinished")[passes:]), what="the restart done")
    after = {service: docker_client.containers.get(ids[service]).attrs["State"] for service in ids}
    assert all(after[service]["Running"] for service in ids)  # a one-shot too: restarting means running it again
    assert after["web"]["StartedAt"] != started["web"] and after["once"]["StartedAt"] != started["once"]
    assert after["db"]["StartedAt"] == started["db"]


def test_a_restart_asked_for_is_not_forgotten_when_a_new_target_arrives(engine_agent, docker_client):
    start, device = engine_agent
    system = start()
    set_target(system, document({"1": {"web": {}}}), '"v1"')
    device.wait_converged('"v1"')
    web = device.containers()["web"][0].id
    started = docker_client.containers.get(web).attrs["State"]["StartedAt"]

    tell(system, RestartServices("1", ("web",), "config file changed"))
    set_target(system, document({"1": {"web": {}, "extra": {}}}), '"v2"')  # right behind it
    device.wait_converged('"v2"')
    wait_for(lambda: docker_client.containers.get(web).attrs["State"]["StartedAt"] != started,
             what="the restart carried out after the new target")
    assert docker_client.containers.get(web).attrs["State"]["Running"]
    with Store.open(device.db, readonly=True) as store:
        wait_for(lambda: store.pending_restarts() == [], what="the done restart dropped from the store")


class Tarpit:
    """A 'registry' that accepts connections and never answers: a pull from it hangs."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                self.connections.append(self.server.accept()[0])
            except OSError:
                return

    def close(self):
        self.server.close()
        for connection in self.connections:
            connection.close()


def test_a_newer_target_supersedes_a_hanging_pull(engine_agent):
    start, device = engine_agent
    tarpit = Tarpit()
    try:
        system = start(engine_timeout=60.0)
        slow = f"127.0.0.1:{tarpit.port}/slow:1"
        set_target(system, document({"1": {"slow": {"image": slow}}}), '"v1"')
        wait_for(lambda: any(s["state"]["apps"]["1"]["update_status"] == "downloading"
                             for s in device.messages("CurrentStateObserved")), what="the pull underway")
        wait_for(lambda: tarpit.connections, what="the engine to reach the registry")

        sent = time.monotonic()
        set_target(system, document({"1": {"fast": {}}}), '"v2"')
        tell(system, ReconcileNow("the test"))
        device.wait_converged('"v2"', timeout=10)
        assert time.monotonic() - sent < 5  # not after the pull's 60 s timeout
        assert list(device.running_ids()) == ["fast"]
        report = wait_for(lambda: (app := device.messages("CurrentStateObserved")[-1]["state"]["apps"]["1"])
                          ["update_status"] == "done" and app, what="the release committed")
        assert list(report["services"]) == ["fast"]
    finally:
        tarpit.close()
