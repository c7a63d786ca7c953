"""The local shadow of the local API, end to end: readable with the broker down, and a report made there
reaching the cloud through the durable outbox once the broker is back."""
from __future__ import annotations

import json
import shutil
import tempfile

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.api import client
from tests.e2e import test_shadow_e2e
from tests.e2e.test_shadow_e2e import THING, agent_config, converged, desire, pending_report
from tests.support.polling import wait_for

cloud = test_shadow_e2e.cloud  # the shadow tests' cloud: on SQLite only


@pytest.fixture
def api_config(tmp_path, port, broker, cloud):
    config = agent_config(tmp_path, port, broker.port, cloud.url)
    config["actors"]["api"] = __import__("conf").load("agent")["actors"]["api"]
    short = tempfile.mkdtemp(prefix="fl-shadow-", dir="/tmp")  # a Unix socket path is at most 107 bytes
    config["api"].update(socket=f"{short}/api.sock", key_file=f"{short}/api.key")
    yield config
    shutil.rmtree(short, ignore_errors=True)


def local(config, method="GET", body=None):
    status, answer = client.request(config, method, "/v1/shadow", b"" if body is None else json.dumps(body).encode())
    return status, json.loads(answer)


def test_the_local_shadow_is_read_offline_and_its_report_reaches_the_cloud_later(broker, cloud, api_config,
                                                                                 start_agent, tmp_path):
    cloud_api = cloud.client()
    start_agent(api_config, wait_running=True)
    version = desire(cloud_api, {"t": 23, "mode": "cool"})
    converged(cloud_api, {"t": 23, "mode": "cool"})
    wait_for(lambda: local(api_config)[1]["version"] is not None and local(api_config)[1]["version"] >= version,
             what="the local copy of the shadow")

    broker.stop()
    status, view = local(api_config)
    assert status == 200
    assert view["state"]["desired"] == {"t": 23, "mode": "cool"}
    assert view["state"]["reported"] == {"t": 23, "mode": "cool"} and view["state"]["delta"] == {}
    assert not view["pending"]

    status, answer = local(api_config, "PATCH", {"reported": {"battery": 80, "sensor": {"ok": True}}})
    assert status == 202, answer
    wait_for(lambda: pending_report(tmp_path) is not None, what="the report in the durable outbox")
    status, view = local(api_config)
    assert view["pending"] and view["state"]["reported"] == {"t": 23, "mode": "cool", "battery": 80,
                                                             "sensor": {"ok": True}}
    assert "battery" not in cloud_api.get_shadow(THING).json()["state"]["reported"]

    status, answer = local(api_config, "PATCH", {"reported": {"sensor": {"ok": False, "unit": "C"}}})
    assert status == 202
    status, answer = local(api_config, "PATCH", {"reported": {"battery": None, "sensor": {"unit": None}}})
    assert status == 202
    expected = {"t": 23, "mode": "cool", "sensor": {"ok": False}}  # merged as a shadow update merges; null deletes
    wait_for(lambda: local(api_config)[1]["state"]["reported"] == expected, what="the local copy merged")
    broker.start()
    wait_for(lambda: cloud_api.get_shadow(THING).json()["state"]["reported"] == expected, timeout=20,
             what="the report delivered")
    wait_for(lambda: pending_report(tmp_path) is None, what="the outbox emptied")
    assert local(api_config)[1]["pending"] is False

    # The shadow's figures, from the listener that owns them.
    def shadow_metrics():
        status, answer = client.request(api_config, "GET", "/metrics")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(answer.decode()) for s in f.samples}
        shadow = (("shadow", ""),)
        wanted = [("fleetlet_shadow_deltas_total", shadow), ("fleetlet_shadow_reports_total", shadow),
                  ("fleetlet_shadow_roundtrip_seconds_count", shadow),
                  ("fleetlet_link_bytes_total", (("direction", "sent"), ("link", "mqtt"))),
                  ("fleetlet_link_bytes_total", (("direction", "received"), ("link", "mqtt")))]
        # Two reports at least: the handler's and the API's (the figures reach the API within seconds).
        return all(samples.get(key, 0) > 0 for key in wanted) and samples[wanted[1]] >= 2 and samples
    desire(cloud_api, {"t": 24})  # a delta, now that the link is up (the first desired came with the read)
    converged(cloud_api, {"t": 24})
    wait_for(shadow_metrics, what="the shadow's figures in the metrics")


# -- run.py doctor on the same setup ---------------------------------------------------------------------------

def test_doctor_passes_on_the_test_setup_and_names_the_broker_once_it_is_stopped(broker, cloud, api_config, capsys):
    from actors.cli import doctor

    assert doctor.run(api_config) == 0, capsys.readouterr().out
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["ok", name] for name in
                                                         ("config", "store", "engine", "broker", "cloud", "clock",
                                                          "ports")]
    assert lines[-1] == "doctor: every check passed"
    assert "the ACL lets demo-device read its shadow" in lines[3] and "token accepted" in lines[4]

    broker.stop()
    assert doctor.run(api_config) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[3].startswith(f"FAIL broker  broker 127.0.0.1:{broker.port}:")
    assert out[-1] == "doctor: 1 check(s) failed: broker"

    api_config["device"]["token"] = "wrong"
    assert doctor.run(api_config) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "doctor: 2 check(s) failed: broker, cloud"
