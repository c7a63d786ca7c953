"""The container policy in the running agent: a target using a device the owner did not allow is rejected
whole, naming the service, the field and the key; the last good target keeps running; once the owner allows
it, the same target converges with the device mapped. And a compose file applied by the agent is left
untouched by a restart of the agent."""
from __future__ import annotations

import pathlib

from cloud.compose import load_compose
from tests.integration.test_policy_engine import policy_agent, rejection  # noqa: F401  (fixture)
from tests.integration.test_reconciler_engine import document
from tests.support.polling import wait_for
from tests.support.ports import free_admin_port

CORPUS = pathlib.Path(__file__).parent.parent / "compose"
PORTS = ("PROMETHEUS_PORT", "GRAFANA_PORT")


def test_a_target_breaking_the_container_policy_is_rejected_and_runs_once_allowed(policy_agent):  # noqa: F811
    start, device, served = policy_agent
    system = start()
    served.doc, served.etag = document({"1": {"web": {}}}), '"good"'
    device.wait_converged('"good"', timeout=40)
    good = device.running_ids()

    gateway = {"devices": ["/dev/null:/dev/ttyUSB0"], "cap_add": ["NET_ADMIN"]}
    served.doc = document({"1": {"web": {}, "gateway": gateway}})
    served.etag = '"serial"'
    refused = wait_for(lambda: rejection(device.db), timeout=20, what="the serial gateway rejected")
    assert refused.etag == '"serial"'
    assert ('apps.1 service gateway: config.devices: device /dev/null is not in policy.devices '
            '(policy.devices = ["/dev/null"] allows it)') in refused.reason
    assert "config.cap_add: capability NET_ADMIN is beyond Docker's default set" in refused.reason
    assert device.running_ids() == good  # the last good target stays in force, untouched

    system.stop()  # the owner changes the policy: the agent restarts, and judges the refused target again
    start('devices=["/dev/null"]', 'cap_add=["NET_ADMIN"]')
    device.wait_converged('"serial"', timeout=40)
    gateway = device.containers()["gateway"][0]
    assert gateway.attrs["HostConfig"]["Devices"] == [
        {"PathOnHost": "/dev/null", "PathInContainer": "/dev/ttyUSB0", "CgroupPermissions": "rwm"}]
    assert gateway.attrs["HostConfig"]["CapAdd"] == ["NET_ADMIN"]
    assert device.running_ids()["web"] == good["web"]  # the unchanged service was not recreated


def test_a_compose_file_through_the_agent_survives_a_restart_without_a_recreate(policy_agent):  # noqa: F811
    start, device, served = policy_agent
    path = CORPUS / "metrics-stack.yml"  # host PID, bind mounts, limits, read-only root: options of every kind
    served.doc = load_compose(path.read_bytes(), {name: str(free_admin_port()) for name in PORTS})
    served.etag = '"metrics"'
    allow = ['allow_host_pid=true', 'bind_roots=["/proc", "/sys"]']
    system = start(*allow)
    device.wait_converged('"metrics"', timeout=60)
    before = device.running_ids()
    assert sorted(before) == ["grafana", "node-exporter", "prometheus"]

    system.stop()
    passes = len(device.messages("ReconcilePassFinished"))
    start(*allow)
    after = wait_for(lambda: next((p for p in device.messages("ReconcilePassFinished")[passes:] if p["converged"]),
                                  None), timeout=60, what="the restarted agent's first converged pass")
    assert after["etag"] == '"metrics"' and after["steps"] == 0  # nothing was recreated, restarted or pulled
    assert device.running_ids() == before
