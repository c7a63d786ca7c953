"""``run.py demo``: a device converging on its own, on loopback, with nothing to configure.

Starts (or reuses) Mosquitto and the reference cloud on the addresses the agent's defaults name, gives
the demo device a target state (one small container) and a desired shadow value, then runs the agent
in the foreground. Ctrl-C stops everything this command started, by pid.
"""
from __future__ import annotations

import contextlib
import pathlib
import subprocess
import sys
from collections.abc import Callable

from cloud.loopback import Mosquitto, listening, stop_process, wait_until
from cloud.settings import load_cloud_settings
from messages.transport.http import CloudClient, CloudError

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO_IMAGE = "fleetlet-test/busybox:1"  # built locally by tests/images/build.sh (.ci/setup runs it)
DEMO_TARGET = {"apps": {"1": {"appId": "1", "appName": "demo", "services": [{
    "serviceId": 1, "serviceName": "hello", "imageName": DEMO_IMAGE,
    "config": {"image": DEMO_IMAGE, "environment": {"GREETING": "hello from fleetlet"},
               "command": ["sh", "-c", "while true; do echo \"$GREETING\"; sleep 30; done"]}}]}}}
DEMO_DESIRED = {"state": {"desired": {"logLevel": "info", "telemetry": {"interval": 30}}}}


def with_demo_handler(agent_config: dict) -> dict:
    """The shadow side meets the container side: desired keys land in a config file of the demo app,
    and a desired ``requiresRestart: true`` restarts its service."""
    config = {**agent_config, "actors": dict(agent_config["actors"])}
    config["actors"]["app_config"] = {
        **config["actors"]["app_config"], "enabled": True,
        "settings": {"path": str(ROOT / "var" / "demo-app-config.json"), "keys": ["logLevel", "telemetry"],
                     "app_id": "1", "services": ["hello"]}}
    return config


def run(agent_config: dict, run_agent: Callable[[dict], int]) -> int:
    agent_config = with_demo_handler(agent_config)
    mqtt = agent_config["mqtt"]
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    cloud_settings = load_cloud_settings(None, [f"mqtt.host={mqtt['host']}", f"mqtt.port={mqtt['port']}"])
    cloud = CloudClient(agent_config["cloud"]["url"], cloud_settings.admin_token, 10.0)
    with contextlib.ExitStack() as owned:
        if not listening(mqtt["port"], mqtt["host"]):
            owned.callback(Mosquitto(var, mqtt["port"], mqtt["host"]).start().stop)
        if not _cloud_up(cloud):
            log = open(var / "demo-cloud.log", "ab")
            owned.callback(log.close)
            server = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "cloud",
                                       "--set", f"mqtt.port={mqtt['port']}"],
                                      cwd=ROOT, stdout=log, stderr=log)
            owned.callback(stop_process, server)
            wait_until(lambda: _cloud_up(cloud), 30, "the reference cloud (log: var/demo-cloud.log)")
        uuid, thing = agent_config["device"]["uuid"], agent_config["device"]["thing"]
        if cloud.get_target(uuid).status == 404:
            cloud.set_target(uuid, DEMO_TARGET)
        if cloud.get_shadow(thing).status == 404:
            cloud.update_shadow(thing, DEMO_DESIRED)
        print(f"demo: cloud {agent_config['cloud']['url']}, broker {mqtt['host']}:{mqtt['port']}; try\n"
              f"  python3 run.py status\n  python3 run.py shadow update {thing} "
              "'{\"state\": {\"desired\": {\"logLevel\": \"debug\"}}}'\n"
              "  docker ps\n  cat var/demo-app-config.json", flush=True)
        return run_agent(agent_config)


def _cloud_up(cloud: CloudClient) -> bool:
    try:
        return cloud.health().status == 200
    except CloudError:
        return False
