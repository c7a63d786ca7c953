"""Benchmark: what TLS costs, in one run. The shadow round trip of bench.shadow_roundtrip (desired update
accepted by the cloud -> device applied -> reported accepted -> delta empty), for the agent and for the minimal
baseline client, over the deployment as shipped (TLS with client certificates and the ACL on every MQTT link:
agent, cloud, watcher) and over plaintext, one after the other on the same machine; and the handshake cost of a
reconnect: the time from a fresh TCP connect to CONNACK, TLS (a device certificate, EC P-256) against plain.

Run: python3 -m bench.tls [--updates 500] [--warmup 20] [--connects 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import ssl
import tempfile
import time

import gmqtt

from actors.runtime.processes import become_subreaper
from bench.common import percentiles, write_result
from bench.shadow_roundtrip import BASELINE_THING, Services, agent_round_trips, baseline_round_trips
from cloud.loopback import Mosquitto, free_port
from messages.transport.tls import client_context


def round_trips(workdir: pathlib.Path, tls: bool, updates: int, warmup: int) -> dict:
    services = Services(workdir, tls=tls).start()
    try:
        baseline = baseline_round_trips(services, updates, warmup)
        agent = agent_round_trips(services, workdir, updates, warmup)
    finally:
        services.stop()
    return {"agent": agent, "baseline_plain_mqtt_client": baseline}


async def connect_times(port: int, context: ssl.SSLContext | None, count: int) -> list[float]:
    """Milliseconds from nothing to CONNACK, each on a fresh connection (what a reconnect pays)."""
    samples = []
    for index in range(count):
        client = gmqtt.Client(f"bench-connect-{index}")
        started = time.perf_counter()
        await client.connect("127.0.0.1", port, ssl=context or False, keepalive=30)
        samples.append((time.perf_counter() - started) * 1000)
        await client.disconnect()
    return samples


def handshakes(workdir: pathlib.Path, count: int) -> dict:
    """One broker with a TLS listener and a plaintext one beside it: the same broker, the same process."""
    services = Services(workdir, tls=True)  # only for its PKI: no cloud is started
    broker = Mosquitto(workdir, pki_dir=services.pki, plain_port=free_port()).start()
    try:
        tls = services.link_tls(BASELINE_THING)
        assert tls is not None and broker.plain_port is not None
        context = client_context(tls)
        asyncio.run(connect_times(broker.port, context, 5))  # warm-up: the broker's first TLS setup
        tls_ms = asyncio.run(connect_times(broker.port, context, count))
        plain_ms = asyncio.run(connect_times(broker.plain_port, None, count))
    finally:
        broker.stop()
    tls_stats, plain_stats = percentiles(tls_ms), percentiles(plain_ms)
    return {"connects": count, "tls": tls_stats, "plaintext": plain_stats,
            "tls_extra_p50_ms": round(tls_stats["p50_ms"] - plain_stats["p50_ms"], 3),
            "ratio_p50_tls_vs_plaintext": round(tls_stats["p50_ms"] / plain_stats["p50_ms"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--connects", type=int, default=200)
    args = parser.parse_args()
    become_subreaper()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for name in ("tls", "plain", "handshake-pki"):
            (root / name).mkdir()
        over_tls = round_trips(root / "tls", True, args.updates, args.warmup)
        over_plain = round_trips(root / "plain", False, args.updates, args.warmup)
        connect = handshakes(root / "handshake-pki", args.connects)
    ratios = {who: {"p50": round(over_tls[who]["p50_ms"] / over_plain[who]["p50_ms"], 2),
                    "p99": round(over_tls[who]["p99_ms"] / over_plain[who]["p99_ms"], 2)}
              for who in ("agent", "baseline_plain_mqtt_client")}
    result = {"updates": args.updates, "warmup": args.warmup, "seconds": round(time.monotonic() - started, 1),
              "round_trip_tls": over_tls, "round_trip_plaintext": over_plain,
              "ratio_tls_vs_plaintext": ratios, "reconnect_handshake": connect}
    path = write_result("tls", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
