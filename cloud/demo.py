"""``run.py demo``: a device converging on its own, on loopback, with nothing to configure.

Makes the development PKI in ``var/pki`` where it is missing (the CA, the broker's and the cloud's
certificates, the demo device's), starts (or reuses) Mosquitto over TLS with client certificates and the ACL
and the reference cloud on the addresses the agent's defaults name, gives the demo device a target state
(one small container) and a desired shadow value, then runs the agent in the foreground, its token read from
``var/demo-token`` (0600), never from a command line. Ctrl-C stops everything this command started, by pid.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable

from cloud import pki
from cloud.loopback import Mosquitto, listening, stop_process, wait_until
from cloud.settings import load_cloud_settings
from conf.agent import check_link_files, load_secrets
from conf.schema import ConfigError
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
    pki_dir = pki.ensure(var / "pki", [(agent_config["device"]["uuid"], agent_config["device"]["thing"])])
    agent_config["device"] = {**agent_config["device"], "token_file": str(_token_file(var, agent_config))}
    try:
        load_secrets(agent_config)
        check_link_files(agent_config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    cloud_settings = load_cloud_settings(None, [f"mqtt.host={mqtt['host']}", f"mqtt.port={mqtt['port']}"])
    cloud = CloudClient(agent_config["cloud"]["url"], cloud_settings.admin_token, 10.0,
                        tls=cloud_settings.operator_tls())
    with contextlib.ExitStack() as owned:
        if not listening(mqtt["port"], mqtt["host"]):
            broker = Mosquitto(var, mqtt["port"], mqtt["host"], pki_dir=pki_dir, tls=mqtt["tls"])
            owned.callback(broker.start().stop)
        if not _cloud_up(cloud):
            log = open(var / "demo-cloud.log", "ab")
            owned.callback(log.close)
            server = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "cloud",
                                       "--set", f"mqtt.port={mqtt['port']}",
                                       "--set", f"mqtt.tls={str(mqtt['tls']).lower()}"],
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


def _token_file(var: pathlib.Path, agent_config: dict) -> pathlib.Path:
    """The demo device's token in a file only its owner may read (the cloud's seed registers the same one)."""
    path = var / "demo-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, 0o600)
        fh.write(agent_config["device"]["token"] + "\n")
    return path


def _cloud_up(cloud: CloudClient) -> bool:
    try:
        return cloud.health().status == 200
    except CloudError:
        return False
