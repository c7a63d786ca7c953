"""Benchmark: shadow updates per second through the reference cloud's MQTT path, 1, 10 and 100 things at once.

A real Mosquitto and ``run.py cloud`` (as shipped: SQLite in WAL with synchronous=FULL; and PostgreSQL 15
with fsync on, when installed). Each thing is its own MQTT client with one update in flight: it publishes
``{"state": {"reported": {...}}}`` (QoS 1) to its classic shadow and waits for ``update/accepted`` before
the next one, as a device does. Each such update makes the cloud write once and publish four messages
(accepted and documents, on the aws and the emqx topics). Bounded: ``--seconds`` per level, plus warm-up.
Run: python3 -m bench.cloud_shadow [--seconds 5] [--no-postgres]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid

import gmqtt

from actors.runtime.processes import become_subreaper
from bench.common import cpu_ticks, percentiles, write_result
from cloud.loopback import Mosquitto
from tests.support.cloud import CloudProcess
from tests.support.postgres import PG_BIN, PostgresCluster

LEVELS = (1, 10, 100)
WARMUP_SECONDS = 1.0
ANSWER_TIMEOUT = 30.0


class Device:
    """One thing's MQTT client: publishes an update, waits for its answer."""

    def __init__(self, port: int, thing: str):
        self.port, self.thing = port, thing
        self.prefix = f"$aws/things/{thing}/shadow/update"
        self.client = gmqtt.Client(f"bench-{thing}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.subscribed = asyncio.Event()
        self.waiting: dict[str, asyncio.Future] = {}

    async def connect(self) -> None:
        await self.client.connect("127.0.0.1", self.port, keepalive=60)
        self.client.subscribe([gmqtt.Subscription(f"{self.prefix}/accepted", qos=1),
                               gmqtt.Subscription(f"{self.prefix}/rejected", qos=1)])
        await asyncio.wait_for(self.subscribed.wait(), 10)

    async def update(self, sequence: int) -> str:
        token = uuid.uuid4().hex[:16]
        answer = asyncio.get_running_loop().create_future()
        self.waiting[token] = answer
        payload = {"state": {"reported": {"sequence": sequence, "temperature": 20 + sequence % 7}},
                   "clientToken": token}
        self.client.publish(self.prefix, json.dumps(payload), qos=1)
        try:
            return await asyncio.wait_for(answer, ANSWER_TIMEOUT)
        finally:
            self.waiting.pop(token, None)

    def _on_message(self, client, topic, payload, qos, properties) -> int:
        answer = self.waiting.get(json.loads(payload).get("clientToken"))
        if answer is not None and not answer.done():
            answer.set_result(topic.rsplit("/", 1)[1])
        return 0


async def run_level(port: int, things: int, seconds: float, cloud: CloudProcess) -> dict:
    run_id = uuid.uuid4().hex[:6]
    devices = [Device(port, f"bench-{run_id}-{index}") for index in range(things)]
    cloud.register(*(device.thing for device in devices))  # the cloud serves registered things only
    cloud_pid = cloud.proc.pid
    await asyncio.gather(*(device.connect() for device in devices))
    latencies: list[float] = []
    outcomes = {"accepted": 0, "rejected": 0}
    start = time.monotonic()
    measure_from, measure_to = start + WARMUP_SECONDS, start + WARMUP_SECONDS + seconds
    ticks_at: dict[str, int] = {}

    async def drive(device: Device) -> None:
        sequence = 0
        while time.monotonic() < measure_to:
            sent = time.monotonic()
            outcome = await device.update(sequence)
            sequence += 1
            if measure_from <= sent and time.monotonic() <= measure_to:
                outcomes[outcome] += 1
                latencies.append((time.monotonic() - sent) * 1000)

    async def sample_cpu() -> None:
        await asyncio.sleep(measure_from - time.monotonic())
        ticks_at["from"] = cpu_ticks(cloud_pid)
        await asyncio.sleep(measure_to - time.monotonic())
        ticks_at["to"] = cpu_ticks(cloud_pid)

    await asyncio.gather(sample_cpu(), *(drive(device) for device in devices))
    await asyncio.gather(*(device.client.disconnect() for device in devices))
    cpu_seconds = (ticks_at["to"] - ticks_at["from"]) / os.sysconf("SC_CLK_TCK")
    return {"things": things, "seconds": seconds, "updates": outcomes["accepted"],
            "rejected": outcomes["rejected"], "updates_per_second": round(outcomes["accepted"] / seconds, 1),
            "latency": percentiles(latencies) if latencies else None,
            "cloud_cpu_percent_of_one_core": round(100 * cpu_seconds / seconds, 1)}


@contextlib.contextmanager
def broker(workdir: str):
    server = Mosquitto(workdir, tls=False).start()  # the cloud's cost, not TLS's: bench.tls measures that
    try:
        yield server.port
    finally:
        server.stop()


def bench_store(label: str, store_url: str, workdir: str, seconds: float) -> dict:
    with broker(workdir) as port:
        cloud = CloudProcess(workdir, port, store_url, {"log": {"level": "WARNING"}, "mqtt": {"tls": False}})
        try:
            cloud.start()
            levels = [asyncio.run(run_level(port, things, seconds, cloud)) for things in LEVELS]
        finally:
            cloud.stop()
    for level in levels:
        print(f"{label:>10}: {level['things']:>3} things: {level['updates_per_second']:>7} updates/s, "
              f"p50 {level['latency']['p50_ms']} ms, p99 {level['latency']['p99_ms']} ms", flush=True)
    return {"store": label, "levels": levels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    args = parser.parse_args()
    become_subreaper()
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        runs.append(bench_store("sqlite", f"sqlite:///{workdir}/bench.db", workdir, args.seconds))
        if not args.no_postgres and (PG_BIN / "initdb").exists():
            cluster = PostgresCluster(tempfile.mkdtemp(prefix="fleetlet-pg-bench-"), durable=True)
            try:
                cluster.start()
                runs.append(bench_store("postgresql", cluster.url(cluster.create_database()), workdir, args.seconds))
            finally:
                cluster.remove()
    result = {"path": "MQTT $aws/things/{thing}/shadow/update (QoS 1) -> update/accepted, one update in flight "
                      "per thing; reported-state updates; cloud and broker on this machine",
              "publishes_per_update": 4, "runs": runs}
    path = write_result("cloud_shadow", result)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
