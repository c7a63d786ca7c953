"""`run.py doctor`: check the installation, one line per check, like ``iotedge check``; exit 1 naming each
failure.

Checks: the configuration (and the files it names), the store (SQLite's integrity check), the engine
(reachable, its version, free space on its data root), the broker (TLS, authentication, and the ACL by a
shadow read: Mosquitto acknowledges a subscription the ACL refuses and then delivers nothing, so only an
answer proves it), the cloud API (TLS and the token, by a target-state poll), the clock (not before this
release), and the ports the agent needs. The broker check connects with the device's identity, so beside a
running agent it takes the device's session over for a moment: the agent reconnects and reads again.
"""
from __future__ import annotations

import datetime
import os
import shutil
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from actors.api.client import ApiUnavailable, request
from actors.runtime.processes import port_bindable
from conf.agent import check_link_files
from conf.schema import ConfigError
from messages.protocol import json as strict_json
from messages.protocol.shadow_topics import shadow_topics
from messages.transport.http import CloudClient, CloudError
from messages.transport.mqtt import LinkSettings, MqttLink

RELEASED = datetime.date(2026, 12, 1)  # this release's date: a clock before it cannot check certificates
MIN_FREE_BYTES = 512 * 1024 * 1024
BROKER_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def register(subparsers, common) -> None:
    parser = subparsers.add_parser("doctor", help="check the configuration, store, engine, broker, cloud, clock "
                                                  "and ports; exit 1 naming each failure")
    common(parser)


def run(config: dict, out=None) -> int:
    out = out or sys.stdout  # looked up now: a caller may have replaced it (a test's capture)
    checks = [check(config) for check in CHECKS]
    for item in checks:
        print(f"{'ok  ' if item.ok else 'FAIL'} {item.name:<7} {item.detail}", file=out)
    failed = [item.name for item in checks if not item.ok]
    if failed:
        print(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}", file=out)
        return 1
    print("doctor: every check passed", file=out)
    return 0


def _guarded(name: str, probe: Callable[[dict], str]) -> Callable[[dict], Check]:
    def run_one(config: dict) -> Check:
        try:
            return Check(name, True, probe(config))
        except Exception as exc:  # noqa: BLE001 - every failure of a check is its answer
            return Check(name, False, str(exc) or type(exc).__name__)
    return run_one


def _config(config: dict) -> str:
    try:
        check_link_files(config)
    except ConfigError as exc:
        raise RuntimeError(f"configuration error: {exc}") from None
    return "the configuration and every file it names are readable"


def _store(config: dict) -> str:
    path = config["store"]["path"]
    if not os.path.exists(path):
        return f"{path} does not exist yet (the agent makes it at its first start)"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise RuntimeError(f"{path}: integrity check: {result}")
    from store import Store
    Store.open(path, readonly=True).close()  # the schema version this agent reads
    return f"{path}: integrity ok"


def _engine(config: dict) -> str:
    import docker

    client = docker.from_env(timeout=5)
    try:
        version = client.version()["Version"]
        root = client.info().get("DockerRootDir", "/var/lib/docker")
    except docker.errors.DockerException as exc:
        raise RuntimeError(f"the Docker engine is unreachable: {exc}") from None
    finally:
        client.close()
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return f"Docker {version} (its data root {root} is not visible here)"
    if free < MIN_FREE_BYTES:
        raise RuntimeError(f"Docker {version}: only {free // 2**20} MiB free on {root}")
    return f"Docker {version}, {free // 2**20} MiB free on {root}"


def _broker(config: dict) -> str:
    thing, mqtt = config["device"]["thing"], config["mqtt"]
    topics = shadow_topics("aws", thing, "")
    answered, failure = threading.Event(), []

    def on_message(topic: str, payload: bytes) -> None:
        if topic in (topics.get_accepted, topics.get_rejected):
            answered.set()

    def on_failure(reason: str) -> None:
        failure.append(reason)
        if reason:
            answered.set()

    link = MqttLink(LinkSettings.from_config(config, client_id=thing), [topics.get_accepted, topics.get_rejected],
                    on_message, on_failure=on_failure)
    link.start()
    try:
        link.publish(topics.get, strict_json.encode({"clientToken": "fleetlet-doctor"}))
        answered.wait(BROKER_TIMEOUT)
    finally:
        link.stop()
    where = f"{mqtt['host']}:{mqtt['port']}"
    if failure and failure[-1]:
        raise RuntimeError(f"broker {where}: {failure[-1]}")
    if not answered.is_set():
        raise RuntimeError(f"broker {where}: no answer to a shadow read of {thing} within {BROKER_TIMEOUT:g} s "
                           "(the ACL refuses it, or nothing serves the shadow)")
    return f"broker {where}: {'TLS, ' if mqtt['tls'] else ''}authenticated, the ACL lets {thing} read its shadow"


def _cloud(config: dict) -> str:
    client = CloudClient.from_config(config)
    try:
        response = client.get_target(config["device"]["uuid"], ok=(200, 304, 404))
    except CloudError as exc:
        if exc.status in (401, 403):
            raise RuntimeError(f"{config['cloud']['url']}: the device's token is refused ({exc.status})") from None
        raise RuntimeError(str(exc)) from None
    note = "no target state yet" if response.status == 404 else "serves the target state"
    return f"{config['cloud']['url']}: reached, token accepted, {note}"


def _clock(config: dict) -> str:
    today = datetime.datetime.now(datetime.timezone.utc).date()
    if today < RELEASED:
        raise RuntimeError(f"the clock says {today}, before this release ({RELEASED}): certificates cannot be "
                           "checked; set the time (NTP)")
    return f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"


def _ports(config: dict) -> str:
    try:
        status, _ = request(config, "GET", "/v1/status", timeout=5)
        running = status == 200
    except ApiUnavailable:
        running = False
    wanted = {"agent.admin_port": config["agent"]["admin_port"]}
    if config["api"]["port"]:
        wanted["api.port"] = config["api"]["port"]
    if running:
        return f"the running agent holds {', '.join(f'{k} {v}' for k, v in wanted.items())}"
    taken = [f"{key} {port}" for key, port in wanted.items() if not port_bindable(port)]
    if taken:
        raise RuntimeError(f"in use by another program: {', '.join(taken)}")
    socket_dir = os.path.dirname(os.path.abspath(config["api"]["socket"]))
    if os.path.isdir(socket_dir) and not os.access(socket_dir, os.W_OK):
        raise RuntimeError(f"api.socket: {socket_dir} is not writable")
    return f"free: {', '.join(f'{k} {v}' for k, v in wanted.items())}"


CHECKS = [_guarded("config", _config), _guarded("store", _store), _guarded("engine", _engine),
          _guarded("broker", _broker), _guarded("cloud", _cloud), _guarded("clock", _clock),
          _guarded("ports", _ports)]

