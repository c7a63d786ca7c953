"""The operator commands (run.py shadow ..., run.py target ...) against a running cloud."""
from __future__ import annotations

import json
import subprocess

import pytest

from cloud.loopback import free_port
from tests.support.cloud import DEMO, ROOT, RUN_PY, CloudProcess

pytestmark = pytest.mark.broker


@pytest.fixture
def running(broker, tmp_path):
    process = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db").start()
    yield process
    process.stop()


def operate(cloud: CloudProcess, *args: str, stdin: bytes | None = None, config: str | None = None):
    """Run ``run.py ARGS --config <the cloud's file>``: (exit status, stdout, stderr)."""
    result = subprocess.run([*RUN_PY, *args, "--config", config or str(cloud.config_path)], cwd=ROOT, input=stdin,
                            capture_output=True, timeout=30)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_shadow_commands(running):
    status, out, _ = operate(running, "shadow", "update", "lamp", '{"state": {"desired": {"on": true}}}')
    assert (status, json.loads(out)["version"]) == (0, 1)
    status, out, _ = operate(running, "shadow", "update", "lamp", "-",
                             stdin=b'{"state": {"reported": {"on": true}}, "clientToken": "cli"}')
    assert (status, json.loads(out)["clientToken"]) == (0, "cli")
    status, out, _ = operate(running, "shadow", "get", "lamp")
    assert (status, json.loads(out)["state"]) == (0, {"desired": {"on": True}, "reported": {"on": True}})

    status, out, err = operate(running, "shadow", "get", "lamp", "--name", "cfg")
    assert (status, out) == (1, "") and "404" in err and "No shadow exists with name: 'cfg'" in err
    status, _, err = operate(running, "shadow", "update", "lamp", "{not json")
    assert status == 1 and "Invalid JSON" in err
    assert operate(running, "shadow", "delete", "lamp")[0] == 0
    assert operate(running, "shadow", "get", "lamp")[0] == 1


def test_target_commands(running, tmp_path):
    document = {"apps": {"7": {"appId": "7", "appName": "db", "services": [
        {"serviceName": "db", "imageName": "postgres:15", "config": {"image": "postgres:15"}}]}}}
    path = tmp_path / "target.json"
    path.write_text(json.dumps(document))
    status, out, _ = operate(running, "target", "set", DEMO["uuid"], str(path))
    assert status == 0 and json.loads(out)["changed"] is True
    status, out, _ = operate(running, "target", "get", DEMO["uuid"])
    assert status == 0 and json.loads(out)["apps"]["7"]["services"][0]["imageName"] == "postgres:15"

    status, _, err = operate(running, "target", "set", DEMO["uuid"], "-", stdin=b'{"apps": 3}')
    assert status == 1 and "400" in err and "apps" in err
    status, _, err = operate(running, "target", "set", DEMO["uuid"], str(tmp_path / "missing.json"))
    assert status == 2 and "cannot read" in err
    assert operate(running, "target", "get", "nobody")[0] == 1


def test_operator_commands_say_when_no_cloud_answers_or_the_configuration_is_wrong(running, tmp_path):
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(running.config_path.read_text().replace(str(running.http_port), str(free_port())))
    status, _, err = operate(running, "target", "get", DEMO["uuid"], config=str(elsewhere))
    assert status == 1 and "no cloud answering" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[http]\nport = 'eighty'\n")
    status, _, err = operate(running, "shadow", "get", "lamp", config=str(broken))
    assert status == 2 and "http.port" in err


def test_over_https_the_operator_commands_verify_the_cloud_with_http_ca_file(broker, tmp_path):
    process = CloudProcess(tmp_path, broker.port, f"sqlite:///{tmp_path}/cloud.db", https=True).start()
    try:
        status, out, _ = operate(process, "shadow", "update", "lamp", '{"state": {"desired": {"on": true}}}')
        assert (status, json.loads(out)["version"]) == (0, 1)
        untrusting = tmp_path / "untrusting.toml"  # the same cloud, verified with the system's store instead
        trusted = f'ca_file = "{process.settings["http"]["ca_file"]}"'
        untrusting.write_text(process.config_path.read_text().replace(trusted, 'ca_file = ""', 1))  # [http]'s
        status, _, err = operate(process, "shadow", "get", "lamp", config=str(untrusting))
        assert status == 1 and f"https://127.0.0.1:{process.http_port}" in err and "certificate verify failed" in err
    finally:
        process.stop()
