"""The reference deployment as it ships: the agent, the cloud (HTTPS API) and Mosquitto (TLS, client
certificates, the ACL), all with the session PKI's certificates. The agent syncs its shadow and polls its
target over mutual TLS on both profiles, and when a link's certificate comes from another CA, `run.py status`
says which certificate and why, while the agent keeps running and retrying."""
from __future__ import annotations

import json
import os

import pytest

import conf
import run
from cloud import pki as cloud_pki
from messages.transport.http import CloudClient, CloudError
from messages.transport.tls import TlsSettings
from store import Store
from tests.support.cloud import DEMO, CloudProcess
from tests.support.pki import session_pki
from tests.support.polling import wait_for

pytestmark = pytest.mark.broker
THING = DEMO["thing"]


@pytest.fixture
def cloud(broker, tmp_path):
    process = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db", https=True).start()
    yield process
    process.stop()


def token_file(tmp_path) -> str:
    path = tmp_path / "token"
    path.write_text(DEMO["token"] + "\n")
    os.chmod(path, 0o600)
    return str(path)


def agent_config(tmp_path, port: int, broker_port: int, cloud_url: str, profile: str = "aws",
                 ca_file: str | None = None) -> dict:
    """The demo device, over mutual TLS on both links (its certificate for MQTT and for the API), its token
    read from a 0600 file; ``ca_file``: what it trusts (the session CA by default)."""
    pki = session_pki()
    cert, key = pki.device(DEMO["uuid"])
    trusted = ca_file or pki.ca
    config = conf.load("agent", None, [
        f"store.path={tmp_path}/agent.db", f"agent.admin_port={port}", "agent.stop_timeout=5.0",
        f"mqtt.port={broker_port}", "mqtt.reconnect_min=0.05", "mqtt.reconnect_max=0.5", "mqtt.keepalive=5",
        f"mqtt.ca_file={trusted}", f"mqtt.cert_file={cert}", f"mqtt.key_file={key}",
        f"cloud.url={cloud_url}", f"cloud.ca_file={trusted}", f"cloud.cert_file={cert}", f"cloud.key_file={key}",
        "device.token=unused-here", f"device.token_file={token_file(tmp_path)}",
        f"shadow.profile={profile}", "shadow.report_timeout=1.5", "shadow.read_timeout=1.5",
        f"api.socket={tmp_path}/api.sock", f"api.key_file={tmp_path}/api.key"])
    defaults = config["actors"]
    config["actors"] = {
        "persistence": defaults["persistence"],
        "api": defaults["api"],  # run.py status asks it
        "shadow_listener": defaults["shadow_listener"],
        "poller": {**defaults["poller"], "settings": {"interval": 0.3, "jitter": 0.0, "backoff_min": 0.2,
                                                       "backoff_max": 1.0}},
        "app_config": {**defaults["app_config"], "enabled": True, "settings": {
            "path": str(tmp_path / "app.json"), "keys": ["t"], "app_id": "1", "services": ["app"]}},
    }
    return config


TARGET = {"apps": {"1": {"appId": "1", "appName": "app", "services": [
    {"serviceId": 1, "serviceName": "app", "imageName": "fleetlet-test/busybox:1",
     "config": {"image": "fleetlet-test/busybox:1"}}]}}}


def stored_target_etag(tmp_path) -> str | None:
    with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
        target = store.load_target()
    return None if target is None else target.etag


@pytest.mark.parametrize("profile", ["aws", "emqx"])
def test_the_agent_syncs_its_shadow_and_polls_its_target_over_mutual_tls(profile, broker, cloud, start_agent,
                                                                         tmp_path, port):
    admin = cloud.client()
    assert cloud.url.startswith("https://")
    etag = admin.set_target(DEMO["uuid"], TARGET).json()["etag"]
    start_agent(agent_config(tmp_path, port, broker.port, cloud.url, profile), wait_running=True)
    assert admin.update_shadow(THING, {"state": {"desired": {"t": 21}}}).status == 200

    def converged():
        state = admin.get_shadow(THING).json()["state"]
        return "delta" not in state and state.get("reported", {}).get("t") == 21
    wait_for(converged, timeout=15, what="the shadow to converge over TLS")
    assert json.loads((tmp_path / "app.json").read_text()) == {"t": 21}
    wait_for(lambda: stored_target_etag(tmp_path) == etag, what="the target polled over https")


def test_status_says_why_a_broker_and_a_cloud_api_another_ca_signed_are_refused(broker, cloud, start_agent,
                                                                                tmp_path, port, capfd):
    other = tmp_path / "other-ca"
    cloud_pki.init(other)
    config = agent_config(tmp_path, port, broker.port, cloud.url, ca_file=str(other / "ca.crt"))
    system = start_agent(config, wait_running=True)

    def errors() -> dict:
        return {(e["source"], e["key"]): e for e in run.recorded_errors(config)}
    found = wait_for(lambda: (lambda e: e if {("mqtt", "connect"), ("poller", "fetch")} <= set(e) else None)(
        errors()), timeout=15, what="both refusals recorded")
    mqtt, fetch = found[("mqtt", "connect")]["message"], found[("poller", "fetch")]["message"]
    assert mqtt.startswith("certificate verify failed: ") and f"for broker 127.0.0.1:{broker.port}" in mqtt
    assert f"for cloud API 127.0.0.1:{cloud.http_port}" in fetch and "certificate verify failed: " in fetch
    for message in (mqtt, fetch):
        assert "(subject CN=localhost,OU=server, issuer CN=Fleetlet development CA " in message
    # both keep retrying, as after any failure, and the agent runs on
    wait_for(lambda: errors()[("mqtt", "connect")]["count"] >= 2, what="the broker tried again")
    assert all(child.state == "running" for child in system.status().children)
    assert run.run_status(config, as_json=True) == 0
    shown = json.loads(capfd.readouterr().out)
    assert {(e["source"], e["key"]) for e in shown["errors"]} >= {("mqtt", "connect"), ("poller", "fetch")}
    assert any("certificate verify failed" in e["message"] and "broker" in e["message"] for e in shown["errors"])


def test_the_api_refuses_a_client_certificate_another_ca_issued(cloud, tmp_path):
    other = tmp_path / "other-ca"
    cloud_pki.init(other)
    cloud_pki.issue_device(other, DEMO["uuid"])
    pki = session_pki()
    own_cert, own_key = pki.device(DEMO["uuid"])
    trusted = CloudClient(cloud.url, DEMO["token"], tls=TlsSettings(pki.ca, own_cert, own_key))
    assert trusted.get_target(DEMO["uuid"]).status == 404  # through: mutual TLS, then the token (no target yet)
    forged_cert, forged_key = (str(other / f"{DEMO['uuid']}.{ext}") for ext in ("crt", "key"))
    forged = CloudClient(cloud.url, DEMO["token"], tls=TlsSettings(pki.ca, forged_cert, forged_key))
    with pytest.raises(CloudError):
        forged.get_target(DEMO["uuid"])
