"""The device owner's policy against the real engine: a target that breaks it never reaches a container; and
a container that holds the admin port anyway is named.

Poller (against a stub cloud), persistence and reconciler in a running actor system; each test's device
has its own owner label, so nothing outside the test is touched.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

import messages
from actors.runtime.processes import port_bindable
from actors.runtime.system import AgentStartError, AgentSystem
from actors.target.engine.port_holders import port_holder
from messages.bus.target import TargetStateFetched
from store import Store
from tests.integration.test_reconciler_engine import Device, document, recorder
from tests.integration.test_supervision import agent_config
from tests.support.polling import wait_for
from tests.support.ports import free_admin_port
from tests.support.stub_cloud import StubCloud


class Served:
    """The target document the stub cloud serves, with its ETag."""

    def __init__(self) -> None:
        self.doc: dict = {"apps": {}}
        self.etag = '"empty"'

    def __call__(self, request):
        if request.headers.get("if-none-match") == self.etag:
            return 304, {"ETag": self.etag}, b""
        return 200, {"ETag": self.etag}, json.dumps(self.doc).encode()


@pytest.fixture
def policy_agent(tmp_path, port, docker_client, test_images):
    device = Device(docker_client, tmp_path)
    served = Served()
    systems = []
    with StubCloud(served) as cloud:
        def start(*policy: str, poller: bool = True) -> AgentSystem:
            actors = {
                "persistence": {"class": "actors.persistence.Persistence",
                                "subscribes": ["TargetStateFetched", "TargetStateRejected", "RecordError",
                                               "ClearError"]},
                "reconciler": {"class": "actors.target.reconciler.Reconciler",
                               "subscribes": ["TargetStateStored", "ReconcileNow"]},
                "recorder": recorder(device),
            }
            if poller:
                actors["poller"] = {"class": "actors.target.poller.Poller", "subscribes": ["PollNow"],
                                    "settings": {"interval": 0.2, "jitter": 0.0, "backoff_min": 0.2,
                                                 "backoff_max": 0.4}}
            config = agent_config(tmp_path, port, actors)
            config["device"]["uuid"] = device.owner
            config["cloud"]["url"] = cloud.url
            for item in policy:
                key, _, value = item.partition("=")
                config["policy"][key] = value == "true" if value in ("true", "false") else \
                    json.loads(value) if value.startswith("[") else value
            system = AgentSystem(config)
            systems.append(system)
            system.start()
            return system

        yield start, device, served
        for system in systems:
            system.stop()
    device.remove_everything()


def rejection(db: str):
    with Store.open(db, readonly=True) as store:
        return store.last_target_rejection()


def test_a_target_publishing_the_admin_port_is_rejected_and_the_last_good_one_runs_on(policy_agent, port):
    start, device, served = policy_agent
    host_port = free_admin_port()
    start("bind_address=127.0.0.1")  # the owner's own choice: loopback, so allowed
    served.doc, served.etag = document({"1": {"web": {"ports": [f"{host_port}:80"]}}}), '"good"'
    device.wait_converged('"good"', timeout=40)
    (web,) = device.containers()["web"]
    assert web.attrs["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1",
                                                                   "HostPort": str(host_port)}]}

    served.doc, served.etag = document({"1": {"web": {"ports": [f"127.0.0.1:{port}:80"]}}}), '"takeover"'
    refused = wait_for(lambda: rejection(device.db), timeout=20, what="the takeover rejected")
    assert refused.etag == '"takeover"'
    assert f"config.ports '127.0.0.1:{port}:80/tcp': host port {port} is the agent's admin port" in refused.reason
    assert "host address 127.0.0.1 is loopback (policy.allow_loopback_ports = true allows it)" in refused.reason
    assert device.running_ids() == {"web": web.id}  # the last good target stays in force
    assert any(e["key"] == "rejected" and "admin port" in e["message"] for e in device.errors())


def test_a_stored_target_that_breaks_a_newer_policy_is_not_applied(policy_agent):
    start, device, _ = policy_agent
    system = start(poller=False)  # stored as if before the policy changed: straight to persistence
    doc = document({"1": {"web": {"ports": ["127.0.0.1:18080:80"]}}})
    system.asys.tell(system.supervisor, messages.encode(TargetStateFetched(doc, '"old"', time.time())))
    error = wait_for(lambda: next((e for e in device.errors() if e["source"] == "reconciler"), None),
                     what="the reconciler refusing the stored target")
    assert error["message"].startswith("stored target is not applied: policy: apps.1 service web")
    assert device.containers() == {}


def test_a_start_that_finds_the_admin_port_held_by_a_container_names_it(tmp_path, port, docker_client, test_images):
    name = f"holder-{uuid.uuid4().hex[:10]}"
    network = docker_client.networks.create(name, labels={"io.fleetlet.test": name})  # an engine may have no bridge
    holder = docker_client.containers.run(test_images[0], name=name, detach=True, labels={"io.fleetlet.test": name},
                                          network=name, ports={"80/tcp": ("127.0.0.1", port)})
    try:
        wait_for(lambda: not port_bindable(port), what="the container's proxy holding the port")
        system = AgentSystem(agent_config(tmp_path, port, {}), port_holder)
        with pytest.raises(AgentStartError) as refused:
            system.start()
        assert (f"admin port {port} on 127.0.0.1 is used by container {name} ({holder.id[:12]}, "
                f"{test_images[0]}) publishing 127.0.0.1:{port}/tcp") in str(refused.value)
    finally:
        holder.remove(force=True)
        network.remove()
