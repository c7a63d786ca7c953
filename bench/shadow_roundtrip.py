"""Benchmark: the shadow round trip "desired update accepted by the cloud -> device applied -> reported
accepted -> delta empty", one update at a time, on a real Mosquitto and the reference cloud.

Measured for the agent (persistence + shadow listener + app_config writing the file with fsync, store in
FULL sync) and, in the same run against the same broker and cloud, for a baseline: a minimal plain MQTT
client answering each delta with a report of the delta's state. The clock starts when the cloud's HTTP
API answers the desired update (accepted) and stops when update/documents shows a version after it with
an empty delta. Plaintext MQTT (a loopback broker without TLS), as this benchmark has always measured;
bench.tls measures the same round trip over TLS beside it.
Run: python3 -m bench.shadow_roundtrip [--updates 1000] [--warmup 20]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import queue
import subprocess
import sys
import tempfile
import time

import conf
from actors.runtime.processes import become_subreaper
from actors.runtime.system import AgentSystem
from bench.common import percentiles, write_result
from cloud import pki
from cloud.loopback import Mosquitto, free_port, stop_process, wait_until
from messages.protocol.shadow_document import compute_delta
from messages.transport.http import CloudClient, CloudError
from messages.transport.mqtt import LinkSettings, MqttLink
from messages.transport.tls import TlsSettings

ROOT = pathlib.Path(__file__).resolve().parent.parent  # the checkout: the processes it starts run there

ADMIN_TOKEN = "bench-admin-token"
AGENT_THING, BASELINE_THING = "demo-device", "bench-baseline"
ROUND_TRIP_TIMEOUT = 10.0


class Services:
    """Mosquitto and the reference cloud as child processes of this run: plaintext, or ``tls`` as deployed (a
    PKI of the run's own, client certificates, the ACL; the two things are registered devices)."""

    def __init__(self, workdir: pathlib.Path, tls: bool = False):
        self.workdir, self.http_port, self.tls = workdir, free_port(), tls
        self.pki = workdir / "pki"
        if tls:
            pki.init(self.pki)
            for thing in (AGENT_THING, BASELINE_THING):
                pki.issue_device(self.pki, thing)
            for thing in (AGENT_THING, BASELINE_THING):
                pki.issue_service(self.pki, f"watch-{thing}", f"bench-watch-{thing}")
        self.broker = Mosquitto(workdir, pki_dir=self.pki if tls else None, tls=tls)
        self.broker_port = self.broker.port
        self.procs: list[subprocess.Popen] = []

    def link_tls(self, stem: str) -> TlsSettings | None:
        """The TLS settings of the identity ``stem`` (a device's uuid, ``watch-THING``), or None in plaintext."""
        if not self.tls:
            return None
        return TlsSettings(str(self.pki / "ca.crt"), str(self.pki / f"{stem}.crt"), str(self.pki / f"{stem}.key"))

    def start(self) -> "Services":
        self.broker.start()
        cloud_conf = self.workdir / "cloud.toml"
        mqtt = (f'tls = true\nca_file = "{self.pki}/ca.crt"\ncert_file = "{self.pki}/cloud.crt"\n'
                f'key_file = "{self.pki}/cloud.key"\n') if self.tls else "tls = false\n"
        cloud_conf.write_text(f'[http]\nport = {self.http_port}\ncert_file = ""\nkey_file = ""\n[store]\nurl = "sqlite:///{self.workdir}/cloud.db"\n'
                              f'[mqtt]\nport = {self.broker_port}\nclient_id = "bench-cloud"\nreconnect_delay = 0.2\n'
                              f'{mqtt}[auth]\nadmin_token = "{ADMIN_TOKEN}"\n[log]\nlevel = "WARNING"\n')
        serve = ("import sys; from cloud.server import run; from cloud.settings import load_cloud_settings; "
                 f"sys.exit(run(load_cloud_settings({str(cloud_conf)!r})))")
        self.procs.append(subprocess.Popen([sys.executable, "-c", serve], cwd=ROOT, stdout=subprocess.DEVNULL,
                                           stderr=(self.workdir / "cloud.log").open("wb")))
        wait_until(self._cloud_ready, 30, "the cloud")
        for thing in (AGENT_THING, BASELINE_THING):  # the cloud serves registered things only
            self.client.register_device(thing, thing, f"bench-token-{thing}")
        return self

    @property
    def client(self) -> CloudClient:
        return CloudClient(f"http://127.0.0.1:{self.http_port}", ADMIN_TOKEN)

    def _cloud_ready(self) -> bool:
        try:
            reply = self.client.health()
        except CloudError:
            return False
        return reply.status == 200 and json.loads(reply.body).get("ready") is True

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.broker.stop()


class Converged:
    """Watches update/documents of one thing; ``wait(after)`` returns once a version above ``after`` has an
    empty delta."""

    def __init__(self, services: Services, thing: str):
        self.events: queue.Queue = queue.Queue()
        topic = f"$aws/things/{thing}/shadow/update/documents"
        self.link = MqttLink(LinkSettings("127.0.0.1", services.broker_port, f"bench-watch-{thing}", clean=True,
                                          tls=services.link_tls(f"watch-{thing}")), [topic],
                             lambda _topic, payload: self.events.put((time.perf_counter(), payload)))

    def __enter__(self) -> "Converged":
        self.link.start()
        wait_until(lambda: self.link.ready, 10, "the documents watcher")
        return self

    def __exit__(self, *exc) -> None:
        self.link.stop()

    def wait(self, after_version: int) -> float:
        deadline = time.monotonic() + ROUND_TRIP_TIMEOUT
        while True:
            at, payload = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            current = json.loads(payload)["current"]
            state = current.get("state", {})
            if current["version"] > after_version and not compute_delta(state.get("desired"), state.get("reported")):
                return at


def measure(client: CloudClient, thing: str, watcher: Converged, updates: int, warmup: int) -> list[float]:
    samples = []
    for index in range(warmup + updates):
        reply = client.update_shadow(thing, {"state": {"desired": {"t": 16 + index % 14, "seq": index}}})
        accepted_at = time.perf_counter()
        if reply.status != 200:
            raise RuntimeError(f"the cloud refused update {index}: {reply.status} {reply.body[:200]!r}")
        done_at = watcher.wait(reply.json()["version"])
        if index >= warmup:
            samples.append((done_at - accepted_at) * 1000)
    return samples


def agent_round_trips(services: Services, workdir: pathlib.Path, updates: int, warmup: int) -> dict:
    tls = services.link_tls(AGENT_THING)
    identity = [f"mqtt.ca_file={tls.ca_file}", f"mqtt.cert_file={tls.cert_file}",
                f"mqtt.key_file={tls.key_file}"] if tls else ["mqtt.tls=false"]
    config = conf.load("agent", None, [f"store.path={workdir}/agent.db", f"agent.admin_port={free_port()}",
                                       f"mqtt.port={services.broker_port}", *identity,
                                       f"cloud.url=http://127.0.0.1:{services.http_port}", "agent.log_level=WARNING"])
    actors = config["actors"]
    config["actors"] = {"persistence": actors["persistence"], "shadow_listener": actors["shadow_listener"],
                        "app_config": {**actors["app_config"], "enabled": True,
                                       "settings": {"path": str(workdir / "app.json"), "keys": ["t", "seq"]}}}
    system = AgentSystem(config)
    system.start()
    try:
        with Converged(services, AGENT_THING) as watcher:
            wait_until(lambda: all(c.state == "running" for c in system.status().children), 10, "the agent")
            samples = measure(services.client, AGENT_THING, watcher, updates, warmup)
        restarts = sum(child.restarts for child in system.status().children)
    finally:
        system.stop()
    return {**percentiles(samples), "actor_restarts": restarts,
            "store_synchronous": config["store"]["synchronous"]}


def baseline_round_trips(services: Services, updates: int, warmup: int) -> dict:
    prefix = f"$aws/things/{BASELINE_THING}/shadow"

    def answer(_topic: str, payload: bytes) -> None:
        state = json.loads(payload)["state"]
        device.publish(f"{prefix}/update", json.dumps({"state": {"reported": state}}).encode())

    device = MqttLink(LinkSettings("127.0.0.1", services.broker_port, BASELINE_THING,
                                   tls=services.link_tls(BASELINE_THING)), [f"{prefix}/update/delta"], answer)
    device.start()
    try:
        wait_until(lambda: device.ready, 10, "the baseline client")
        with Converged(services, BASELINE_THING) as watcher:
            samples = measure(services.client, BASELINE_THING, watcher, updates, warmup)
    finally:
        device.stop()
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    become_subreaper()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        services = Services(workdir).start()
        try:
            started = time.monotonic()
            baseline = baseline_round_trips(services, args.updates, args.warmup)
            agent = agent_round_trips(services, workdir, args.updates, args.warmup)
            elapsed = time.monotonic() - started
        finally:
            services.stop()
    result = {"updates": args.updates, "warmup": args.warmup, "seconds": round(elapsed, 1),
              "baseline_plain_mqtt_client": baseline, "agent": agent,
              "ratio_p50_agent_vs_baseline": round(agent["p50_ms"] / baseline["p50_ms"], 2),
              "ratio_p99_agent_vs_baseline": round(agent["p99_ms"] / baseline["p99_ms"], 2)}
    path = write_result("shadow_roundtrip", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
