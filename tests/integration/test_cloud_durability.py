"""What the cloud keeps: everything it accepted survives SIGKILL; concurrent writers lose nothing.
On SQLite and on PostgreSQL, over a real Mosquitto."""
from __future__ import annotations

import threading

import pytest

from tests.support.cloud import DEMO, CloudProcess, MqttProbe
from tests.support.pki import CLOUD, CLOUD_2
from tests.support.polling import wait_for

pytestmark = pytest.mark.broker

AWS = "$aws/things/lamp-1/shadow"
TARGET = {"apps": {"1": {"appId": "1", "appName": "web", "services": [
    {"serviceName": "web", "imageName": "nginx:1.25", "config": {"image": "nginx:1.25"}}]}}}


def test_sigkill_between_updates_keeps_every_document_and_version(cloud, broker):
    admin = cloud.client()
    cloud.register("lamp-1")
    with MqttProbe(broker.port) as probe:
        probe.subscribe(f"{AWS}/update/accepted", f"{AWS}/update/rejected")
        assert probe.call(f"{AWS}/update", {"state": {"desired": {"a": 1}}, "clientToken": "1"}, "1")[0] == "accepted"
        assert admin.update_shadow("lamp-1", {"state": {"reported": {"b": 2}}}, name="cfg").json()["version"] == 1
        admin.delete_shadow("lamp-1", "cfg")
        etag = admin.set_target(DEMO["uuid"], TARGET).json()["etag"]
        assert cloud.client(DEMO["token"]).report_state({DEMO["uuid"]: {"status": "Idle"}}).status == 200
        before = admin.get_shadow("lamp-1").json()

        # A burst of updates, and SIGKILL while it is being served.
        for number in range(60):
            probe.publish(f"{AWS}/update", {"state": {"reported": {f"k{number}": number}}, "clientToken": f"b{number}"})
        seen = [probe.expect(f"{AWS}/update/accepted") for _ in range(10)]
        cloud.kill()
        seen += probe.received(f"{AWS}/update/accepted")
        cloud.start()

        after = admin.get_shadow("lamp-1").json()
        acknowledged = {body["clientToken"] for body in seen}
        assert after["version"] >= max(body["version"] for body in seen)
        assert {f"b{key[1:]}" for key in after["state"]["reported"] if key.startswith("k")} >= acknowledged
        assert after["state"]["desired"] == before["state"]["desired"]
        outcome, next_update = probe.call(f"{AWS}/update", {"state": {"desired": {"a": 2}}, "clientToken": "n"}, "n")
        assert (outcome, next_update["version"]) == ("accepted", after["version"] + 1)

    assert admin.get_shadow("lamp-1", "cfg").status == 404
    assert admin.update_shadow("lamp-1", {"state": {"reported": {"b": 3}}}, name="cfg").json()["version"] == 2
    assert cloud.client(DEMO["token"]).get_target(DEMO["uuid"], etag=etag).status == 304
    assert admin.device_state(DEMO["uuid"]).json()["state"] == {"status": "Idle"}


def test_two_clouds_on_one_store_lose_no_concurrent_update(broker, store_url, tmp_path):
    """Two processes update one shadow at once: only the database's optimistic lock orders them."""
    clouds = [CloudProcess(tmp_path, broker.port, store_url, identity=identity).start()
              for identity in (CLOUD, CLOUD_2)]  # one certificate, one session: each cloud has its own
    try:
        writers, per_writer = 6, 15
        failures = []

        def write(index: int) -> None:
            client = clouds[index % 2].client()
            for number in range(per_writer):
                reply = client.update_shadow("shared", {"state": {"reported": {f"w{index}-{number}": number}}})
                if reply.status != 200:
                    failures.append(reply.json())

        threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        document = clouds[0].client().get_shadow("shared").json()
        assert document["version"] == writers * per_writer
        assert len(document["state"]["reported"]) == writers * per_writer
    finally:
        for process in clouds:
            process.stop()


def test_the_service_comes_back_after_a_broker_restart(broker, tmp_path):
    process = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db").start()
    process.register("lamp-1")
    try:
        broker.stop()
        wait_for(lambda: process.client().health().status == 503, timeout=10, what="the cloud to see the broker go")
        assert process.client().update_shadow("lamp-1", {"state": {"desired": {"a": 1}}}).status == 200  # HTTP goes on
        broker.start()
        wait_for(lambda: process.client().health().status == 200, timeout=15, what="the cloud to resubscribe")
        with MqttProbe(broker.port) as probe:
            probe.subscribe(f"{AWS}/get/accepted", f"{AWS}/get/rejected")
            outcome, document = probe.call(f"{AWS}/get", {"clientToken": "after"}, "after")
            assert (outcome, document["state"]["desired"]) == ("accepted", {"a": 1})
    finally:
        process.stop()
