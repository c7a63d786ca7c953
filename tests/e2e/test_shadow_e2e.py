"""Shadow sync end to end: the agent (persistence, shadow listener, app_config), the reference cloud and a
real Mosquitto, through connection cuts, a broker restart, a killed listener and hostile input."""
from __future__ import annotations

import io
import json
import os
import signal
import threading
import time

import pytest

import conf
from cloud.loopback import free_port
from messages.transport.http import CloudClient
from messages.transport.tls import TlsSettings
from store import Store
from tests.support.cloud import DEMO, CloudProcess, MqttProbe
from tests.support.pki import session_pki
from tests.support.polling import wait_for, wait_quiet
from tests.support.probe_actors import recorded_rows
from tests.support.proxy import TcpProxy

THING = DEMO["thing"]
TOPICS = {profile: f"${profile}/things/{THING}/shadow" for profile in ("aws", "emqx")}


# -- the pieces -------------------------------------------------------------------------------------------------

def agent_config(tmp_path, admin_port: int, broker_port: int, cloud_url: str, profile: str = "aws",
                 handlers: tuple[str, ...] = ()) -> dict:
    config = conf.load("agent", None, [
        f"store.path={tmp_path}/agent.db", f"agent.admin_port={admin_port}", "agent.stop_timeout=5.0",
        f"mqtt.port={broker_port}", "mqtt.reconnect_min=0.05", "mqtt.reconnect_max=0.5", "mqtt.keepalive=5",
        f"cloud.url={cloud_url}", f"shadow.profile={profile}", "shadow.report_timeout=1.5",
        "shadow.read_timeout=1.5", "shadow.apply_timeout=3.0", *session_pki().agent_overrides(DEMO["uuid"])])
    config["shadow"]["handlers"] = list(handlers)
    defaults = config["actors"]
    config["actors"] = {
        "persistence": defaults["persistence"],
        "shadow_listener": defaults["shadow_listener"],
        "app_config": {**defaults["app_config"], "enabled": True, "settings": {
            "path": str(tmp_path / "app.json"), "keys": ["t", "mode", "features"], "app_id": "1",
            "services": ["app"], "ranges": {"t": [16, 30]}}},
        "recorder": {"class": "tests.support.probe_actors.Recorder", "subscribes": ["PollNow", "RestartServices"],
                     "settings": {"path": str(tmp_path / "recorded.jsonl")}},
    }
    return config


@pytest.fixture
def cloud(broker, tmp_path):
    process = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db").start()
    yield process
    process.stop()


@pytest.fixture
def agents(start_agent):
    return lambda config: start_agent(config, wait_running=True)


def desire(client: CloudClient, desired: dict) -> int:
    reply = client.update_shadow(THING, {"state": {"desired": desired}})
    assert reply.status == 200, reply.body
    return reply.json()["version"]


def converged(client: CloudClient, expected: dict, timeout: float = 15.0) -> dict:
    """Wait until the delta is empty and reported holds ``expected``; the shadow's state."""
    def check():
        state = client.get_shadow(THING).json()["state"]
        reported = state.get("reported", {})
        return "delta" not in state and all(reported.get(k) == v for k, v in expected.items()) and state
    return wait_for(check, timeout=timeout, interval=0.05, what=f"the shadow to converge on {expected}")


def app_file(tmp_path) -> dict:
    path = tmp_path / "app.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pending_report(tmp_path):
    with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
        return store.pending_report(f"shadow:{THING}/")


def store_errors(tmp_path) -> dict:
    with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
        return {(e["source"], e["key"]): e["message"] for e in store.errors()}


def children(system) -> dict:
    return {c.name: c for c in system.status().children}


def recorded(tmp_path, kind) -> list[dict]:
    rows = recorded_rows(tmp_path / "recorded.jsonl")
    return [row for row in rows if row["type"] == kind]


# -- the scenarios -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["aws", "emqx"])
def test_desired_changes_are_applied_reported_and_caught_up_after_a_stop(profile, broker, cloud, agents, tmp_path,
                                                                           port):
    client = cloud.client()
    config = agent_config(tmp_path, port, broker.port, cloud.url, profile)
    system = agents(config)
    desire(client, {"t": 24, "mode": "cool"})
    state = converged(client, {"t": 24, "mode": "cool"})
    assert state["reported"] == {"t": 24, "mode": "cool"}  # only what the device has; no echo of unknowns
    assert app_file(tmp_path) == {"t": 24, "mode": "cool"}

    system.stop()
    for t in (25, 26, 27):
        desire(client, {"t": t})
    desire(client, {"mode": "eco", "features": {"telemetry": True}})
    desire(client, {"features": {"analytics": False}})

    agents(config)  # same store, same client id: the persistent session and the startup read
    expected = {"t": 27, "mode": "eco", "features": {"telemetry": True, "analytics": False}}
    converged(client, expected)
    assert app_file(tmp_path) == expected


def test_the_last_desired_state_is_applied_from_the_local_copy_with_no_broker(broker, cloud, agents, tmp_path, port):
    client = cloud.client()
    config = agent_config(tmp_path, port, broker.port, cloud.url)
    system = agents(config)
    converged_version = desire(client, {"t": 22})
    converged(client, {"t": 22})
    system.stop()
    os.unlink(tmp_path / "app.json")  # the device lost its file, say
    unreachable = agent_config(tmp_path, port, free_port(), cloud.url)
    agents(unreachable)
    wait_for(lambda: app_file(tmp_path) == {"t": 22}, what="the file rebuilt from the local copy")
    with Store.open(str(tmp_path / "agent.db"), readonly=True) as store:
        assert store.load_shadow(THING, "").version >= converged_version


def test_reports_made_offline_survive_an_agent_restart_and_go_out_merged(broker, cloud, agents, tmp_path, port):
    client = cloud.client()
    config = agent_config(tmp_path, port, broker.port, cloud.url)
    system = agents(config)
    desire(client, {"t": 28, "mode": "cool"})
    converged(client, {"t": 28, "mode": "cool"})
    wait_for(lambda: pending_report(tmp_path) is None, what="the acknowledgement stored")
    system.stop()
    broker.stop()
    config["actors"]["app_config"]["settings"]["ranges"] = {"t": [16, 25]}  # the device now tops out at 25
    system = agents(config)
    wait_for(lambda: app_file(tmp_path).get("t") == 25, what="the local copy applied offline")
    wait_for(lambda: pending_report(tmp_path), what="the report stored")
    system.stop()  # the report is only in the store now
    assert pending_report(tmp_path).patch == {"t": 25}
    agents(config)
    broker.start()
    wait_for(lambda: client.get_shadow(THING).json()["state"]["reported"] == {"t": 25, "mode": "cool"},
             timeout=15, what="the offline report delivered")
    assert client.get_shadow(THING).json()["state"]["delta"] == {"t": 28}
    wait_for(lambda: pending_report(tmp_path) is None, what="the outbox emptied")


def test_named_shadows_sync_alongside_the_classic_one(broker, cloud, agents, tmp_path, port):
    client = cloud.client()
    config = agent_config(tmp_path, port, broker.port, cloud.url)
    config["shadow"]["names"] = ["", "net"]
    config["actors"]["net_config"] = {**config["actors"]["app_config"], "settings": {
        "path": str(tmp_path / "net.json"), "keys": ["mtu"], "shadow": "net"}}
    agents(config)
    assert client.update_shadow(THING, {"state": {"desired": {"mtu": 1400}}}, name="net").status == 200
    desire(client, {"mode": "cool"})
    converged(client, {"mode": "cool"})
    wait_for(lambda: "delta" not in (s := client.get_shadow(THING, "net").json()["state"]) and
             s.get("reported") == {"mtu": 1400}, what="the named shadow to converge")
    assert json.loads((tmp_path / "net.json").read_text()) == {"mtu": 1400}
    assert app_file(tmp_path) == {"mode": "cool"}


def test_a_value_the_device_cannot_apply_is_reported_as_it_is_without_a_storm(broker, cloud, agents, tmp_path,
                                                                              port):
    client = cloud.client()
    agents(agent_config(tmp_path, port, broker.port, cloud.url))
    prefix = TOPICS["aws"]
    with MqttProbe(broker.port) as probe:
        probe.subscribe(f"{prefix}/update", f"{prefix}/update/delta")
        desire(client, {"t": 40, "mode": "cool"})
        wait_for(lambda: client.get_shadow(THING).json()["state"].get("reported", {}).get("t") == 30,
                 what="the clamped value reported")
        # a storm would show here: report, delta, report, ...
        wait_quiet(lambda: len(probe.received(f"{prefix}/update")) + len(probe.received(f"{prefix}/update/delta")),
                   quiet=1.0, what="shadow traffic")
        reports = [body for body in probe.received(f"{prefix}/update") if "reported" in body["state"]]
        assert [body["state"]["reported"] for body in reports] == [{"t": 30, "mode": "cool"}]
        assert len(probe.received(f"{prefix}/update/delta")) <= 2  # the desired update's, and the report's
    state = client.get_shadow(THING).json()["state"]
    assert state["delta"] == {"t": 40}  # honest: the device does not have 40
    assert store_errors(tmp_path)[(f"shadow:{THING}/", "desired.t")] == "40 is outside 16..30; applied 30"


def test_a_broker_restart_and_cut_connections_during_updates_lose_nothing(broker, cloud, agents, tmp_path, port):
    client = cloud.client()
    proxy = TcpProxy(broker.port)
    try:
        system = agents(agent_config(tmp_path, port, proxy.port, cloud.url))
        for step in range(24):
            desire(client, {"mode": f"m{step}", "t": 16 + step % 10})
            if step in (5, 11, 17):
                proxy.cut()
            if step == 14:
                broker.stop()
            if step == 15:
                broker.start()
                wait_for(lambda: json.loads(cloud.client(None).health().body)["ready"] is True,
                         timeout=10, what="the cloud back on the broker")
            time.sleep(0.05)  # pacing: the updates straddle the cuts and the restart (not a wait)
        expected = {"mode": "m23", "t": 16 + 23 % 10}
        converged(client, expected, timeout=20)
        assert app_file(tmp_path) == expected
        assert children(system)["shadow_listener"].restarts == 0
    finally:
        proxy.close()


def test_killing_the_listener_mid_update_converges_and_spares_the_others(broker, cloud, agents, tmp_path, port):
    client = cloud.client()
    system = agents(agent_config(tmp_path, port, broker.port, cloud.url))
    before = children(system)
    for step in range(10):
        desire(client, {"mode": f"k{step}"})
        if step == 4:
            os.kill(before["shadow_listener"].pid, signal.SIGKILL)
    converged(client, {"mode": "k9"})
    after = wait_for(lambda: (c := children(system)) and c["shadow_listener"].state == "running" and c,
                     what="the listener running again")
    assert after["shadow_listener"].restarts == 1 and after["shadow_listener"].pid != before["shadow_listener"].pid
    for name in ("persistence", "app_config"):
        assert (after[name].pid, after[name].restarts) == (before[name].pid, 0)
    assert app_file(tmp_path)["mode"] == "k9"


def report_behind_the_devices_back(delta):
    """A handler function (runs in the listener) letting another writer report the delta first: the shadow's
    version moves on with no delta to tell the device, whose own report then gets 409."""
    if delta.delta:
        CloudClient(os.environ["FLEETLET_TEST_CLOUD"], os.environ["FLEETLET_TEST_TOKEN"],
                    tls=TlsSettings(session_pki().ca)).update_shadow(
            delta.thing_name, {"state": {"reported": delta.delta}})
    return {}, {}


def test_a_version_conflict_is_answered_with_a_fresh_read_and_a_retry(broker, cloud, agents, tmp_path, port,
                                                                       monkeypatch):
    monkeypatch.setenv("FLEETLET_TEST_CLOUD", cloud.url)
    monkeypatch.setenv("FLEETLET_TEST_TOKEN", DEMO["token"])
    client = cloud.client()
    with MqttProbe(broker.port) as probe:
        probe.subscribe(*(f"{TOPICS['aws']}/{topic}" for topic in ("update/rejected", "update/accepted",
                                                                   "get/rejected")))
        agents(agent_config(tmp_path, port, broker.port, cloud.url,
                            handlers=("tests.e2e.test_shadow_e2e:report_behind_the_devices_back",)))
        probe.expect(f"{TOPICS['aws']}/get/rejected")  # the startup read is over (no shadow yet)
        desire(client, {"t": 21})
        converged(client, {"t": 21})
        rejected = probe.expect(f"{TOPICS['aws']}/update/rejected", where=lambda body: body["code"] == 409)
        retry = probe.expect(f"{TOPICS['aws']}/update/accepted",
                             where=lambda body: "clientToken" in body and body["state"]["reported"].get("t") == 21)
        assert rejected["clientToken"].startswith("fl") and retry["clientToken"] != rejected["clientToken"]
    assert app_file(tmp_path)["t"] == 21


def test_hostile_stale_and_duplicate_input_on_every_subscribed_topic_is_survived(broker, cloud, agents, tmp_path,
                                                                                  port):
    client = cloud.client()
    system = agents(agent_config(tmp_path, port, broker.port, cloud.url))
    version = desire(client, {"t": 24})
    converged(client, {"t": 24})
    prefix = TOPICS["aws"]
    hostile = [b"", b"not json", b"\xff\xfe\x00", b"[1, 2, 3]", b'{"version": "7", "state": {}}',
               b'{"version": 1e400, "state": {}}', b'{"state": null, "version": 3}',
               b'{"version": 3, "state": ' + b"[" * 5000 + b"]" * 5000 + b"}",
               b'{"version": 3, "state": {"t": "' + b"x" * 200_000 + b'"}}',
               json.dumps({"code": 409, "message": "forged", "clientToken": "fl00000000-0-1"}).encode(),
               json.dumps({"version": 10**30, "clientToken": "not-ours"}).encode()]
    with MqttProbe(broker.port) as probe:
        probe.subscribe(f"{prefix}/update", f"{prefix}/get")
        for operation in ("update/delta", "update/accepted", "update/rejected", "get/accepted", "get/rejected"):
            for payload in hostile:  # QoS 0: a burst of QoS 1 would outrun the broker's receive maximum
                probe.publish(f"{prefix}/{operation}", payload, qos=0)
        probe.publish(f"fleetlet/devices/{DEMO['uuid']}/poll-now", b"\x00garbage")
        # Out of order and duplicated: an old delta must not roll the file back, a repeat must cost nothing.
        probe.publish(f"{prefix}/update/delta", {"version": version - 1, "state": {"t": 17}})
        probe.publish(f"{prefix}/update/delta", {"version": version, "state": {"t": 24}})
        wait_for(lambda: app_file(tmp_path).get("t") == 24, what="the newest delta applied")
        wait_quiet(lambda: len(probe.received(f"{prefix}/update")), quiet=1.0, what="reports")
        assert app_file(tmp_path)["t"] == 24
        assert not [body for body in probe.received(f"{prefix}/update") if "reported" in body.get("state", {})]
        desire(client, {"t": 26})
        converged(client, {"t": 26})
    assert children(system)["shadow_listener"].restarts == 0
    errors = store_errors(tmp_path)
    assert "malformed" in errors[(f"shadow:{THING}/", "input")]
    assert recorded(tmp_path, "PollNow")  # a notice is a notice, whatever it carries


def test_watch_prints_deltas_and_reports_and_a_restart_is_asked_for(broker, cloud, agents, tmp_path, port, capfd):
    from actors.cli.shadow_watch import watch

    client = cloud.client()
    config = agent_config(tmp_path, port, broker.port, cloud.url)
    with MqttProbe(broker.port) as probe:  # a desire during the startup read would be seen twice
        probe.subscribe(f"{TOPICS['aws']}/get/rejected")
        agents(config)
        probe.expect(f"{TOPICS['aws']}/get/rejected")  # the startup read is over (no shadow yet)
    out, stop = io.StringIO(), threading.Event()
    # One certificate holds one session: the operator watches with an identity of its own, not the device's.
    pki = session_pki()
    cert, key = pki.files(pki.next_probe())
    as_operator = {**config, "mqtt": {**config["mqtt"], "cert_file": cert, "key_file": key}}
    watcher = threading.Thread(target=watch, args=(as_operator, THING),
                               kwargs={"out": out, "stop": stop, "count": 4})
    watcher.start()
    try:
        # the watcher says so on stderr once its subscriptions are acknowledged (capfd, not capsys: the
        # actor processes inherit the real standard streams)
        wait_for(lambda: "watching " in capfd.readouterr().err, what="the watcher's subscriptions")
        desire(client, {"t": 23, "requiresRestart": True})
        watcher.join(10)
    finally:
        stop.set()
        watcher.join(5)
    kinds = [line.split()[1] for line in out.getvalue().splitlines()]
    assert "delta" in kinds and "report" in kinds, out.getvalue()
    converged(client, {"t": 23, "requiresRestart": True})
    (restart,) = wait_for(lambda: recorded(tmp_path, "RestartServices"), what="a restart of the app's services")
    assert restart["services"] == ["app"] and "changed (t)" in restart["reason"]


def test_watch_lines_name_the_kind_version_token_and_state():
    from actors.cli.shadow_watch import describe

    at = 1_700_000_000.0
    assert describe("update", b'{"state": {"reported": {"t": 1}}, "clientToken": "c1", "version": 4}', at) == \
        '2023-11-14T22:13:20.000+00:00 report   v4     c1 {"reported":{"t":1}}'
    assert describe("delta", b'{"state": {"t": 2}, "version": 5}', at).split()[1:] == ["delta", "v5", "-", '{"t":2}']
    assert describe("rejected", b'{"code": 409, "message": "Version conflict", "clientToken": "c2"}', at).split()[1:] \
        == ["rejected", "v-", "c2", "409", "Version", "conflict"]
    assert "unreadable (not JSON" in describe("delta", b"{oops", at)
    assert json.loads(describe("delta", b'{"state": {}, "version": 1}', at, as_json=True))["kind"] == "delta"
